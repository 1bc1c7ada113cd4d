import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DescribeRuleCommand, EventBridgeClient, PutRuleCommand } from '@aws-sdk/client-eventbridge';
import type { Context } from 'aws-lambda';
import { parse, stringify } from 'yaml';
import { Ledger } from '../../core/ledger/ledger.ts';
import { renderMarkdown, renderReport, type RunReport } from '../../core/report/report.ts';
import { StateStore } from '../../core/runtime/state-store.ts';
import { testDynamo, testS3, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';
import { nonUtcTimes } from '../support/times.ts';

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

type RunLocal = typeof import('../../cli/local-runner.ts').runLocal;
type Handler = (event: unknown, context: Context) => Promise<unknown>;

const CLI = fileURLToPath(new URL('../../bin/etl-rollback.mjs', import.meta.url));

/**
 * Issue 10, part 5: a rollback cancelled at its next safe point ends CANCELLED through the failure path (the pipeline's
 * paused rule enabled again, the lock released, the deployment's status put back when nothing was restored); one stopped
 * at once is cleaned up by the abort handler; `--resume` finishes either, the data equal to the restore point.
 */
describe('cancel a rollback at the next safe point, or stop it at once; --resume finishes it', () => {
  let s: Scenario;
  let ledger: Ledger;
  let runLocal: RunLocal;
  let realRestore: Handler;
  let before: { objects: Map<string, string>; staging: unknown[]; mart: unknown[] };
  const events = new EventBridgeClient({});
  const rule = uniqueName('orders-load');
  const deployment = 'd-1';
  let gatedManifest: string;

  const ruleState = async () => (await events.send(new DescribeRuleCommand({ Name: rule }))).State;
  const reportOf = async (runId: string) => (await new StateStore(testS3(), process.env.ETL_ROLLBACK_STATE_BUCKET!).getJson<RunReport>((await ledger.requireRun(runId)).reportKey!))!;
  /** The bad deploy, unless the data is still damaged from the last one (it is not repeatable as is). */
  const damage = async () => {
    if ((await s.sql.query('SELECT 1 FROM staging.orders WHERE id = 501')).rowCount === 0) await badDeploy(s);
  };
  const expectRestored = async () => {
    expect(await s.objects()).toEqual(before.objects);
    expect(await s.rows('staging.orders')).toEqual(before.staging);
    expect(await s.rows('mart.daily_orders')).toEqual(before.mart);
  };
  const expectCleanedUp = async () => {
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();
    expect(await ruleState()).toBe('ENABLED');
  };

  beforeAll(async () => {
    s = await createScenario();
    ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    before = { objects: await s.objects(), staging: await s.rows('staging.orders'), mart: await s.rows('mart.daily_orders') };
    await events.send(new PutRuleCommand({ Name: rule, ScheduleExpression: 'rate(1 hour)', State: 'ENABLED' }));
    const manifest = parse(readFileSync(s.manifestPath, 'utf8')) as Record<string, unknown>;
    const pause = { rules: [{ name: rule }] };
    writeFileSync(s.manifestPath, stringify({ ...manifest, policy: { pause } }));
    gatedManifest = s.manifestPath.replace(/\.yaml$/, '-gated.yaml');
    writeFileSync(gatedManifest, stringify({ ...manifest, policy: { pause, approval: { required: true, timeoutMinutes: 60 } } }));
    for (const [file, id] of [[s.manifestPath, deployment], [gatedManifest, 'd-gated']] as const) {
      const snap = await s.cli('snapshot', file, '--deployment', id, '--local');
      expect(snap.code, snap.stderr).toBe(0);
    }
    await badDeploy(s);
    ({ runLocal } = await import('../../cli/local-runner.ts'));
    ({ handler: realRestore } = await import('../../lambdas/restore-unit.ts'));
  });
  afterAll(async () => s?.drop());

  it('`cancel`: exit 2 for an unknown run; a request before the first stage stops the run with nothing restored and the deployment as it was', async () => {
    const unknown = await s.cli('cancel', 'no-such-run', '--local');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('there is no such run');

    // Asked before the run's first safe point (Ctrl-C at once): found before stage 1.
    const runId = uniqueName('run-early');
    await ledger.requestCancel({ runId, requestedBy: 'oncall', reason: 'wrong deployment', requestedAt: '2026-11-29T09:30:00Z' });
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: deployment }, { name: runId });
    expect(out).toMatchObject({ status: 'FAILED', error: 'RunCancelled' });
    expect((out as { cause: string }).cause).toContain('cancelled by oncall at 2026-11-29T09:30:00Z (wrong deployment); stopped before it locked or restored anything');
    const run = await ledger.requireRun(runId);
    expect(run.status).toBe('CANCELLED');
    expect(await ledger.listSteps(runId)).toEqual([]);
    expect((await ledger.getDeployment(s.pipeline, deployment))?.status).toBe('READY');
    expect((await reportOf(runId)).partial).toBe(false);
    await expectCleanedUp();
    expect(await s.rows('staging.orders')).not.toEqual(before.staging);

    // An ended run: nothing to cancel, exit 0, nothing recorded.
    const ended = await s.cli('cancel', runId, '--local');
    expect(ended.code).toBe(0);
    expect(ended.stdout).toContain(`run ${runId} has already ended (CANCELLED): nothing to cancel`);
  });

  it('a run in AWS waiting for approval: `cancel` records the request and answers the waiting task with SendTaskFailure (a token no longer waiting is not an error)', async () => {
    const runId = uniqueName('run-remote');
    await ledger.createRun({
      runId,
      pipeline: s.pipeline,
      deploymentId: 'd-gated',
      status: 'RUNNING',
      dryRun: false,
      requested: ['raw'],
      scope: ['mart', 'staging', 'raw'],
      stages: [{ index: 0, units: ['mart'] }],
      reasons: {},
      requestedBy: 'ci',
      reason: '',
      startedAt: '2026-11-29T09:00:00.000Z',
    });
    await ledger.putApprovalRequest({ runId, pipeline: s.pipeline, deploymentId: 'd-gated', taskToken: 'AAAA-not-a-live-token', requestedAt: '2026-11-29T09:00:00.000Z', deadline: '2026-11-29T10:00:00Z', timeoutSeconds: 3600, requestedBy: 'ci', allowSelfApproval: false });
    const r = await s.cli('cancel', runId, '--json', '--by', 'oncall');
    expect(r.code, r.stderr).toBe(0);
    // moto takes any task token, unless another test file on the same server has told it to execute definitions: then
    // it answers TaskDoesNotExist for a token it never issued, which cancel treats as "no longer waiting" (the run then
    // finds the request at its next safe point). Either way the request is recorded and the CLI succeeds.
    const answered = JSON.parse(r.stdout) as { answeredApproval: boolean };
    expect(answered).toMatchObject({ runId, outcome: 'recorded', status: 'RUNNING', request: { requestedBy: 'oncall' } });
    expect(typeof answered.answeredApproval).toBe('boolean');
    expect(await ledger.getCancelRequest(runId)).toMatchObject({ requestedBy: 'oncall' });
    // A second request keeps the first.
    const again = await s.cli('cancel', runId, '--local', '--by', 'someone-else');
    expect(again.stdout).toContain(`run ${runId}: cancel already requested by oncall at`);
    // With --local only the ledger is written: no answer is sent.
    expect(JSON.parse((await s.cli('cancel', runId, '--local', '--json')).stdout)).toMatchObject({ outcome: 'already', answeredApproval: false });
  });

  it('a cancel requested during stage 1 lets stage 1 finish and verify, then stops: CANCELLED, stage 2 untouched; --resume completes it', async () => {
    const runId = uniqueName('run-between');
    // The request arrives while stage 1 (mart) is being restored, through the CLI as an operator would send it.
    const cancelDuringStage1: Handler = async (event, context) => {
      if ((event as { unitId: string }).unitId === 'mart') {
        const r = await s.cli('cancel', runId, '--local', '--by', 'oncall', '--reason', 'stop after this stage');
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toMatch(new RegExp(`run ${runId}: cancel requested by oncall at \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ; it stops at its next safe point`));
      }
      return realRestore(event, context);
    };
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: deployment }, { name: runId, handlers: { RestoreUnit: cancelDuringStage1 } });
    expect(out).toMatchObject({ status: 'FAILED', error: 'RunCancelled' });
    expect((out as { cause: string }).cause).toContain('stopped before stage 2 (stage 1 restored and verified)');

    const report = await reportOf(runId);
    expect(report.status).toBe('CANCELLED');
    expect(report.partial).toBe(true);
    expect(report.stages.map((st) => st.status)).toEqual(['VERIFIED', 'NOT_STARTED', 'NOT_STARTED']);
    expect(await s.rows('mart.daily_orders')).toEqual(before.mart);
    expect(await s.rows('staging.orders')).not.toEqual(before.staging); // stage 2 untouched
    expect((await ledger.getDeployment(s.pipeline, deployment))?.status).toBe('ROLLBACK_FAILED');
    await expectCleanedUp();

    const resumed = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--resume', runId);
    expect(resumed.code, resumed.stderr).toBe(0);
    const done = (JSON.parse(resumed.stdout) as { report: RunReport }).report;
    expect(done).toMatchObject({ status: 'SUCCEEDED', resumedFrom: runId, skipped: [{ stage: 0, unitId: 'mart' }] });
    expect(done.stages.map((st) => st.status)).toEqual(['VERIFIED', 'VERIFIED', 'VERIFIED']);
    await expectRestored();
    await expectCleanedUp();
  });

  it('stopped at once mid-stage (StopExecution): the abort handler records CANCELLED "stopped mid-stage", resumes triggers, releases the lock; --resume restores the stage again', async () => {
    await damage();
    const runId = uniqueName('run-aborted');
    const stop = new AbortController();
    // Stage 2 (staging) is restored, then the execution is stopped before its gate: half a stage, as a console Stop leaves it.
    const stopAfterStaging: Handler = async (event, context) => {
      const result = await realRestore(event, context);
      if ((event as { unitId: string }).unitId === 'staging') stop.abort();
      return result;
    };
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: deployment }, { name: runId, handlers: { RestoreUnit: stopAfterStaging }, signal: stop.signal });
    expect(out).toMatchObject({ status: 'FAILED', error: 'ExecutionAborted' });
    // Nothing of the failure path ran: the run is still RUNNING, holding the lock, the rule disabled.
    expect((await ledger.requireRun(runId)).status).toBe('RUNNING');
    expect((await ledger.getLock(s.pipeline))?.holder).toBe(runId);
    expect(await ruleState()).toBe('DISABLED');

    // The rule's event for the stopped execution, as EventBridge delivers it (test/fixtures/events).
    const fixture = JSON.parse(readFileSync(new URL('../fixtures/events/step-functions-execution-aborted.json', import.meta.url), 'utf8')) as { detail: Record<string, unknown> };
    const event = { ...fixture, detail: { ...fixture.detail, name: runId, executionArn: `arn:aws:states:us-east-1:123456789012:execution:rollback:${runId}` } };
    const { handler } = await import('../../lambdas/cancel-stopped-run.ts');
    const context = { functionName: 'cancel-stopped-run', awsRequestId: 'r-1', getRemainingTimeInMillis: () => 30_000 } as unknown as Context;
    const cleaned = (await handler(event, context)) as { outcome: string; status: string; resumed: string[]; lockReleased: boolean };
    expect(cleaned).toMatchObject({ outcome: 'cleaned', status: 'CANCELLED', lockReleased: true });
    expect(cleaned.resumed).toEqual([`rule ${rule}`]);
    await expectCleanedUp();
    const run = await ledger.requireRun(runId);
    expect(run.error).toMatchObject({ name: 'RunCancelled' });
    expect(run.error?.message).toContain('stopped mid-stage: resume it');
    expect((await reportOf(runId)).stages.map((st) => st.status)).toEqual(['VERIFIED', 'RESTORED_UNVERIFIED', 'NOT_STARTED']);
    // Delivered twice: the run keeps its record.
    expect(await handler(event, context)).toMatchObject({ outcome: 'ended', status: 'CANCELLED', lockReleased: false });
    // Not an execution of a rollback run of ours: left alone.
    expect(await handler({ ...event, detail: { ...event.detail, name: 'not-a-run' } }, context)).toMatchObject({ outcome: 'unknown' });

    const resumed = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--resume', runId);
    expect(resumed.code, resumed.stderr).toBe(0);
    const done = (JSON.parse(resumed.stdout) as { report: RunReport }).report;
    expect(done.skipped).toEqual([{ stage: 0, unitId: 'mart' }]); // staging was only RESTORED, not VERIFIED: restored again
    expect(done.stages.map((st) => st.status)).toEqual(['VERIFIED', 'VERIFIED', 'VERIFIED']);
    await expectRestored();
    await expectCleanedUp();
  });

  /**
   * A real `etl-rollback rollback --local` of the gated deployment, sent `signals` once it waits for approval. Two
   * signals are SIGINT and SIGTERM (the CLI treats both alike): two SIGINTs sent at once may reach the process as one.
   */
  async function interruptedRollback(signals: NodeJS.Signals[]): Promise<{ code: number | null; stderr: string; result: { status: string; error: string; report: RunReport } }> {
    await damage();
    const child = spawn(process.execPath, [CLI, 'rollback', gatedManifest, '--deployment', 'd-gated', '--local', '--json'], { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const waiting = new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('waiting for approval')) resolve();
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await Promise.race([waiting, exited]);
    expect(stderr).toContain('waiting for approval');
    for (const signal of signals) child.kill(signal);
    const code = await exited;
    return { code, stderr, result: JSON.parse(stdout) as { status: string; error: string; report: RunReport } };
  }

  it('SIGINT to a real `rollback --local` waiting for approval: "cancelling at the next safe point", exit 1, CANCELLED, lock released', async () => {
    const { code, stderr, result } = await interruptedRollback(['SIGINT']);
    expect(stderr).toContain('cancelling at the next safe point (Ctrl-C again to stop now)');
    expect(code, stderr).toBe(1);
    expect(result).toMatchObject({ status: 'FAILED', error: 'RunCancelled' });
    expect(result.report.status).toBe('CANCELLED');
    const run = await ledger.requireRun(result.report.runId);
    expect(run.status).toBe('CANCELLED');
    expect(run.error?.message).toContain('stopped while waiting for approval (nothing restored)');
    expect((await ledger.getDeployment(s.pipeline, 'd-gated'))?.status).toBe('READY');
    await expectCleanedUp();
  }, 30_000);

  it('a second signal stops it at once; the cleanup still runs: CANCELLED "stopped mid-stage", exit 1, triggers resumed, lock released', async () => {
    const { code, stderr, result } = await interruptedRollback(['SIGINT', 'SIGTERM']);
    expect(stderr).toContain('stopping now (the cleanup still runs)');
    expect(code, stderr).toBe(1);
    expect(result).toMatchObject({ status: 'FAILED', error: 'RunCancelled' });
    expect(result.report.status).toBe('CANCELLED');
    const run = await ledger.requireRun(result.report.runId);
    expect(run.status).toBe('CANCELLED');
    expect(run.error?.message).toContain('stopped mid-stage: resume it');
    await expectCleanedUp();
  }, 30_000);

  it('every time the CLI prints about these runs is ISO-8601 UTC with Z: status, history, reports (text, Markdown, JSON), cancel', async () => {
    const outputs: Record<string, string> = {};
    for (const json of [[], ['--json']]) {
      for (const cmd of ['status', 'history']) {
        const r = await s.cli(cmd, s.pipeline, '--local', ...json);
        expect(r.code, r.stderr).toBe(0);
        outputs[`${cmd} ${json.join('')}`] = r.stdout;
      }
    }
    const runs = (await ledger.listRunIndex(s.pipeline, 20)).map((r) => r.runId);
    expect(runs.length).toBeGreaterThanOrEqual(7);
    for (const runId of runs) {
      const report = await reportOf(runId);
      outputs[`report ${runId}`] = `${renderReport(report)}\n${renderMarkdown(report)}\n${JSON.stringify(report)}`;
      outputs[`cancel ${runId}`] = (await s.cli('cancel', runId, '--local', '--json')).stdout;
    }
    expect(outputs['history ']).toContain('CANCELLED');
    const times = Object.values(outputs).join('\n').match(/\d{4}-\d{2}-\d{2}T[\d:.]+Z/g) ?? [];
    expect(times.length).toBeGreaterThan(20);
    for (const [what, text] of Object.entries(outputs)) expect(nonUtcTimes(text), what).toEqual([]);
  });
});
