import { z } from 'zod';
import { finishDrill } from '../core/workflow/drill.ts';
import { countRun } from './run-metrics.ts';
import { caught, metrics, MetricUnit, taskHandler } from './task.ts';

const ids = z.object({ runId: z.string(), pipeline: z.string(), deploymentId: z.string() });

/**
 * "Finish drill" / "Record drill not started": the report, and the metrics the stack's alarm watches: `DrillFailed`
 * (a failed drill, or one over its RTO) and `DrillRecoveryTime` (ms), each for the service and per pipeline.
 */
export const handler = taskHandler(
  'finish-drill',
  z.object({
    executionName: z.string().min(1),
    state: z.object({
      plan: ids.optional(),
      pipeline: z.unknown().optional(),
      deploymentId: z.unknown().optional(),
      error: caught.nullable(),
      cleanup: z.object({ done: z.boolean(), waitSeconds: z.number(), removed: z.array(z.string()), removedNow: z.array(z.string()).default([]), status: z.string().optional() }).optional(),
      cleanupError: caught.nullable(),
    }),
  }),
  async (deps, input) => {
    const { state } = input;
    const outcome = await finishDrill(deps, {
      executionName: input.executionName,
      ...(state.plan ? { plan: state.plan } : {}),
      request: { pipeline: state.pipeline, deploymentId: state.deploymentId },
      error: state.error ?? null,
      ...(state.cleanup ? { cleanup: state.cleanup } : {}),
      cleanupError: state.cleanupError ?? null,
    });
    const pipeline = outcome.report.pipeline;
    if (outcome.failure) countRun('DrillFailed', pipeline);
    else if (outcome.status === 'SUCCEEDED') countRun('DrillsSucceeded', pipeline);
    const recovery = outcome.report.drill?.recoveryMs;
    if (recovery !== undefined) {
      metrics.addMetric('DrillRecoveryTime', MetricUnit.Milliseconds, recovery);
      const single = metrics.singleMetric();
      single.addDimension('pipeline', pipeline);
      single.addMetric('DrillRecoveryTime', MetricUnit.Milliseconds, recovery);
    }
    return outcome;
  },
  (input) => ({ runId: input.state.plan?.runId ?? input.executionName }),
);
