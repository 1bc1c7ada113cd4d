import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunReport } from '../../core/report/report.ts';
import { uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

interface RollbackJson {
  status: string;
  error?: string;
  report: RunReport;
}

function unitReport(report: RunReport, unitId: string) {
  for (const stage of report.stages) for (const u of stage.units) if (u.unitId === unitId) return u;
  throw new Error(`unit ${unitId} not in report`);
}

describe('snapshot → bad deploy → staged rollback, end to end (state machines, handlers, moto, PostgreSQL)', () => {
  let s: Scenario;
  let before: { objects: Map<string, string>; staging: unknown[]; mart: unknown[] };
  const deployment = 'd-42';

  beforeAll(async () => {
    s = await createScenario();
    before = { objects: await s.objects(), staging: await s.rows('staging.orders'), mart: await s.rows('mart.daily_orders') };
  });
  afterAll(async () => s?.drop());

  it('takes a sealed restore point of every unit', async () => {
    const r = await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local', '--json');
    expect(r.stderr).toContain('› capturing raw');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { status: string; output: { status: string; points: { unitId: string; count: number }[] } };
    expect(out.status).toBe('SUCCEEDED');
    expect(out.output.status).toBe('READY');
    expect(Object.fromEntries(out.output.points.map((p) => [p.unitId, p.count]))).toEqual({ raw: 4, staging: 500, mart: 5 });
  });

  it('a dry run prints the plan and what would change, and changes nothing', async () => {
    await badDeploy(s);
    const damaged = { objects: await s.objects(), versions: await s.versionCounts(), staging: await s.rows('staging.orders') };
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--dry-run', '--local', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as RollbackJson;
    expect(out.report.dryRun).toBe(true);
    expect(out.report.stages.map((st) => st.units.map((u) => u.unitId))).toEqual([['mart'], ['staging'], ['raw']]);
    expect(unitReport(out.report, 'staging').changes).toMatchObject({ rowsInserted: 2, rowsUpdated: 3, rowsDeleted: 2 });
    expect(unitReport(out.report, 'raw').status).toBe('WOULD_CHANGE');
    expect(await s.objects()).toEqual(damaged.objects);
    expect(await s.versionCounts()).toEqual(damaged.versions);
    expect(await s.rows('staging.orders')).toEqual(damaged.staging);
  });

  it('rolls back consumers first, verifies each stage, and restores bytes and rows exactly, writing only what changed', async () => {
    const versionsBefore = await s.versionCounts();
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--reason', 'bad numbers in mart');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as RollbackJson;
    expect(out.status).toBe('SUCCEEDED');
    const report = out.report;
    expect(report.status).toBe('SUCCEEDED');
    expect(report.partial).toBe(false);
    expect(report.stages.map((st) => [st.units.map((u) => u.unitId), st.status])).toEqual([
      [['mart'], 'VERIFIED'],
      [['staging'], 'VERIFIED'],
      [['raw'], 'VERIFIED'],
    ]);
    // Progress shows the stages in order: mart, then staging, then raw.
    const order = ['restoring mart', 'restoring staging', 'restoring raw'].map((l) => r.stderr.indexOf(l));
    expect(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!))).toBe(true);

    // State read back from the services.
    expect(await s.objects()).toEqual(before.objects);
    expect(await s.rows('staging.orders')).toEqual(before.staging);
    expect(await s.rows('mart.daily_orders')).toEqual(before.mart);

    // Writes: only what the deploy changed. Unchanged objects gained no version; the neighbour prefix was not touched.
    const versionsAfter = await s.versionCounts();
    for (const key of ['raw/orders/2026-11-03.csv', 'raw/orders-archive/2026-10-31.csv']) expect(versionsAfter.get(key)).toBe(versionsBefore.get(key));
    // The deleted file came back by removing its delete marker: no data copied, one entry fewer.
    expect(versionsAfter.get('raw/orders/2026-11-02.csv')).toBe(versionsBefore.get('raw/orders/2026-11-02.csv')! - 1);
    expect(unitReport(report, 'raw').changes).toMatchObject({ objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 1 });
    expect(unitReport(report, 'staging').changes).toMatchObject({ rowsInserted: 2, rowsUpdated: 3, rowsDeleted: 2 });
    expect(unitReport(report, 'staging').writes).toBe(7);
    expect(report.totals.writes).toBe(4 + 7 + unitReport(report, 'mart').writes);
    // The bad data is kept, not lost: the quarantine table holds the replaced rows.
    const kept = unitReport(report, 'staging').keptAt!;
    expect(kept).toMatch(/^etl_rollback\./);
    const quarantined = await s.sql.query(`SELECT id FROM ${kept} ORDER BY id`);
    expect(quarantined.rows.map((row) => row.id)).toEqual([10, 20, 30, 501, 502]);
  });

  it('a second rollback of the same deployment changes nothing and reports zero writes', async () => {
    const versions = await s.versionCounts();
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as RollbackJson;
    expect(out.report.status).toBe('SUCCEEDED');
    expect(out.report.totals.writes).toBe(0);
    expect(out.report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    expect(await s.versionCounts()).toEqual(versions);
    expect(await s.objects()).toEqual(before.objects);
  });

  it('rolls back only the units asked for and their consumers', async () => {
    await s.sql.query(`UPDATE staging.orders SET note = 'again' WHERE id = 1`);
    await s.sql.query(`UPDATE mart.daily_orders SET orders = 0`);
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--units', 'staging', '--local', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as RollbackJson;
    expect(out.report.stages.map((st) => st.units.map((u) => u.unitId))).toEqual([['mart'], ['staging']]);
    expect(unitReport(out.report, 'staging').changes.rowsUpdated).toBe(1);
    expect(unitReport(out.report, 'mart').changes.rowsUpdated).toBe(5);
    expect(await s.rows('staging.orders')).toEqual(before.staging);
    expect(await s.rows('mart.daily_orders')).toEqual(before.mart);
  });

  it('refuses an unknown unit and a deployment without restore point with exit 2, touching nothing', async () => {
    const unknown = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--units', 'stg', '--local');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown unit "stg"');
    const missing = await s.cli('rollback', s.manifestPath, '--deployment', 'd-never', '--local', '--json');
    expect(missing.code).toBe(2);
    expect(JSON.parse(missing.stdout).error).toBe('RestorePointMissingError');
  });
});
