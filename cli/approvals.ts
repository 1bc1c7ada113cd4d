import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { InvalidToken, SendTaskFailureCommand, SendTaskSuccessCommand, SFNClient, TaskDoesNotExist, TaskTimedOut } from '@aws-sdk/client-sfn';
import { ApprovalTimedOutError, InputError } from '../core/errors.ts';
import { Ledger } from '../core/ledger/ledger.ts';
import { readRuntimeConfig } from '../core/runtime/config.ts';
import { decideApproval, type Decision } from '../core/workflow/policy.ts';

export interface ApprovalArgs {
  runId: string;
  decision: Decision;
  by: string;
  reason: string;
  /** Only record the decision: a local run (`rollback --local`) reads it from the ledger. */
  local: boolean;
  ledgerTable?: string;
}

/**
 * `etl-rollback approve|reject <run>`: records who decided what and why under the run in the ledger (once), then, for
 * a run in AWS, answers its waiting state with the stored task token (SendTaskSuccess / SendTaskFailure). A local
 * run's engine reads the decision from the ledger. Running the same decision again re-sends it (a lost answer).
 */
export async function answerApproval(args: ApprovalArgs): Promise<{ runId: string; status: string; already: boolean; delivered: boolean }> {
  const ledger = new Ledger(new DynamoDBClient({}), args.ledgerTable ?? readRuntimeConfig().ledgerTable);
  const { record, already } = await decideApproval({ ledger, now: () => new Date() }, args);
  if (args.local) return { runId: args.runId, status: record.status, already, delivered: false };
  const sfn = new SFNClient({});
  try {
    if (args.decision === 'approve') {
      await sfn.send(new SendTaskSuccessCommand({ taskToken: record.taskToken, output: JSON.stringify({ approved: true, by: args.by, reason: args.reason }) }));
    } else {
      await sfn.send(new SendTaskFailureCommand({ taskToken: record.taskToken, error: 'ApprovalRejectedError', cause: `rejected by ${args.by}: ${args.reason}` }));
    }
  } catch (error) {
    if (error instanceof TaskTimedOut) throw new ApprovalTimedOutError(`run "${args.runId}" stopped waiting for approval (its deadline was ${record.deadline})`);
    if (error instanceof TaskDoesNotExist || error instanceof InvalidToken) {
      throw new InputError(`run "${args.runId}" is no longer waiting for approval in Step Functions (${(error as Error).name}); the decision is recorded in the ledger`);
    }
    throw error;
  }
  return { runId: args.runId, status: record.status, already, delivered: true };
}
