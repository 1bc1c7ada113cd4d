import { PreflightError } from '../../errors.ts';
import type { RdsClusterUnit, RdsInstanceUnit } from '../../manifest/schema.ts';
import { rdsClusterAdapter, rdsClusterKind } from '../rds-cluster.ts';
import { rdsInstanceAdapter, rdsInstanceKind } from '../rds-instance.ts';
import { RDS_POLL_SECONDS, type RdsDetails, type RdsKind, type RdsSettings } from '../rds/engine.ts';
import { derivedIdentifier, pointKey, TAG, type Tags } from '../rds/names.ts';
import type { AdapterContext, RestorePoint, UnitAdapter } from '../types.ts';
import type { DrillScratch, ScratchTarget } from './types.ts';

/**
 * An RDS instance or Aurora cluster rehearsed as a temporary copy restored from the restore point's snapshot
 * (RestoreDBInstanceFromDBSnapshot / RestoreDBClusterFromSnapshot) under `<id>-drill-<short>` (a cluster's writer
 * `<id>-w-drill-<short>`), tagged with the drill's
 * run, with the original's settings but no deletion protection; the gate is the adapter's verify pointed at the copy;
 * cleanup deletes it without a final snapshot (it is a copy), only if its tag names this drill. The original is never
 * called with anything but Describe.
 */

/** Tag on every resource a drill creates: the drill's run id. */
export const DRILL_TAG = 'etl-rollback:drill';

export function drillIdentifier(identifier: string, short: string): string {
  return derivedIdentifier(identifier, `drill-${short}`);
}

const pending = (status: string) => ({ waitSeconds: RDS_POLL_SECONDS, status });

/** RDS statuses in which a delete is refused: the copy is still being made or changed. */
const BUSY = new Set(['creating', 'modifying', 'backing-up', 'rebooting', 'renaming', 'starting', 'stopping', 'upgrading', 'configuring-enhanced-monitoring', 'resetting-master-credentials']);

function rdsScratch<U extends RdsInstanceUnit | RdsClusterUnit, S extends RdsSettings & { deletionProtection?: boolean }>(
  kind: RdsKind<S>,
  adapter: UnitAdapter<U, RdsDetails<S>, never>,
): ScratchTarget<U, RdsDetails<S>> {
  const idOf = (point: RestorePoint<RdsDetails<S>>, scratch: DrillScratch) => drillIdentifier(point.details.identifier, scratch.short);
  const tagsOf = (unit: U, point: RestorePoint<RdsDetails<S>>, ctx: AdapterContext, scratch: DrillScratch): Tags => ({
    ...(point.details.settings.tags ?? {}),
    [TAG.point]: pointKey({ pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, unitId: unit.id }),
    [TAG.restoredFrom]: `snapshot:${point.details.snapshotId}`,
    [TAG.run]: scratch.runId,
    [DRILL_TAG]: scratch.runId,
  });
  const refuseForeign = (id: string, tags: Tags, scratch: DrillScratch) => {
    if (tags[DRILL_TAG] !== scratch.runId) {
      throw new PreflightError(`${kind.noun} ${id} exists and is not the scratch copy of drill ${scratch.runId} (tag ${DRILL_TAG}=${tags[DRILL_TAG] ?? 'absent'}); the drill does not touch it`);
    }
  };
  return {
    async restore(unit, point, ctx, scratch) {
      const id = idOf(point, scratch);
      const live = await kind.describe(ctx.rds, id);
      const target = `${kind.noun} ${id}`;
      if (!live) {
        const settings = { ...point.details.settings, deletionProtection: false };
        await kind.restore(ctx.rds, { kind: 'snapshot', snapshotId: point.details.snapshotId }, id, settings, tagsOf(unit, point, ctx, scratch));
        ctx.log.info('drill: rds restore started', { unit: unit.id, id, snapshot: point.details.snapshotId });
        return { target, changes: { [`${kind.counter}Restored`]: 1 }, notes: [], pending: pending(`${target} is being restored from ${point.details.snapshotId}`) };
      }
      refuseForeign(id, live.tags, scratch);
      if (live.status !== 'available') return { target, changes: {}, notes: [], pending: pending(`${target} is ${live.status}`) };
      if (kind.complete) {
        // A cluster's writer: `<cluster>-w-drill-<short>`, so that no grant for a drill's copies covers a rollback's writer.
        const done = await kind.complete(ctx.rds, id, { identifier: point.details.identifier, runShort: `drill-${scratch.short}` }, point.details.settings, tagsOf(unit, point, ctx, scratch));
        if (done.pending) return { target, changes: done.changes, notes: [], pending: pending(done.pending) };
      }
      return { target, changes: {}, notes: [`restored from snapshot ${point.details.snapshotId}`] };
    },

    async verify(unit, point, ctx, scratch) {
      const checks = await adapter.verify(unit, { ...point, details: { ...point.details, identifier: idOf(point, scratch) } } as never, ctx);
      return { checks, notes: [] };
    },

    async cleanup(unit, ctx, scratch) {
      // The point is not at hand here: the identifier comes from the unit, as the restore derived it.
      const base = (unit as RdsInstanceUnit).instanceId ?? (unit as RdsClusterUnit).clusterId;
      const id = drillIdentifier(base.toLowerCase(), scratch.short);
      const live = await kind.describe(ctx.rds, id);
      if (!live) return { removed: [] };
      refuseForeign(id, live.tags, scratch);
      const what = `${kind.noun} ${id}`;
      // A copy still being made (the drill stopped while it was restoring) cannot be deleted yet: wait until it settles.
      if (BUSY.has(live.status)) return { removed: [], pending: pending(`${what} is ${live.status}; it is deleted once that is done`) };
      if (live.status !== 'deleting') {
        // Restored with deletion protection off; a copy that has it anyway (inherited from the snapshot) gets it removed: it is ours.
        if (live.deletionProtection) await kind.setDeletionProtection(ctx.rds, id, false);
        await kind.remove(ctx.rds, live, ctx.log);
        ctx.log.info('drill: rds scratch copy deleted', { unit: unit.id, id });
      }
      const after = await kind.describe(ctx.rds, id);
      return after ? { removed: [what], pending: pending(`${what} is being deleted`) } : { removed: [what] };
    },
  };
}

export const rdsInstanceScratch = rdsScratch(rdsInstanceKind, rdsInstanceAdapter as unknown as UnitAdapter<RdsInstanceUnit, RdsDetails<typeof rdsInstanceKind extends RdsKind<infer S> ? S : never>, never>);
export const rdsClusterScratch = rdsScratch(rdsClusterKind, rdsClusterAdapter as unknown as UnitAdapter<RdsClusterUnit, RdsDetails<typeof rdsClusterKind extends RdsKind<infer S> ? S : never>, never>);
