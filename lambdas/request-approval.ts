import { z } from 'zod';
import { requestApproval } from '../core/workflow/policy.ts';
import { runIds, taskHandler } from './task.ts';

/**
 * "Request approval" (invoked with `.waitForTaskToken`): stores the task token under the run and announces the request;
 * the state waits until `etl-rollback approve|reject <run>` answers with that token, or its timeout.
 */
export const handler = taskHandler(
  'request-approval',
  runIds.extend({ taskToken: z.string().min(1), timeoutSeconds: z.number().int().min(1), approvalId: z.string().min(1).max(128).optional() }),
  (deps, input) => requestApproval(deps, input),
);
