import { z } from 'zod';
import { verifyDrillStage } from '../core/workflow/drill.ts';
import { runIds, taskHandler } from './task.ts';

/** "Verify scratch stage": the validation gate of a drill stage, on the scratch copies. */
export const handler = taskHandler(
  'verify-drill-stage',
  runIds.extend({ stage: z.object({ index: z.number().int().min(0), units: z.array(z.string()).min(1) }) }),
  (deps, input) => verifyDrillStage(deps, input),
);
