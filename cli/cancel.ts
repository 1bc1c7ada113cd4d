import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { InvalidToken, SendTaskFailureCommand, SFNClient, TaskDoesNotExist, TaskTimedOut } from '@aws-sdk/client-sfn';
import { Ledger } from '../core/ledger/ledger.ts';
import { readRuntimeConfig } from '../core/runtime/config.ts';
import { cancelledError, requestCancel, type CancelOutcome } from '../core/workflow/cancel-request.ts';

export interface CancelArgs {
  runId: string;
  by: string;
  reason: string;
  /** A local run (`rollback --local`): only record the request; the run reads it from the ledger. */
  local: boolean;
  ledgerTable?: string;
}

/**
 * `etl-rollback cancel <run>`: records the request in the ledger (core/workflow/cancel-request.ts); the run stops at its
 * next safe point and cleans up through its failure path. One wait has no safe point of its own in AWS: a run waiting
 * for approval waits for a task token, so that wait is answered here (SendTaskFailure with `RunCancelled`); a run that
 * is no longer waiting is left to find the request at its next safe point.
 */
export async function cancelRun(args: CancelArgs): Promise<CancelOutcome & { answeredApproval: boolean }> {
  const ledger = new Ledger(new DynamoDBClient({}), args.ledgerTable ?? readRuntimeConfig().ledgerTable);
  const outcome = await requestCancel({ ledger, now: () => new Date() }, args);
  if (args.local || outcome.outcome === 'finished' || !outcome.request) return { ...outcome, answeredApproval: false };
  const approval = await ledger.getApproval(args.runId);
  if (approval?.status !== 'PENDING') return { ...outcome, answeredApproval: false };
  try {
    const error = cancelledError(outcome.request, 'while waiting for approval (nothing restored)');
    await new SFNClient({}).send(new SendTaskFailureCommand({ taskToken: approval.taskToken, error: error.name, cause: error.message }));
    return { ...outcome, answeredApproval: true };
  } catch (error) {
    if (error instanceof TaskDoesNotExist || error instanceof InvalidToken || error instanceof TaskTimedOut) return { ...outcome, answeredApproval: false };
    throw error;
  }
}

/** What `cancel` prints: one line, times ISO-8601 UTC. */
export function cancelText(result: CancelOutcome): string {
  const r = result.request;
  switch (result.outcome) {
    case 'finished':
      return `run ${result.runId} has already ended (${result.status}): nothing to cancel`;
    case 'already':
      return `run ${result.runId}: cancel already requested by ${r?.requestedBy} at ${r?.requestedAt}; it stops at its next safe point`;
    default:
      return `run ${result.runId}: cancel requested by ${r?.requestedBy} at ${r?.requestedAt}; it stops at its next safe point (before its next stage, or while it waits), then resumes the pipeline's triggers and releases its lock. Continue it later with rollback --resume ${result.runId}`;
  }
}
