import { acquireLock } from '../core/workflow/rollback.ts';
import { runIds, taskHandler } from './task.ts';

/** "Acquire pipeline lock". */
export const handler = taskHandler('acquire-lock', runIds, (deps, input) => acquireLock(deps, input));
