import { z } from 'zod';
import { checkMaintenanceWindow } from '../core/workflow/policy.ts';
import { runIds, taskHandler } from './task.ts';

/** "Check maintenance window": may the run start now? If not, when does the next window open. */
export const handler = taskHandler('check-window', runIds.extend({ urgent: z.boolean().default(false) }), (deps, input) => checkMaintenanceWindow(deps, input));
