import { CreateEventBusCommand, EventBridgeClient, PutEventsCommand, PutRuleCommand, PutTargetsCommand } from '@aws-sdk/client-eventbridge';
import { CreateQueueCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  alarmPattern,
  deploymentFailedPattern,
  etlExecutionFailedPattern,
  type EventPatternJson,
  triggerInputTemplate,
} from '../../infra/constructs/trigger-patterns.ts';
import { triggerEventSchema, triggerInputSchema } from '../../core/workflow/trigger.ts';
import { uniqueName } from '../support/aws.ts';
import { alarmEvent, deploymentFailedEvent, etlEvent, type FixtureEvent } from './events.ts';

/**
 * The trigger rules' patterns, proven on moto's EventBridge: moto matches patterns faithfully but cannot deliver to a
 * Lambda target (PutEvents fails) and its TestEventPattern is a stub. So each test puts the very pattern the Triggers
 * construct deploys, with the very input template of its target, on a rule of its own bus whose target is an SQS
 * queue; sends the documented example events and near-misses; and reads back exactly what arrived.
 */
const events = new EventBridgeClient({});
const sqs = new SQSClient({});

async function ruleToQueue(pattern: EventPatternJson, pipeline: string): Promise<{ bus: string; queueUrl: string }> {
  const bus = uniqueName('bus');
  await events.send(new CreateEventBusCommand({ Name: bus }));
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: uniqueName('q') }))).QueueUrl!;
  const queueArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
  const rule = uniqueName('rule');
  await events.send(new PutRuleCommand({ Name: rule, EventBusName: bus, EventPattern: JSON.stringify(pattern) }));
  await events.send(
    new PutTargetsCommand({
      Rule: rule,
      EventBusName: bus,
      Targets: [{ Id: 'queue', Arn: queueArn, InputTransformer: { InputPathsMap: {}, InputTemplate: triggerInputTemplate(pipeline) } }],
    }),
  );
  return { bus, queueUrl };
}

async function put(bus: string, sent: FixtureEvent[]): Promise<void> {
  const out = await events.send(
    new PutEventsCommand({
      Entries: sent.map((e) => ({
        EventBusName: bus,
        Source: e.source,
        DetailType: e['detail-type'],
        Detail: JSON.stringify(e.detail),
        Resources: e.resources,
        Time: new Date(e.time),
      })),
    }),
  );
  expect(out.FailedEntryCount ?? 0).toBe(0);
}

/** Everything in the queue, parsed as the trigger function would parse its input. */
async function drain(queueUrl: string): Promise<{ pipeline: string; event: FixtureEvent }[]> {
  const received: { pipeline: string; event: FixtureEvent }[] = [];
  for (;;) {
    const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }));
    const messages = out.Messages ?? [];
    if (messages.length === 0) return received;
    for (const m of messages) {
      const input = triggerInputSchema.parse(JSON.parse(m.Body!)) as { pipeline: string; event: FixtureEvent & { time: unknown } };
      // moto 5.2.5 renders the envelope's `time` as epoch seconds; AWS sends an ISO-8601 string (as in the fixtures).
      if (typeof input.event.time === 'number') input.event.time = new Date(input.event.time * 1000).toISOString().replace('.000Z', 'Z');
      triggerEventSchema.parse(input.event); // the function accepts what the rule delivers
      received.push(input);
    }
    await sqs.send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }));
  }
}

describe('trigger rule patterns (moto EventBridge, SQS stand-in target)', () => {
  beforeAll(() => {
    expect(process.env.AWS_ENDPOINT_URL).toBeTruthy();
  });

  it('ETL execution: FAILED, TIMED_OUT and ABORTED of the pipeline’s state machines arrive; SUCCEEDED and other machines do not', async () => {
    const ours = `arn:aws:states:us-east-1:123456789012:stateMachine:${uniqueName('orders-etl')}`;
    const alsoOurs = `arn:aws:states:us-east-1:123456789012:stateMachine:${uniqueName('orders-etl-hourly')}`;
    const other = `arn:aws:states:us-east-1:123456789012:stateMachine:${uniqueName('billing-etl')}`;
    const { bus, queueUrl } = await ruleToQueue(etlExecutionFailedPattern([ours, alsoOurs]), 'orders');

    await put(bus, [
      etlEvent('step-functions-execution-failed', ours, 'run-1'),
      etlEvent('step-functions-execution-timed-out', ours, 'run-2'),
      etlEvent('step-functions-execution-aborted', alsoOurs, 'run-3'),
      // near-misses
      etlEvent('step-functions-execution-succeeded', ours, 'run-4'),
      etlEvent('step-functions-execution-failed', other, 'run-5'),
      etlEvent('step-functions-execution-failed', `${ours}-v2`, 'run-6'),
      alarmEvent('orders-errors'),
    ]);

    const got = await drain(queueUrl);
    expect(got.map((g) => g.pipeline)).toEqual(['orders', 'orders', 'orders']);
    expect(got.map((g) => `${g.event.detail.name}:${g.event.detail.status}`).sort()).toEqual(['run-1:FAILED', 'run-2:TIMED_OUT', 'run-3:ABORTED']);
    // The whole event reaches the function, as EventBridge received it.
    const failed = got.find((g) => g.event.detail.name === 'run-1')!.event;
    expect(failed).toMatchObject({ source: 'aws.states', 'detail-type': 'Step Functions Execution Status Change', detail: { stateMachineArn: ours, error: 'States.Runtime' } });
  });

  it('alarm: the pipeline’s alarms entering ALARM arrive; OK, INSUFFICIENT_DATA and other alarms do not', async () => {
    const errors = uniqueName('orders-errors');
    const late = uniqueName('orders-late');
    const { bus, queueUrl } = await ruleToQueue(alarmPattern([errors, late]), 'orders');

    await put(bus, [
      alarmEvent(errors),
      alarmEvent(late),
      // near-misses
      alarmEvent(errors, 'OK'),
      alarmEvent(late, 'INSUFFICIENT_DATA'),
      alarmEvent(uniqueName('billing-errors')),
      alarmEvent(`${errors}-2`),
      deploymentFailedEvent({ pipeline: 'orders' }),
    ]);

    const got = await drain(queueUrl);
    expect(got.map((g) => `${String(g.event.detail.alarmName)}:${String(g.event.detail.state!.value)}`).sort()).toEqual([`${errors}:ALARM`, `${late}:ALARM`].sort());
    expect(got.every((g) => g.pipeline === 'orders')).toBe(true);
  });

  it('Deployment Failed: events for this pipeline arrive; other pipelines, other detail types and sources do not', async () => {
    const pipeline = uniqueName('orders');
    const { bus, queueUrl } = await ruleToQueue(deploymentFailedPattern(pipeline), pipeline);

    const other = deploymentFailedEvent({ pipeline: uniqueName('billing'), deploymentId: 'd-1' });
    const succeeded = { ...deploymentFailedEvent({ pipeline }), 'detail-type': 'Deployment Succeeded' };
    const foreign = { ...deploymentFailedEvent({ pipeline }), source: 'someone.else' };
    await put(bus, [
      deploymentFailedEvent({ pipeline, deploymentId: 'd-42', reason: 'totals doubled' }),
      deploymentFailedEvent({ pipeline }),
      other,
      succeeded,
      foreign,
      deploymentFailedEvent({ pipeline: `${pipeline}-archive` }),
    ]);

    const got = await drain(queueUrl);
    expect(got).toHaveLength(2);
    expect(got.map((g) => g.event.detail)).toEqual(expect.arrayContaining([{ pipeline, deploymentId: 'd-42', reason: 'totals doubled' }, { pipeline }]));
    expect(got.every((g) => g.pipeline === pipeline)).toBe(true);
  });
});
