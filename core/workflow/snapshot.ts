import { adapterFor } from '../adapters/registry.ts';
import { DEFAULT_MAX_POLLS, isPendingCapture, type CaptureResult, type UnitAdapter } from '../adapters/types.ts';
import { InputError, RestorePointMissingError } from '../errors.ts';
import { stateKeys } from '../runtime/state-store.ts';
import { validateManifest } from '../manifest/load.ts';
import type { Manifest, Unit } from '../manifest/schema.ts';
import { openChangeCapture } from './change-capture.ts';
import { adapterContext, deployedManifest, stateStore, summarizeCaught, unitOf, type CaughtError, type WorkflowDeps } from './deps.ts';
import { announce } from './notify.ts';
import { parseInput, snapshotRequestSchema } from './requests.ts';
import { restorePointsInPlace, restorePointsSealed, snapshotFailed } from './snapshot-notify.ts';

/** Output of the first snapshot state: what the Map captures. */
export interface SnapshotStarted {
  pipeline: string;
  deploymentId: string;
  units: string[];
}

export interface CapturedUnit {
  unitId: string;
  type: string;
  count: number;
  checksum: string;
}

export interface SnapshotSealed {
  pipeline: string;
  deploymentId: string;
  status: 'READY';
  points: CapturedUnit[];
}

/** How long a snapshot may hold its pipeline's lock before another run may take it over (a snapshot that died). */
export const SNAPSHOT_LOCK_TTL_SECONDS = 2 * 60 * 60;

/** The lock holder of a snapshot: it names the deployment, so a rollback refused by it says which snapshot runs. */
export const snapshotLockHolder = (deploymentId: string): string => `snapshot-${deploymentId}`;

/**
 * Validates the request and its manifest, stores the manifest as deployed and registers the deployment.
 * Idempotent: a retry with the same manifest returns the same units; a different manifest is refused.
 */
export async function beginSnapshot(deps: WorkflowDeps, input: unknown, execution: { executionName?: string } = {}): Promise<SnapshotStarted> {
  const request = parseInput(snapshotRequestSchema, input, 'snapshot request');
  const store = stateStore(deps);
  let manifest: Manifest;
  if (request.manifestKey !== undefined) {
    const raw = await store.getJson<unknown>(request.manifestKey);
    if (raw === undefined) throw new InputError(`manifestKey: no manifest at s3://${deps.stateBucket}/${request.manifestKey}`);
    manifest = validateManifest(raw, `s3://${deps.stateBucket}/${request.manifestKey}`);
  } else {
    manifest = validateManifest(request.manifest, 'manifest');
  }
  if (manifest.pipeline !== request.pipeline) {
    throw new InputError(`pipeline: the request names "${request.pipeline}" but the manifest is for "${manifest.pipeline}"`);
  }
  // The pipeline's lock, before anything is written: a rollback restoring the tables now would have the snapshot
  // capture them half-restored (and a snapshot must not start under a rollback). Re-entrant for this snapshot (a retried
  // task); released by "Seal snapshot" or by the failure path.
  await deps.ledger.acquireLock(request.pipeline, snapshotLockHolder(request.deploymentId), request.deploymentId, SNAPSHOT_LOCK_TTL_SECONDS);
  const manifestKey = stateKeys.manifest(request.pipeline, request.deploymentId);
  await store.putJsonOnce(manifestKey, manifest, `the manifest of deployment "${request.deploymentId}"`);
  const units = manifest.units.map((u) => u.id);
  const { deployment, created } = await deps.ledger.registerDeployment({
    pipeline: request.pipeline,
    deploymentId: request.deploymentId,
    manifestKey,
    units,
    requestedBy: request.requestedBy,
    reason: request.reason,
    ...(execution.executionName !== undefined ? { snapshotExecution: execution.executionName } : {}),
  });
  if (!created && deployment.status === 'FAILED') {
    // A snapshot that failed part-way is finished by running it again under the same id (same manifest, checked
    // above): the units already captured keep their sealed restore points (capture is idempotent), the others are
    // captured now. The deploy must not have started meanwhile: a failed snapshot is what stops it.
    await deps.ledger.setDeploymentStatus(request.pipeline, request.deploymentId, 'SNAPSHOTTING');
    deps.log.info('snapshot of a failed deployment taken again', { pipeline: request.pipeline, deploymentId: request.deploymentId, error: deployment.error });
  } else if (!created && deployment.status === 'IN_PLACE') {
    // A retried "Register deployment" of the same execution, or the same snapshot started again while the first seals:
    // the units in place stay recording (the deploy may be writing); capture finishes them.
    deps.log.info('snapshot of a deployment in place taken again', { pipeline: request.pipeline, deploymentId: request.deploymentId });
  } else if (!created && deployment.status !== 'SNAPSHOTTING' && deployment.status !== 'READY') {
    throw new InputError(`deployment "${request.deploymentId}" of pipeline "${request.pipeline}" is ${deployment.status}: its restore points cannot be retaken; use a new deployment id`);
  }
  // This execution captures it from now on: a stopped earlier one must no longer mark it (cleanUpStoppedSnapshot).
  if (execution.executionName !== undefined && deployment.snapshotExecution !== execution.executionName) {
    await deps.ledger.setSnapshotExecution(request.pipeline, request.deploymentId, execution.executionName);
  }
  // Before any unit is captured (listed): a change made meanwhile lands in the log as well as in the manifest.
  await openChangeCapture(deps, manifest, request.deploymentId);
  deps.log.info('snapshot started', { pipeline: request.pipeline, deploymentId: request.deploymentId, units: units.length, resumed: !created });
  return { pipeline: request.pipeline, deploymentId: request.deploymentId, units };
}

/**
 * One call of the "Capture unit" poll loop: `done` with the unit's restore point recorded, or not done yet, with the
 * seconds the state machine waits before calling again and the most polls it may make (`UnitTimedOut` beyond).
 */
export type CaptureProgress =
  | (CapturedUnit & { done: true; waitSeconds: 0; maxPolls: number })
  /** `until: 'in-place'`: the unit records every change (copy-on-write triggers); its seal comes in "Seal units". */
  | { done: true; inPlace: true; unitId: string; type: string; waitSeconds: 0; maxPolls: number; status: string }
  | { done: false; unitId: string; type: string; waitSeconds: number; maxPolls: number; status: string };

/**
 * Captures one unit and records its restore point. Idempotent (adapters reuse a sealed capture). An adapter that
 * answers "pending" (an RDS snapshot being created) is called again by the state machine after a Wait state:
 * `polls` is how many times it has waited so far.
 *
 * `until: 'in-place'` (the snapshot's "Capture units"): a unit whose capture can be split (copy-on-write) stops once it
 * records every change, before its seal, and nothing is written to the ledger for it yet; every other unit is captured
 * whole. `until: 'sealed'` (the default; "Seal units"): the whole capture, finishing a unit left in place.
 */
export async function captureUnit(
  deps: WorkflowDeps,
  ids: { pipeline: string; deploymentId: string; unitId: string; polls?: number; until?: 'in-place' | 'sealed' },
): Promise<CaptureProgress> {
  const existing = await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, ids.unitId);
  const manifest = existing ? undefined : await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  if (existing) return { done: true, waitSeconds: 0, maxPolls: DEFAULT_MAX_POLLS, unitId: existing.unitId, type: existing.type, count: existing.count, checksum: existing.checksum };
  const unit = unitOf(manifest!, ids.unitId);
  // Any adapter's capture, seen as one that may pend (a restore point is a CaptureResult too).
  const adapter: UnitAdapter<Unit, Record<string, unknown>, CaptureResult> = adapterFor(unit);
  const maxPolls = adapter.maxPolls ?? DEFAULT_MAX_POLLS;
  const started = Date.now();
  const ctx = adapterContext(deps, manifest!, ids);
  const inPlace = ids.until === 'in-place' && adapter.install ? await adapter.install(unit, ctx) : undefined;
  if (inPlace) {
    deps.log.info('unit in place; its seal follows', { unitId: unit.id, type: unit.type, status: inPlace.status, ms: Date.now() - started });
    return { done: true, inPlace: true, unitId: unit.id, type: unit.type, waitSeconds: 0, maxPolls, status: inPlace.status };
  }
  const result = await adapter.capture(unit, ctx);
  if (isPendingCapture(result)) {
    const polls = ids.polls ?? 0;
    const status = `${unit.type} unit "${unit.id}": ${result.pending.status} (poll ${polls} of ${maxPolls})`;
    deps.log.info('unit capture pending', { unitId: unit.id, type: unit.type, polls, status: result.pending.status });
    return { done: false, unitId: unit.id, type: unit.type, waitSeconds: Math.max(1, Math.round(result.pending.waitSeconds)), maxPolls, status };
  }
  const stored = await deps.ledger.putRestorePoint(ids.pipeline, ids.deploymentId, result);
  deps.log.info('unit captured', { unitId: unit.id, type: unit.type, count: stored.count, ms: Date.now() - started });
  return { done: true, waitSeconds: 0, maxPolls, unitId: stored.unitId, type: stored.type, count: stored.count, checksum: stored.checksum };
}

/** What "Restore points in place" answers: every unit records from now on, so the deploy may start. */
export interface SnapshotInPlace {
  pipeline: string;
  deploymentId: string;
  status: 'IN_PLACE';
  /** Units whose seal is still to be read (copy-on-write tables); the others' restore points are complete. */
  sealing: string[];
}

/**
 * Every unit is captured or recording: the deployment becomes IN_PLACE and the deploy may start, while "Seal units"
 * reads what remains (a copy-on-write table's count and checksum as it was, exact from any later moment because every
 * change since is logged). A rollback asked for meanwhile waits for READY (SealPendingError, retried by its state
 * machine). The pipeline's lock stays with the snapshot until the seal. Idempotent.
 */
export async function markInPlace(deps: WorkflowDeps, ids: { pipeline: string; deploymentId: string }): Promise<SnapshotInPlace> {
  const deployment = await deps.ledger.requireDeployment(ids.pipeline, ids.deploymentId);
  const points = await deps.ledger.listRestorePoints(ids.pipeline, ids.deploymentId);
  const have = new Set(points.map((p) => p.unitId));
  const sealing = deployment.units.filter((u) => !have.has(u));
  if (deployment.status === 'SNAPSHOTTING') await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, 'IN_PLACE');
  else if (deployment.status !== 'IN_PLACE' && deployment.status !== 'READY') {
    throw new InputError(`deployment "${ids.deploymentId}" of pipeline "${ids.pipeline}" is ${deployment.status}: its restore points cannot be put in place`);
  }
  deps.log.info('restore points in place: the deploy may start', { pipeline: ids.pipeline, deploymentId: ids.deploymentId, sealing });
  await announce(deps, restorePointsInPlace({ ...ids, execution: deployment.snapshotExecution }, deployment.units, sealing));
  return { pipeline: ids.pipeline, deploymentId: ids.deploymentId, status: 'IN_PLACE', sealing };
}

/** Checks every unit has its restore point and marks the deployment READY. */
export async function sealSnapshot(deps: WorkflowDeps, ids: { pipeline: string; deploymentId: string }): Promise<SnapshotSealed> {
  const deployment = await deps.ledger.requireDeployment(ids.pipeline, ids.deploymentId);
  const points = await deps.ledger.listRestorePoints(ids.pipeline, ids.deploymentId);
  const have = new Set(points.map((p) => p.unitId));
  const missing = deployment.units.filter((u) => !have.has(u));
  if (missing.length > 0) {
    throw new RestorePointMissingError(`deployment "${ids.deploymentId}" lacks restore points for: ${missing.join(', ')}`);
  }
  // The lock first: a rollback that waited for the seal (SealPendingError) goes on to take it as soon as it sees READY.
  await deps.ledger.releaseLock(ids.pipeline, snapshotLockHolder(ids.deploymentId));
  if (deployment.status !== 'READY') await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, 'READY');
  deps.log.info('snapshot sealed', { pipeline: ids.pipeline, deploymentId: ids.deploymentId, units: points.length });
  const sealed = points.map((p) => ({ unitId: p.unitId, type: p.type, count: p.count, checksum: p.checksum })).sort((a, b) => a.unitId.localeCompare(b.unitId));
  await announce(deps, restorePointsSealed({ ...ids, execution: deployment.snapshotExecution }, sealed.map(({ unitId, type, count }) => ({ unitId, type, count }))));
  return { pipeline: ids.pipeline, deploymentId: ids.deploymentId, status: 'READY', points: sealed };
}

/** A snapshot failed: the deployment is marked FAILED, so nobody rolls back to a partial restore point. */
export async function recordSnapshotFailure(deps: WorkflowDeps, input: { pipeline: string; deploymentId: string; error?: CaughtError }): Promise<{ lockReleased: boolean }> {
  const error = summarizeCaught(input.error);
  const deployment = await deps.ledger.getDeployment(input.pipeline, input.deploymentId);
  // Failed after "in place": the deploy may be writing. The units in place go on recording (their triggers stay until
  // the point is released), and the same snapshot run again under the same id seals them; the error says so.
  if (deployment?.status === 'IN_PLACE') {
    error.message = `${error.message}\nthe restore points were in place (the deploy may have started) but not sealed: their triggers keep recording; run the same snapshot again under deployment id "${input.deploymentId}" to seal them`;
  }
  // Refused because the pipeline was locked by another run: nothing of this snapshot was written, nothing to mark.
  if (deployment && error.name !== 'LockHeldError') await deps.ledger.setDeploymentStatus(input.pipeline, input.deploymentId, 'FAILED', error);
  const lockReleased = await deps.ledger.releaseLock(input.pipeline, snapshotLockHolder(input.deploymentId));
  deps.log.warn('snapshot failed', { pipeline: input.pipeline, deploymentId: input.deploymentId, error });
  await announce(deps, snapshotFailed({ pipeline: input.pipeline, deploymentId: input.deploymentId, execution: deployment?.snapshotExecution }, error, deployment?.status === 'IN_PLACE'));
  return { lockReleased };
}

/** A snapshot execution that ended without its own failure path: StopExecution, its timeout, a local run's Ctrl-C. */
export interface StoppedSnapshot {
  pipeline: string;
  deploymentId: string;
  /** The execution's name; undefined when not known (then the deployment's latest execution is assumed). */
  executionName?: string;
  status: 'ABORTED' | 'TIMED_OUT';
  /** Who or what stopped it, in a few words. */
  by: string;
}

export interface StoppedSnapshotCleanup {
  pipeline: string;
  deploymentId: string;
  /**
   * `failed`: the deployment was still being captured; it is marked FAILED here. `ended`: it had ended (READY, FAILED,
   * ...), only the lock was seen to. `superseded`: another execution has begun capturing it since: left alone.
   * `unknown`: no such deployment (stopped before it was registered): only the lock was seen to.
   */
  outcome: 'failed' | 'ended' | 'superseded' | 'unknown';
  status?: string;
  lockReleased: boolean;
}

/**
 * The cleanup of a snapshot execution stopped at once (StopExecution, the console's Stop, its timeout, a local run's
 * Ctrl-C): none of its states ran after that, so its failure path did not either. Left as it was, the deployment would
 * stay SNAPSHOTTING or IN_PLACE: a rollback would wait for a seal that never comes, and the pipeline's lock would stay
 * with the snapshot until its TTL. This does what the failure path does (recordSnapshotFailure): the deployment is
 * FAILED, with the reason and the way on (the same snapshot again under the same id finishes it: restore points
 * already captured are kept, units in place keep recording until then), and the snapshot's lock is released, so a
 * rollback waiting for the seal fails at once with that reason instead of waiting out its retries.
 *
 * Idempotent and safe on any execution: a deployment that ended (sealed READY, or FAILED by its own failure path) keeps
 * its status; one that a later execution captures now (Deployment.snapshotExecution) is left alone, lock included.
 */
export async function cleanUpStoppedSnapshot(deps: WorkflowDeps, stopped: StoppedSnapshot): Promise<StoppedSnapshotCleanup> {
  const ids = { pipeline: stopped.pipeline, deploymentId: stopped.deploymentId };
  const deployment = await deps.ledger.getDeployment(stopped.pipeline, stopped.deploymentId);
  if (deployment && stopped.executionName !== undefined && deployment.snapshotExecution !== undefined && deployment.snapshotExecution !== stopped.executionName) {
    deps.log.info('stopped snapshot execution is no longer the one capturing the deployment: left alone', { ...ids, execution: stopped.executionName, current: deployment.snapshotExecution });
    return { ...ids, outcome: 'superseded', status: deployment.status, lockReleased: false };
  }
  if (deployment && (deployment.status === 'SNAPSHOTTING' || deployment.status === 'IN_PLACE')) {
    const execution = stopped.executionName !== undefined ? `the snapshot execution ${stopped.executionName}` : 'the snapshot execution';
    const what = stopped.status === 'ABORTED' ? `was stopped by ${stopped.by}` : 'timed out';
    // recordSnapshotFailure adds, for IN_PLACE, that the units in place keep recording and how to seal them.
    const cause =
      deployment.status === 'SNAPSHOTTING'
        ? `${execution} ${what} before every unit was captured: the deploy must not start; run the same snapshot again under deployment id "${stopped.deploymentId}" to finish it`
        : `${execution} ${what} after its restore points were in place`;
    const { lockReleased } = await recordSnapshotFailure(deps, { ...ids, error: { Error: stopped.status === 'ABORTED' ? 'SnapshotStopped' : 'ExecutionTimedOut', Cause: cause } });
    deps.log.warn('stopped snapshot execution cleaned up', { ...ids, execution: stopped.executionName, was: deployment.status, lockReleased });
    return { ...ids, outcome: 'failed', status: 'FAILED', lockReleased };
  }
  // Ended already, or never registered: only the snapshot's own lock, if it still holds it.
  const lockReleased = await deps.ledger.releaseLock(stopped.pipeline, snapshotLockHolder(stopped.deploymentId));
  return { ...ids, outcome: deployment ? 'ended' : 'unknown', ...(deployment ? { status: deployment.status } : {}), lockReleased };
}
