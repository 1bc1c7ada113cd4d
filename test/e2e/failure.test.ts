import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Context } from 'aws-lambda';
import { Ledger } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

describe('a rollback that stops part-way is flagged, releases its lock, and a rerun converges', () => {
  let s: Scenario;
  let before: { objects: Map<string, string>; staging: unknown[]; mart: unknown[] };
  const deployment = 'd-7';

  beforeAll(async () => {
    s = await createScenario();
    before = { objects: await s.objects(), staging: await s.rows('staging.orders'), mart: await s.rows('mart.daily_orders') };
    const snap = await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local');
    expect(snap.code, snap.stderr).toBe(0);
    await badDeploy(s);
  });
  afterAll(async () => s?.drop());

  it('a failed validation gate stops before the next stage, records the run as failed and partial', async () => {
    const { runLocal } = await import('../../cli/local-runner.ts');
    const { handler: realRestore } = await import('../../lambdas/restore-unit.ts');
    // Fault: the staging restore "succeeds" without writing (a lost write); the gate must catch it.
    const lostWrite = async (event: unknown, context: Context) =>
      (event as { unitId: string }).unitId === 'staging' ? { unitId: 'staging', stage: 1, writes: 0 } : realRestore(event, context);
    const name = uniqueName('run-gate');
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: deployment }, { name, handlers: { RestoreUnit: lostWrite } });
    expect(out).toMatchObject({ status: 'FAILED', error: 'VerificationFailedError' });

    const ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    const run = await ledger.requireRun(name);
    expect(run.status).toBe('FAILED');
    expect((await ledger.getDeployment(s.pipeline, deployment))?.status).toBe('ROLLBACK_FAILED');
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();

    const { StateStore } = await import('../../core/runtime/state-store.ts');
    const { testS3 } = await import('../support/aws.ts');
    const report = (await new StateStore(testS3(), process.env.ETL_ROLLBACK_STATE_BUCKET!).getJson<RunReport>(run.reportKey!))!;
    expect(report.partial).toBe(true);
    expect(report.stages.map((st) => st.status)).toEqual(['VERIFIED', 'VERIFY_FAILED', 'NOT_STARTED']);
    expect(report.error?.message).toContain('staging');
    // Stage 1 (mart) was restored; stage 3 (raw) was never touched.
    expect(await s.rows('mart.daily_orders')).toEqual(before.mart);
    expect((await s.objects()).get('raw/orders/2026-11-01.csv')).toBe('id,amount\n1,-999\n');
  });

  it('a rerun resumes from that state and converges, rewriting nothing already restored', async () => {
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const report = (JSON.parse(r.stdout) as { report: RunReport }).report;
    expect(report.stages.map((st) => st.status)).toEqual(['VERIFIED', 'VERIFIED', 'VERIFIED']);
    expect(report.stages[0]!.units[0]!.writes).toBe(0); // mart was already back
    expect(await s.objects()).toEqual(before.objects);
    expect(await s.rows('staging.orders')).toEqual(before.staging);
    expect(await s.rows('mart.daily_orders')).toEqual(before.mart);
  });

  it('refuses with exit 3 while another run holds the pipeline lock, and touches nothing', async () => {
    const ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    await ledger.acquireLock(s.pipeline, 'someone-else', deployment, 600);
    await s.sql.query(`UPDATE staging.orders SET amount = 0 WHERE id = 1`);
    try {
      const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json');
      expect(r.code).toBe(3);
      const out = JSON.parse(r.stdout) as { error: string; report: RunReport };
      expect(out.error).toBe('LockHeldError');
      expect(out.report.status).toBe('REFUSED');
      expect(out.report.partial).toBe(false);
      expect((await s.sql.query(`SELECT amount FROM staging.orders WHERE id = 1`)).rows[0].amount).toBe('0.00');
      expect((await ledger.getLock(s.pipeline))?.holder).toBe('someone-else');
    } finally {
      await ledger.releaseLock(s.pipeline, 'someone-else');
    }
  });

  it('a snapshot that fails marks the deployment FAILED, and a rollback to it is refused with exit 2', async () => {
    await s.sql.query(`ALTER TABLE mart.daily_orders RENAME TO daily_orders_gone`);
    try {
      const snap = await s.cli('snapshot', s.manifestPath, '--deployment', 'd-broken', '--local', '--json');
      expect(snap.code).toBe(2);
      expect(JSON.parse(snap.stdout)).toMatchObject({ status: 'FAILED', error: 'PreflightError' });
      const ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
      expect((await ledger.getDeployment(s.pipeline, 'd-broken'))?.status).toBe('FAILED');
      const r = await s.cli('rollback', s.manifestPath, '--deployment', 'd-broken', '--local', '--json');
      expect(r.code).toBe(2);
      expect(JSON.parse(r.stdout).cause).toContain('not sealed');
    } finally {
      await s.sql.query(`ALTER TABLE mart.daily_orders_gone RENAME TO daily_orders`);
    }
  });
});
