import { createHash } from 'node:crypto';
import { ExecutionAlreadyExists, type SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import type { Deployment, Ledger, RunStatus, TriggerOutcomeKind, TriggerRecord } from '../ledger/ledger.ts';
import { parseInput, type RollbackRequestInput } from './requests.ts';

/**
 * EventBridge triggers: an event that says a deploy of a pipeline went wrong (its ETL state machine execution
 * FAILED / TIMED_OUT / ABORTED, one of its CloudWatch alarms entered ALARM, or our custom `Deployment Failed`)
 * resolves the pipeline's current deployment in the ledger and starts the rollback state machine for it.
 *
 * Storm semantics — "never twice":
 *
 * - The execution name is derived, not random: `auto-<pipeline>-<deployment>-<hash>-a<attempt>` (see
 *   `automaticExecutionName`), where attempt = 1 + the number of *finished* automatic runs of that deployment. A run
 *   is finished when its ledger record (RUN#<execution name>, written by the machine's first state) is SUCCEEDED,
 *   FAILED or REFUSED and it no longer holds the pipeline lock. Every event that arrives while attempt n has not
 *   finished — before it was planned, while it runs, while it releases its lock — computes the same name.
 * - The input is a pure function of the trigger (no timestamps, no event ids): the same event sent 20 times gives
 *   the same `{pipeline, deploymentId, reason, requestedBy, trigger}`, where `trigger` is
 *   `{kind: 'eventbridge', source, detailType, summary}` (recorded with the run and shown in its report). StartExecution with an existing name and the same input
 *   is idempotent while that execution runs (AWS returns the running execution). With a different input (another
 *   kind of trigger for the same deployment, e.g. an alarm after the ETL failure) or after the execution closed, AWS
 *   answers ExecutionAlreadyExists: that is treated as "already started" and the existing execution is returned,
 *   never a second run. So however many events arrive, in whatever order and concurrency, attempt n starts at most
 *   one execution.
 * - Only a later event, after attempt n finished (the deployment is ROLLBACK_FAILED again, or its run was REFUSED),
 *   computes attempt n+1 and starts a new run — a retry. At most MAX_AUTOMATIC_ATTEMPTS automatic attempts are made
 *   per deployment; after that a trigger is refused and a person decides.
 * - A REJECTED run (its policy asked for approval and an approver said no, or nobody decided in time) does NOT count as
 *   finished: the next events compute the same attempt, whose execution name is taken, and are answered "already
 *   started". An approver's "no" is therefore not asked again by the next identical alarm: it stands for the
 *   deployment's automatic attempts (the deployment went back to the status it had). To roll it back after all, a
 *   person starts a rollback by hand (CLI or console), or resumes the rejected run (`resume`).
 * - A deployment that is ROLLED_BACK, or ROLLING_BACK by a run that is not the current automatic attempt (a manual
 *   rollback), is refused: nothing is started.
 * - An execution that closed without its run ever being recorded (it failed before `Plan rollback` wrote it) keeps
 *   its name taken: later triggers report it as already started. Its failure is visible in the rollback machine's
 *   own history; a person reruns it from the console or the CLI.
 *
 * The current deployment is the pipeline's most recent one (or the one the custom event names). It must be READY
 * (restore points sealed), IN_PLACE (recording, the seal still being read: the rollback waits for it) or
 * ROLLBACK_FAILED (a retry). If the most recent deployment has no sealed restore point
 * (SNAPSHOTTING, FAILED) or the pipeline has none, the trigger is refused — never falls back to an older deployment,
 * whose restore point predates a deploy that may have been good — and the deploy without a restore point is made
 * visible: an error log line and the metric TriggerWithoutRestorePoint.
 *
 * Every event's outcome is recorded in the ledger (TRIGGER#<pipeline>), once per event id.
 */

/** Automatic attempts per deployment; the next trigger after the last one is refused. */
export const MAX_AUTOMATIC_ATTEMPTS = 3;

/** Metrics the trigger emits (count 1 each). */
export type TriggerMetric = 'RollbackTriggered' | 'TriggerWithoutRestorePoint' | 'TriggerRefused';

export interface TriggerLog {
  info(message: string, extra?: Record<string, unknown>): void;
  warn(message: string, extra?: Record<string, unknown>): void;
  error(message: string, extra?: Record<string, unknown>): void;
}

/** What the trigger needs, passed in by the handler or a test. */
export interface TriggerDeps {
  ledger: Ledger;
  sfn: SFNClient;
  rollbackStateMachineArn: string;
  now(): Date;
  log: TriggerLog;
  metric(name: TriggerMetric, pipeline: string): void;
}

// ── events ──────────────────────────────────────────────────────────────────

const pipelineName = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a pipeline name as in the manifest');
const deploymentId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/, 'must be 1-80 characters: letters, digits, ".", "_", "-"');

const envelope = {
  version: z.string().optional(),
  id: z.string().min(1),
  account: z.string().optional(),
  time: z.string().min(1),
  region: z.string().optional(),
  resources: z.array(z.string()).optional(),
};

/** `aws.states` / `Step Functions Execution Status Change` (the ETL's own state machine). */
export const stepFunctionsStatusChangeSchema = z.object({
  ...envelope,
  source: z.literal('aws.states'),
  'detail-type': z.literal('Step Functions Execution Status Change'),
  detail: z.looseObject({
    executionArn: z.string().min(1),
    stateMachineArn: z.string().min(1),
    name: z.string().min(1),
    status: z.string().min(1),
    error: z.string().nullish(),
    cause: z.string().nullish(),
  }),
});

/** `aws.cloudwatch` / `CloudWatch Alarm State Change`. */
export const alarmStateChangeSchema = z.object({
  ...envelope,
  source: z.literal('aws.cloudwatch'),
  'detail-type': z.literal('CloudWatch Alarm State Change'),
  detail: z.looseObject({
    alarmName: z.string().min(1),
    state: z.looseObject({ value: z.string().min(1), reason: z.string().optional() }),
    previousState: z.looseObject({ value: z.string().min(1) }).optional(),
  }),
});

/** Our own event, sent by a deploy tool: `etl.deployments` / `Deployment Failed`. */
export const deploymentFailedSchema = z.object({
  ...envelope,
  source: z.literal('etl.deployments'),
  'detail-type': z.literal('Deployment Failed'),
  detail: z.strictObject({
    pipeline: pipelineName,
    deploymentId: deploymentId.optional(),
    reason: z.string().max(2000).optional(),
  }),
});

export const triggerEventSchema = z.union([stepFunctionsStatusChangeSchema, alarmStateChangeSchema, deploymentFailedSchema]);
export type TriggerEvent = z.infer<typeof triggerEventSchema>;

/** What the rule's target sends the function: the pipeline the rule belongs to, and the event as EventBridge got it. */
export const triggerInputSchema = z.object({ pipeline: pipelineName, event: z.unknown() });
export type TriggerInput = z.infer<typeof triggerInputSchema>;

const FAILED_EXECUTION = new Set(['FAILED', 'TIMED_OUT', 'ABORTED']);

interface Interpreted {
  /** Why the event does not call for a rollback of this pipeline (it should not have matched the rule). */
  ignore?: string;
  /** The trigger in one line; goes into the rollback input, so it holds nothing that varies between identical events. */
  summary: string;
  deploymentId?: string;
}

function interpret(pipeline: string, event: TriggerEvent): Interpreted {
  switch (event.source) {
    case 'aws.states': {
      const d = event.detail;
      const machine = d.stateMachineArn.split(':').pop() ?? d.stateMachineArn;
      const summary = `ETL execution ${d.name} of state machine ${machine} ${d.status}${d.error ? ` (${d.error})` : ''}`;
      return FAILED_EXECUTION.has(d.status) ? { summary } : { summary, ignore: `execution status ${d.status} is not a failure` };
    }
    case 'aws.cloudwatch': {
      const d = event.detail;
      const summary = `CloudWatch alarm ${d.alarmName} entered ${d.state.value}`;
      return d.state.value === 'ALARM' ? { summary } : { summary, ignore: `alarm state ${d.state.value} is not ALARM` };
    }
    case 'etl.deployments': {
      const d = event.detail;
      const summary = `deployment ${d.deploymentId ?? '(current)'} of ${d.pipeline} failed${d.reason ? `: ${d.reason}` : ''}`.slice(0, 1000);
      if (d.pipeline !== pipeline) return { summary, ignore: `the event is for pipeline "${d.pipeline}", this rule for "${pipeline}"` };
      return { summary, deploymentId: d.deploymentId };
    }
  }
}

// ── names ───────────────────────────────────────────────────────────────────

/**
 * The execution name of automatic attempt `attempt` for a deployment: at most 80 characters of `A-Za-z0-9_-` (what
 * Step Functions accepts with CloudWatch logging on). The readable part may be cut and has "." replaced; the hash of
 * the exact pipeline and deployment id keeps names of different deployments apart (`a-b`+`c` vs `a`+`b-c`).
 */
export function automaticExecutionName(pipeline: string, deploymentId: string, attempt: number): string {
  const hash = createHash('sha256').update(`${pipeline}\n${deploymentId}`).digest('hex').slice(0, 8);
  const tail = `-${hash}-a${attempt}`;
  const readable = `auto-${pipeline}-${deploymentId}`.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 80 - tail.length);
  return `${readable}${tail}`;
}

/** The ARN an execution of `stateMachineArn` named `name` has. */
export function executionArnOf(stateMachineArn: string, name: string): string {
  return `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;
}

/** REJECTED is deliberately absent: a rejection is not re-asked by the next trigger (see the storm semantics above). */
const FINISHED: ReadonlySet<RunStatus> = new Set(['SUCCEEDED', 'FAILED', 'REFUSED']);

/** The current automatic attempt for a deployment: the first whose run has not finished. */
async function currentAttempt(deps: TriggerDeps, pipeline: string, deploymentId: string): Promise<{ attempt: number; name: string; inProgress: boolean }> {
  const lock = await deps.ledger.getLock(pipeline);
  for (let attempt = 1; ; attempt++) {
    const name = automaticExecutionName(pipeline, deploymentId, attempt);
    const run = await deps.ledger.getRun(name);
    const finished = run !== undefined && FINISHED.has(run.status) && lock?.holder !== name;
    if (!finished) return { attempt, name, inProgress: run !== undefined };
  }
}

// ── the trigger ─────────────────────────────────────────────────────────────

export type RefusalCode = 'NO_RESTORE_POINT' | 'ALREADY_ROLLED_BACK' | 'ROLLING_BACK' | 'ATTEMPTS_EXHAUSTED';

export type TriggerOutcome =
  | {
      outcome: 'STARTED' | 'ALREADY_STARTED';
      pipeline: string;
      deploymentId: string;
      attempt: number;
      executionName: string;
      executionArn: string;
      summary: string;
    }
  | { outcome: 'REFUSED'; code: RefusalCode; pipeline: string; deploymentId?: string; reason: string; summary: string }
  | { outcome: 'IGNORED'; pipeline: string; reason: string; summary: string };

/**
 * Handles one EventBridge event for one pipeline: resolves the deployment, refuses or starts (at most once per
 * attempt, see the storm semantics above), records the outcome in the ledger and returns it. Throws InputError for
 * an event of none of the three shapes (the function fails, EventBridge's async retries and the DLQ keep it).
 */
export async function startRollbackFromEvent(deps: TriggerDeps, input: TriggerInput): Promise<TriggerOutcome> {
  const event = parseInput(triggerEventSchema, input.event, 'trigger event');
  const pipeline = input.pipeline;
  const seen = interpret(pipeline, event);
  const outcome = await decide(deps, pipeline, event, seen);
  await record(deps, event, outcome);
  return outcome;
}

async function decide(deps: TriggerDeps, pipeline: string, event: TriggerEvent, seen: Interpreted): Promise<TriggerOutcome> {
  const { summary } = seen;
  if (seen.ignore) {
    deps.log.warn('trigger ignored', { pipeline, source: event.source, reason: seen.ignore });
    return { outcome: 'IGNORED', pipeline, reason: seen.ignore, summary };
  }

  const deployment: Deployment | undefined = seen.deploymentId
    ? await deps.ledger.getDeployment(pipeline, seen.deploymentId)
    : await deps.ledger.latestDeployment(pipeline);
  const refuse = (code: RefusalCode, reason: string): TriggerOutcome => {
    const result = { outcome: 'REFUSED' as const, code, pipeline, deploymentId: deployment?.deploymentId, reason, summary };
    if (code === 'NO_RESTORE_POINT') {
      deps.metric('TriggerWithoutRestorePoint', pipeline);
      deps.log.error('rollback trigger without a restore point: nothing was started', { pipeline, deploymentId: deployment?.deploymentId, trigger: summary, reason });
    } else {
      deps.metric('TriggerRefused', pipeline);
      deps.log.warn('rollback trigger refused', { pipeline, deploymentId: deployment?.deploymentId, code, reason });
    }
    return result;
  };

  if (!deployment) {
    const which = seen.deploymentId ? `no deployment "${seen.deploymentId}"` : 'no deployment';
    return refuse('NO_RESTORE_POINT', `pipeline "${pipeline}" has ${which} in the ledger: it was deployed without a restore point (run etl-rollback snapshot before every deploy)`);
  }
  const d = deployment;
  switch (d.status) {
    case 'SNAPSHOTTING':
    case 'FAILED':
      return refuse(
        'NO_RESTORE_POINT',
        `deployment "${d.deploymentId}" of pipeline "${pipeline}" is ${d.status}: its restore points were never sealed, so there is nothing safe to roll back to`,
      );
    case 'ROLLED_BACK':
      return refuse('ALREADY_ROLLED_BACK', `deployment "${d.deploymentId}" of pipeline "${pipeline}" is already rolled back`);
    // In place: the deploy ran on restore points still being sealed; the rollback waits for the seal, then restores.
    case 'IN_PLACE':
    case 'READY':
    case 'ROLLBACK_FAILED':
    case 'ROLLING_BACK':
      break;
  }

  const current = await currentAttempt(deps, pipeline, d.deploymentId);
  if (d.status === 'ROLLING_BACK' && !current.inProgress) {
    const lock = await deps.ledger.getLock(pipeline);
    return refuse('ROLLING_BACK', `deployment "${d.deploymentId}" of pipeline "${pipeline}" is being rolled back by run "${lock?.holder ?? 'unknown'}", not started by a trigger`);
  }
  if (current.attempt > MAX_AUTOMATIC_ATTEMPTS) {
    return refuse(
      'ATTEMPTS_EXHAUSTED',
      `deployment "${d.deploymentId}" of pipeline "${pipeline}" was rolled back automatically ${MAX_AUTOMATIC_ATTEMPTS} times without success: start the next rollback by hand`,
    );
  }

  // Nothing that varies between identical events (no time, no event id): see the storm semantics above.
  const request: RollbackRequestInput = {
    pipeline,
    deploymentId: d.deploymentId,
    reason: summary,
    requestedBy: `eventbridge:${event.source}`,
    trigger: { kind: 'eventbridge', source: event.source, detailType: event['detail-type'], summary },
  };
  const executionArn = executionArnOf(deps.rollbackStateMachineArn, current.name);
  const ids = { pipeline, deploymentId: d.deploymentId, attempt: current.attempt, executionName: current.name, summary };
  try {
    const started = await deps.sfn.send(new StartExecutionCommand({ stateMachineArn: deps.rollbackStateMachineArn, name: current.name, input: JSON.stringify(request) }));
    deps.metric('RollbackTriggered', pipeline);
    deps.log.info('rollback started by trigger', { ...ids, executionArn: started.executionArn });
    return { outcome: 'STARTED', ...ids, executionArn: started.executionArn ?? executionArn };
  } catch (error) {
    if (!(error instanceof ExecutionAlreadyExists)) throw error;
    deps.log.info('rollback already started for this attempt', { ...ids, executionArn });
    return { outcome: 'ALREADY_STARTED', ...ids, executionArn };
  }
}

async function record(deps: TriggerDeps, event: TriggerEvent, outcome: TriggerOutcome): Promise<void> {
  const entry: Omit<TriggerRecord, 'recordedAt' | 'expiresAt'> = {
    pipeline: outcome.pipeline,
    eventId: event.id,
    eventTime: event.time,
    source: event.source,
    detailType: event['detail-type'],
    outcome: outcome.outcome satisfies TriggerOutcomeKind,
    summary: outcome.summary,
    ...(outcome.outcome === 'REFUSED' ? { code: outcome.code, reason: outcome.reason, deploymentId: outcome.deploymentId } : {}),
    ...(outcome.outcome === 'IGNORED' ? { code: 'IGNORED', reason: outcome.reason } : {}),
    ...(outcome.outcome === 'STARTED' || outcome.outcome === 'ALREADY_STARTED'
      ? { deploymentId: outcome.deploymentId, attempt: outcome.attempt, executionName: outcome.executionName, executionArn: outcome.executionArn }
      : {}),
  };
  await deps.ledger.recordTrigger(entry);
}
