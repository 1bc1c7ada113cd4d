import { z } from 'zod';
import { planDrill } from '../core/workflow/drill.ts';
import { countRun } from './run-metrics.ts';
import { taskHandler } from './task.ts';

/** "Plan drill": the drill request plus the execution name, which becomes the drill's run id. */
export const handler = taskHandler(
  'plan-drill',
  z.object({ request: z.unknown(), executionName: z.string().min(1) }),
  async (deps, input) => {
    const plan = await planDrill(deps, input);
    countRun('DrillsStarted', plan.pipeline);
    return plan;
  },
  (input) => ({ runId: input.executionName }),
);
