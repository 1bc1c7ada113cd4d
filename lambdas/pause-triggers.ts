import { pauseTriggers } from '../core/workflow/policy.ts';
import { runIds, taskHandler } from './task.ts';

/** "Pause pipeline triggers": disables the pipeline's EventBridge rules named in the manifest, recording their state. */
export const handler = taskHandler('pause-triggers', runIds, (deps, input) => pauseTriggers(deps, input));
