import { z } from 'zod';
import { verifyStage } from '../core/workflow/rollback.ts';
import { runIds, taskHandler } from './task.ts';

/** "Verify stage": the validation gate after each stage. */
export const handler = taskHandler(
  'verify-stage',
  runIds.extend({ stage: z.object({ index: z.number().int().min(0), units: z.array(z.string()).min(1) }) }),
  (deps, input) => verifyStage(deps, input),
);
