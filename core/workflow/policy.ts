import { DescribeRuleCommand, DisableRuleCommand, EnableRuleCommand, ResourceNotFoundException } from '@aws-sdk/client-eventbridge';
import { checkCancel } from './cancel-request.ts';
import { GetScheduleCommand, ResourceNotFoundException as SchedulerNotFound, UpdateScheduleCommand, type GetScheduleCommandOutput } from '@aws-sdk/client-scheduler';
import { ApprovalTimedOutError, InputError, SelfApprovalError, TriggersNotResumedError } from '../errors.ts';
import { pausedTriggerName, type ApprovalRecord, type Ledger, type PausedTrigger } from '../ledger/ledger.ts';
import { parseWindows, windowStatus, type Policy } from '../manifest/policy.ts';
import type { Manifest } from '../manifest/schema.ts';
import { deployedManifest, summarizeCaught, type CaughtError, type WorkflowDeps } from './deps.ts';
import { announce, approvalRequested, type PolicyFacts } from './notify.ts';

/**
 * The run's policy, as the tasks between planning and the first stage apply it: the maintenance window (Check
 * maintenance window → Wait for maintenance window), the approval (Request approval, a `.waitForTaskToken` task that
 * `etl-rollback approve|reject` answers), and the pipeline's own rules (Pause pipeline triggers → … → Resume
 * pipeline triggers, on success and on failure).
 */

interface RunIds {
  runId: string;
  pipeline: string;
  deploymentId: string;
}

const EMPTY: Policy = { windows: [] };

export function policyOf(manifest: Manifest): Policy {
  return manifest.policy ?? EMPTY;
}

/** What the state machine's Choice states read (`$.policy`), and what the start notification says. */
export interface PolicyState {
  windows: string[];
  approval: { required: boolean; timeoutSeconds: number };
  /** The pipeline triggers paused while restoring: `rule orders-load`, `schedule etl/orders-hourly`. */
  pausedTriggers: string[];
}

export function policyState(manifest: Manifest): PolicyState {
  const p = policyOf(manifest);
  return {
    windows: p.windows,
    approval: { required: p.approval?.required ?? false, timeoutSeconds: (p.approval?.timeoutMinutes ?? 240) * 60 },
    pausedTriggers: pausedTriggerNames(manifest),
  };
}

export function policyFacts(state: PolicyState): PolicyFacts {
  return { windows: state.windows, approvalRequired: state.approval.required, approvalTimeoutMinutes: state.approval.timeoutSeconds / 60, pausedTriggers: state.pausedTriggers };
}

/** RFC 3339 without fractions, as a Wait state's TimestampPath wants it: `2026-11-07T00:00:00Z`. */
const timestamp = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

// ── maintenance window ──────────────────────────────────────────────────────

export interface WindowCheck {
  open: boolean;
  /** Why the run may go on: inside which window, urgent, or no windows. */
  because?: string;
  /** When closed: the next opening, the Wait state's timestamp. */
  nextOpenAt?: string;
  checkedAt: string;
}

/** "Check maintenance window": whether the run may start now, by the clock it is given. */
export async function checkMaintenanceWindow(deps: WorkflowDeps, input: RunIds & { urgent?: boolean }): Promise<WindowCheck> {
  // The window loop is a safe point: a run cancelled while it waits stops here, before it locks or touches anything.
  await checkCancel(deps, { runId: input.runId, at: 'before it locked or restored anything' });
  const manifest = await deployedManifest(deps, input.pipeline, input.deploymentId);
  const now = deps.now();
  const checkedAt = timestamp(now);
  const windows = policyOf(manifest).windows;
  if (windows.length === 0) return { open: true, because: 'no maintenance windows', checkedAt };
  if (input.urgent) {
    deps.log.info('urgent: maintenance windows skipped', { runId: input.runId });
    return { open: true, because: 'urgent', checkedAt };
  }
  const status = windowStatus(parseWindows(windows), now);
  if (status.open) return { open: true, because: `inside ${status.window}`, checkedAt };
  deps.log.info('outside every maintenance window: waiting', { runId: input.runId, nextOpenAt: timestamp(status.nextOpenAt), window: status.window });
  return { open: false, because: `outside every window; ${status.window} opens next`, nextOpenAt: timestamp(status.nextOpenAt), checkedAt };
}

// ── approval ────────────────────────────────────────────────────────────────

/**
 * "Request approval": records the task token under the run (the CLI answers with it) and tells people. Returns at
 * once; the state waits until SendTaskSuccess / SendTaskFailure, or its timeout.
 */
export async function requestApproval(
  deps: WorkflowDeps,
  input: RunIds & { taskToken: string; timeoutSeconds: number; /** Another approval of the same run (`<run>-replay`); default the run id. */ approvalId?: string },
): Promise<{ deadline: string }> {
  const run = await deps.ledger.requireRun(input.runId);
  const manifest = await deployedManifest(deps, input.pipeline, input.deploymentId);
  const now = deps.now();
  const deadline = timestamp(new Date(now.getTime() + input.timeoutSeconds * 1000));
  const approvalId = input.approvalId ?? input.runId;
  const record = await deps.ledger.putApprovalRequest({
    runId: approvalId,
    pipeline: input.pipeline,
    deploymentId: input.deploymentId,
    taskToken: input.taskToken,
    requestedAt: now.toISOString(),
    deadline,
    timeoutSeconds: input.timeoutSeconds,
    requestedBy: run.requestedBy,
    allowSelfApproval: policyOf(manifest).approval?.allowSelfApproval ?? false,
  });
  deps.log.info('approval requested', { runId: input.runId, approvalId, deadline: record.deadline, status: record.status });
  if (record.status === 'PENDING') await announce(deps, approvalRequested({ ...run, runId: approvalId }, record.deadline, record.allowSelfApproval, approvalId === input.runId ? 'rollback' : 'replay'));
  return { deadline: record.deadline };
}

export type Decision = 'approve' | 'reject';

/**
 * Records an approver's decision on a run waiting for approval (once: a second, different decision is refused).
 * Returns the record with the task token; delivering it to the state machine is the caller's part (SendTaskSuccess /
 * SendTaskFailure in AWS; the local engine reads the ledger).
 */
export async function decideApproval(
  deps: { ledger: Ledger; now(): Date },
  input: { runId: string; decision: Decision; by: string; reason: string },
): Promise<{ record: ApprovalRecord; already: boolean }> {
  const current = await deps.ledger.getApproval(input.runId);
  if (!current) throw new InputError(`run "${input.runId}" has not asked for approval (is it the run id of a rollback whose policy requires approval?)`);
  const status = input.decision === 'approve' ? 'APPROVED' : 'REJECTED';
  if (current.status === 'PENDING' && deps.now().getTime() > Date.parse(current.deadline)) {
    throw new ApprovalTimedOutError(`run "${input.runId}" stopped waiting for approval at ${current.deadline}: start a new rollback`);
  }
  if (current.status === 'PENDING' && input.decision === 'approve' && !current.allowSelfApproval && samePerson(input.by, current.requestedBy)) {
    throw new SelfApprovalError(
      `run "${input.runId}" was requested by ${current.requestedBy}, who may reject it but not approve it: a second person must approve (policy.approval.allowSelfApproval is false)`,
    );
  }
  const { record, decided } = await deps.ledger.decideApproval(input.runId, { status, decidedBy: input.by, reason: input.reason, decidedAt: deps.now().toISOString() });
  if (!record) throw new InputError(`run "${input.runId}" has not asked for approval`);
  if (!decided && record.status !== status) {
    throw new InputError(`run "${input.runId}" was already ${record.status.toLowerCase()}${record.decidedBy ? ` by ${record.decidedBy}` : ''}${record.decidedAt ? ` at ${record.decidedAt}` : ''}`);
  }
  return { record, already: !decided };
}

/** Names compared as people type them: case and surrounding spaces do not make a second person. */
function samePerson(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

/** The error a rejected or timed-out approval ends the run with (stable names: exit code 3). */
export function rejectionError(caught: CaughtError | undefined, approval: ApprovalRecord | undefined): { name: string; message: string } {
  const error = summarizeCaught(caught);
  if (error.name === 'States.Timeout' || error.name === 'States.HeartbeatTimeout' || error.name === 'ApprovalTimedOutError') {
    return { name: 'ApprovalTimedOutError', message: `no approval decision by ${approval?.deadline ?? 'the deadline'}: nothing was touched` };
  }
  const by = approval?.decidedBy ? ` by ${approval.decidedBy}` : '';
  const why = approval?.reason ? `: ${approval.reason}` : error.message ? `: ${error.message}` : '';
  return { name: 'ApprovalRejectedError', message: `rejected${by}${why}` };
}

/** After a rejection or timeout: a still pending approval is closed as TIMED_OUT (the CLI then refuses late answers). */
export async function closeApproval(deps: WorkflowDeps, runId: string, error: { name: string }): Promise<ApprovalRecord | undefined> {
  const approval = await deps.ledger.getApproval(runId);
  if (approval?.status === 'PENDING' && error.name === 'ApprovalTimedOutError') {
    return (await deps.ledger.decideApproval(runId, { status: 'TIMED_OUT', decidedBy: 'etl-rollback', reason: 'no decision in time', decidedAt: deps.now().toISOString() })).record;
  }
  return approval;
}

// ── pipeline triggers ───────────────────────────────────────────────────────

function requireEvents(deps: WorkflowDeps) {
  if (!deps.events) throw new Error('an EventBridge client is needed to pause or resume pipeline rules');
  return deps.events;
}

function requireScheduler(deps: WorkflowDeps) {
  if (!deps.scheduler) throw new Error('an EventBridge Scheduler client is needed to pause or resume pipeline schedules');
  return deps.scheduler;
}

type TriggerRef = Pick<PausedTrigger, 'kind' | 'container' | 'name'>;

/**
 * How one kind of trigger is read and switched. Rules have DisableRule/EnableRule. A schedule has only UpdateSchedule,
 * which replaces the whole definition (a field left out is reset to its default), so it is read first and written
 * back whole with only its state changed; read again on resume, so a change someone made meanwhile is kept.
 */
interface TriggerControl {
  /** The current state (`ENABLED`, `DISABLED`), or undefined when it does not exist. */
  state(ref: TriggerRef): Promise<string | undefined>;
  setState(ref: TriggerRef, state: 'ENABLED' | 'DISABLED'): Promise<void>;
}

function ruleControl(deps: WorkflowDeps): TriggerControl {
  return {
    async state(ref) {
      try {
        return (await requireEvents(deps).send(new DescribeRuleCommand({ Name: ref.name, EventBusName: ref.container }))).State ?? 'ENABLED';
      } catch (error) {
        if (error instanceof ResourceNotFoundException) return undefined;
        throw error;
      }
    },
    async setState(ref, state) {
      const events = requireEvents(deps);
      await events.send(state === 'DISABLED' ? new DisableRuleCommand({ Name: ref.name, EventBusName: ref.container }) : new EnableRuleCommand({ Name: ref.name, EventBusName: ref.container }));
    },
  };
}

async function getSchedule(deps: WorkflowDeps, ref: TriggerRef): Promise<GetScheduleCommandOutput | undefined> {
  try {
    return await requireScheduler(deps).send(new GetScheduleCommand({ Name: ref.name, GroupName: ref.container }));
  } catch (error) {
    if (error instanceof SchedulerNotFound) return undefined;
    throw error;
  }
}

function scheduleControl(deps: WorkflowDeps): TriggerControl {
  return {
    async state(ref) {
      const schedule = await getSchedule(deps, ref);
      return schedule ? (schedule.State ?? 'ENABLED') : undefined;
    },
    async setState(ref, state) {
      const s = await getSchedule(deps, ref);
      if (!s) throw new Error(`schedule ${ref.container}/${ref.name} no longer exists`);
      if (s.State === state) return;
      const window = s.FlexibleTimeWindow;
      await requireScheduler(deps).send(
        new UpdateScheduleCommand({
          Name: ref.name,
          GroupName: ref.container,
          State: state,
          ScheduleExpression: s.ScheduleExpression,
          ScheduleExpressionTimezone: s.ScheduleExpressionTimezone,
          // AWS refuses a start date in the past ("Schedules cannot start in the past"); one that has passed has done
          // its work (the schedule has started), so it is left out rather than moved.
          ...(s.StartDate && s.StartDate.getTime() > deps.now().getTime() ? { StartDate: s.StartDate } : {}),
          ...(s.EndDate ? { EndDate: s.EndDate } : {}),
          ...(s.Description !== undefined ? { Description: s.Description } : {}),
          ...(s.KmsKeyArn ? { KmsKeyArn: s.KmsKeyArn } : {}),
          ...(s.ActionAfterCompletion ? { ActionAfterCompletion: s.ActionAfterCompletion } : {}),
          // GetSchedule may return MaximumWindowInMinutes 0 with mode OFF, which UpdateSchedule refuses.
          FlexibleTimeWindow: window?.Mode === 'FLEXIBLE' ? { Mode: 'FLEXIBLE', MaximumWindowInMinutes: window.MaximumWindowInMinutes } : { Mode: 'OFF' },
          Target: s.Target,
        }),
      );
    },
  };
}

function controlOf(deps: WorkflowDeps, kind: PausedTrigger['kind']): TriggerControl {
  return kind === 'rule' ? ruleControl(deps) : scheduleControl(deps);
}

/** The triggers the manifest's policy names, rules first. */
function namedTriggers(manifest: Manifest): TriggerRef[] {
  const pause = policyOf(manifest).pause;
  return [
    ...(pause?.rules ?? []).map((r) => ({ kind: 'rule' as const, container: r.eventBus, name: r.name })),
    ...(pause?.schedules ?? []).map((s) => ({ kind: 'schedule' as const, container: s.group, name: s.name })),
  ];
}

/** What the start notification and `$.policy` list: `rule orders-load`, `schedule etl/orders-hourly`. */
export function pausedTriggerNames(manifest: Manifest): string[] {
  return namedTriggers(manifest).map((t) => `${t.kind} ${pausedTriggerName(t)}`);
}

/**
 * "Pause pipeline triggers": disables each rule and schedule named in the policy so the pipeline does not write while
 * its data is being restored. Each one's state is recorded first (the first record wins, so a retry never mistakes its
 * own disabling for the state found); one that was already disabled is left alone and stays disabled at the end.
 */
export async function pauseTriggers(deps: WorkflowDeps, ids: RunIds): Promise<{ paused: string[]; alreadyDisabled: string[]; missing: string[] }> {
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const out = { paused: [] as string[], alreadyDisabled: [] as string[], missing: [] as string[] };
  for (const ref of namedTriggers(manifest)) {
    const label = `${ref.kind} ${pausedTriggerName(ref)}`;
    const control = controlOf(deps, ref.kind);
    const state = await control.state(ref);
    if (state === undefined) {
      deps.log.warn('pipeline trigger to pause does not exist', { trigger: label, runId: ids.runId });
      out.missing.push(label);
      continue;
    }
    const record = await deps.ledger.recordPausedTrigger({ runId: ids.runId, ...ref, priorState: state, pausedAt: deps.now().toISOString() });
    if (record.priorState === 'DISABLED') {
      out.alreadyDisabled.push(label);
      continue;
    }
    await control.setState(ref, 'DISABLED');
    out.paused.push(label);
  }
  if (out.paused.length + out.alreadyDisabled.length + out.missing.length > 0) deps.log.info('pipeline triggers paused', { runId: ids.runId, ...out });
  return out;
}

/**
 * "Resume pipeline triggers" (success and failure paths): re-enables every trigger this run disabled, and only those.
 * Tries them all; then throws TriggersNotResumedError naming any that could not be enabled (the state retries).
 */
export async function resumeTriggers(deps: WorkflowDeps, ids: { runId: string }): Promise<{ resumed: string[]; leftDisabled: string[] }> {
  const records = await deps.ledger.listPausedTriggers(ids.runId);
  const out = { resumed: [] as string[], leftDisabled: [] as string[] };
  const failed: string[] = [];
  for (const r of records) {
    const label = `${r.kind} ${pausedTriggerName(r)}`;
    if (r.priorState === 'DISABLED') {
      out.leftDisabled.push(label);
      continue;
    }
    if (r.resumedAt) {
      out.resumed.push(label);
      continue;
    }
    try {
      await controlOf(deps, r.kind).setState(r, 'ENABLED');
      await deps.ledger.markTriggerResumed(ids.runId, r, deps.now().toISOString());
      out.resumed.push(label);
    } catch (error) {
      failed.push(`${label}: ${(error as Error).message}`);
    }
  }
  if (failed.length > 0) {
    throw new TriggersNotResumedError(`pipeline triggers paused for the rollback could not be re-enabled (enable them by hand): ${failed.join('; ')}`);
  }
  if (records.length > 0) deps.log.info('pipeline triggers resumed', { runId: ids.runId, ...out });
  return out;
}
