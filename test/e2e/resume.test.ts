import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Context } from 'aws-lambda';
import { Ledger } from '../../core/ledger/ledger.ts';
import { StateStore } from '../../core/runtime/state-store.ts';
import { renderMarkdown, type RunReport } from '../../core/report/report.ts';
import { testS3, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/**
 * Resume (issue 5, item 6): a run that failed at stage 2's gate is resumed as a new run that takes its plan, skips the
 * unit it verified (no adapter call, 0 writes, a "skipped" note) yet still re-verifies it at the gate, and finishes.
 */
describe('rollback --resume <run>: a failed run is finished by a new run, verified units stay verified', () => {
  let s: Scenario;
  let ledger: Ledger;
  let before: { objects: Map<string, string>; staging: unknown[]; mart: unknown[] };
  const deployment = 'd-7';
  const failedRun = uniqueName('run-gate');

  const reportOf = async (runId: string) => {
    const run = await ledger.requireRun(runId);
    return (await new StateStore(testS3(), process.env.ETL_ROLLBACK_STATE_BUCKET!).getJson<RunReport>(run.reportKey!))!;
  };

  beforeAll(async () => {
    s = await createScenario();
    ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    before = { objects: await s.objects(), staging: await s.rows('staging.orders'), mart: await s.rows('mart.daily_orders') };
    const snap = await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local');
    expect(snap.code, snap.stderr).toBe(0);
    await badDeploy(s);
    // A second deployment of the same pipeline: a run of d-7 must not be resumed as a rollback of d-8.
    const other = await s.cli('snapshot', s.manifestPath, '--deployment', 'd-8', '--local');
    expect(other.code, other.stderr).toBe(0);

    // The run that fails: staging's restore "succeeds" without writing (the lost write of failure.test.ts); the gate catches it.
    const { runLocal } = await import('../../cli/local-runner.ts');
    const { handler: realRestore } = await import('../../lambdas/restore-unit.ts');
    const lostWrite = async (event: unknown, context: Context) =>
      (event as { unitId: string }).unitId === 'staging' ? { unitId: 'staging', stage: 1, writes: 0, done: true, waitSeconds: 0, maxPolls: 1 } : realRestore(event, context);
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: deployment }, { name: failedRun, handlers: { RestoreUnit: lostWrite } });
    expect(out, JSON.stringify(out)).toMatchObject({ status: 'FAILED', error: 'VerificationFailedError' });
    expect((await reportOf(failedRun)).stages.map((st) => st.status)).toEqual(['VERIFIED', 'VERIFY_FAILED', 'NOT_STARTED']);
  });
  afterAll(async () => s?.drop());

  it('refuses bad resume inputs before anything is touched: exit 2 (bad input) or 3 (still under way)', async () => {
    const cli = (...extra: string[]) => s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', ...extra);

    // --units / --no-cascade with --resume: refused by the CLI.
    for (const extra of [['--units', 'mart'], ['--no-cascade']]) {
      const r = await cli('--resume', failedRun, ...extra);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('do not give --units or --no-cascade');
    }
    // The same through the console input: the first state names both fields.
    const { runLocal } = await import('../../cli/local-runner.ts');
    const consoleInput = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: deployment, resume: failedRun, units: ['mart'], cascade: false }, { name: uniqueName('console') });
    expect(consoleInput).toMatchObject({ status: 'FAILED', error: 'InputError' });
    expect((consoleInput as { cause: string }).cause).toMatch(/rollback request\.units: cannot be given with "resume"/);
    expect((consoleInput as { cause: string }).cause).toMatch(/rollback request\.cascade: cannot be given with "resume"/);

    // An unknown run; a run of another deployment.
    const unknown = await cli('--resume', 'no-such-run');
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stdout).cause).toContain('there is no such run');
    const otherDeployment = await s.cli('rollback', s.manifestPath, '--deployment', 'd-8', '--local', '--json', '--resume', failedRun);
    expect(otherDeployment.code).toBe(2);
    expect(JSON.parse(otherDeployment.stdout).cause).toContain(`it rolled back ${s.pipeline}/${deployment}, not ${s.pipeline}/d-8`);

    // The run still holds the pipeline's lock (it is under way): refused, exit 3.
    await ledger.acquireLock(s.pipeline, failedRun, deployment, 600);
    try {
      const locked = await cli('--resume', failedRun);
      expect(locked.code).toBe(3);
      expect(JSON.parse(locked.stdout)).toMatchObject({ error: 'LockHeldError' });
      expect(JSON.parse(locked.stdout).cause).toContain('still under way');
    } finally {
      await ledger.releaseLock(s.pipeline, failedRun);
    }
    // Nothing was touched: staging is still the deploy's.
    expect(await s.rows('staging.orders')).not.toEqual(before.staging);
  });

  it('a skipped unit is re-verified: one that drifted since fails its gate, and is not restored', async () => {
    await s.sql.query(`INSERT INTO mart.daily_orders VALUES ('1999-01-01', 1, 1)`);
    try {
      const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--resume', failedRun);
      expect(r.code).toBe(1);
      const report = (JSON.parse(r.stdout) as { report: RunReport }).report;
      expect(report.resumedFrom).toBe(failedRun);
      expect(report.stages.map((st) => st.status)).toEqual(['VERIFY_FAILED', 'NOT_STARTED', 'NOT_STARTED']);
      const mart = report.stages[0]!.units[0]!;
      expect(mart).toMatchObject({ unitId: 'mart', status: 'VERIFY_FAILED', writes: 0, skippedFrom: failedRun });
      expect(mart.notes).toContain(`verified by run ${failedRun}; skipped`);
      // Not restored: the drifted row is still there.
      expect((await s.sql.query(`SELECT count(*)::int AS n FROM mart.daily_orders WHERE day = '1999-01-01'`)).rows[0].n).toBe(1);
    } finally {
      await s.sql.query(`DELETE FROM mart.daily_orders WHERE day = '1999-01-01'`);
    }
  });

  it('--resume finishes the run: a new run, the same plan, stage 1 skipped (0 writes) and re-verified, the restore point reached', async () => {
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--resume', failedRun);
    expect(r.code, r.stderr).toBe(0);
    const report = (JSON.parse(r.stdout) as { report: RunReport }).report;
    expect(report.runId).not.toBe(failedRun);
    expect(report.runId).toMatch(/^resume-/);
    expect(report.status).toBe('SUCCEEDED');
    expect(report.resumedFrom).toBe(failedRun);
    expect(report.trigger).toEqual({ kind: 'manual' });
    expect(report.skipped).toEqual([{ stage: 0, unitId: 'mart' }]);
    expect(report.stages.map((st) => st.units.map((u) => u.unitId))).toEqual([['mart'], ['staging'], ['raw']]);
    expect(report.stages.map((st) => st.status)).toEqual(['VERIFIED', 'VERIFIED', 'VERIFIED']);
    const mart = report.stages[0]!.units[0]!;
    expect(mart).toMatchObject({ status: 'VERIFIED', writes: 0, changes: {}, skippedFrom: failedRun });
    expect(mart.notes).toEqual([`verified by run ${failedRun}; skipped`]);
    expect(mart.checks?.length).toBeGreaterThan(0); // the gate checked it again
    expect(mart.checks?.every((c) => c.ok)).toBe(true);
    expect(report.stages[1]!.units[0]!.writes).toBeGreaterThan(0); // staging was restored by this run
    expect(report.stages[2]!.units[0]!.writes).toBeGreaterThan(0);

    const run = await ledger.requireRun(report.runId);
    expect(run).toMatchObject({ resumedFrom: failedRun, trigger: { kind: 'manual' }, scope: ['mart', 'staging', 'raw'] });
    expect((await ledger.getDeployment(s.pipeline, deployment))?.status).toBe('ROLLED_BACK');
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();

    expect(await s.objects()).toEqual(before.objects);
    expect(await s.rows('staging.orders')).toEqual(before.staging);
    expect(await s.rows('mart.daily_orders')).toEqual(before.mart);

    const md = renderMarkdown(await reportOf(report.runId));
    expect(md).toContain(`| resumed from | \`${failedRun}\` |`);
    expect(md).toContain('| trigger | manual |');

    // A SUCCEEDED run cannot be resumed: exit 2.
    const again = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--resume', report.runId);
    expect(again.code).toBe(2);
    expect(JSON.parse(again.stdout).cause).toContain('it SUCCEEDED');
  });

  it('the trigger a console input names is recorded with the run (and a console input without one is manual)', async () => {
    const { runLocal } = await import('../../cli/local-runner.ts');
    const trigger = { kind: 'eventbridge', source: 'aws.cloudwatch', detailType: 'CloudWatch Alarm State Change', summary: 'CloudWatch alarm orders-dq entered ALARM' };
    const named = uniqueName('dry-trigger');
    expect(await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-8', dryRun: true, trigger }, { name: named })).toMatchObject({ status: 'SUCCEEDED' });
    expect((await ledger.requireRun(named)).trigger).toEqual(trigger);
    expect((await reportOf(named)).trigger).toEqual(trigger);
    const plain = uniqueName('dry-console');
    expect(await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-8', dryRun: true }, { name: plain })).toMatchObject({ status: 'SUCCEEDED' });
    expect((await ledger.requireRun(plain)).trigger).toEqual({ kind: 'manual' });
    const bad = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-8', trigger: { kind: 'cron' } }, { name: uniqueName('bad-trigger') });
    expect(bad).toMatchObject({ status: 'FAILED', error: 'InputError' });
    expect((bad as { cause: string }).cause).toContain('rollback request.trigger.kind');
  });
});
