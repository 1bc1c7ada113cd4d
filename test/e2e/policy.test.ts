import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DescribeRuleCommand, EventBridgeClient, PutRuleCommand, PutTargetsCommand } from '@aws-sdk/client-eventbridge';
import { CreateScheduleCommand, CreateScheduleGroupCommand, GetScheduleCommand, SchedulerClient } from '@aws-sdk/client-scheduler';
import { CreateTopicCommand, SNSClient, SubscribeCommand } from '@aws-sdk/client-sns';
import { CreateQueueCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Context } from 'aws-lambda';
import { parse, stringify } from 'yaml';
import { Ledger } from '../../core/ledger/ledger.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table and state bucket (the handlers read them at first import, with the topic below).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

type RunLocal = typeof import('../../cli/local-runner.ts')['runLocal'];
type TravelClock = typeof import('../../cli/local-runner.ts')['travelClock'];

const events = new EventBridgeClient({});
const sns = new SNSClient({});
const sqs = new SQSClient({});
const scheduler = new SchedulerClient({});

async function ruleState(name: string): Promise<string | undefined> {
  return (await events.send(new DescribeRuleCommand({ Name: name }))).State;
}

async function scheduleState(group: string, name: string): Promise<string | undefined> {
  return (await scheduler.send(new GetScheduleCommand({ GroupName: group, Name: name }))).State;
}

async function queue(name: string): Promise<{ url: string; arn: string }> {
  const url = (await sqs.send(new CreateQueueCommand({ QueueName: name }))).QueueUrl!;
  const arn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
  return { url, arn };
}

async function drain(url: string): Promise<string[]> {
  const bodies: string[] = [];
  for (;;) {
    const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }));
    if (!out.Messages?.length) return bodies;
    bodies.push(...out.Messages.map((m) => m.Body!));
  }
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('rollback policy, local runs: maintenance windows, approval, paused pipeline rules, notifications', () => {
  let s: Scenario;
  let runLocal: RunLocal;
  let travelClock: TravelClock;
  let ledger: Ledger;
  const rules = { enabled: uniqueName('orders-load'), disabled: uniqueName('orders-backfill') };
  /** The pipeline's EventBridge Scheduler schedule, in its own group. */
  const schedule = { group: uniqueName('etl'), name: uniqueName('orders-hourly') };
  let sqsFromSns: string;
  let sqsFromEvents: string;

  /** A manifest of the scenario's pipeline with a policy, snapshotted as `deployment`. */
  async function deployWithPolicy(deployment: string, policy: unknown): Promise<string> {
    const manifest = parse(readFileSync(s.manifestPath, 'utf8')) as Record<string, unknown>;
    const path = s.manifestPath.replace(/\.yaml$/, `-${deployment}.yaml`);
    writeFileSync(path, stringify({ ...manifest, policy }));
    const r = await s.cli('snapshot', path, '--deployment', deployment, '--local');
    expect(r.code, r.stderr).toBe(0);
    return path;
  }

  /** The bad deploy, unless the data is still damaged from the last one (it is not repeatable as is). */
  async function damage(): Promise<void> {
    if ((await s.sql.query('SELECT 1 FROM staging.orders WHERE id = 501')).rowCount === 0) await badDeploy(s);
  }

  beforeAll(async () => {
    s = await createScenario();
    // Notifications: an SNS topic with an SQS subscription; the rollback's events through a rule to another queue.
    const topicArn = (await sns.send(new CreateTopicCommand({ Name: uniqueName('rollbacks') }))).TopicArn!;
    const fromSns = await queue(uniqueName('sns-inbox'));
    await sns.send(new SubscribeCommand({ TopicArn: topicArn, Protocol: 'sqs', Endpoint: fromSns.arn }));
    sqsFromSns = fromSns.url;
    const fromEvents = await queue(uniqueName('events-inbox'));
    const listener = uniqueName('rollback-events');
    await events.send(new PutRuleCommand({ Name: listener, EventPattern: JSON.stringify({ source: ['etl.rollback'], detail: { pipeline: [s.pipeline] } }) }));
    await events.send(new PutTargetsCommand({ Rule: listener, Targets: [{ Id: 'inbox', Arn: fromEvents.arn }] }));
    sqsFromEvents = fromEvents.url;
    process.env.ETL_ROLLBACK_TOPIC_ARN = topicArn;

    // The pipeline's own triggers: one enabled, one already disabled by its team.
    await events.send(new PutRuleCommand({ Name: rules.enabled, ScheduleExpression: 'rate(1 hour)', State: 'ENABLED' }));
    await events.send(new PutRuleCommand({ Name: rules.disabled, ScheduleExpression: 'rate(1 day)', State: 'DISABLED' }));

    await scheduler.send(new CreateScheduleGroupCommand({ Name: schedule.group }));
    const hourlyTarget = await queue(uniqueName('hourly-load'));
    await scheduler.send(
      new CreateScheduleCommand({
        GroupName: schedule.group,
        Name: schedule.name,
        ScheduleExpression: 'rate(1 hour)',
        Description: 'hourly orders load',
        FlexibleTimeWindow: { Mode: 'FLEXIBLE', MaximumWindowInMinutes: 15 },
        Target: { Arn: hourlyTarget.arn, RoleArn: 'arn:aws:iam::123456789012:role/orders-scheduler', Input: '{"load":"orders"}' },
        State: 'ENABLED',
      }),
    );
    const pause = { rules: [{ name: rules.enabled }, { name: rules.disabled }], schedules: [{ name: schedule.name, group: schedule.group }] };

    await deployWithPolicy('d-window', { windows: ['Sat 00:00-06:00 UTC'] });
    await deployWithPolicy('d-gate', { approval: { required: true, timeoutMinutes: 60 }, pause });
    await deployWithPolicy('d-pause', { pause });
    await badDeploy(s);
    ({ runLocal, travelClock } = await import('../../cli/local-runner.ts'));
    ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    await drain(sqsFromSns);
    await drain(sqsFromEvents);
  });
  afterAll(async () => s?.drop());

  it('outside its window a run waits in the Wait state, time-travels to the opening, and only then restores', async () => {
    // Friday 2026-11-06 20:00 UTC; the window opens Saturday 00:00 UTC.
    const clock = travelClock(new Date('2026-11-06T20:00:00Z'));
    const entered: { name: string; input: { window?: { nextOpenAt?: string; open?: boolean } } }[] = [];
    const name = uniqueName('run-window');
    const started = Date.now();
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-window' }, {
      name,
      clock,
      onEvent: (e) => {
        const st = (e as { type: string; state?: { name: string; input: never } }).state;
        if (e.type === 'StateEntered' && st) entered.push(st);
      },
    });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    expect(Date.now() - started).toBeLessThan(20_000); // four hours of waiting, no real sleep

    const names = entered.map((e) => e.name);
    const wait = entered.find((e) => e.name === 'Wait for maintenance window')!;
    expect(wait.input.window).toMatchObject({ open: false, nextOpenAt: '2026-11-07T00:00:00Z' });
    expect(names.filter((n) => n === 'Check maintenance window')).toHaveLength(2);
    expect(names.indexOf('Wait for maintenance window')).toBeLessThan(names.indexOf('Acquire pipeline lock'));

    // Every write happened inside the window, by the run's clock.
    const run = await ledger.requireRun(name);
    expect(run.startedAt).toBe('2026-11-06T20:00:00.000Z');
    const steps = await ledger.listSteps(name);
    expect(steps.length).toBe(3);
    for (const step of steps) expect(step.restoredAt! >= '2026-11-07T00:00:00.000Z').toBe(true);
    expect(run.endedAt! >= '2026-11-07T00:00:00.000Z' && run.endedAt! < '2026-11-07T06:00:00.000Z').toBe(true);
  });

  it('an urgent run starts at once outside the window', async () => {
    const clock = travelClock(new Date('2026-11-04T12:00:00Z')); // a Wednesday
    const entered: string[] = [];
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-window', urgent: true }, {
      name: uniqueName('run-urgent'),
      clock,
      onEvent: (e) => e.type === 'StateEntered' && entered.push((e as { state: { name: string } }).state.name),
    });
    expect(out.status).toBe('SUCCEEDED');
    expect(entered).not.toContain('Wait for maintenance window');
    expect(clock.now().toISOString()).toBe('2026-11-04T12:00:00.000Z');
  });

  it('waits for approval, and a reject stops it cleanly: REJECTED, exit 3, lock released, nothing touched, rules never paused', async () => {
    await damage();
    const damaged = await s.rows('staging.orders');
    const statusBefore = (await ledger.getDeployment(s.pipeline, 'd-gate'))!.status;
    const manifest = s.manifestPath.replace(/\.yaml$/, '-d-gate.yaml');
    const cli = s.cli('rollback', manifest, '--deployment', 'd-gate', '--local', '--json', '--reason', 'mart doubled');
    // The run holds the lock while it waits; its approval request names its run id.
    const runId = await until('the approval request', async () => {
      const holder = (await ledger.getLock(s.pipeline))?.holder;
      return holder && (await ledger.getApproval(holder))?.status === 'PENDING' ? holder : undefined;
    });
    expect(await ruleState(rules.enabled)).toBe('ENABLED'); // pausing comes after the approval
    const reject = await s.cli('reject', runId, '--local', '--reason', 'not during the board meeting', '--by', 'jane');
    expect(reject.code, reject.stderr).toBe(0);

    const r = await cli;
    expect(r.code, r.stderr + r.stdout).toBe(3);
    const out = JSON.parse(r.stdout) as { error: string; cause: string; report: { status: string; partial: boolean } };
    expect(out.error).toBe('ApprovalRejectedError');
    expect(out.cause).toContain('jane');
    expect(out.report).toMatchObject({ status: 'REJECTED', partial: false });
    expect((await ledger.requireRun(runId)).status).toBe('REJECTED');
    expect(await ledger.getApproval(runId)).toMatchObject({ status: 'REJECTED', decidedBy: 'jane', reason: 'not during the board meeting' });
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();
    expect((await ledger.getDeployment(s.pipeline, 'd-gate'))!.status).toBe(statusBefore);
    expect(await ledger.listSteps(runId)).toEqual([]);
    expect(await s.rows('staging.orders')).toEqual(damaged);
    expect(await ledger.listPausedTriggers(runId)).toEqual([]);
    expect(await ruleState(rules.enabled)).toBe('ENABLED');
    expect(await scheduleState(schedule.group, schedule.name)).toBe('ENABLED');

    // A late second answer is refused.
    const late = await s.cli('approve', runId, '--local', '--by', 'joe');
    expect(late.code).toBe(2);
    expect(late.stderr).toContain('already rejected by jane');
  });

  it('approved, it goes on: pauses the enabled rule and schedule (not the disabled rule) while restoring, resumes them, and notifies', async () => {
    await drain(sqsFromSns);
    await drain(sqsFromEvents);
    const { handler: realRestore } = await import('../../lambdas/restore-unit.ts');
    const seenDuringRestore: (string | undefined)[] = [];
    const watchingRestore = async (event: unknown, context: Context) => {
      seenDuringRestore.push(await ruleState(rules.enabled), await scheduleState(schedule.group, schedule.name));
      return realRestore(event, context);
    };
    const scheduleBefore = await scheduler.send(new GetScheduleCommand({ GroupName: schedule.group, Name: schedule.name }));
    const name = uniqueName('run-approved');
    const run = runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-gate', reason: 'mart doubled', requestedBy: 'sam' }, { name, handlers: { RestoreUnit: watchingRestore } });
    await until('the approval request', async () => ((await ledger.getApproval(name))?.status === 'PENDING' ? true : undefined));
    // Four eyes: the requester may not approve their own rollback (refused, exit 3, nothing recorded).
    const self = await s.cli('approve', name, '--local', '--reason', 'trust me', '--by', ' Sam ');
    expect(self.code, self.stderr).toBe(3);
    expect(self.stderr).toContain('requested by sam, who may reject it but not approve it');
    expect((await ledger.getApproval(name))?.status).toBe('PENDING');
    const approve = await s.cli('approve', name, '--local', '--reason', 'go ahead', '--by', 'jane');
    expect(approve.code, approve.stderr).toBe(0);
    expect(approve.stdout).toContain(`run ${name} approved by jane`);

    const out = await run;
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    expect(seenDuringRestore.length).toBe(6);
    expect(new Set(seenDuringRestore)).toEqual(new Set(['DISABLED']));
    expect(await ruleState(rules.enabled)).toBe('ENABLED');
    expect(await ruleState(rules.disabled)).toBe('DISABLED');
    // UpdateSchedule replaces the whole definition: everything but the state came back as it was.
    const scheduleAfter = await scheduler.send(new GetScheduleCommand({ GroupName: schedule.group, Name: schedule.name }));
    expect(scheduleAfter.State).toBe('ENABLED');
    for (const field of ['ScheduleExpression', 'Description', 'FlexibleTimeWindow', 'Target', 'ScheduleExpressionTimezone'] as const) {
      expect(scheduleAfter[field], field).toEqual(scheduleBefore[field]);
    }
    expect(await ledger.getApproval(name)).toMatchObject({ status: 'APPROVED', decidedBy: 'jane', reason: 'go ahead' });
    const paused = await ledger.listPausedTriggers(name);
    expect(paused.map((p) => [p.kind, p.name, p.priorState, p.resumedAt !== undefined])).toEqual([
      ['rule', rules.disabled, 'DISABLED', false],
      ['rule', rules.enabled, 'ENABLED', true],
      ['schedule', schedule.name, 'ENABLED', true],
    ].sort((a, b) => `${a[0]}${a[1]}`.localeCompare(`${b[0]}${b[1]}`)));

    // SNS → SQS: concise messages, in order: started (why, plan), approval asked, each stage, the result.
    const messages = (await drain(sqsFromSns)).map((b) => JSON.parse(b) as { Subject: string; Message: string; MessageAttributes: { event: { Value: string } } });
    const mine = messages.filter((m) => m.Message.includes(name));
    expect(mine.map((m) => m.MessageAttributes.event.Value)).toEqual(['Rollback Started', 'Approval Requested', 'Stage Completed', 'Stage Completed', 'Stage Completed', 'Rollback Succeeded']);
    const startedMsg = mine[0]!.Message;
    expect(startedMsg).toContain('Why: mart doubled — requested by sam');
    expect(startedMsg).toMatch(/1\. mart\n {2}2\. staging\n {2}3\. raw/);
    expect(mine[1]!.Message).toContain(`etl-rollback approve ${name} --reason "…" (by someone other than sam)`);
    expect(mine[0]!.Message).toContain('Started by: manual.');
    expect(mine[0]!.Message).toContain(`pauses the pipeline's triggers while restoring: rule ${rules.enabled}, rule ${rules.disabled}, schedule ${schedule.group}/${schedule.name}`);
    expect(mine[5]!.Message).toContain(`Pipeline triggers re-enabled: rule ${rules.enabled}, schedule ${schedule.group}/${schedule.name}`);
    expect(mine[5]!.Message).toContain('What to check');

    // EventBridge → rule → SQS: the events other systems subscribe to.
    const received = (await drain(sqsFromEvents)).map((b) => JSON.parse(b) as { source: string; 'detail-type': string; detail: { runId: string; stage?: number; status?: string } });
    const ours = received.filter((e) => e.detail.runId === name);
    expect(ours.every((e) => e.source === 'etl.rollback')).toBe(true);
    expect(ours.map((e) => e['detail-type'])).toEqual(['Rollback Started', 'Approval Requested', 'Stage Completed', 'Stage Completed', 'Stage Completed', 'Rollback Succeeded']);
    expect(ours.filter((e) => e['detail-type'] === 'Stage Completed').map((e) => e.detail.stage)).toEqual([1, 2, 3]);
  });

  it('no decision before the deadline (time travel): the run stops REJECTED as timed out, the approval is closed', async () => {
    const clock = travelClock(new Date('2026-11-10T09:00:00Z'));
    const name = uniqueName('run-timeout');
    const run = runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-gate' }, { name, clock });
    await until('the approval request', async () => ((await ledger.getApproval(name))?.status === 'PENDING' ? true : undefined));
    clock.advanceBy(61 * 60 * 1000);
    const out = await run;
    expect(out).toMatchObject({ status: 'FAILED', error: 'ApprovalTimedOutError' });
    expect((await ledger.requireRun(name)).status).toBe('REJECTED');
    expect(await ledger.getApproval(name)).toMatchObject({ status: 'TIMED_OUT', deadline: '2026-11-10T10:00:00Z' });
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();
  });

  it('a stage that fails still resumes the paused rule and schedule (and leaves the disabled rule disabled), and says so', async () => {
    await damage();
    await drain(sqsFromSns);
    const { handler: realRestore } = await import('../../lambdas/restore-unit.ts');
    let stateWhenFailing: (string | undefined)[] = [];
    const failingStaging = async (event: unknown, context: Context) => {
      if ((event as { unitId: string }).unitId !== 'staging') return realRestore(event, context);
      stateWhenFailing = [await ruleState(rules.enabled), await scheduleState(schedule.group, schedule.name)];
      const error = new Error('connection to the warehouse lost');
      error.name = 'ConnectionLost';
      throw error;
    };
    const name = uniqueName('run-fails');
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-pause' }, { name, handlers: { RestoreUnit: failingStaging } });
    expect(out).toMatchObject({ status: 'FAILED', error: 'ConnectionLost' });
    expect(stateWhenFailing).toEqual(['DISABLED', 'DISABLED']);
    expect(await ruleState(rules.enabled)).toBe('ENABLED');
    expect(await scheduleState(schedule.group, schedule.name)).toBe('ENABLED');
    expect(await ruleState(rules.disabled)).toBe('DISABLED');
    expect((await ledger.requireRun(name)).status).toBe('FAILED');
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();

    const failed = (await drain(sqsFromSns)).map((b) => JSON.parse(b) as { Message: string; MessageAttributes: { event: { Value: string } } }).filter((m) => m.Message.includes(name));
    const last = failed.at(-1)!;
    expect(last.MessageAttributes.event.Value).toBe('Rollback Failed');
    expect(last.Message).toContain('FAILED PART-WAY');
    expect(last.Message).toContain('ConnectionLost: connection to the warehouse lost');
    expect(last.Message).toContain(`Pipeline triggers re-enabled: rule ${rules.enabled}, schedule ${schedule.group}/${schedule.name}`);
  });
  it('a snapshot tells other systems when its restore points are in place and when they are sealed (EventBridge only), and people too when it fails', async () => {
    await drain(sqsFromSns);
    await drain(sqsFromEvents);
    const manifest = parse(readFileSync(s.manifestPath, 'utf8')) as { units: Record<string, unknown>[] };
    const name = uniqueName('snap-events');
    const ok = await runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-events', manifest, requestedBy: 'test' }, { name });
    expect(ok.status, JSON.stringify(ok)).toBe('SUCCEEDED');
    // A unit whose table does not exist: the capture fails after the deployment is registered.
    const broken = { ...manifest, units: [...manifest.units, { id: 'ghost', type: 'postgres-table', connection: 'warehouse', table: 'staging.ghost' }] };
    const bad = await runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-events-bad', manifest: broken, requestedBy: 'test' }, { name: uniqueName('snap-bad') });
    expect(bad.status).toBe('FAILED');

    const received = (await drain(sqsFromEvents)).map((b) => JSON.parse(b) as { source: string; 'detail-type': string; detail: Record<string, unknown> });
    const of = (deploymentId: string) => received.filter((e) => e.detail.deploymentId === deploymentId);
    expect(of('d-events').map((e) => e['detail-type'])).toEqual(['Restore Points In Place', 'Restore Points Sealed']);
    expect(of('d-events').every((e) => e.source === 'etl.rollback')).toBe(true);
    expect(of('d-events')[0]!.detail).toMatchObject({ pipeline: s.pipeline, execution: name, status: 'IN_PLACE', units: ['raw', 'staging', 'mart'], sealing: [] });
    expect(of('d-events')[1]!.detail).toMatchObject({ status: 'READY', points: expect.arrayContaining([expect.objectContaining({ unitId: 'staging', type: 'postgres-table' })]) });
    expect(of('d-events-bad').map((e) => e['detail-type'])).toEqual(['Snapshot Failed']);
    expect(of('d-events-bad')[0]!.detail).toMatchObject({ status: 'FAILED', wasInPlace: false, error: { name: 'PreflightError' } });

    // People hear of the failure only: the deploy must not start.
    const messages = (await drain(sqsFromSns)).map((b) => JSON.parse(b) as { Subject: string; Message: string; MessageAttributes: { event: { Value: string } } });
    const mine = messages.filter((m) => m.Message.includes(s.pipeline) && m.Message.includes('d-events'));
    expect(mine.map((m) => m.MessageAttributes.event.Value)).toEqual(['Snapshot Failed']);
    expect(mine[0]!.Subject).toBe(`etl-rollback: ${s.pipeline} / d-events-bad snapshot FAILED`);
    expect(mine[0]!.Message).toContain('The deploy must not start: there is no restore point to roll back to.');
    expect(mine[0]!.Message).toContain('staging.ghost');
  });
});
