import { z } from 'zod';
import { recordRollbackFailure } from '../core/workflow/rollback.ts';
import { recordSnapshotFailure } from '../core/workflow/snapshot.ts';
import { countRun, publishRunMetrics } from './run-metrics.ts';
import { caught, metrics, MetricUnit, taskHandler } from './task.ts';

const input = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('snapshot'), pipeline: z.string(), deploymentId: z.string(), error: caught }),
  z.object({
    kind: z.literal('rollback'),
    runId: z.string(),
    pipeline: z.string(),
    deploymentId: z.string(),
    error: caught,
    /** "Record rejection": the approval was rejected or timed out; the deployment gets `deploymentStatus` back. */
    rejected: z.boolean().optional(),
    deploymentStatus: z.string().optional(),
  }),
]);

/** "Record snapshot failure" / "Record rollback failure" / "Record refusal". */
export const handler = taskHandler('record-failure', input, async (deps, event) => {
  if (event.kind === 'snapshot') {
    await recordSnapshotFailure(deps, event);
    metrics.addMetric('SnapshotsFailed', MetricUnit.Count, 1);
    return { recorded: true };
  }
  const report = await recordRollbackFailure(deps, event);
  // A cancelled run is asked for, not a fault: counted apart, so the failed-rollback alarm does not fire for it.
  const outcome = { REFUSED: 'RollbacksRefused', REJECTED: 'RollbacksRejected', CANCELLED: 'RollbacksCancelled' }[report.status as string] ?? 'RollbacksFailed';
  countRun(outcome, report.pipeline);
  publishRunMetrics(report);
  return report;
});
