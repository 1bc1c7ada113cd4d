import { z } from 'zod';
import { planRun } from '../core/workflow/rollback.ts';
import { countRun } from './run-metrics.ts';
import { taskHandler } from './task.ts';

/** "Plan rollback": the execution input (validated in core) plus the execution name, which becomes the run id. */
export const handler = taskHandler(
  'plan-rollback',
  z.object({ request: z.unknown(), executionName: z.string().min(1) }),
  async (deps, input) => {
    const planned = await planRun(deps, input);
    if (!planned.dryRun) countRun('RollbacksStarted', planned.pipeline);
    return planned;
  },
  (input) => ({ runId: input.executionName }),
);
