import { adapterFor } from '../adapters/registry.ts';
import { isPendingCapture, type RestorePoint } from '../adapters/types.ts';
import { InputError, LockHeldError } from '../errors.ts';
import type { Manifest, Unit } from '../manifest/schema.ts';
import { stateKeys } from '../runtime/state-store.ts';
import { adapterContext, deployedManifest, stateStore, unitOf, type WorkflowDeps } from './deps.ts';

/**
 * Undo a rollback in one step: `etl-rollback undo <run>` (request field `undo`) puts back the state run <run> replaced,
 * through the ordinary staged rollback, and is itself undoable.
 *
 * What a run replaced is recorded before it is replaced. The first time a run restores a unit (restoreUnit, before the
 * adapter writes anything) the unit's live state is captured, by the unit's own adapter, as the restore point of the
 * derived deployment `undo-<run>` (ledger `putRestorePoint`; manifests in the state bucket, shadow copies next to the
 * table): the ordinary capture, so the ordinary restore, diff and verify consume it unchanged. Why a capture and not the
 * traces a restore already leaves: those are not enough to rebuild the exact state the run found. S3's noncurrent
 * versions do not say which version was current for each key, nor which keys had none; a table's quarantine holds the
 * rows a restore deleted or overwrote, not the keys it inserted. The capture is what each unit type does before a
 * deploy, in the stores that outlive a stack deletion (the ledger table and the state bucket are retained):
 *
 *   s3-prefix     a version manifest naming the version current for each key (no data copied: the versions a restore
 *                 replaces stay as noncurrent versions); copy mode copies the prefix, as its capture does
 *   postgres/mysql a shadow copy of the unit's scope (capture: copy, whatever the unit asks: a copy-on-write capture
 *                 would install triggers for a point that only an undo reads). A restore from a copy-on-write point
 *                 writes only at the keys its undo log names, so its record (the adapter's `undoRecord`) keeps the
 *                 live rows at those keys and the keys it will insert: an undo log of the restore, made before it,
 *                 which the copy-on-write restore consumes (its count and checksum carried from the capture's
 *                 without reading the table where the log is proven whole, as the restore proves it; MySQL reads
 *                 them otherwise). It writes the rows the deploy changed, not the table
 *   glue-table    the table and partition document, as its capture writes it
 *   rds-instance / rds-cluster  no capture (a snapshot takes minutes, and is not needed): the restore keeps the
 *                 instance (cluster) it replaces as `<id>-pre-rollback-<run>`, a name known before it writes; the
 *                 record (the adapter's `undoRecord`) names it and its resource id, and its restore renames it back
 *                 (the current `<id>` kept in turn as `<id>-pre-rollback-<undo run>`). It lasts as long as the kept
 *                 one: once the rollback's restore point is released (and the kept one deleted with it), the undo is
 *                 refused at its restore, naming the missing instance
 *
 * The capture is idempotent (a second call for the same deployment finds the sealed point and returns it), and it is
 * taken only when the ledger has no point for the unit yet: a rerun after a crash, or a second call of a pending restore,
 * never records the half-restored state over the state the run found.
 *
 * The derived deployment is registered READY at the first record, with `origin: { kind: 'undo', runId }` and the
 * manifest the run restored with, so the daily release drops the record when its retention ends (undone or not; a
 * derived deployment is never a pipeline's "latest deploy"). At undo time (`prepareUndo`, in the first state of the
 * rollback machine) its scope is the units the run changed
 * (a step that wrote, or one that failed: a failed restore may have written part of a unit before it stopped), and the
 * stages are the ordinary planner's for them. The undo run records what it replaces in turn (`undo-<undo run>`): undo
 * the undo to get the rolled-back state back.
 *
 * Not undoable, refused with the reason: custom units (a compensating action's restore is the handler's business;
 * nothing generic can say what it replaced), and s3-prefix units with `capture: change-log` (their rollback restores
 * from the log without listing the prefix; a record would list it first, in every rollback).
 */

/** The derived deployment holding what run `runId` replaced. */
export const undoDeploymentId = (runId: string): string => `undo-${runId}`;

/** Why a unit's restore cannot be undone; undefined when it can. */
export function undoRefusal(unit: Unit): string | undefined {
  switch (unit.type) {
    case 'custom':
      return 'custom units are restored by their own handler: what it replaced is known only to the handler, so it cannot be undone generically';
    case 's3-prefix':
      // The change log exists so that a rollback of a large prefix does not list it before it writes; a record made by
      // listing the prefix first would take that away from every rollback. Such a unit is not recorded.
      return unit.capture === 'change-log'
        ? 'its restore point uses capture: change-log, whose rollback restores from the log without listing the prefix; recording the prefix before the restore would list it, so what the run replaced was not recorded (its replaced versions are still there as noncurrent versions)'
        : undefined;
    default:
      return undefined;
  }
}

/** The unit as the pre-run record captures it: by listing (no change log) and, for tables, by a plain shadow copy. */
function recordingUnit(unit: Unit): Unit {
  if (unit.type === 's3-prefix') return { ...unit, capture: 'listing' };
  if (unit.type === 'postgres-table' || unit.type === 'mysql-table') return { ...unit, capture: 'copy' };
  return unit;
}

/**
 * Records the state a run is about to replace in one unit, as the restore point of `undo-<run>`: called by restoreUnit
 * before the adapter's restore writes anything. Returns without a capture when the ledger already holds the record
 * (a retry, a poll) or when the unit type cannot be undone (undoRefusal).
 */
export async function recordUndoPoint(
  deps: WorkflowDeps,
  manifest: Manifest,
  ids: { runId: string; pipeline: string; deploymentId: string; unitId: string },
  restoring: RestorePoint,
): Promise<RestorePoint | undefined> {
  const unit = unitOf(manifest, ids.unitId);
  if (undoRefusal(unit)) return undefined;
  const undoId = undoDeploymentId(ids.runId);
  const existing = await deps.ledger.getRestorePoint(ids.pipeline, undoId, unit.id);
  if (existing) return existing;
  // The manifest the run restores with, under the derived deployment's own key (as a deploy's is): written once. The
  // deployment is registered READY with it, so that the daily release drops the record once its retention has ended,
  // whether or not the run is ever undone.
  // Once per run (the first unit's record); a later unit finds the deployment READY and writes nothing here.
  const registered = await deps.ledger.getDeployment(ids.pipeline, undoId);
  if (registered?.status !== 'READY') {
    const store = stateStore(deps);
    const raw = await store.getJson<unknown>(stateKeys.manifest(ids.pipeline, ids.deploymentId));
    await store.putJsonOnce(stateKeys.manifest(ids.pipeline, undoId), raw, `the manifest of deployment "${undoId}"`);
    const run = await deps.ledger.requireRun(ids.runId);
    const { deployment } = await deps.ledger.registerDeployment({
      pipeline: ids.pipeline,
      deploymentId: undoId,
      manifestKey: stateKeys.manifest(ids.pipeline, undoId),
      units: run.scope,
      requestedBy: run.requestedBy,
      reason: `what run ${ids.runId} replaced, recorded before it wrote (etl-rollback undo ${ids.runId})`,
      origin: { kind: 'undo', runId: ids.runId },
    });
    if (deployment.status === 'SNAPSHOTTING') await deps.ledger.setDeploymentStatus(ids.pipeline, undoId, 'READY');
  }
  const recording = recordingUnit(unit);
  const adapter = adapterFor(recording);
  const ctx = adapterContext(deps, manifest, { deploymentId: undoId, runId: ids.runId, unitId: unit.id });
  // An adapter with a cheaper record than its capture (RDS: the name its restore keeps the replaced one under; a
  // copy-on-write table: the rows at the keys its undo log names) uses it.
  const captured = adapter.undoRecord ? await adapter.undoRecord(recording, ctx, restoring) : await adapter.capture(recording, ctx);
  if (isPendingCapture(captured)) throw new InputError(`unit "${unit.id}" (${unit.type}): its state before the restore cannot be recorded at once, so the restore would not be undoable`);
  const point = await deps.ledger.putRestorePoint(ids.pipeline, undoId, captured);
  deps.log.info('state before the restore recorded for undo', { runId: ids.runId, unitId: unit.id, deploymentId: undoId, count: point.count });
  return point;
}

export interface PreparedUndo {
  /** `undo-<run>`: the derived deployment the undo rolls back to. */
  deploymentId: string;
  /** The units the run changed, to be put back. */
  units: string[];
  /** Per unit, what is put back, for the plan and the dry run. */
  reasons: Record<string, string>;
}

/** What a point puts back, in a few words for the plan. */
function pointText(point: RestorePoint): string {
  const d = point.details as Record<string, unknown>;
  const kept = d.kept as { keptId?: string; runId?: string } | undefined;
  if (kept) return `the ${point.type === 'rds-cluster' ? 'DB cluster' : 'DB instance'} ${kept.keptId || '(none)'} kept by run ${kept.runId ?? '?'}, as recorded at ${point.capturedAt}`;
  const where =
    typeof d.manifestKey === 'string'
      ? `, manifest ${d.manifestKey}`
      : typeof d.shadowTable === 'string'
        ? d.capture === 'copy-on-write'
          ? `, the rows at the keys the restore wrote in ${d.shadowTable}`
          : `, copy ${d.shadowTable}`
        : '';
  return `${point.count} ${point.type === 's3-prefix' ? 'object(s)' : point.type === 'glue-table' ? 'partition(s)' : 'row(s)'} as recorded at ${point.capturedAt}${where}`;
}

/**
 * First state of an undo: checks run `request.undo` (exit 2: unknown, another pipeline's, a dry run, nothing changed, a
 * unit that cannot be undone, a record already released; exit 3: still under way or holding the lock) and answers what
 * planRun rolls back: the derived deployment `undo-<run>` and the units to put back. Reads only: a retry answers the same.
 */
export async function prepareUndo(
  deps: WorkflowDeps,
  request: { pipeline: string; undo: string },
  runId: string,
): Promise<PreparedUndo> {
  const what = `cannot undo run "${request.undo}"`;
  if (request.undo === runId) throw new InputError(`${what}: a run cannot undo itself; start the undo with a new name`);
  const source = await deps.ledger.getRun(request.undo);
  if (!source) throw new InputError(`${what}: there is no such run in the ledger`);
  if (source.pipeline !== request.pipeline) throw new InputError(`${what}: it is a run of pipeline "${source.pipeline}", not "${request.pipeline}"`);
  if (source.dryRun) throw new InputError(`${what}: it was a dry run; it changed nothing`);
  if (source.status === 'PLANNED' || source.status === 'RUNNING') {
    throw new LockHeldError(`${what}: it is ${source.status}; undo it once it has ended`);
  }
  const lock = await deps.ledger.getLock(request.pipeline);
  if (lock?.holder === source.runId && lock.expiresAt * 1000 > deps.now().getTime()) {
    throw new LockHeldError(`${what}: it still holds the lock of pipeline "${request.pipeline}" (since ${lock.acquiredAt}); undo it once it has ended`);
  }

  const undoId = undoDeploymentId(source.runId);
  const manifest = await deployedManifest(deps, source.pipeline, source.deploymentId);
  const points = new Map((await deps.ledger.listRestorePoints(source.pipeline, undoId)).map((p) => [p.unitId, p]));
  const steps = await deps.ledger.listSteps(source.runId);
  // A unit is left out only when every step of the run says it was done without a write (already equal, or skipped as
  // verified by the run it resumed). A unit with a record and no step stopped mid-restore: it is put back.
  const untouched = new Set(steps.filter((s) => s.writes === 0 && s.status !== 'FAILED').map((s) => s.unitId));
  const touched = new Set(steps.filter((s) => !s.skippedFrom && (s.writes > 0 || s.status === 'FAILED')).map((s) => s.unitId));
  for (const u of touched) untouched.delete(u);
  const refused = [...touched].filter((u) => !points.has(u));
  if (refused.length > 0) {
    const lines = refused.map((u) => {
      const unit = manifest.units.find((x) => x.id === u);
      return `  ${u}: ${(unit && undoRefusal(unit)) ?? 'what the run replaced was not recorded (the run predates undo)'}`;
    });
    throw new InputError(`${what}: it changed unit(s) that cannot be undone:\n${lines.join('\n')}`);
  }
  const units = manifest.units.map((u) => u.id).filter((u) => points.has(u) && !untouched.has(u));
  if (units.length === 0) throw new InputError(`${what}: it changed nothing (every unit it restored already equalled its restore point)`);

  // Registered READY by the run's first restore (recordUndoPoint); a released one has nothing left to put back.
  const deployment = await deps.ledger.requireDeployment(source.pipeline, undoId);
  if (deployment.status === 'RELEASED') throw new InputError(`${what}: its record (deployment "${undoId}") was released when its retention ended`);
  const reasons = Object.fromEntries(units.map((u) => [u, `undo of run ${source.runId}: put back ${pointText(points.get(u)!)}`]));
  deps.log.info('undo prepared', { runId, undoes: source.runId, deploymentId: undoId, units });
  return { deploymentId: undoId, units, reasons };
}
