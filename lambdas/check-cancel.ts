import { z } from 'zod';
import { checkCancelBeforeStage } from '../core/workflow/rollback.ts';
import { taskHandler } from './task.ts';

/** "Check for cancel": before each stage, a recorded cancel request stops the run (RunCancelled). Touches nothing. */
export const handler = taskHandler('check-cancel', z.object({ runId: z.string().min(1), stage: z.number().int().min(0) }), (deps, input) => checkCancelBeforeStage(deps, input));
