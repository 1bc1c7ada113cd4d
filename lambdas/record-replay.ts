import { z } from 'zod';
import { recordReplay } from '../core/workflow/replay.ts';
import { caught, runIds, taskHandler } from './task.ts';

/** "Record replay" (the execution's result) and "Record replay failure" (the Catch of "Replay pipeline"). */
export const handler = taskHandler('record-replay', runIds.extend({ result: z.unknown().optional(), error: caught }), (deps, input) => recordReplay(deps, input));
