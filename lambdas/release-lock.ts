import { z } from 'zod';
import { releaseLock } from '../core/workflow/rollback.ts';
import { taskHandler } from './task.ts';

/** "Release lock" / "Release lock after failure". */
export const handler = taskHandler('release-lock', z.object({ runId: z.string().min(1), pipeline: z.string().min(1) }), (deps, input) => releaseLock(deps, input));
