import { describeChanges } from '../core/workflow/rollback.ts';
import { runIds, taskHandler } from './task.ts';

/** "Describe changes": the dry run's report. */
export const handler = taskHandler('describe-changes', runIds, (deps, input) => describeChanges(deps, input));
