import { z } from 'zod';
import { rehearseUnit } from '../core/workflow/drill.ts';
import { runIds, taskHandler } from './task.ts';

/** "Rehearse unit": one unit's restore point into its scratch target, or one step of it (the state machine waits and calls again). */
export const handler = taskHandler(
  'rehearse-unit',
  runIds.extend({ stage: z.number().int().min(0), unitId: z.string().min(1), polls: z.number().int().min(0).optional() }),
  (deps, input) => rehearseUnit(deps, input),
);
