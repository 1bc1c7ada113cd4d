import { PutEventsCommand, type EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { PublishCommand, type SNSClient } from '@aws-sdk/client-sns';
import type { Log } from '../adapters/types.ts';
import { pausedTriggerName, type PausedTrigger, type PlannedStage, type RunTrigger } from '../ledger/ledger.ts';
import { describeTrigger, type RunReport } from '../report/report.ts';

/**
 * What a rollback tells people (SNS: a short message a person reads on a phone) and other systems (EventBridge:
 * `source: etl.rollback`, one `detail-type` per event). Formatting lives here; the tasks call `announce` with what
 * happened, and a notification that cannot be sent is logged, never allowed to stop a rollback.
 */
export const EVENT_SOURCE = 'etl.rollback';
export type RollbackEventType = 'Rollback Started' | 'Approval Requested' | 'Stage Completed' | 'Rollback Succeeded' | 'Rollback Failed' | 'Drill Failed';
/** The snapshot's moments (core/workflow/snapshot-notify.ts): what a deploy pipeline waits for, and its failure. */
export type SnapshotEventType = 'Restore Points In Place' | 'Restore Points Sealed' | 'Snapshot Failed';

export interface Notification {
  detailType: RollbackEventType | SnapshotEventType;
  /** SNS subject: at most 100 characters. */
  subject: string;
  message: string;
  /**
   * The EventBridge event's detail. Always has pipeline and deploymentId; a run's events (rollback, drill) its runId,
   * a snapshot's its execution name.
   */
  detail: { pipeline: string; deploymentId: string; runId?: string } & Record<string, unknown>;
  /** `systems`: EventBridge only (a moment other systems wait for, which people need not be told). Default: both. */
  audience?: 'systems';
}

export interface Notifier {
  send(notification: Notification): Promise<void>;
}

/**
 * SNS (when a topic is configured) and EventBridge (on `eventBus`). Without a topic, people get no messages; the
 * events still go to the bus, where other systems subscribe with rules.
 */
export function awsNotifier(options: { sns?: SNSClient; topicArn?: string; events?: EventBridgeClient; eventBus: string }): Notifier {
  return {
    async send(n) {
      const sends: Promise<unknown>[] = [];
      if (options.sns && options.topicArn && n.audience !== 'systems') {
        sends.push(
          options.sns.send(
            new PublishCommand({
              TopicArn: options.topicArn,
              Subject: n.subject.slice(0, 100),
              Message: n.message,
              MessageAttributes: {
                event: { DataType: 'String', StringValue: n.detailType },
                pipeline: { DataType: 'String', StringValue: n.detail.pipeline },
              },
            }),
          ),
        );
      }
      if (options.events) {
        sends.push(
          options.events
            .send(new PutEventsCommand({ Entries: [{ Source: EVENT_SOURCE, DetailType: n.detailType, Detail: JSON.stringify(n.detail), EventBusName: options.eventBus }] }))
            .then((out) => {
              if ((out.FailedEntryCount ?? 0) > 0) throw new Error(`PutEvents refused the event: ${out.Entries?.[0]?.ErrorCode} ${out.Entries?.[0]?.ErrorMessage}`);
            }),
        );
      }
      const results = await Promise.allSettled(sends);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
}

/** Sends a notification if a notifier is wired; a failure is logged (the rollback goes on). */
export async function announce(deps: { notifier?: Notifier; log: Log }, notification: Notification): Promise<void> {
  if (!deps.notifier) return;
  try {
    await deps.notifier.send(notification);
  } catch (error) {
    deps.log.warn('notification not sent', { detailType: notification.detailType, pipeline: notification.detail.pipeline, deploymentId: notification.detail.deploymentId, runId: notification.detail.runId, error: (error as Error).message });
  }
}

// ── messages ──────────────────────────────────────────────────────────────────

interface RunFacts {
  runId: string;
  pipeline: string;
  deploymentId: string;
  requestedBy: string;
  reason: string;
}

const title = (r: { pipeline: string; deploymentId: string }) => `${r.pipeline} / ${r.deploymentId}`;
const followUp = (r: RunFacts) => `Follow it: etl-rollback status ${r.pipeline} · run ${r.runId}`;

export interface PolicyFacts {
  windows: string[];
  approvalRequired: boolean;
  approvalTimeoutMinutes?: number;
  pausedTriggers: string[];
}

export function rollbackStarted(
  run: RunFacts & { stages: PlannedStage[]; urgent: boolean; trigger?: RunTrigger; resumedFrom?: string },
  policy: PolicyFacts,
  /** Where the run's runbook is (s3:// URL): each stage and unit, how by hand, what to check, what if it fails. */
  runbook?: string,
): Notification {
  const lines = [
    `Rollback of ${title(run)} started (run ${run.runId}).`,
    `Why: ${run.reason || 'no reason given'} — requested by ${run.requestedBy}${run.urgent ? ' (URGENT: maintenance windows do not apply)' : ''}.`,
    `Started by: ${describeTrigger(run.trigger ?? { kind: 'manual' })}.`,
    ...(run.resumedFrom ? [`Resumes failed run ${run.resumedFrom}: the units it verified are kept, not restored again.`] : []),
    `Plan: ${run.stages.length} stage(s), consumers first, each verified before the next:`,
    ...run.stages.map((s) => `  ${s.index + 1}. ${s.units.join(', ')}`),
  ];
  const rules: string[] = [];
  if (policy.windows.length > 0 && !run.urgent) rules.push(`runs only inside a maintenance window (${policy.windows.join('; ')})`);
  if (policy.approvalRequired) rules.push(`waits for approval (at most ${policy.approvalTimeoutMinutes} min)`);
  if (policy.pausedTriggers.length > 0) rules.push(`pauses the pipeline's triggers while restoring: ${policy.pausedTriggers.join(', ')}`);
  if (rules.length > 0) lines.push(`Policy: ${rules.join('; ')}.`);
  if (runbook) lines.push(`Runbook: ${runbook}`);
  lines.push(followUp(run));
  return {
    detailType: 'Rollback Started',
    subject: `etl-rollback: ${title(run)} rollback started`,
    message: lines.join('\n'),
    detail: {
      pipeline: run.pipeline,
      deploymentId: run.deploymentId,
      runId: run.runId,
      requestedBy: run.requestedBy,
      reason: run.reason,
      urgent: run.urgent,
      trigger: run.trigger ?? { kind: 'manual' },
      ...(run.resumedFrom ? { resumedFrom: run.resumedFrom } : {}),
      stages: run.stages.map((s) => s.units),
      ...(runbook ? { runbook } : {}),
    },
  };
}

export function approvalRequested(run: RunFacts, deadline: string, allowSelfApproval = false, what: 'rollback' | 'replay' = 'rollback'): Notification {
  return {
    detailType: 'Approval Requested',
    subject: `etl-rollback: ${title(run)} ${what} waits for approval`,
    message: [
      what === 'replay'
        ? `The rollback of ${title(run)} restored and verified every stage; its replay (the pipeline's own ETL, run again) needs an approval (${run.runId}).`
        : `The rollback of ${title(run)} (run ${run.runId}) needs an approval before anything is restored.`,
      `Why: ${run.reason || 'no reason given'} — requested by ${run.requestedBy}.`,
      `Approve: etl-rollback approve ${run.runId} --reason "…"${allowSelfApproval ? '' : ` (by someone other than ${run.requestedBy})`}`,
      `Reject:  etl-rollback reject ${run.runId} --reason "…"`,
      what === 'replay'
        ? `Without a decision by ${deadline} the run fails with its data restored and verified, and no replay started.`
        : `Without a decision by ${deadline} the run stops and nothing is touched.`,
    ].join('\n'),
    detail: { pipeline: run.pipeline, deploymentId: run.deploymentId, runId: run.runId, deadline, requestedBy: run.requestedBy, reason: run.reason, ...(what === 'replay' ? { approvalFor: 'replay' } : {}) },
  };
}

export function stageCompleted(ids: { runId: string; pipeline: string; deploymentId: string }, stage: PlannedStage, stageCount: number | undefined): Notification {
  const of = stageCount ? ` of ${stageCount}` : '';
  return {
    detailType: 'Stage Completed',
    subject: `etl-rollback: ${title(ids)} stage ${stage.index + 1}${of} verified`,
    message: `Rollback of ${title(ids)} (run ${ids.runId}): stage ${stage.index + 1}${of} restored and verified: ${stage.units.join(', ')}.`,
    detail: { pipeline: ids.pipeline, deploymentId: ids.deploymentId, runId: ids.runId, stage: stage.index + 1, stageCount, units: stage.units, status: 'VERIFIED' },
  };
}

function stagesSummary(report: RunReport): string[] {
  return report.stages.map((s) => `  ${s.index + 1}. ${s.status}: ${s.units.map((u) => `${u.unitId} (${u.writes} writes)`).join(', ')}`);
}

function pausedSummary(paused: readonly PausedTrigger[]): string[] {
  const label = (p: PausedTrigger) => `${p.kind} ${pausedTriggerName(p)}`;
  const resumed = paused.filter((p) => p.priorState !== 'DISABLED' && p.resumedAt).map(label);
  const still = paused.filter((p) => p.priorState !== 'DISABLED' && !p.resumedAt).map(label);
  const out: string[] = [];
  if (resumed.length > 0) out.push(`Pipeline triggers re-enabled: ${resumed.join(', ')}.`);
  if (still.length > 0) {
    out.push(`STILL DISABLED, re-enable by hand (aws events enable-rule --name …; a schedule: aws scheduler update-schedule … --state ENABLED): ${still.join(', ')}.`);
  }
  return out;
}

export function rollbackSucceeded(report: RunReport, paused: readonly PausedTrigger[]): Notification {
  return {
    detailType: 'Rollback Succeeded',
    subject: `etl-rollback: ${title(report)} rolled back`,
    message: [
      `Rollback of ${title(report)} succeeded (run ${report.runId}): every stage restored and verified, ${report.totals.writes} write(s).`,
      ...stagesSummary(report),
      ...pausedSummary(paused),
      'What to check: the pipeline runs on the restored data from now on; jobs outside this pipeline that read the bad data may need a rerun; the deploy itself is not reverted by etl-rollback.',
      `Report: etl-rollback status ${report.pipeline} · run ${report.runId}`,
    ].join('\n'),
    detail: { pipeline: report.pipeline, deploymentId: report.deploymentId, runId: report.runId, status: report.status, writes: report.totals.writes, stages: report.stages.map((s) => ({ stage: s.index + 1, status: s.status })) },
  };
}

export function rollbackFailed(report: RunReport, paused: readonly PausedTrigger[]): Notification {
  const error = report.error ? `${report.error.name}: ${report.error.message}` : 'unknown error';
  const what =
    report.status === 'REFUSED'
      ? 'was refused: another rollback of the pipeline holds its lock. Nothing was touched.'
      : report.status === 'REJECTED'
        ? 'was not approved. Nothing was touched.'
        : report.status === 'CANCELLED'
          ? report.partial
            ? 'was CANCELLED part-way: the stages marked VERIFIED are restored, the others are not, so the data is mixed.'
            : 'was cancelled before it restored anything.'
          : report.partial
          ? 'FAILED PART-WAY: some stages are restored and others are not, so the data is mixed.'
          : 'failed.';
  const check =
    report.status === 'REFUSED'
      ? 'What to check: which run holds the lock (etl-rollback status); start again once it ends.'
      : report.status === 'REJECTED'
        ? 'What to check: nothing; start a new rollback if it is still needed.'
        : report.status === 'CANCELLED'
          ? `What to do: continue it with etl-rollback rollback <manifest> --deployment ${report.deploymentId} --resume ${report.runId} (verified units are skipped), or leave it.`
          : 'What to check: the error below; fix its cause and rerun the same rollback (verified stages are skipped, it converges).';
  return {
    detailType: 'Rollback Failed',
    subject: `etl-rollback: ${title(report)} rollback ${report.status === 'FAILED' ? 'FAILED' : report.status.toLowerCase()}`,
    message: [`Rollback of ${title(report)} (run ${report.runId}) ${what}`, `Error: ${error}`, ...stagesSummary(report), ...pausedSummary(paused), check].join('\n'),
    detail: {
      pipeline: report.pipeline,
      deploymentId: report.deploymentId,
      runId: report.runId,
      status: report.status,
      partial: report.partial,
      error: report.error,
      stages: report.stages.map((s) => ({ stage: s.index + 1, status: s.status })),
    },
  };
}
