import { InputError, RunCancelledError } from '../errors.ts';
import type { CancelRequest, Ledger, Run } from '../ledger/ledger.ts';
import { formatUtc } from '../manifest/time.ts';

/**
 * Cancelling a run is two halves that never meet directly. Whoever wants the run to stop (`etl-rollback cancel`, the
 * first Ctrl-C of a local run) only records a request in the ledger, under the run; the run itself looks for that
 * request at its safe points — before each stage (so after the previous stage's gate), and while it waits for its
 * maintenance window or its approval — and, when it finds one, throws RunCancelledError there. The state machine
 * catches it like any other error and takes its failure path: resume the paused triggers (and whatever else that path
 * undoes), record the run CANCELLED, release the lock, notify, write the report, end failed with `RunCancelled`.
 *
 * A stage under way is never cut in half by such a request: the check is not made inside a stage, so the stage's units
 * finish and its gate verifies them first. The restore poll loop of a long unit (an RDS restore and swap) is part of its
 * stage, so a cancel waits for it too; stopping at once is what StopExecution (or a second Ctrl-C) is for, and its
 * cleanup (core/workflow/cancel.ts) records the run as stopped mid-stage.
 *
 * The request lives in the ledger, not in the execution, so the same request stops a local run and a run in AWS, and
 * a request made before the run's first state (Ctrl-C at once) is still found.
 */

/** Run statuses of a run that has ended: a cancel request has nothing left to stop. */
const ENDED = new Set<Run['status']>(['SUCCEEDED', 'FAILED', 'REFUSED', 'REJECTED', 'CANCELLED', 'DRY_RUN']);

export interface CancelOutcome {
  runId: string;
  /** `recorded`: the run stops at its next safe point; `already`: an earlier request stands; `finished`: nothing to stop. */
  outcome: 'recorded' | 'already' | 'finished';
  /** The run's status when asked. */
  status: Run['status'];
  request?: CancelRequest;
}

/**
 * `etl-rollback cancel <run>`: records the request (exit 0), or says the run has already ended (exit 0, nothing
 * recorded). An unknown run id is bad input (exit 2): a typo must not look like a cancel that worked.
 */
export async function requestCancel(deps: { ledger: Ledger; now(): Date }, args: { runId: string; by: string; reason: string }): Promise<CancelOutcome> {
  const run = await deps.ledger.getRun(args.runId);
  if (!run) throw new InputError(`cannot cancel run "${args.runId}": there is no such run in ledger ${deps.ledger.tableName} (check the run id, or --ledger-table)`);
  if (ENDED.has(run.status)) return { runId: run.runId, outcome: 'finished', status: run.status };
  const { record, already } = await deps.ledger.requestCancel({ runId: run.runId, requestedBy: args.by, reason: args.reason, requestedAt: formatUtc(deps.now()) });
  return { runId: run.runId, outcome: already ? 'already' : 'recorded', status: run.status, request: record };
}

/**
 * The safe-point check ("Check for cancel", and the window and approval waits): throws RunCancelledError naming who
 * asked, when, why, and where the run stopped, if a request is recorded for the run; otherwise returns.
 */
export async function checkCancel(deps: { ledger: Ledger }, ids: { runId: string; at?: string }): Promise<{ cancelled: false }> {
  const request = await deps.ledger.getCancelRequest(ids.runId);
  if (!request) return { cancelled: false };
  throw cancelledError(request, ids.at ?? 'at a safe point');
}

export function cancelledError(request: CancelRequest, where: string): RunCancelledError {
  return new RunCancelledError(
    `cancelled by ${request.requestedBy} at ${request.requestedAt}${request.reason ? ` (${request.reason})` : ''}; stopped ${where}: resume it with rollback --resume ${request.runId}`,
  );
}
