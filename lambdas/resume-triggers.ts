import { z } from 'zod';
import { resumeTriggers } from '../core/workflow/policy.ts';
import { taskHandler } from './task.ts';

/** "Resume pipeline triggers" / "… after failure": re-enables the rules this run disabled, and only those. */
export const handler = taskHandler('resume-triggers', z.object({ runId: z.string().min(1), pipeline: z.string().min(1) }), (deps, input) => resumeTriggers(deps, input));
