import { z } from 'zod';
import { finishDrill } from '../core/workflow/drill.ts';
import { publishDrillMetrics } from './run-metrics.ts';
import { caught, taskHandler } from './task.ts';

const ids = z.object({ runId: z.string(), pipeline: z.string(), deploymentId: z.string() });

/** "Finish drill" / "Record drill not started": the report, and the drill's metrics (run-metrics.ts, publishDrillMetrics). */
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
    publishDrillMetrics(outcome.report, outcome.failure !== undefined);
    return outcome;
  },
  (input) => ({ runId: input.state.plan?.runId ?? input.executionName }),
);
