import type { RunReport } from '../report/report.ts';
import { describeRecovery } from '../report/report.ts';
import type { Notification } from './notify.ts';

/**
 * `Drill Failed` (source `etl.rollback`, like every event of the rollback's own): a drill failed a gate, could not run,
 * or took longer than the pipeline's RTO. Not `etl.deployments`: the trigger rules listen there, and a failed drill
 * must never start a rollback.
 */
export function drillFailed(report: RunReport, reason: string): Notification {
  const d = report.drill;
  return {
    detailType: 'Drill Failed',
    subject: `etl-rollback: ${report.pipeline} / ${report.deploymentId} rollback drill FAILED`,
    message: [
      `The rollback drill of ${report.pipeline} / ${report.deploymentId} (run ${report.runId}) failed: ${reason}.`,
      ...(d ? [`Measured: ${describeRecovery(d)}.`, `Scratch cleanup: ${d.cleanup.complete ? 'complete' : `INCOMPLETE${d.cleanup.error ? ` (${d.cleanup.error})` : ''}`}.`] : []),
      'Production data was not touched: a drill restores into scratch targets only.',
      `Report: reports/${report.pipeline}/${report.runId}.md in the audit store.`,
    ].join('\n'),
    detail: {
      pipeline: report.pipeline,
      deploymentId: report.deploymentId,
      runId: report.runId,
      reason,
      status: report.status,
      ...(d?.recoveryMs !== undefined ? { measuredRtoSeconds: Math.round(d.recoveryMs / 100) / 10 } : {}),
      ...(d?.rtoSeconds !== undefined ? { targetRtoSeconds: d.rtoSeconds, rto: d.rto } : {}),
      overRto: d?.overRto ?? false,
      ...(report.error ? { error: report.error } : {}),
      stages: report.stages.map((s) => ({ stage: s.index + 1, status: s.status, durationMs: s.durationMs })),
    },
  };
}
