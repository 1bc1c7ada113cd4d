import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../infra/constructs/handlers.ts';

/** An example event from test/fixtures/events (the AWS documentation's, or our custom one), as a fresh copy. */
export function fixtureEvent(name: 'step-functions-execution-failed' | 'step-functions-execution-timed-out' | 'step-functions-execution-aborted' | 'step-functions-execution-succeeded' | 'cloudwatch-alarm-state-change' | 'deployment-failed'): FixtureEvent {
  return JSON.parse(readFileSync(join(PROJECT_ROOT, 'test', 'fixtures', 'events', `${name}.json`), 'utf8')) as FixtureEvent;
}

export interface FixtureEvent {
  version: string;
  id: string;
  'detail-type': string;
  source: string;
  account: string;
  time: string;
  region: string;
  resources: string[];
  detail: Record<string, unknown> & { state?: Record<string, unknown> };
}

/** The fixture with another ETL state machine (ARN and execution under it). */
export function etlEvent(
  name: 'step-functions-execution-failed' | 'step-functions-execution-timed-out' | 'step-functions-execution-aborted' | 'step-functions-execution-succeeded',
  stateMachineArn: string,
  executionName = 'execution-name',
): FixtureEvent {
  const event = fixtureEvent(name);
  const executionArn = `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${executionName}`;
  event.resources = [executionArn];
  event.detail = { ...event.detail, stateMachineArn, executionArn, name: executionName };
  return event;
}

export function alarmEvent(alarmName: string, value = 'ALARM'): FixtureEvent {
  const event = fixtureEvent('cloudwatch-alarm-state-change');
  event.resources = [`arn:aws:cloudwatch:us-east-1:123456789012:alarm:${alarmName}`];
  event.detail = { ...event.detail, alarmName, state: { ...event.detail.state, value } };
  return event;
}

export function deploymentFailedEvent(detail: { pipeline: string; deploymentId?: string; reason?: string }): FixtureEvent {
  const event = fixtureEvent('deployment-failed');
  event.detail = detail;
  return event;
}
