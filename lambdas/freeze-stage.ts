import { z } from 'zod';
import { freezeStage } from '../core/workflow/freeze.ts';
import { runIds, taskHandler } from './task.ts';

/** "Freeze stage writes": puts the write freeze of the stage's units that ask for one in place, before the stage restores. */
export const handler = taskHandler(
  'freeze-stage',
  runIds.extend({ stage: z.object({ index: z.number().int().min(0), units: z.array(z.string()).min(1) }) }),
  (deps, input) => freezeStage(deps, input),
);
