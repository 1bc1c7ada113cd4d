import { adapterFor } from '../adapters/registry.ts';
import { describeFreeze, freezeUnit, liftRunFreezes, listRunFreezes, type FreezeContext } from '../adapters/freeze/unit-freeze.ts';
import type { PlannedStage } from '../ledger/ledger.ts';
import type { Manifest } from '../manifest/schema.ts';
import { addChanges } from '../report/report.ts';
import { adapterContext, deployedManifest, unitOf, type WorkflowDeps } from './deps.ts';

/**
 * Write freezes in a rollback (the manifest's `freeze`, core/adapters/freeze/): every frozen unit of a stage is frozen
 * before the stage restores ("Freeze stage writes"); at the end of the stage, as the gate starts ("Verify stage"), each
 * frozen unit is compared with its restore point again: what slipped in anyway (a writer the freeze
 * does not cover) is named in the unit's step and restored by a second pass, then the gate verifies as usual. Every
 * freeze of the run is lifted when the run ends — before the replay on success ("Lift write freezes"), first thing on
 * every failure path ("Lift write freezes after failure"), and by cancellation — by one function, liftFreezes.
 */

interface RunIds {
  runId: string;
  pipeline: string;
  deploymentId: string;
}

function freezeContext(deps: WorkflowDeps, manifest: Manifest, ids: RunIds): FreezeContext {
  return adapterContext(deps, manifest, { deploymentId: ids.deploymentId, runId: ids.runId, unitId: '' });
}

/** Note on a unit's step: what was changed under the freeze and put back by the second pass. */
export const SLIPPED_IN = 'changed during the write freeze: ';

/**
 * Freezes the stage's units that ask for it, one after the other (two units on one bucket edit the same policy).
 * Idempotent: a retried call finds the records and puts the same freezes in place.
 */
export async function freezeStage(deps: WorkflowDeps, ids: RunIds & { stage: PlannedStage }): Promise<{ stage: number; frozen: string[] }> {
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const frozen: string[] = [];
  for (const unitId of ids.stage.units) {
    const unit = unitOf(manifest, unitId);
    if (!describeFreeze(unit)) continue;
    await freezeUnit(unit, freezeContext(deps, manifest, ids), { runId: ids.runId, principals: deps.freezePrincipals ?? [] });
    frozen.push(unitId);
  }
  if (frozen.length > 0) deps.log.info('stage frozen', { runId: ids.runId, stage: ids.stage.index, frozen });
  return { stage: ids.stage.index, frozen };
}

/**
 * End of a stage, before its gate: each frozen unit compared with its restore point (the adapter's verify). A unit that
 * changed since its restore gets the changes named in its step (`changed during the write freeze: …`, the checks' own
 * details, which name keys and rows) and is restored again; its step adds that pass's writes. The gate that follows
 * decides whether the stage holds.
 */
export async function checkFrozenStage(
  deps: WorkflowDeps,
  ids: RunIds & { stage: PlannedStage },
): Promise<{ stage: number; slipped: { unitId: string; changes: string[]; writes: number }[] }> {
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const slipped: { unitId: string; changes: string[]; writes: number }[] = [];
  for (const unitId of ids.stage.units) {
    const unit = unitOf(manifest, unitId);
    if (!describeFreeze(unit)) continue;
    // A unit a resumed run skipped as verified is re-verified by the gate, never re-restored (see skipVerifiedUnit).
    const step = await deps.ledger.getStep(ids.runId, ids.stage.index, unitId);
    if (step?.skippedFrom) continue;
    const point = (await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, unitId))!;
    const ctx = adapterContext(deps, manifest, { ...ids, unitId });
    const adapter = adapterFor(unit);
    const failed = (await adapter.verify(unit, point, ctx)).filter((c) => !c.ok);
    if (failed.length === 0) continue;
    const changes = failed.map((c) => `${c.name}: expected ${c.expected}, got ${c.actual}${c.detail ? ` (${c.detail})` : ''}`);
    const outcome = await adapter.restore(unit, point, ctx);
    const pass = outcome.pending || outcome.shards?.length ? 'a second pass is under way; the gate decides' : `restored again by a second pass (${outcome.writes} write(s))`;
    await deps.ledger.putStep({
      runId: ids.runId,
      stage: ids.stage.index,
      unitId,
      type: unit.type,
      status: step?.status ?? 'RESTORED',
      changes: addChanges(addChanges({}, step?.changes ?? {}), outcome.changes),
      writes: (step?.writes ?? 0) + outcome.writes,
      notes: [...(step?.notes ?? []), `${SLIPPED_IN}${changes.join('; ')}; ${pass}`],
      keptAt: step?.keptAt ?? outcome.keptAt,
      startedAt: step?.startedAt,
      restoredAt: deps.now().toISOString(),
    });
    deps.log.warn('changes slipped in during the write freeze', { runId: ids.runId, unitId, changes, writes: outcome.writes });
    slipped.push({ unitId, changes, writes: outcome.writes });
  }
  return { stage: ids.stage.index, slipped };
}

/**
 * Lifts every freeze of the run that is still in place — the one function the success path, every failure path and
 * cancellation call. Idempotent; a run that froze nothing returns at once (its manifest is not even read). Throws
 * FreezeNotLiftedError naming what could not be lifted.
 */
export async function liftFreezes(deps: WorkflowDeps, ids: RunIds): Promise<{ lifted: string[] }> {
  const pending = (await listRunFreezes({ s3: deps.s3, stateBucket: deps.stateBucket, pipeline: ids.pipeline }, ids.runId)).filter((r) => !r.liftedAt);
  if (pending.length === 0) return { lifted: [] };
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  return liftRunFreezes(freezeContext(deps, manifest, ids), ids.runId);
}

/**
 * The failure paths' lift: never throws for a freeze it could not lift (that would hide the run's own error); it answers
 * what is still in place, and the failure report names it (recordRollbackFailure reads the records).
 */
export async function liftFreezesAfterFailure(deps: WorkflowDeps, ids: RunIds): Promise<{ lifted: string[]; notLifted?: string }> {
  try {
    return await liftFreezes(deps, ids);
  } catch (error) {
    deps.log.warn('write freeze not lifted', { runId: ids.runId, error: String(error) });
    return { lifted: [], notLifted: `${(error as Error).name}: ${(error as Error).message}` };
  }
}

/** Units of the run whose freeze is still in place, for the failure report. */
export async function freezesInPlace(deps: WorkflowDeps, ids: { runId: string; pipeline: string }): Promise<string[]> {
  const records = await listRunFreezes({ s3: deps.s3, stateBucket: deps.stateBucket, pipeline: ids.pipeline }, ids.runId);
  return records.filter((r) => !r.liftedAt).map((r) => (r.kind === 's3-prefix' ? `${r.unitId} (statement ${r.sid} in the policy of bucket ${r.bucket})` : `${r.unitId} (write grants on ${r.table} revoked from ${r.roles.join(', ')})`));
}
