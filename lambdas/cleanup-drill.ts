import { z } from 'zod';
import { cleanupDrill } from '../core/workflow/drill.ts';
import { taskHandler } from './task.ts';

/** "Clean up scratch targets": removes every scratch target the drill made; idempotent, called again while RDS deletes. */
export const handler = taskHandler('cleanup-drill', z.object({ runId: z.string().min(1), pipeline: z.string().min(1) }), (deps, input) => cleanupDrill(deps, input));
