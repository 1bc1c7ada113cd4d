import { z } from 'zod';
import { checkFrozenStage } from '../core/workflow/freeze.ts';
import { runIds, taskHandler } from './task.ts';

/** "Check frozen units unchanged": before the gate, what slipped in under the freeze is named and restored by a second pass. */
export const handler = taskHandler(
  'check-frozen-stage',
  runIds.extend({ stage: z.object({ index: z.number().int().min(0), units: z.array(z.string()).min(1) }) }),
  (deps, input) => checkFrozenStage(deps, input),
);
