import { z } from 'zod';
import { beginSnapshot } from '../core/workflow/snapshot.ts';
import { taskHandler } from './task.ts';

/** "Register deployment": the execution input (validated in core) plus the execution name, recorded on the deployment. */
export const handler = taskHandler('begin-snapshot', z.object({ request: z.unknown(), executionName: z.string() }), (deps, input) =>
  beginSnapshot(deps, input.request, { executionName: input.executionName }),
);
