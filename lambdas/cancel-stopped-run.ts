import { z } from 'zod';
import { cleanUpStoppedRun } from '../core/workflow/cancel.ts';
import { taskHandler } from './task.ts';

/**
 * "Clean up stopped run": the target of the EventBridge rule on the rollback state machine's executions that end
 * ABORTED (StopExecution, the console's Stop) or TIMED_OUT (not a state machine task). The execution's name is the run
 * id; the core does what the definition's failure path would have done (core/workflow/cancel.ts).
 */
const stoppedExecution = z.object({
  source: z.literal('aws.states'),
  'detail-type': z.literal('Step Functions Execution Status Change'),
  detail: z.object({
    name: z.string().min(1).max(80),
    status: z.enum(['ABORTED', 'TIMED_OUT']),
    executionArn: z.string().min(1),
  }),
});

export const handler = taskHandler(
  'cancel-stopped-run',
  stoppedExecution,
  (deps, event) => cleanUpStoppedRun(deps, { runId: event.detail.name, status: event.detail.status, by: event.detail.status === 'ABORTED' ? 'StopExecution' : 'its timeout' }),
  (event) => ({ runId: event.detail.name }),
);
