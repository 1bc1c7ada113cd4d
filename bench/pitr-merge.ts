/**
 * The data path of a `--to` rollback of a postgres-table unit, timed: the unit's rows read from a point-in-time copy of
 * the database and merged into production (only the differing rows written, replaced rows quarantined, then count
 * and checksum verified). A second database on the same server stands in for the temporary RDS copy, holding the
 * table as it was at T; production holds it after a deploy changed k% of the rows (half updated, a quarter deleted,
 * a quarter inserted). The RDS part (making and deleting the copy) is not timed: it is minutes of RDS work whatever
 * the table's size.
 *
 *   npx tsx bench/pitr-merge.ts [--rows 100000] [--changed 1] [--url postgres://postgres@127.0.0.1:5432/postgres]
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { S3Client } from '@aws-sdk/client-s3';
import { postgresTableAdapter, type PostgresTableDetails } from '../core/adapters/postgres-table.ts';
import type { AdapterContext, Changes, RestorePoint } from '../core/adapters/types.ts';
import { postgresTableUnitSchema } from '../core/manifest/schema.ts';
import { changeMix, silentLog, unusedServices } from './common.ts';

export interface PitrMergeResult {
  rows: number;
  changedPercent: number;
  /** Extract, merge and verify, wall clock. */
  seconds: number;
  changes: Changes;
}

async function withAdmin<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function benchPointInTimeMerge(options: { rows: number; changedPercent: number; adminUrl?: string }): Promise<PitrMergeResult> {
  const adminUrl = options.adminUrl ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const suffix = randomBytes(4).toString('hex');
  const names = { prod: `etlrb_bench_prod_${suffix}`, atT: `etlrb_bench_pitr_${suffix}` };
  const urlOf = (db: string) => adminUrl.replace(/\/[^/]*$/, `/${db}`);
  await withAdmin(adminUrl, async (a) => {
    for (const db of Object.values(names)) await a.query(`CREATE DATABASE ${db}`);
  });
  try {
    const { rows, changedPercent } = options;
    for (const db of Object.values(names)) {
      await withAdmin(urlOf(db), async (c) => {
        await c.query(`CREATE TABLE facts (id bigint PRIMARY KEY, label text NOT NULL, amount numeric(12,2), at timestamptz, doc jsonb)`);
        await c.query(
          `INSERT INTO facts SELECT g, 'row ' || g, g * 0.5, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', jsonb_build_object('g', g) FROM generate_series(1, $1::bigint) g`,
          [rows],
        );
        await c.query('ANALYZE facts');
      });
    }
    const mix = changeMix(rows, changedPercent);
    await withAdmin(urlOf(names.prod), async (c) => {
      // Spread over the table: every n-th row, so the differing rows are not one contiguous range.
      await c.query(`UPDATE facts SET amount = -amount, label = label || ' (deploy)' WHERE id % 100 = 1 AND id <= $1::bigint * 100`, [mix.modified]);
      await c.query(`DELETE FROM facts WHERE id % 100 = 2 AND id <= $1::bigint * 100`, [mix.deleted]);
      await c.query(`INSERT INTO facts SELECT $1::bigint + g, 'new ' || g, 1, now(), NULL FROM generate_series(1, $2::bigint) g`, [rows, mix.added]);
    });

    const connections = { warehouse: urlOf(names.prod) };
    const connect = async (url: string) => {
      const c = new pg.Client({ connectionString: url, application_name: 'etl-rollback' });
      await c.connect();
      return c;
    };
    const ctx: AdapterContext = {
      ...unusedServices(),
      s3: new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'unused', secretAccessKey: 'unused' } }),
      stateBucket: 'unused-by-postgres-table',
      pipeline: 'bench',
      deploymentId: 'at-20261129T093000Z',
      runId: `bench-${suffix}`,
      postgres: { connect: () => connect(connections.warehouse), connectTo: () => connect(urlOf(names.atT)) },
      retentionDays: 14,
      now: () => new Date(),
      log: silentLog,
    };
    const unit = postgresTableUnitSchema.parse({ id: 'facts', type: 'postgres-table', connection: 'warehouse', table: 'facts' });
    const time = '2026-11-29T09:30:00Z';
    const point: RestorePoint<PostgresTableDetails> = {
      unitId: unit.id,
      type: 'postgres-table',
      capturedAt: time,
      count: rows,
      checksum: `point-in-time:bench@${time}`,
      details: {
        connection: 'warehouse',
        table: 'public.facts',
        shadowTable: `etl_rollback.bench_pitr_${suffix}`,
        primaryKey: ['id'],
        columns: [],
        scope: {},
        capture: 'point-in-time',
        pointInTime: { rds: { instanceId: 'bench' }, time },
      },
    };
    const started = performance.now();
    const outcome = await postgresTableAdapter.mergeFromCopy(unit, point, ctx, { host: 'point-in-time-copy.invalid', port: 5432 });
    const seconds = (performance.now() - started) / 1000;
    return { rows, changedPercent, seconds, changes: outcome.changes };
  } finally {
    await withAdmin(adminUrl, async (a) => {
      for (const db of Object.values(names)) await a.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name: string, fallback: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1]! : fallback;
  };
  const result = await benchPointInTimeMerge({ rows: Number(arg('rows', '100000')), changedPercent: Number(arg('changed', '1')), adminUrl: arg('url', 'postgres://postgres@127.0.0.1:5432/postgres') });
  console.log(JSON.stringify(result));
}
