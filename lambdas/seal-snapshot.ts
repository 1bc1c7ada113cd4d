import { sealSnapshot } from '../core/workflow/snapshot.ts';
import { deploymentIds, taskHandler } from './task.ts';

/** "Seal restore points": the deployment becomes READY. */
export const handler = taskHandler('seal-snapshot', deploymentIds, (deps, input) => sealSnapshot(deps, input));
