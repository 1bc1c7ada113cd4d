import { CreateStateMachineCommand, DescribeExecutionCommand, ListExecutionsCommand, SFNClient, StopExecutionCommand } from '@aws-sdk/client-sfn';
import type { Context } from 'aws-lambda';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureLedgerTable, Ledger } from '../../core/ledger/ledger.ts';
import { automaticExecutionName, MAX_AUTOMATIC_ATTEMPTS, startRollbackFromEvent, type TriggerDeps, type TriggerMetric } from '../../core/workflow/trigger.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';
import { alarmEvent, deploymentFailedEvent, etlEvent, type FixtureEvent } from './events.ts';

/**
 * Resolve-and-start against moto's Step Functions API and a moto DynamoDB ledger. moto cannot run our Lambda tasks,
 * so the rollback machine is a stand-in whose one state waits an hour: an execution stays RUNNING until the test stops
 * it, as a real rollback would while it restores. What the machine would write to the ledger when a run ends (the run
 * FAILED, the deployment ROLLBACK_FAILED) the test writes itself, through the same Ledger methods the tasks use.
 */
const sfn = new SFNClient({});
const dynamo = testDynamo();
const table = uniqueName('ledger');
const ledger = new Ledger(dynamo, table);
const ETL_MACHINE = 'arn:aws:states:us-east-1:123456789012:stateMachine:orders-etl';

async function standInRollbackMachine(): Promise<string> {
  const definition = { StartAt: 'Restore stage', States: { 'Restore stage': { Type: 'Wait', Seconds: 3600, End: true } } };
  const out = await sfn.send(
    new CreateStateMachineCommand({ name: uniqueName('rollback'), roleArn: 'arn:aws:iam::123456789012:role/etl-rollback', definition: JSON.stringify(definition) }),
  );
  return out.stateMachineArn!;
}

interface Observed {
  deps: TriggerDeps;
  metrics: TriggerMetric[];
  errors: { message: string; extra?: Record<string, unknown> }[];
}

function observed(rollbackStateMachineArn: string): Observed {
  const metrics: TriggerMetric[] = [];
  const errors: Observed['errors'] = [];
  return {
    metrics,
    errors,
    deps: {
      ledger,
      sfn,
      rollbackStateMachineArn,
      now: () => new Date(),
      log: { info: () => undefined, warn: () => undefined, error: (message, extra) => errors.push({ message, extra }) },
      metric: (name) => metrics.push(name),
    },
  };
}

async function deployment(pipeline: string, deploymentId: string, status: 'READY' | 'SNAPSHOTTING' | 'IN_PLACE' | 'ROLLED_BACK' | 'ROLLBACK_FAILED' = 'READY') {
  await ledger.registerDeployment({ pipeline, deploymentId, manifestKey: `deployments/${pipeline}/${deploymentId}/manifest.json`, units: ['raw'] });
  if (status !== 'SNAPSHOTTING') await ledger.setDeploymentStatus(pipeline, deploymentId, status);
}

async function executions(arn: string) {
  return (await sfn.send(new ListExecutionsCommand({ stateMachineArn: arn }))).executions ?? [];
}

/** What the rollback machine records when its run ends unsuccessfully: the run FAILED, the deployment ROLLBACK_FAILED. */
async function runEndedFailed(pipeline: string, deploymentId: string, runId: string, executionArn: string): Promise<void> {
  await sfn.send(new StopExecutionCommand({ executionArn, error: 'VerificationFailedError', cause: 'stage 1 did not verify' }));
  const at = new Date().toISOString();
  await ledger.createRun({
    runId,
    pipeline,
    deploymentId,
    status: 'FAILED',
    dryRun: false,
    requested: ['raw'],
    scope: ['raw'],
    stages: [{ index: 0, units: ['raw'] }],
    reasons: {},
    requestedBy: 'eventbridge:aws.cloudwatch',
    reason: '',
    startedAt: at,
    endedAt: at,
  });
  await ledger.setDeploymentStatus(pipeline, deploymentId, 'ROLLBACK_FAILED', { name: 'VerificationFailedError', message: 'stage 1 did not verify' });
}

/** A storm of distinct events that all say the same deploy went wrong: ETL failure, alarm, custom event, repeated. */
function storm(pipeline: string, n: number): FixtureEvent[] {
  return Array.from({ length: n }, (_, i) => {
    const event = i % 3 === 0 ? etlEvent('step-functions-execution-failed', ETL_MACHINE, 'nightly-1') : i % 3 === 1 ? alarmEvent('orders-errors') : deploymentFailedEvent({ pipeline, reason: 'totals doubled' });
    return { ...event, id: `event-${i}` };
  });
}

describe('starting the rollback from an EventBridge event (moto Step Functions + DynamoDB)', () => {
  beforeAll(async () => {
    const res = await fetch(`${process.env.AWS_ENDPOINT_URL}/moto-api/config`, { method: 'POST', body: JSON.stringify({ stepfunctions: { execute_state_machine: true } }) });
    expect(res.ok).toBe(true);
    await ensureLedgerTable(dynamo, table);
  });

  it('20 identical events, one after another, start exactly one execution, named for attempt 1, with the same input', async () => {
    const machine = await standInRollbackMachine();
    const { deps } = observed(machine);
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-41');
    await new Promise((r) => setTimeout(r, 5));
    await deployment(pipeline, 'd-42'); // the most recent one is the current deployment

    const event = etlEvent('step-functions-execution-failed', ETL_MACHINE, 'nightly-1');
    const outcomes = [];
    for (let i = 0; i < 20; i++) outcomes.push(await startRollbackFromEvent(deps, { pipeline, event }));

    const name = automaticExecutionName(pipeline, 'd-42', 1);
    const list = await executions(machine);
    expect(list.map((e) => e.name)).toEqual([name]);
    expect(outcomes[0]).toMatchObject({ outcome: 'STARTED', deploymentId: 'd-42', attempt: 1, executionName: name, executionArn: list[0]!.executionArn });
    for (const o of outcomes) expect(o).toMatchObject({ deploymentId: 'd-42', attempt: 1, executionArn: list[0]!.executionArn });
    const described = await sfn.send(new DescribeExecutionCommand({ executionArn: list[0]!.executionArn }));
    expect(described.status).toBe('RUNNING');
    expect(JSON.parse(described.input!)).toEqual({
      pipeline,
      deploymentId: 'd-42',
      reason: 'ETL execution nightly-1 of state machine orders-etl FAILED (States.Runtime)',
      requestedBy: 'eventbridge:aws.states',
      // The trigger, recorded with the run and shown in its report: nothing in it varies between identical events.
      trigger: {
        kind: 'eventbridge',
        source: 'aws.states',
        detailType: 'Step Functions Execution Status Change',
        summary: 'ETL execution nightly-1 of state machine orders-etl FAILED (States.Runtime)',
      },
    });
    // The input is a valid rollback request (the machine's first state accepts it).
    const { rollbackRequestSchema } = await import('../../core/workflow/requests.ts');
    expect(rollbackRequestSchema.safeParse(JSON.parse(described.input!)).success).toBe(true);
    // One event id, one trigger record (EventBridge redelivers an event with its id).
    const records = await ledger.listTriggers(pipeline);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ outcome: 'STARTED', deploymentId: 'd-42', executionName: name, attempt: 1 });
  });

  it('20 identical events at once start exactly one execution', async () => {
    const machine = await standInRollbackMachine();
    const { deps } = observed(machine);
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-8');
    const event = alarmEvent('orders-errors');
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => startRollbackFromEvent(deps, { pipeline, event })));
    const list = await executions(machine);
    expect(list.map((e) => e.name)).toEqual([automaticExecutionName(pipeline, 'd-8', 1)]);
    for (const o of outcomes) expect(o).toMatchObject({ attempt: 1, executionArn: list[0]!.executionArn });
  });

  it('20 different events at once (ETL failure, alarm, Deployment Failed) start exactly one execution', async () => {
    const machine = await standInRollbackMachine();
    const { deps } = observed(machine);
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-7');

    const outcomes = await Promise.all(storm(pipeline, 20).map((event) => startRollbackFromEvent(deps, { pipeline, event })));

    const list = await executions(machine);
    expect(list).toHaveLength(1);
    expect(list[0]!.name).toBe(automaticExecutionName(pipeline, 'd-7', 1));
    expect(new Set(outcomes.map((o) => o.outcome))).toEqual(new Set(['STARTED', 'ALREADY_STARTED']));
    for (const o of outcomes) expect(o).toMatchObject({ attempt: 1, executionArn: list[0]!.executionArn });
    // Each event is on the record, with what it did.
    const records = await ledger.listTriggers(pipeline);
    expect(records).toHaveLength(20);
    expect(records.every((r) => r.executionName === list[0]!.name)).toBe(true);
  });

  it('an execution that closed before its run was recorded keeps its name: later events report it, start nothing', async () => {
    const machine = await standInRollbackMachine();
    const { deps } = observed(machine);
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-1');
    const first = await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(first.outcome).toBe('STARTED');
    await sfn.send(new StopExecutionCommand({ executionArn: (first as { executionArn: string }).executionArn }));

    const again = await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(again).toMatchObject({ outcome: 'ALREADY_STARTED', attempt: 1, executionArn: (first as { executionArn: string }).executionArn });
    expect(await executions(machine)).toHaveLength(1);
  });

  it('after the first run finished (failed), a new event starts attempt 2, once; attempts stop at the maximum', async () => {
    const machine = await standInRollbackMachine();
    const { deps, metrics } = observed(machine);
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-9');

    const first = await startRollbackFromEvent(deps, { pipeline, event: deploymentFailedEvent({ pipeline, deploymentId: 'd-9' }) });
    expect(first).toMatchObject({ outcome: 'STARTED', attempt: 1 });
    // While attempt 1 runs, more events start nothing new.
    await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(await executions(machine)).toHaveLength(1);

    await runEndedFailed(pipeline, 'd-9', automaticExecutionName(pipeline, 'd-9', 1), (first as { executionArn: string }).executionArn);
    const retries = await Promise.all(storm(pipeline, 10).map((event) => startRollbackFromEvent(deps, { pipeline, event: { ...event, id: `retry-${event.id}` } })));
    for (const r of retries) expect(r).toMatchObject({ deploymentId: 'd-9', attempt: 2, executionName: automaticExecutionName(pipeline, 'd-9', 2) });
    const names = (await executions(machine)).map((e) => e.name).sort();
    expect(names).toEqual([automaticExecutionName(pipeline, 'd-9', 1), automaticExecutionName(pipeline, 'd-9', 2)].sort());

    // Attempts 2 and 3 fail too: the next trigger is refused, nothing more is started.
    const second = retries[0] as { executionArn: string };
    await runEndedFailed(pipeline, 'd-9', automaticExecutionName(pipeline, 'd-9', 2), second.executionArn);
    const third = await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(third).toMatchObject({ outcome: 'STARTED', attempt: 3 });
    await runEndedFailed(pipeline, 'd-9', automaticExecutionName(pipeline, 'd-9', 3), (third as { executionArn: string }).executionArn);
    const refused = await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(refused).toMatchObject({ outcome: 'REFUSED', code: 'ATTEMPTS_EXHAUSTED' });
    expect(MAX_AUTOMATIC_ATTEMPTS).toBe(3);
    expect(await executions(machine)).toHaveLength(3);
    expect(metrics).toContain('TriggerRefused');
  });

  it('a REJECTED run is not re-asked: the next identical alarms within the attempt are answered "already started"', async () => {
    const machine = await standInRollbackMachine();
    const { deps } = observed(machine);
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-6');
    const first = await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(first).toMatchObject({ outcome: 'STARTED', attempt: 1 });
    // What the machine records when the approver says no: the run REJECTED, the deployment back to READY, the lock released.
    const name = automaticExecutionName(pipeline, 'd-6', 1);
    await sfn.send(new StopExecutionCommand({ executionArn: (first as { executionArn: string }).executionArn, error: 'ApprovalRejectedError', cause: 'not now' }));
    const at = new Date().toISOString();
    await ledger.createRun({
      runId: name,
      pipeline,
      deploymentId: 'd-6',
      status: 'REJECTED',
      dryRun: false,
      requested: ['raw'],
      scope: ['raw'],
      stages: [{ index: 0, units: ['raw'] }],
      reasons: {},
      requestedBy: 'eventbridge:aws.cloudwatch',
      reason: '',
      startedAt: at,
      endedAt: at,
      trigger: { kind: 'eventbridge', source: 'aws.cloudwatch', detailType: 'CloudWatch Alarm State Change' },
    });

    const again = await Promise.all(Array.from({ length: 5 }, (_, i) => startRollbackFromEvent(deps, { pipeline, event: { ...alarmEvent('orders-errors'), id: `after-no-${i}` } })));
    for (const o of again) expect(o).toMatchObject({ outcome: 'ALREADY_STARTED', attempt: 1, executionName: name });
    expect((await executions(machine)).map((e) => e.name)).toEqual([name]);
  });

  it('a pipeline without a restore point: nothing starts, the refusal says why, is logged as an error, counted and recorded', async () => {
    const machine = await standInRollbackMachine();
    const { deps, metrics, errors } = observed(machine);
    const pipeline = uniqueName('orders');

    const outcome = await startRollbackFromEvent(deps, { pipeline, event: deploymentFailedEvent({ pipeline }) });
    expect(outcome).toMatchObject({ outcome: 'REFUSED', code: 'NO_RESTORE_POINT' });
    expect((outcome as { reason: string }).reason).toMatch(/has no deployment in the ledger: it was deployed without a restore point/);
    expect(metrics).toEqual(['TriggerWithoutRestorePoint']);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toMatch(/without a restore point/);
    expect(await executions(machine)).toHaveLength(0);
    const records = await ledger.listTriggers(pipeline);
    expect(records).toMatchObject([{ outcome: 'REFUSED', code: 'NO_RESTORE_POINT', source: 'etl.deployments' }]);
    expect(records[0]!.reason).toMatch(/without a restore point/);

    // The latest deployment's snapshot never sealed: refused, never an older deployment's restore point.
    await deployment(pipeline, 'd-1');
    await new Promise((r) => setTimeout(r, 5));
    await deployment(pipeline, 'd-2', 'SNAPSHOTTING');
    const unsealed = await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(unsealed).toMatchObject({ outcome: 'REFUSED', code: 'NO_RESTORE_POINT', deploymentId: 'd-2' });
    expect((unsealed as { reason: string }).reason).toMatch(/SNAPSHOTTING: its restore points were never sealed/);
    // In place (the deploy started while the seal is read): started; the rollback machine waits for the seal.
    await new Promise((r) => setTimeout(r, 5));
    await deployment(pipeline, 'd-3', 'IN_PLACE');
    const inPlace = await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') });
    expect(inPlace).toMatchObject({ outcome: 'STARTED', deploymentId: 'd-3', attempt: 1 });
    // A named deployment that does not exist.
    const unknown = await startRollbackFromEvent(deps, { pipeline, event: deploymentFailedEvent({ pipeline, deploymentId: 'd-404' }) });
    expect(unknown).toMatchObject({ outcome: 'REFUSED', code: 'NO_RESTORE_POINT' });
    expect(metrics.filter((m) => m === 'TriggerWithoutRestorePoint')).toHaveLength(3);
    expect(await executions(machine)).toHaveLength(1);
  });

  it('refuses a rolled-back deployment and ignores events that are not failures of this pipeline', async () => {
    const machine = await standInRollbackMachine();
    const { deps } = observed(machine);
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-3', 'ROLLED_BACK');

    expect(await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors') })).toMatchObject({ outcome: 'REFUSED', code: 'ALREADY_ROLLED_BACK' });
    expect(await startRollbackFromEvent(deps, { pipeline, event: alarmEvent('orders-errors', 'OK') })).toMatchObject({ outcome: 'IGNORED' });
    expect(await startRollbackFromEvent(deps, { pipeline, event: etlEvent('step-functions-execution-succeeded', ETL_MACHINE) })).toMatchObject({ outcome: 'IGNORED' });
    expect(await startRollbackFromEvent(deps, { pipeline, event: deploymentFailedEvent({ pipeline: 'billing' }) })).toMatchObject({ outcome: 'IGNORED' });
    await expect(startRollbackFromEvent(deps, { pipeline, event: { source: 'aws.s3', 'detail-type': 'Object Created' } })).rejects.toThrow(/trigger event is invalid/);
    expect(await executions(machine)).toHaveLength(0);
  });

  it('the handler: environment parsed at load, {pipeline, event} in, the execution started', async () => {
    const machine = await standInRollbackMachine();
    const pipeline = uniqueName('orders');
    await deployment(pipeline, 'd-5');
    process.env.ETL_ROLLBACK_ROLLBACK_STATE_MACHINE_ARN = machine;
    process.env.ETL_ROLLBACK_LEDGER_TABLE = table;
    const { handler } = await import('../../lambdas/start-rollback-from-event.ts');
    const context = { functionName: 'start-rollback-from-event', awsRequestId: 'req-1', getRemainingTimeInMillis: () => 30_000 } as unknown as Context;
    const out = await handler({ pipeline, event: deploymentFailedEvent({ pipeline, deploymentId: 'd-5', reason: 'bad' }) }, context);
    expect(out).toMatchObject({ outcome: 'STARTED', deploymentId: 'd-5', attempt: 1 });
    expect((await executions(machine)).map((e) => e.name)).toEqual([automaticExecutionName(pipeline, 'd-5', 1)]);
  });
});
