/**
 * Named errors. The `name` is part of the contract: Step Functions Catch/Retry match on it,
 * and the CLI maps it to an exit code a script can act on.
 *
 *   0 done · 1 the run failed · 2 bad input (manifest, arguments) · 3 refused (locked, window, rejected)
 */
export const EXIT = { ok: 0, failed: 1, badInput: 2, refused: 3 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export abstract class EtlRollbackError extends Error {
  abstract readonly exitCode: ExitCode;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    // Subclasses set `override readonly name = '...'` as a literal, so minifiers cannot mangle it.
  }
}

/** One problem in a manifest, with the path where it was found (`units[2].dependsOn[0]`). */
export interface ManifestIssue {
  path: string;
  message: string;
}

/** The manifest (or the document holding it) is invalid. Carries every problem found, not only the first. */
export class ManifestError extends EtlRollbackError {
  override readonly name = 'ManifestError';
  readonly exitCode = EXIT.badInput;
  constructor(
    readonly issues: ManifestIssue[],
    readonly source = 'manifest',
  ) {
    super(`${source} is invalid:\n${issues.map((i) => `  ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n')}`);
  }
}

/** Arguments or execution input are invalid (unknown unit asked for, malformed JSON input, ...). */
export class InputError extends EtlRollbackError {
  override readonly name = 'InputError';
  readonly exitCode = EXIT.badInput;
}

/** The deployment or one of its restore points does not exist (or is not sealed). */
export class RestorePointMissingError extends EtlRollbackError {
  override readonly name = 'RestorePointMissingError';
  readonly exitCode = EXIT.badInput;
}

/** A resource is not fit to be protected or restored as asked (unversioned bucket, table without columns, ...). */
export class PreflightError extends EtlRollbackError {
  override readonly name = 'PreflightError';
  readonly exitCode = EXIT.badInput;
}

/**
 * A rollback to a time (`--to`) asked for a time outside a resource's restorable window: before the oldest state its
 * history still holds (noncurrent versions expired, PITR retention), or after now. The message names the resource, the
 * time asked for and the window `[earliest, latest]` in ISO-8601 UTC. Nothing was touched.
 */
export class OutsideRestorableWindowError extends EtlRollbackError {
  override readonly name = 'OutsideRestorableWindowError';
  readonly exitCode = EXIT.badInput;
}

/** Another rollback of the same pipeline holds the lock. */
export class LockHeldError extends EtlRollbackError {
  override readonly name = 'LockHeldError';
  readonly exitCode = EXIT.refused;
}

/**
 * The deployment's restore points are in place but not yet sealed (IN_PLACE: the deploy may already be writing). A
 * rollback waits: the rollback state machine retries its plan on this error until the snapshot seals (or fails).
 */
export class SealPendingError extends EtlRollbackError {
  override readonly name = 'SealPendingError';
  readonly exitCode = EXIT.refused;
}

/** A validation gate found the restored state different from its restore point. */
export class VerificationFailedError extends EtlRollbackError {
  override readonly name = 'VerificationFailedError';
  readonly exitCode = EXIT.failed;
}

/** The run's policy asked for approval and an approver rejected it: nothing was touched. */
export class ApprovalRejectedError extends EtlRollbackError {
  override readonly name = 'ApprovalRejectedError';
  readonly exitCode = EXIT.refused;
}

/** The person who asked for the rollback tried to approve it themselves; the policy wants a second person. */
export class SelfApprovalError extends EtlRollbackError {
  override readonly name = 'SelfApprovalError';
  readonly exitCode = EXIT.refused;
}

/** The run's policy asked for approval and nobody decided in time: nothing was touched. */
export class ApprovalTimedOutError extends EtlRollbackError {
  override readonly name = 'ApprovalTimedOutError';
  readonly exitCode = EXIT.refused;
}

/** The data was restored, but a pipeline rule paused for the rollback could not be re-enabled. */
export class TriggersNotResumedError extends EtlRollbackError {
  override readonly name = 'TriggersNotResumedError';
  readonly exitCode = EXIT.failed;
}

/** A rollback drill stopped because a real rollback or snapshot of the pipeline holds its lock: an incident wins. */
export class DrillYieldedError extends EtlRollbackError {
  override readonly name = 'DrillYieldedError';
  readonly exitCode = EXIT.refused;
}

/**
 * A compensating-action handler (`custom` unit) failed, timed out, or gave an answer outside its contract. The message
 * names the unit and the handler, and carries the handler's own message.
 */
export class CompensationFailedError extends EtlRollbackError {
  override readonly name = 'CompensationFailedError';
  readonly exitCode = EXIT.failed;
}

/** Every stage was restored and verified, then the pipeline's replay (its own ETL run) failed or timed out. */
export class ReplayFailedError extends EtlRollbackError {
  override readonly name = 'ReplayFailedError';
  readonly exitCode = EXIT.failed;
}

/**
 * The run was cancelled (`etl-rollback cancel`, Ctrl-C in a local run, StopExecution in AWS) and stopped at a safe point:
 * between stages, or while it waited for its window or its approval. Exit 1, as for any run that did not finish: the
 * data may be part-way (the report says which stages were restored); `rollback --resume <run>` finishes it. The name
 * has no `Error` suffix: a cancel is asked for, not a fault.
 */
export class RunCancelledError extends EtlRollbackError {
  override readonly name = 'RunCancelled';
  readonly exitCode = EXIT.failed;
}

/**
 * A write freeze (a bucket policy statement, revoked table grants) could not be lifted when the run ended. The message
 * names each unit and what is still in place, so a person can lift it by hand (`etl-rollback` reruns the lift too).
 */
export class FreezeNotLiftedError extends EtlRollbackError {
  override readonly name = 'FreezeNotLiftedError';
  readonly exitCode = EXIT.failed;
}

/**
 * A table could not be locked in time: other sessions' open transactions held it through every try (the message names
 * the oldest). Nothing was written to it. A capture fails (the deploy must not start); a rollback machine tries the
 * unit again later (its Retry on this name), then fails like any run that did not finish (exit 1; `--resume` goes on).
 */
export class TableBusyError extends EtlRollbackError {
  override readonly name = 'TableBusyError';
  readonly exitCode = EXIT.failed;
}

/** Exit code for any error: ours carry one; anything else is a failed run. */
export function exitCodeOf(error: unknown): ExitCode {
  if (error instanceof EtlRollbackError) return error.exitCode;
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === 'string' && name in EXIT_BY_NAME ? EXIT_BY_NAME[name]! : EXIT.failed;
}

/** The same mapping by name, for errors that crossed a process boundary (a state machine's `Error` field). */
export const EXIT_BY_NAME: Record<string, ExitCode> = {
  ManifestError: EXIT.badInput,
  InputError: EXIT.badInput,
  RestorePointMissingError: EXIT.badInput,
  PreflightError: EXIT.badInput,
  OutsideRestorableWindowError: EXIT.badInput,
  LockHeldError: EXIT.refused,
  SealPendingError: EXIT.refused,
  VerificationFailedError: EXIT.failed,
  ApprovalRejectedError: EXIT.refused,
  ApprovalTimedOutError: EXIT.refused,
  TriggersNotResumedError: EXIT.failed,
  DrillYieldedError: EXIT.refused,
  CompensationFailedError: EXIT.failed,
  /** A unit's wait loop (an RDS restore, a snapshot) ran out of polls: the run failed. */
  UnitTimedOut: EXIT.failed,
  ReplayFailedError: EXIT.failed,
  /** Cancelled at a safe point (or stopped): the run did not finish; `--resume` continues it. */
  RunCancelled: EXIT.failed,
  FreezeNotLiftedError: EXIT.failed,
  TableBusyError: EXIT.failed,
};
