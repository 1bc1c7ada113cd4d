import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectVersionsCommand, type S3Client } from '@aws-sdk/client-s3';
import { parse, stringify } from 'yaml';
import type pg from 'pg';
import { main } from '../../cli/main.ts';
import { breakOrders, NEIGHBOUR_PREFIX, ordersManifest, RAW_PREFIX, seedOrders } from '../../scripts/demo-data.ts';
import { ensureLedgerTable, Ledger } from '../../core/ledger/ledger.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { testDynamo, testS3, uniqueName } from './aws.ts';
import { createTestDatabase, type TestDatabase } from './postgres.ts';

/**
 * The story of issue #2 on real services: a pipeline with an S3 prefix (raw) and two PostgreSQL tables
 * (staging built from raw, mart built from staging), a restore point, a bad deploy that damages all three.
 */
export interface Scenario {
  pipeline: string;
  bucket: string;
  prefix: string;
  db: TestDatabase;
  sql: pg.Client;
  s3: S3Client;
  manifestPath: string;
  /** Runs the CLI in-process; returns exit code and what it printed. */
  cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Every object under the prefix (and the neighbour prefix) as key → bytes, current versions only. */
  objects(): Promise<Map<string, string>>;
  /** key → number of versions and delete markers (to count writes). */
  versionCounts(): Promise<Map<string, number>>;
  rows(table: string): Promise<unknown[]>;
  drop(): Promise<void>;
}

export async function createScenario(): Promise<Scenario> {
  const s3 = testS3();
  const pipeline = uniqueName('orders');
  const bucket = uniqueName('lake');
  const prefix = RAW_PREFIX;
  const db = await createTestDatabase('e2e');
  const sql = await db.client();
  await seedOrders({ s3, sql, bucket });

  const manifest = ordersManifest({ pipeline, bucket, databaseUrl: db.url });
  const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-'));
  const manifestPath = join(dir, 'orders.yaml');
  writeFileSync(manifestPath, stringify(manifest));

  return {
    pipeline,
    bucket,
    prefix,
    db,
    sql,
    s3,
    manifestPath,
    async cli(...args) {
      let stdout = '';
      let stderr = '';
      const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
      return { code, stdout, stderr };
    },
    async objects() {
      const out = new Map<string, string>();
      for (const p of [prefix, NEIGHBOUR_PREFIX]) {
        const list = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: p }));
        for (const v of list.Versions ?? []) {
          if (!v.IsLatest) continue;
          const obj = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: v.Key! }));
          out.set(v.Key!, await obj.Body!.transformToString());
        }
      }
      return out;
    },
    async versionCounts() {
      const list = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'raw/' }));
      const counts = new Map<string, number>();
      for (const v of [...(list.Versions ?? []), ...(list.DeleteMarkers ?? [])]) counts.set(v.Key!, (counts.get(v.Key!) ?? 0) + 1);
      return counts;
    },
    async rows(table) {
      const key = table === 'mart.daily_orders' ? 'day' : 'id';
      return (await sql.query(`SELECT * FROM ${table} ORDER BY ${key}`)).rows;
    },
    async drop() {
      await db.drop();
    },
  };
}

/** The bad deploy: every kind of damage to every unit. */
export async function badDeploy(s: Scenario): Promise<void> {
  await breakOrders({ s3: s.s3, sql: s.sql, bucket: s.bucket });
}

/**
 * A copy-on-write table beside the scenario's units: `staging.events` (id, kind) with `rows` rows, added to the
 * manifest file as unit `events`. Returns the manifest as the state machines take it.
 */
export async function addEventsTable(s: Scenario, rows: number): Promise<Record<string, unknown>> {
  await s.sql.query(`CREATE TABLE staging.events (id int PRIMARY KEY, kind text NOT NULL); INSERT INTO staging.events SELECT g, 'k' || g FROM generate_series(1, ${rows}) g`);
  const base = parse(readFileSync(s.manifestPath, 'utf8')) as { units: unknown[] };
  const manifest = { ...base, units: [...base.units, { id: 'events', type: 'postgres-table', connection: 'warehouse', table: 'staging.events', capture: 'copy-on-write' }] };
  writeFileSync(s.manifestPath, stringify(manifest));
  return manifest;
}

/** The local state machine runner, and the ledger it writes (the table and state bucket the environment names, made). */
export async function localMachines(): Promise<{ runLocal: (typeof import('../../cli/local-runner.ts'))['runLocal']; ledger: Ledger }> {
  const { runLocal } = await import('../../cli/local-runner.ts');
  await ensureLedgerTable(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
  await ensureStateBucket(testS3(), process.env.ETL_ROLLBACK_STATE_BUCKET!);
  return { runLocal, ledger: new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!) };
}
