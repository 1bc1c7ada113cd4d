import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateStateMachineCommand, DescribeExecutionCommand, SFNClient } from '@aws-sdk/client-sfn';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { main } from '../../cli/main.ts';
import { Ledger } from '../../core/ledger/ledger.ts';
import { renderMarkdown, renderReport, type RunReport } from '../../core/report/report.ts';
import { newBucket, put, s3 } from '../adapters/s3/helpers.ts';
import { liveEtags, uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

/**
 * The pipeline's "small ETL definition" in moto (which runs Pass, Wait, Choice and Fail states, not Lambda tasks): a
 * replay of deployment d-bad fails as a broken load would; any other succeeds and echoes what it was given.
 */
const ETL_DEFINITION = {
  StartAt: 'Load',
  States: {
    Load: { Type: 'Wait', Seconds: 1, Next: 'Broken?' },
    'Broken?': { Type: 'Choice', Choices: [{ Variable: '$.deployment', StringEquals: 'd-bad', Next: 'Load failed' }], Default: 'Loaded' },
    'Load failed': { Type: 'Fail', Error: 'OrdersLoadFailed', Cause: 'the nightly load refused the replayed files' },
    Loaded: { Type: 'Pass', Parameters: { 'replayed.$': '$.units', 'deployment.$': '$.deployment' }, End: true },
  },
};

describe('replay after restore: the pipeline\'s own ETL runs on the restored data (real definitions, local runner, moto Step Functions)', () => {
  const sfn = new SFNClient({});
  const pipeline = uniqueName('orders');
  let bucket: string;
  let manifestPath: string;
  let etlArn: string;

  beforeAll(async () => {
    const res = await fetch(`${process.env.AWS_ENDPOINT_URL}/moto-api/config`, { method: 'POST', body: JSON.stringify({ stepfunctions: { execute_state_machine: true } }) });
    expect(res.ok).toBe(true);
    const created = await sfn.send(
      new CreateStateMachineCommand({ name: uniqueName('orders-etl'), definition: JSON.stringify(ETL_DEFINITION), roleArn: 'arn:aws:iam::123456789012:role/orders-etl' }),
    );
    etlArn = created.stateMachineArn!;
    bucket = await newBucket('lake', true);
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-replay-'));
    manifestPath = join(dir, 'orders.yaml');
    writeFileSync(
      manifestPath,
      stringify({
        pipeline,
        units: [{ id: 'raw', type: 's3-prefix', bucket, prefix: 'raw/' }],
        replay: {
          stateMachineArn: etlArn,
          input: { deployment: '{{deploymentId}}', run: '{{runId}}', units: '{{units}}', partitions: '{{partitions}}', note: 'replay of {{pipeline}}' },
          timeoutMinutes: 5,
        },
      }),
    );
  });

  /** A deployment: snapshot, then the bad deploy's damage. Returns the prefix as captured. */
  async function deployBadly(deployment: string): Promise<Record<string, string>> {
    await put(bucket, 'raw/orders-1.csv', `good 1 of ${deployment}`);
    await put(bucket, 'raw/orders-2.csv', `good 2 of ${deployment}`);
    const snap = await cli('snapshot', manifestPath, '--deployment', deployment, '--local', '--json');
    expect(snap.code, snap.stderr + snap.stdout).toBe(0);
    const captured = await liveEtags(s3, bucket, 'raw/');
    await put(bucket, 'raw/orders-1.csv', 'bad');
    await put(bucket, 'raw/orders-3.csv', 'added by the bad deploy');
    return captured;
  }

  async function described(executionArn: string) {
    return sfn.send(new DescribeExecutionCommand({ executionArn }));
  }

  it('a failed replay fails the run (exit 1) with the data restored and verified, and the report says why', async () => {
    const captured = await deployBadly('d-bad');
    const r = await cli('rollback', manifestPath, '--deployment', 'd-bad', '--local', '--json');
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const out = JSON.parse(r.stdout) as { status: string; report: RunReport };
    const report = out.report;
    expect(report.status).toBe('FAILED');
    expect(report.partial).toBe(false);
    expect(report.stages.map((s) => s.status)).toEqual(['VERIFIED']);
    expect(report.error?.name).toBe('ReplayFailedError');
    expect(report.error?.message).toContain('data restored and verified; replay failed');
    expect(report.error?.message).toContain('OrdersLoadFailed: the nightly load refused the replayed files');
    expect(report.replay).toMatchObject({ stateMachineArn: etlArn, status: 'FAILED', error: { name: 'OrdersLoadFailed' } });
    expect(report.replay?.startDate).toBeDefined();
    expect(report.replay?.stopDate).toBeDefined();
    // The data is what the restore point holds, whatever the replay did.
    expect(await liveEtags(s3, bucket, 'raw/')).toEqual(captured);
    // The replay was started with the restored scope: read its input back from Step Functions.
    const execution = await described(report.replay!.executionArn!);
    expect(execution.status).toBe('FAILED');
    expect(JSON.parse(execution.input!)).toEqual({ deployment: 'd-bad', run: report.runId, units: ['raw'], partitions: {}, note: `replay of ${pipeline}` });
    // The terminal report says it in words.
    expect(renderReport(report)).toContain(`data restored and verified; replay failed: execution ${report.replay!.executionArn} FAILED`);
    expect(renderMarkdown(report)).toContain('| replay | data restored and verified; replay failed');

    // Resuming the run replays again: every unit skipped (re-verified by its gate), a new replay execution.
    const resumed = await cli('rollback', manifestPath, '--deployment', 'd-bad', '--local', '--json', '--resume', report.runId);
    expect(resumed.code, resumed.stderr).toBe(1);
    const again = (JSON.parse(resumed.stdout) as { report: RunReport }).report;
    expect(again.skipped).toEqual([{ stage: 0, unitId: 'raw' }]);
    expect(again.totals.writes).toBe(0);
    expect(again.replay?.status).toBe('FAILED');
    expect(again.replay?.executionArn).not.toBe(report.replay?.executionArn);
  });

  it('a replay that succeeds completes the run (exit 0); the report has the execution, its status, start and stop', async () => {
    const captured = await deployBadly('d-good');
    const r = await cli('rollback', manifestPath, '--deployment', 'd-good', '--local', '--json');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const report = (JSON.parse(r.stdout) as { report: RunReport }).report;
    expect(report.status).toBe('SUCCEEDED');
    expect(report.error).toBeUndefined();
    expect(report.replay).toMatchObject({ stateMachineArn: etlArn, status: 'SUCCEEDED' });
    expect(report.replay!.executionArn).toMatch(/:execution:/);
    expect(Date.parse(report.replay!.stopDate!)).toBeGreaterThanOrEqual(Date.parse(report.replay!.startDate!));
    expect(await liveEtags(s3, bucket, 'raw/')).toEqual(captured);
    const execution = await described(report.replay!.executionArn!);
    expect(execution.status).toBe('SUCCEEDED');
    expect(JSON.parse(execution.input!)).toMatchObject({ deployment: 'd-good', run: report.runId, units: ['raw'] });
    expect(JSON.parse(execution.output!)).toEqual({ replayed: ['raw'], deployment: 'd-good' });

    // The runbook written when the run was planned (the start notification links it), and the CLI's with --deployment.
    const stored = await s3.send(new GetObjectCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET, Key: `runbooks/${pipeline}/${report.runId}.md` }));
    const runbook = await stored.Body!.transformToString();
    expect(runbook).toContain(`# Runbook: rollback of ${pipeline} / d-good`);
    expect(runbook).toContain('## Stage 1 of 1: raw');
    expect(runbook).toMatch(/\*\*Restore point:\*\* 2 objects, captured at \d{4}-\d\d-\d\dT/);
    expect(runbook).toContain(`## Replay`);
    const printed = await cli('runbook', manifestPath, '--deployment', 'd-good', '--local');
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stdout).toMatch(/\*\*Restore point:\*\* 2 objects, captured at \d{4}-/);
    expect(printed.stdout).toContain(`etl-rollback rollback ${manifestPath} --deployment d-good --units raw --no-cascade`);
  });
  it('with replay approval: the run asks under <run>-replay after the last gate, and goes on once approved', async () => {
    const approvalPipeline = uniqueName('orders-approved');
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-replay-approval-'));
    const path = join(dir, 'orders.yaml');
    writeFileSync(path, stringify({ pipeline: approvalPipeline, units: [{ id: 'raw', type: 's3-prefix', bucket, prefix: 'approved/' }], replay: { stateMachineArn: etlArn, input: { deployment: '{{deploymentId}}', units: '{{units}}' }, approval: true } }));
    await put(bucket, 'approved/a.csv', 'good');
    expect((await cli('snapshot', path, '--deployment', 'd-ok', '--local')).code).toBe(0);
    await put(bucket, 'approved/a.csv', 'bad');
    const ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    const name = uniqueName('run-replay-approval');
    // The runner (and the handlers it imports) only after this file's environment is set.
    const { runLocal } = await import('../../cli/local-runner.ts');
    const run = runLocal('rollback', { pipeline: approvalPipeline, deploymentId: 'd-ok', requestedBy: 'sam', reason: 'bad load' }, { name });
    const end = Date.now() + 30_000;
    while ((await ledger.getApproval(`${name}-replay`))?.status !== 'PENDING') {
      if (Date.now() > end) throw new Error('no replay approval was asked for');
      await new Promise((r) => setTimeout(r, 100));
    }
    // Asked after every stage verified, before any replay started.
    expect((await ledger.listSteps(name)).map((st) => st.status)).toEqual(['VERIFIED']);
    expect((await ledger.getRun(name))?.replay).toBeUndefined();
    const approved = await cli('approve', `${name}-replay`, '--local', '--by', 'jane', '--reason', 'replay it');
    expect(approved.code, approved.stderr).toBe(0);
    const outcome = await run;
    expect(outcome.status).toBe('SUCCEEDED');
    const report = (outcome as { output: RunReport }).output;
    expect(report.replay).toMatchObject({ status: 'SUCCEEDED' });
    expect(JSON.parse((await described(report.replay!.executionArn!)).input!)).toEqual({ deployment: 'd-ok', units: ['raw'] });
  });

  it('the local runner stops an execution that outlives the task\'s timeout and fails the task with States.Timeout', async () => {
    const slow = await sfn.send(
      new CreateStateMachineCommand({
        name: uniqueName('slow-etl'),
        definition: JSON.stringify({ StartAt: 'Load', States: { Load: { Type: 'Wait', Seconds: 60, End: true } } }),
        roleArn: 'arn:aws:iam::123456789012:role/orders-etl',
      }),
    );
    const name = uniqueName('slow');
    const { startExecutionSync } = await import('../../cli/local-runner.ts');
    const error = await startExecutionSync('Replay pipeline', { StateMachineArn: slow.stateMachineArn, Name: name, Input: { a: 1 }, LocalTimeoutSeconds: 2 }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.name).toBe('States.Timeout');
    const arn = `${slow.stateMachineArn!.replace(':stateMachine:', ':execution:')}:${name}`;
    expect((await described(arn)).status).toBe('ABORTED');
  });
});
