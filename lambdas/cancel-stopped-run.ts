import { z } from 'zod';
import { InputError } from '../core/errors.ts';
import { cleanUpStoppedRun } from '../core/workflow/cancel.ts';
import { parseInput } from '../core/workflow/requests.ts';
import { cleanUpStoppedSnapshot } from '../core/workflow/snapshot.ts';
import { taskHandler } from './task.ts';

/**
 * "Clean up stopped run": the target of the EventBridge rules on the rollback and the snapshot state machines'
 * executions that end ABORTED (StopExecution, the console's Stop) or TIMED_OUT (not a state machine task). Which
 * machine: the event's state machine ARN against ETL_ROLLBACK_SNAPSHOT_STATE_MACHINE_ARN (set by the stack).
 * - a rollback execution's name is the run id; the core does what the definition's failure path would have done
 *   (core/workflow/cancel.ts);
 * - a snapshot execution's input names the deployment; the core marks it FAILED if it was still being captured and
 *   releases the snapshot's lock (core/workflow/snapshot.ts, cleanUpStoppedSnapshot).
 */
const stoppedExecution = z.object({
  source: z.literal('aws.states'),
  'detail-type': z.literal('Step Functions Execution Status Change'),
  detail: z.object({
    name: z.string().min(1).max(80),
    status: z.enum(['ABORTED', 'TIMED_OUT']),
    executionArn: z.string().min(1),
    stateMachineArn: z.string().optional(),
    /** The execution's input as a JSON string; null when over EventBridge's size (inputDetails.included false). */
    input: z.string().nullish(),
  }),
});

const snapshotInput = z.object({ pipeline: z.string().min(1), deploymentId: z.string().min(1) });

const snapshotMachine = parseInput(z.object({ ETL_ROLLBACK_SNAPSHOT_STATE_MACHINE_ARN: z.string().optional() }), process.env, 'environment').ETL_ROLLBACK_SNAPSHOT_STATE_MACHINE_ARN;

export const handler = taskHandler(
  'cancel-stopped-run',
  stoppedExecution,
  async (deps, event) => {
    const { detail } = event;
    const by = detail.status === 'ABORTED' ? 'StopExecution' : 'its timeout';
    if (snapshotMachine === undefined || detail.stateMachineArn !== snapshotMachine) {
      return cleanUpStoppedRun(deps, { runId: detail.name, status: detail.status, by });
    }
    if (detail.input === undefined || detail.input === null) {
      throw new InputError(
        `snapshot execution ${detail.executionArn} ended ${detail.status}, but its event does not carry its input (over EventBridge's size), so its deployment is not known here; ` +
          'run the same snapshot again under the same deployment id to finish it (etl-rollback status shows the deployment SNAPSHOTTING or IN_PLACE)',
      );
    }
    const request = parseInput(snapshotInput, JSON.parse(detail.input) as unknown, `input of snapshot execution ${detail.executionArn}`);
    return cleanUpStoppedSnapshot(deps, { pipeline: request.pipeline, deploymentId: request.deploymentId, executionName: detail.name, status: detail.status, by });
  },
  (event) => ({ runId: event.detail.name }),
);
