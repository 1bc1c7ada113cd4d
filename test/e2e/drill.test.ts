import { readFileSync, writeFileSync } from 'node:fs';
import { ListObjectVersionsCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drillShort, scratchSchemaName } from '../../core/adapters/drill/names.ts';
import type { RunReport } from '../../core/report/report.ts';
import { uniqueName } from '../support/aws.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';
import { mutatingS3Requests } from '../support/version-guard.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');
const stateBucket = process.env.ETL_ROLLBACK_STATE_BUCKET;

interface DrillJson {
  status: string;
  error?: string;
  cause?: string;
  report: RunReport;
}

/** What production holds, read so that a drill that wrote anything (even the same values back) shows. */
interface ProductionState {
  objects: Map<string, string>;
  versions: Map<string, number>;
  tables: Record<string, { rows: unknown[]; xmins: string[]; checksum: string; writes: { ins: string; upd: string; del: string } }>;
}

describe('rollback drill of an S3 prefix, two PostgreSQL tables (copy and copy-on-write) and a MySQL table after a bad deploy', () => {
  let s: Scenario;
  let shop: TestMysqlDatabase;
  let shopSql: Awaited<ReturnType<TestMysqlDatabase['connection']>>;
  const deployment = 'd-drill-1';

  async function production(): Promise<ProductionState> {
    // Other sessions' table counters reach the statistics when they end or within a second: wait, then read them fresh.
    await new Promise((r) => setTimeout(r, 1200));
    await s.sql.query('SELECT pg_stat_clear_snapshot()');
    const tables: ProductionState['tables'] = {};
    for (const [table, key] of [['staging.orders', 'id'], ['mart.daily_orders', 'day']] as const) {
      const [schema, name] = table.split('.');
      const xmins = (await s.sql.query(`SELECT xmin::text AS x FROM ${table} ORDER BY ${key}`)).rows.map((r) => r.x as string);
      const checksum = (await s.sql.query(`SELECT md5(string_agg(t::text, ',' ORDER BY ${key})) AS c FROM ${table} t`)).rows[0].c as string;
      const stat = (await s.sql.query('SELECT n_tup_ins::text AS ins, n_tup_upd::text AS upd, n_tup_del::text AS del FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2', [schema, name])).rows[0];
      tables[table] = { rows: await s.rows(table), xmins, checksum, writes: stat };
    }
    const [lines] = await shopSql.query('SELECT * FROM cart_lines ORDER BY id');
    // MySQL has no row version like xmin, and this MariaDB runs without performance_schema: rows and CHECKSUM TABLE.
    const [sum] = await shopSql.query('CHECKSUM TABLE cart_lines');
    tables['cart_lines'] = { rows: lines as unknown[], xmins: [], checksum: JSON.stringify(sum), writes: { ins: '', upd: '', del: '' } };
    return { objects: await s.objects(), versions: await s.versionCounts(), tables };
  }

  beforeAll(async () => {
    s = await createScenario();
    // The scenario's manifest, with an RTO, the mart captured copy-on-write, and user checks on staging: one that reads
    // only the unit's table (pointed at the scratch copy) and one that also reads the mart (cannot be: reported, not run).
    const manifest = parse(readFileSync(s.manifestPath, 'utf8'));
    manifest.rto = '15m';
    manifest.units[2].capture = 'copy-on-write';
    manifest.units[1].assertions = [
      { name: 'five hundred orders', sql: 'SELECT count(*) = 500 FROM staging.orders' },
      { name: 'no negative amounts', sql: 'SELECT bool_and(o.amount >= 0) FROM staging.orders AS o' },
      { name: 'mart matches staging', sql: 'SELECT (SELECT sum(orders) FROM mart.daily_orders) = (SELECT count(*) FROM staging.orders)' },
    ];
    // A MySQL table too, captured copy-on-write, with a user check written against the production table.
    shop = await createTestMysqlDatabase('drill');
    shopSql = await shop.connection();
    await shopSql.query('CREATE TABLE cart_lines (id INT PRIMARY KEY, sku VARCHAR(20) NOT NULL, qty INT NOT NULL) ENGINE=InnoDB');
    await shopSql.query(`INSERT INTO cart_lines VALUES ${Array.from({ length: 50 }, (_, i) => `(${i + 1}, 'sku-${i % 7}', ${i % 5 + 1})`).join(', ')}`);
    manifest.connections.shop = { engine: 'mysql', url: shop.url };
    manifest.units.push({
      id: 'carts',
      type: 'mysql-table',
      connection: 'shop',
      table: 'cart_lines',
      capture: 'copy-on-write',
      assertions: [{ name: 'fifty lines, none empty', sql: 'SELECT COUNT(*) = 50 AND MIN(qty) > 0 FROM cart_lines' }],
    });
    writeFileSync(s.manifestPath, stringify(manifest));
    const snap = await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local', '--json');
    expect(snap.code, snap.stderr).toBe(0);
    await badDeploy(s);
    await shopSql.query('UPDATE cart_lines SET qty = 0 WHERE id <= 3');
    await shopSql.query('DELETE FROM cart_lines WHERE id = 50');
    await shopSql.query("INSERT INTO cart_lines VALUES (51, 'bad', 9)");
  });
  afterAll(async () => {
    await s?.drop();
    await shop?.drop();
  });

  it('passes every gate on scratch copies, times each stage, removes every scratch target, and never writes production', async () => {
    const before = await production();
    const logged = mutatingS3Requests().length;

    const r = await s.cli('drill', s.manifestPath, '--deployment', deployment, '--local', '--json', '--reason', 'quarterly drill');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('rehearsing staging in a scratch target');
    const out = JSON.parse(r.stdout) as DrillJson;
    const report = out.report;
    expect(out.status).toBe('SUCCEEDED');
    expect(report.status).toBe('SUCCEEDED');

    // The rollback's stages, consumers first, each verified on its scratch copy, each timed.
    expect(report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    const order = report.stages.flatMap((st) => st.units.map((u) => u.unitId));
    expect(order.filter((u) => u !== 'carts')).toEqual(['mart', 'staging', 'raw']);
    expect(order).toContain('carts');
    for (const stage of report.stages) {
      expect(stage.durationMs).toBeGreaterThanOrEqual(0);
      expect(Date.parse(stage.endedAt!)).toBeGreaterThanOrEqual(Date.parse(stage.startedAt!));
    }
    const unit = (id: string) => report.stages.flatMap((st) => st.units).find((u) => u.unitId === id)!;
    expect(unit('raw').checks?.map((c) => [c.name, c.ok])).toEqual([['objectCount', true], ['checksum', true]]);
    expect(unit('raw').changes).toEqual({ objectsCopied: 4 });
    expect(unit('staging').changes).toEqual({ rowsCopied: 500 });
    expect(unit('mart').changes).toEqual({ rowsCopied: 5 });
    expect(unit('carts').changes).toEqual({ rowsCopied: 50 });
    expect(unit('carts').checks?.map((c) => [c.name, c.ok])).toEqual([
      ['rowCount', true],
      ['checksum', true],
      ['assertion:fifty lines, none empty', true],
    ]);
    // The user checks ran on the scratch copy (the production table holds 502 rows and amounts of -999 would not pass)...
    expect(unit('staging').checks?.map((c) => [c.name, c.ok])).toEqual([
      ['rowCount', true],
      ['checksum', true],
      ['assertion:five hundred orders', true],
      ['assertion:no negative amounts', true],
    ]);
    // ...and the one that reads another table was not run anywhere: the report says why.
    expect(unit('staging').notes.join('\n')).toMatch(/user check "mart matches staging" not run: it also reads mart\.daily_orders/);
    expect(report.totals.writes).toBe(0);

    // The RTO measured: restores and gates, from the first restore to the last gate.
    const drill = report.drill!;
    expect(drill.rto).toBe('15m');
    expect(drill.rtoSeconds).toBe(900);
    expect(drill.overRto).toBe(false);
    expect(drill.recoveryMs).toBeGreaterThan(0);
    const short = drillShort(report.runId);
    expect(drill.scratch.map((t) => t.unitId).sort()).toEqual(['carts', 'mart', 'raw', 'staging']);
    expect(drill.scratch.find((t) => t.unitId === 'raw')!.target).toBe(`s3://${stateBucket}/drills/${report.runId}/raw/`);
    expect(drill.cleanup.complete).toBe(true);
    expect(drill.cleanup.removed.join('\n')).toContain(`schema ${scratchSchemaName(short)}`);

    // Scratch targets are gone: no object version under the drill's prefix, no scratch schema.
    const left = await s.s3.send(new ListObjectVersionsCommand({ Bucket: stateBucket, Prefix: `drills/${report.runId}/` }));
    expect([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])]).toEqual([]);
    expect((await s.sql.query('SELECT 1 FROM pg_namespace WHERE nspname LIKE $1', ['etl_rollback_drill_%'])).rowCount).toBe(0);
    const [scratchDbs] = await shopSql.query('SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [scratchSchemaName(short)]);
    expect(scratchDbs).toEqual([]);

    // Production, at the AWS request level: the drill sent writes (to its scratch prefix), none of them to the unit's bucket.
    const writes = mutatingS3Requests().slice(logged);
    const drillWrites = writes.filter((q) => q.bucket === stateBucket && q.key.startsWith(`drills/${report.runId}/`));
    expect(drillWrites.filter((q) => q.method === 'PUT').length).toBe(4);
    expect(drillWrites.filter((q) => q.copySource?.startsWith(`${s.bucket}/raw/orders/`)).length).toBe(4);
    expect(writes.filter((q) => q.bucket === s.bucket)).toEqual([]);

    // Production, in the database and the bucket: the same rows, versions, checksums, row versions and write counters.
    const after = await production();
    expect(after.objects).toEqual(before.objects);
    expect(after.versions).toEqual(before.versions);
    expect(after.tables).toEqual(before.tables);
    // Still the bad deploy's data: a drill rehearses, it does not roll back.
    expect(after.tables['staging.orders']!.rows).toHaveLength(500);
    expect((after.tables['cart_lines']!.rows as { id: number }[]).map((r) => r.id)).toContain(51);
    expect((after.tables['staging.orders']!.rows as { id: number }[]).some((row) => row.id === 501)).toBe(true);

    // The report is in the audit trail, as JSON and Markdown, rendered by the run report's module.
    const md = await s.s3.send(new GetObjectCommand({ Bucket: stateBucket, Key: `reports/${s.pipeline}/${report.runId}.md` }));
    const text = await md.Body!.transformToString();
    expect(text).toMatch(new RegExp(`^# Drill of ${s.pipeline} / ${deployment}: SUCCEEDED`));
    expect(text).toContain('| recovery time | recovery ');
    expect(text).toMatch(/## Stage 1: VERIFIED\n\n\S+ → \S+ \(\d+\.\d s\)/);
    // Like every Markdown report: a Gantt of the stages as they ran, and the estimate set against them.
    expect(text).toContain('```mermaid\ngantt');
    expect(text).toMatch(/## Estimate against actual[\s\S]*\| total \(recovery time\) \|/);
    expect(report.estimate?.stages.map((st) => st.index)).toEqual(report.stages.map((st) => st.index));
  });

  it('every step answers the same when its answer is lost and the state machine retries it: the drill converges', async () => {
    const { runLocal } = await import('../../cli/local-runner.ts');
    const { handler: rehearse } = await import('../../lambdas/rehearse-unit.ts');
    const { handler: verify } = await import('../../lambdas/verify-drill-stage.ts');
    const lost = new Set<string>();
    // The work is done, then the answer is lost once per unit and stage (as when Lambda fails after the function ran).
    type Handler = (event: unknown, context: Parameters<typeof rehearse>[1]) => Promise<unknown>;
    const loseOnce = (h: Handler, what: string) => async (event: unknown, context: Parameters<typeof rehearse>[1]) => {
      const out = await h(event, context);
      const key = `${what}:${JSON.stringify((event as { unitId?: string; stage?: unknown }).unitId ?? (event as { stage?: unknown }).stage)}`;
      if (!lost.has(key)) {
        lost.add(key);
        throw Object.assign(new Error('injected: the answer was lost'), { name: 'Lambda.ServiceException' });
      }
      return out;
    };
    const before = await production();
    const name = `drill-${s.pipeline}-retried-${Date.now()}`;
    const out = await runLocal('drill', { pipeline: s.pipeline, deploymentId: deployment }, { name, handlers: { RehearseUnit: loseOnce(rehearse, 'rehearse'), VerifyDrillStage: loseOnce(verify, 'verify') } });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    expect([...lost].filter((k) => k.startsWith('rehearse')).length).toBe(4);
    const report = (out as { output: RunReport }).output;
    expect(report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    // A retried S3 rehearsal copies nothing twice; the tables are built again from the restore point.
    expect(report.stages.flatMap((st) => st.units).find((u) => u.unitId === 'raw')!.changes).toEqual({ objectsCopied: 4 });
    const left = await s.s3.send(new ListObjectVersionsCommand({ Bucket: stateBucket, Prefix: `drills/${name}/` }));
    expect([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])]).toEqual([]);
    expect((await s.sql.query("SELECT 1 FROM pg_namespace WHERE nspname LIKE 'etl_rollback_drill_%'")).rowCount).toBe(0);
    expect(await production()).toEqual(before);
  });

  it('drills the latest deployment when asked for "latest", and leaves nothing behind either', async () => {
    const r = await s.cli('drill', s.manifestPath, '--deployment', 'latest', '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const report = (JSON.parse(r.stdout) as DrillJson).report;
    expect(report.deploymentId).toBe(deployment);
    const left = await s.s3.send(new ListObjectVersionsCommand({ Bucket: stateBucket, Prefix: 'drills/' }));
    expect([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])]).toEqual([]);
  });
});
