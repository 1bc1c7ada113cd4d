import { prepareReplay } from '../core/workflow/replay.ts';
import { runIds, taskHandler } from './task.ts';

/** "Prepare replay": renders the pipeline's replay input with the restored scope (core/workflow/replay.ts). */
export const handler = taskHandler('prepare-replay', runIds, (deps, input) => prepareReplay(deps, input));
