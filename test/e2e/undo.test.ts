import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type mysql from 'mysql2/promise';
import type { Context } from 'aws-lambda';
import { stringify } from 'yaml';
import { Ledger } from '../../core/ledger/ledger.ts';
import { undoDeploymentId } from '../../core/workflow/undo.ts';
import { ROLLBACK_SCHEMA, shadowTableName } from '../../core/adapters/postgres/names.ts';
import type { RunReport } from '../../core/report/report.ts';
import { ordersManifest } from '../../scripts/demo-data.ts';
import { uniqueName } from '../support/aws.ts';
import { mysqlRows } from '../support/mysql-adapter.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/**
 * Issue 10, part 2: `etl-rollback undo <run>` through the rollback state machine run locally with its real handlers,
 * against moto (S3, DynamoDB), PostgreSQL and MariaDB. deploy → snapshot → damage → rollback → undo ends exactly at the
 * damaged state, the rolled-back state kept as the undo run's own record; undo of the undo ends exactly at the
 * rolled-back state again. Refusals: unknown run (2), a unit that cannot be undone (2), a run still under way (3).
 */
describe('undo <run>: the state a rollback replaced, put back in one step, and undoable in turn', () => {
  let s: Scenario;
  let my: TestMysqlDatabase;
  let conn: mysql.Connection;
  let ledger: Ledger;
  let manifestPath: string;

  interface State {
    objects: Map<string, string>;
    staging: unknown[];
    mart: unknown[];
    accounts: string[];
    events: unknown[];
  }
  const state = async (): Promise<State> => ({
    objects: await s.objects(),
    staging: await s.rows('staging.orders'),
    mart: await s.rows('mart.daily_orders'),
    accounts: await mysqlRows(conn, my.name, 'accounts'),
    events: (await s.sql.query('SELECT * FROM staging.events ORDER BY id')).rows,
  });
  const json = async (...args: string[]) => {
    const r = await s.cli(...args, '--local', '--json');
    return { ...r, out: r.stdout.trim() ? (JSON.parse(r.stdout) as { status: string; error?: string; cause?: string; report?: RunReport }) : undefined };
  };

  let original: State;
  let damaged: State;
  let rolledBack: State;
  let rollbackRun: string;
  let undoRun: string;
  let partialUndoRun: string;
  let failedRun: string;

  const damageEvents = () => s.sql.query("UPDATE staging.events SET kind = 'bad' WHERE id % 3 = 0; DELETE FROM staging.events WHERE id IN (4, 5); INSERT INTO staging.events VALUES (100, 'new')");
  const ALL = ['accounts', 'events', 'mart', 'raw', 'staging'];

  beforeAll(async () => {
    s = await createScenario();
    my = await createTestMysqlDatabase('undo');
    conn = await my.connection();
    await conn.query('CREATE TABLE accounts (id INT PRIMARY KEY, owner VARCHAR(40) NOT NULL, balance DECIMAL(12,2) NOT NULL)');
    await conn.query("INSERT INTO accounts VALUES (1, 'ada', 10.00), (2, 'bob', 20.00), (3, 'cy', 30.00), (4, 'di', 40.00)");
    // A copy-on-write table too: its rollback restores from the trigger-kept undo table; what the rollback replaced is
    // recorded at the keys that undo table names (the rows the rollback is about to write), not by copying the table.
    await s.sql.query("CREATE TABLE staging.events (id int PRIMARY KEY, kind text NOT NULL); INSERT INTO staging.events SELECT g, 'k' || g FROM generate_series(1, 20) g");
    const manifest = ordersManifest({ pipeline: s.pipeline, bucket: s.bucket, databaseUrl: s.db.url });
    const withMysql = {
      ...manifest,
      connections: { ...manifest.connections, ledgerdb: { engine: 'mysql' as const, url: my.url } },
      units: [
        ...manifest.units,
        { id: 'accounts', type: 'mysql-table' as const, connection: 'ledgerdb', table: `${my.name}.accounts`, dependsOn: ['staging'] },
        { id: 'events', type: 'postgres-table' as const, connection: 'warehouse', table: 'staging.events', capture: 'copy-on-write' as const },
      ],
    };
    manifestPath = join(mkdtempSync(join(tmpdir(), 'etl-rollback-undo-')), 'orders.yaml');
    writeFileSync(manifestPath, stringify(withMysql));
    ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);

    original = await state();
    const snap = await s.cli('snapshot', manifestPath, '--deployment', 'd-1', '--local');
    expect(snap.code, snap.stderr).toBe(0);
    await badDeploy(s);
    // The MariaDB table: one row changed, one deleted, one inserted (the undo must delete it again).
    await conn.query('UPDATE accounts SET balance = 999.99 WHERE id = 2');
    await conn.query('DELETE FROM accounts WHERE id = 3');
    await conn.query("INSERT INTO accounts VALUES (9, 'eve', 1.00)");
    await damageEvents();
    damaged = await state();
    expect(damaged).not.toEqual(original);

    const rb = await json('rollback', manifestPath, '--deployment', 'd-1');
    expect(rb.code, rb.stderr).toBe(0);
    rollbackRun = rb.out!.report!.runId;
    rolledBack = await state();
    expect(rolledBack).toEqual(original);
  });
  afterAll(async () => {
    await my?.drop();
    await s?.drop();
  });

  it('the rollback recorded, before it wrote, the state it replaced: the derived deployment undo-<run>', async () => {
    const points = await ledger.listRestorePoints(s.pipeline, undoDeploymentId(rollbackRun));
    expect(points.map((p) => p.unitId).sort()).toEqual(ALL);
    // Counts of the damaged state: 5 objects under raw/ (one added), 9 + 2 - 2 staging rows, 4 - 1 + 1 accounts.
    const byUnit = Object.fromEntries(points.map((p) => [p.unitId, p.count]));
    expect(byUnit.accounts).toBe(4);
    expect(byUnit.raw).toBe([...damaged.objects.keys()].filter((k) => k.startsWith(s.prefix)).length);
    expect(byUnit.staging).toBe(damaged.staging.length);
    // The copy-on-write table (20 rows; 6 updated, 2 deleted, 1 inserted): 9 rows kept, the live ones at the 9 logged
    // keys and the 2 keys the rollback re-inserted; its count is the damaged table's, carried without reading it.
    const events = points.find((p) => p.unitId === 'events')!;
    expect(events.count).toBe(19);
    expect(events.details).toMatchObject({ capture: 'copy-on-write' });
    const { rows } = await s.sql.query<{ kind: string; n: number }>(`SELECT "etl_rollback$kind"::text AS kind, count(*)::int AS n FROM ${String(events.details.shadowTable)} GROUP BY 1 ORDER BY 1`);
    expect(rows).toEqual([
      { kind: 'i', n: 2 },
      { kind: 'p', n: 7 },
    ]);
  });

  it('--dry-run says per unit what would be put back, and changes nothing', async () => {
    const dry = await json('undo', rollbackRun, '--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    const units = dry.out!.report!.stages.flatMap((st) => st.units);
    expect(units.map((u) => u.unitId).sort()).toEqual(ALL);
    for (const u of units) expect(u.notes[0]).toMatch(new RegExp(`^undo of run ${rollbackRun}: put back \\d+ `));
    expect(units.find((u) => u.unitId === 'accounts')!.writes).toBe(3);
    expect(units.find((u) => u.unitId === 'events')!.notes[0]).toMatch(/the rows at the keys the restore wrote in etl_rollback\.cw_/);
    expect(await state()).toEqual(rolledBack);
  });

  it('undo ends exactly at the damaged state; the rolled-back state is kept, named by the undo run', async () => {
    const undo = await json('undo', rollbackRun);
    expect(undo.code, `${undo.stderr}${JSON.stringify(undo.out)}`).toBe(0);
    const report = undo.out!.report!;
    undoRun = report.runId;
    expect(report.deploymentId).toBe(undoDeploymentId(rollbackRun));
    // Consumers first, as the ordinary planner orders them.
    expect(report.stages.map((st) => st.units.map((u) => u.unitId).sort())).toEqual([['accounts', 'events', 'mart'], ['staging'], ['raw']]);
    expect(report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    expect(await state()).toEqual(damaged);

    const deployment = await ledger.requireDeployment(s.pipeline, undoDeploymentId(rollbackRun));
    expect(deployment).toMatchObject({ origin: { kind: 'undo', runId: rollbackRun }, status: 'ROLLED_BACK' });
    const kept = await ledger.listRestorePoints(s.pipeline, undoDeploymentId(undoRun));
    expect(kept.map((p) => p.unitId).sort()).toEqual(ALL);
    // A derived deployment is never "the latest deploy" (triggers and drills pick deploys only).
    expect((await ledger.latestDeployment(s.pipeline))?.deploymentId).toBe('d-1');
  });

  it('undo of the undo ends exactly at the rolled-back state', async () => {
    const again = await json('undo', undoRun);
    expect(again.code, `${again.stderr}${JSON.stringify(again.out)}`).toBe(0);
    expect(again.out!.report!.deploymentId).toBe(undoDeploymentId(undoRun));
    expect(await state()).toEqual(rolledBack);
  });

  it('undo of a failed, partial run puts back the units it changed, the one it changed before it stopped included', async () => {
    // Damage again, then a rollback that stops in stage 2: staging is written, then its restore "crashes" before the
    // step is reported (a lost connection, a timeout); raw (stage 3) is never started.
    await badDeploy(s);
    await conn.query('UPDATE accounts SET balance = 1.23 WHERE id = 1');
    await damageEvents();
    const damagedAgain = await state();
    const { runLocal } = await import('../../cli/local-runner.ts');
    const { handler: realRestore } = await import('../../lambdas/restore-unit.ts');
    const crashAfterWriting = async (event: unknown, context: Context) => {
      const out = await realRestore(event, context);
      if ((event as { unitId: string }).unitId === 'staging') throw new Error('connection lost after the restore wrote');
      return out;
    };
    failedRun = uniqueName('run-partial');
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-1' }, { name: failedRun, handlers: { RestoreUnit: crashAfterWriting } });
    expect(out.status).toBe('FAILED');
    const partial = await state();
    expect(partial.objects).toEqual(damagedAgain.objects);
    expect(partial.staging).toEqual(original.staging);

    const undo = await json('undo', failedRun);
    expect(undo.code, `${undo.stderr}${JSON.stringify(undo.out)}`).toBe(0);
    expect(undo.out!.report!.stages.flatMap((st) => st.units.map((u) => u.unitId)).sort()).toEqual(['accounts', 'events', 'mart', 'staging']);
    partialUndoRun = undo.out!.report!.runId;
    expect(await state()).toEqual(damagedAgain);
  });

  it('refuses what it cannot do, before anything is touched: unknown run 2, not undoable 2, under way 3', async () => {
    const before = await state();
    const unknown = await s.cli('undo', 'no-such-run', '--local');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no-such-run');

    // A run that changed a unit whose restore was not recorded (a custom unit's, say): refused, the unit named.
    const at = new Date().toISOString();
    const base = { pipeline: s.pipeline, deploymentId: 'd-1', dryRun: false, requested: ['raw'], scope: ['raw'], stages: [{ index: 0, units: ['raw'] }], reasons: {}, requestedBy: 't', reason: '', startedAt: at };
    await ledger.createRun({ ...base, runId: 'run-unrecorded', status: 'FAILED' });
    await ledger.putStep({ runId: 'run-unrecorded', stage: 0, unitId: 'raw', type: 's3-prefix', status: 'FAILED', changes: {}, writes: 3, notes: [] });
    const unrecorded = await json('undo', 'run-unrecorded');
    expect(unrecorded.code).toBe(2);
    expect(unrecorded.out).toMatchObject({ status: 'FAILED', error: 'InputError' });
    expect(unrecorded.out!.cause).toContain('raw: what the run replaced was not recorded');

    await ledger.createRun({ ...base, runId: 'run-still-running', status: 'RUNNING' });
    const running = await json('undo', 'run-still-running');
    expect(running.code).toBe(3);
    expect(running.out).toMatchObject({ status: 'FAILED', error: 'LockHeldError' });

    await ledger.createRun({ ...base, runId: 'run-dry', status: 'DRY_RUN', dryRun: true });
    expect((await json('undo', 'run-dry')).code).toBe(2);
    expect(await state()).toEqual(before);
  });

  it('a record is released with its retention like any restore point, undone or not; it is no deploy for freshness', async () => {
    const { deps } = await import('../../lambdas/task.ts');
    const { listExpiredDeployments, releaseDeployment } = await import('../../core/workflow/release.ts');
    const later = new Date(Date.now() + 60 * 86_400_000).toISOString();
    const expired = await listExpiredDeployments(deps, { now: later });
    const candidates = expired.candidates.filter((c) => c.pipeline === s.pipeline).map((c) => c.deploymentId);
    // undo-<rollback> was undone; undo-<undo of the partial run> never was
    expect(candidates).toEqual(expect.arrayContaining([undoDeploymentId(rollbackRun), undoDeploymentId(partialUndoRun)]));
    // the record of the run that failed part-way is the way back from it: kept, as a failed rollback's restore point is
    expect(expired.skipped.find((k) => k.deploymentId === undoDeploymentId(failedRun))?.code).toBe('LAST_RUN_FAILED');
    const d1 = await ledger.requireDeployment(s.pipeline, 'd-1');
    expect(expired.pipelines.find((p) => p.pipeline === s.pipeline)?.lastRestorePointAt).toBe(d1.createdAt);

    for (const id of [undoDeploymentId(rollbackRun), undoDeploymentId(partialUndoRun)]) {
      const out = await releaseDeployment(deps, { pipeline: s.pipeline, deploymentId: id, now: later, releasedBy: 'test' });
      expect(out.released, JSON.stringify(out)).toBe(true);
      expect((await ledger.requireDeployment(s.pipeline, id)).status).toBe('RELEASED');
      const shadow = shadowTableName(s.pipeline, id, 'staging');
      expect((await s.sql.query('SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2', [ROLLBACK_SCHEMA, shadow])).rowCount).toBe(0);
    }
    // A released record is refused, exit 2: nothing is left to put back.
    const gone = await json('undo', rollbackRun);
    expect(gone.code).toBe(2);
    expect(gone.out!.cause).toContain('was released');
  });
});
