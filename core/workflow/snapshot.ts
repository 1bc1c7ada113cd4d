import { adapterFor } from '../adapters/registry.ts';
import { DEFAULT_MAX_POLLS, isPendingCapture, type CaptureResult, type UnitAdapter } from '../adapters/types.ts';
import { InputError, RestorePointMissingError } from '../errors.ts';
import { stateKeys } from '../runtime/state-store.ts';
import { validateManifest } from '../manifest/load.ts';
import type { Manifest, Unit } from '../manifest/schema.ts';
import { openChangeCapture } from './change-capture.ts';
import { adapterContext, deployedManifest, stateStore, summarizeCaught, unitOf, type CaughtError, type WorkflowDeps } from './deps.ts';
import { parseInput, snapshotRequestSchema } from './requests.ts';

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
export async function beginSnapshot(deps: WorkflowDeps, input: unknown): Promise<SnapshotStarted> {
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
  });
  if (!created && deployment.status === 'FAILED') {
    // A snapshot that failed part-way is finished by running it again under the same id (same manifest, checked
    // above): the units already captured keep their sealed restore points (capture is idempotent), the others are
    // captured now. The deploy must not have started meanwhile: a failed snapshot is what stops it.
    await deps.ledger.setDeploymentStatus(request.pipeline, request.deploymentId, 'SNAPSHOTTING');
    deps.log.info('snapshot of a failed deployment taken again', { pipeline: request.pipeline, deploymentId: request.deploymentId, error: deployment.error });
  } else if (!created && deployment.status !== 'SNAPSHOTTING' && deployment.status !== 'READY') {
    throw new InputError(`deployment "${request.deploymentId}" of pipeline "${request.pipeline}" is ${deployment.status}: its restore points cannot be retaken; use a new deployment id`);
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
  | { done: false; unitId: string; type: string; waitSeconds: number; maxPolls: number; status: string };

/**
 * Captures one unit and records its restore point. Idempotent (adapters reuse a sealed capture). An adapter that
 * answers "pending" (an RDS snapshot being created) is called again by the state machine after a Wait state:
 * `polls` is how many times it has waited so far.
 */
export async function captureUnit(
  deps: WorkflowDeps,
  ids: { pipeline: string; deploymentId: string; unitId: string; polls?: number },
): Promise<CaptureProgress> {
  const existing = await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, ids.unitId);
  const manifest = existing ? undefined : await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  if (existing) return { done: true, waitSeconds: 0, maxPolls: DEFAULT_MAX_POLLS, unitId: existing.unitId, type: existing.type, count: existing.count, checksum: existing.checksum };
  const unit = unitOf(manifest!, ids.unitId);
  // Any adapter's capture, seen as one that may pend (a restore point is a CaptureResult too).
  const adapter: UnitAdapter<Unit, Record<string, unknown>, CaptureResult> = adapterFor(unit);
  const maxPolls = adapter.maxPolls ?? DEFAULT_MAX_POLLS;
  const started = Date.now();
  const result = await adapter.capture(unit, adapterContext(deps, manifest!, ids));
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

/** Checks every unit has its restore point and marks the deployment READY. */
export async function sealSnapshot(deps: WorkflowDeps, ids: { pipeline: string; deploymentId: string }): Promise<SnapshotSealed> {
  const deployment = await deps.ledger.requireDeployment(ids.pipeline, ids.deploymentId);
  const points = await deps.ledger.listRestorePoints(ids.pipeline, ids.deploymentId);
  const have = new Set(points.map((p) => p.unitId));
  const missing = deployment.units.filter((u) => !have.has(u));
  if (missing.length > 0) {
    throw new RestorePointMissingError(`deployment "${ids.deploymentId}" lacks restore points for: ${missing.join(', ')}`);
  }
  if (deployment.status !== 'READY') await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, 'READY');
  await deps.ledger.releaseLock(ids.pipeline, snapshotLockHolder(ids.deploymentId));
  deps.log.info('snapshot sealed', { pipeline: ids.pipeline, deploymentId: ids.deploymentId, units: points.length });
  return {
    pipeline: ids.pipeline,
    deploymentId: ids.deploymentId,
    status: 'READY',
    points: points.map((p) => ({ unitId: p.unitId, type: p.type, count: p.count, checksum: p.checksum })).sort((a, b) => a.unitId.localeCompare(b.unitId)),
  };
}

/** A snapshot failed: the deployment is marked FAILED, so nobody rolls back to a partial restore point. */
export async function recordSnapshotFailure(deps: WorkflowDeps, input: { pipeline: string; deploymentId: string; error?: CaughtError }): Promise<void> {
  const error = summarizeCaught(input.error);
  const deployment = await deps.ledger.getDeployment(input.pipeline, input.deploymentId);
  // Refused because the pipeline was locked by another run: nothing of this snapshot was written, nothing to mark.
  if (deployment && error.name !== 'LockHeldError') await deps.ledger.setDeploymentStatus(input.pipeline, input.deploymentId, 'FAILED', error);
  await deps.ledger.releaseLock(input.pipeline, snapshotLockHolder(input.deploymentId));
  deps.log.warn('snapshot failed', { pipeline: input.pipeline, deploymentId: input.deploymentId, error });
}
