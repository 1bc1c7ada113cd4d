import { beforeAll, describe, expect, it } from 'vitest';
import { CreateStateMachineCommand, ListExecutionsCommand, SFNClient } from '@aws-sdk/client-sfn';
import { main } from '../../cli/main.ts';
import { uniqueName } from '../support/aws.ts';

/**
 * Without --local the CLI starts an execution of the deployed state machine and follows it. moto runs Step
 * Functions definitions but cannot run our Lambda tasks (no Docker), so the machines here are stand-ins made
 * of Pass/Fail states with the outputs and errors the real machines produce; what is under test is the CLI's
 * start → follow → report → exit-code path over the real Step Functions API.
 */
const sfn = new SFNClient({});

async function machine(definition: object): Promise<string> {
  const out = await sfn.send(
    new CreateStateMachineCommand({ name: uniqueName('rollback'), roleArn: 'arn:aws:iam::123456789012:role/etl-rollback', definition: JSON.stringify(definition) }),
  );
  return out.stateMachineArn!;
}

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

const report = {
  runId: 'r-1',
  pipeline: 'orders',
  deploymentId: 'd-1',
  status: 'SUCCEEDED',
  dryRun: false,
  requestedBy: 'ci',
  reason: '',
  startedAt: '2026-11-29T00:00:00.000Z',
  partial: false,
  totals: { writes: 3, changes: { rowsUpdated: 3 } },
  stages: [{ index: 0, status: 'VERIFIED', units: [{ unitId: 'mart', type: 'postgres-table', status: 'VERIFIED', changes: { rowsUpdated: 3 }, writes: 3, notes: [] }] }],
};

describe('rollback against the deployed state machine (Step Functions API)', () => {
  beforeAll(async () => {
    const res = await fetch(`${process.env.AWS_ENDPOINT_URL}/moto-api/config`, {
      method: 'POST',
      body: JSON.stringify({ stepfunctions: { execute_state_machine: true } }),
    });
    expect(res.ok).toBe(true);
  });

  it('starts an execution with the plain JSON input, follows it, prints the report and exits 0', async () => {
    const arn = await machine({ StartAt: 'Finish run', States: { 'Finish run': { Type: 'Pass', Result: report, End: true } } });
    const r = await cli('rollback', 'examples/orders.yaml', '--deployment', 'd-1', '--units', 'mart', '--state-machine-arn', arn, '--reason', 'bad mart');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('› started arn:aws:states:');
    expect(r.stdout).toContain('mart (postgres-table): VERIFIED — rowsUpdated 3');
    const executions = await sfn.send(new ListExecutionsCommand({ stateMachineArn: arn }));
    expect(executions.executions).toHaveLength(1);
    expect(executions.executions![0]!.name).toMatch(/^rollback-orders-d-1-/);
  });

  it('exits 3 when the machine ends refused (pipeline locked), 1 when it fails', async () => {
    const refused = await machine({ StartAt: 'Rollback refused', States: { 'Rollback refused': { Type: 'Fail', Error: 'LockHeldError', Cause: 'pipeline "orders" is locked' } } });
    const r = await cli('rollback', 'examples/orders.yaml', '--deployment', 'd-1', '--state-machine-arn', refused);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('rollback refused: LockHeldError');
    const failed = await machine({ StartAt: 'Rollback failed', States: { 'Rollback failed': { Type: 'Fail', Error: 'VerificationFailedError', Cause: 'stage 1 did not verify' } } });
    const f = await cli('rollback', 'examples/orders.yaml', '--deployment', 'd-1', '--json', '--state-machine-arn', failed);
    expect(f.code).toBe(1);
    expect(JSON.parse(f.stdout)).toMatchObject({ status: 'FAILED', error: 'VerificationFailedError' });
  });

  it('snapshot --until in-place returns once the restore points are in place (the deploy may start), while the execution seals on', async () => {
    const arn = await machine({
      StartAt: 'Restore points in place',
      States: {
        'Restore points in place': { Type: 'Pass', Result: { pipeline: 'orders', deploymentId: 'd-1', status: 'IN_PLACE', sealing: ['mart'] }, ResultPath: '$.inPlace', Next: 'Seal units' },
        'Seal units': { Type: 'Wait', Seconds: 600, Next: 'Seal restore points' },
        'Seal restore points': { Type: 'Pass', Result: { status: 'READY', points: [] }, End: true },
      },
    });
    const r = await cli('snapshot', 'examples/orders.yaml', '--deployment', 'd-1', '--until', 'in-place', '--state-machine-arn', arn);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('restore points of orders/d-1 in place: the deploy may start');
    expect(r.stdout).toMatch(/sealing mart while it runs \(a rollback waits for the seal\): arn:aws:states:.*:execution:/);
    const executions = await sfn.send(new ListExecutionsCommand({ stateMachineArn: arn }));
    expect(executions.executions![0]!.status).toBe('RUNNING');
  });

  it('without --local and without a state machine ARN, says which option is missing and exits 2', async () => {
    const r = await cli('rollback', 'examples/orders.yaml', '--deployment', 'd-1');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--state-machine-arn');
  });
});
