import type { RunReport } from '../report/report.ts';
import type { WorkflowDeps } from './deps.ts';
import { liftFreezesAfterFailure } from './freeze.ts';
import { resumeTriggers } from './policy.ts';
import { recordRollbackFailure, releaseLock, RUN_CANCELLED } from './rollback.ts';

/**
 * The cleanup of a rollback execution that was stopped at once, without reaching its own failure path: StopExecution
 * in AWS (the console's "Stop", an execution timing out) or the second Ctrl-C of a local run. The state machine's
 * failure path never ran, so this does what it would have done, for the run named by the execution (its name is the
 * run id), in the same order: lift the write freezes the run put in place, resume the triggers the run paused, record
 * the run (naming any freeze still in place), release its lock, notify and write the report (recordRollbackFailure
 * does the last two).
 *
 * How the run is recorded: ABORTED (stopped by someone) is CANCELLED with "stopped mid-stage: resume it" — the stage
 * under way may be half restored, and `--resume` restores it again (restores are idempotent; units whose steps are
 * VERIFIED are skipped). TIMED_OUT is FAILED (`ExecutionTimedOut`): nobody asked it to stop.
 *
 * Idempotent and safe on any run: an unknown run id (the execution stopped before its plan recorded it, or it was not a
 * rollback of ours) or a dry run is left alone; a run that had already been recorded as ended (the execution was stopped
 * inside its failure path) keeps its record, and only its triggers and lock are seen to. The rule may deliver twice.
 */
export interface StoppedExecution {
  runId: string;
  /** Step Functions' status of the execution. */
  status: 'ABORTED' | 'TIMED_OUT';
  /** Who or what stopped it, in a few words (the event's source, "Ctrl-C"). */
  by: string;
}

export interface StoppedRunCleanup {
  runId: string;
  /** `cleaned`: recorded and released here; `ended`: the run had been recorded already, triggers and lock seen to; `unknown`/`dry-run`: left alone. */
  outcome: 'cleaned' | 'ended' | 'unknown' | 'dry-run';
  status?: string;
  resumed: string[];
  lockReleased: boolean;
  report?: RunReport;
}

export async function cleanUpStoppedRun(deps: WorkflowDeps, stopped: StoppedExecution): Promise<StoppedRunCleanup> {
  const run = await deps.ledger.getRun(stopped.runId);
  if (!run) {
    deps.log.info('stopped execution has no run in the ledger: nothing to clean up', { runId: stopped.runId });
    return { runId: stopped.runId, outcome: 'unknown', resumed: [], lockReleased: false };
  }
  if (run.dryRun) return { runId: run.runId, outcome: 'dry-run', status: run.status, resumed: [], lockReleased: false };
  // Freezes first, as the failure path does: what cannot be lifted is named in the run's record, never thrown.
  const freezes = await liftFreezesAfterFailure(deps, { runId: run.runId, pipeline: run.pipeline, deploymentId: run.deploymentId });
  // Then triggers; a trigger that cannot be re-enabled does not keep the lock held.
  let resumeError: unknown;
  const resumed = await resumeTriggers(deps, { runId: run.runId }).then(
    (r) => r.resumed,
    (error: unknown) => {
      resumeError = error;
      return [];
    },
  );
  let report: RunReport | undefined;
  const underWay = run.status === 'PLANNED' || run.status === 'RUNNING';
  if (underWay) {
    const error =
      stopped.status === 'ABORTED'
        ? { Error: RUN_CANCELLED, Cause: `execution stopped by ${stopped.by}; stopped mid-stage: resume it with rollback --resume ${run.runId}` }
        : { Error: 'ExecutionTimedOut', Cause: `the execution timed out; stopped mid-stage: resume it with rollback --resume ${run.runId}` };
    report = await recordRollbackFailure(deps, { runId: run.runId, pipeline: run.pipeline, deploymentId: run.deploymentId, error });
  }
  const { released } = await releaseLock(deps, { runId: run.runId, pipeline: run.pipeline });
  const status = (await deps.ledger.getRun(run.runId))?.status;
  deps.log.warn('stopped execution cleaned up', { runId: run.runId, execution: stopped.status, status, resumed, lockReleased: released, freezesLifted: freezes.lifted, freezeNotLifted: freezes.notLifted });
  if (resumeError) throw resumeError;
  return { runId: run.runId, outcome: underWay ? 'cleaned' : 'ended', status, resumed, lockReleased: released, ...(report ? { report } : {}) };
}
