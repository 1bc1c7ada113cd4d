import { s3PrefixAdapter, type S3PrefixAdapter } from '../adapters/s3-prefix.ts';
import type { S3PrefixDetails } from '../adapters/s3/manifest.ts';
import type { Changes, RestorePoint } from '../adapters/types.ts';
import { InputError, RestorePointMissingError } from '../errors.ts';
import { addChanges } from '../report/report.ts';
import { adapterContext, deployedManifest, unitOf, type WorkflowDeps } from './deps.ts';
import { IN_PROGRESS } from './rollback.ts';

/**
 * The distributed path of an s3-prefix restore. "Restore unit" answers the shards of a unit above its threshold
 * (`RestoredUnit.shards`); "Collect shards" lists those of the whole stage (`collectShards`); the Distributed Map "Restore shards" runs statemachines/restore-shards.asl.json for batches
 * of them (each child's "Restore shard" task calls `restoreShards`), and "Record shard restores" adds what every batch
 * wrote to the unit's step (`recordShardRestores`). Then the stage is verified as usual.
 */

interface RunIds {
  runId: string;
  pipeline: string;
  deploymentId: string;
}

/** One shard of one unit: an item of the Distributed Map. */
export interface ShardItem {
  unitId: string;
  shard: number;
}

/** What one batch did to one unit. */
export interface ShardResult {
  unitId: string;
  shards: number[];
  changes: Changes;
  writes: number;
  notes: string[];
  keptAt?: string;
}

/** "Collect shards": every shard the stage's units left (`RestoredUnit.shards`), as one list. No I/O. */
export function collectShards(input: { stage: number; restored: { shards?: ShardItem[] }[] }): { stage: number; items: ShardItem[]; count: number } {
  const items = input.restored.flatMap((u) => u.shards ?? []).map(({ unitId, shard }) => ({ unitId, shard }));
  return { stage: input.stage, items, count: items.length };
}

/**
 * Restores the keys the given shards answer for (one Distributed Map batch; it may span units). Idempotent: a retried
 * or rerun batch writes only what still differs. Does not touch the ledger: its result goes to the Map's output, which
 * `recordShardRestores` records once the map is done (child executions run concurrently; the step is one item).
 */
export async function restoreShards(
  deps: WorkflowDeps,
  ids: RunIds & { stage: number; items: ShardItem[] },
  adapter: S3PrefixAdapter = s3PrefixAdapter,
): Promise<{ stage: number; results: ShardResult[] }> {
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const byUnit = new Map<string, number[]>();
  for (const item of ids.items) byUnit.set(item.unitId, [...(byUnit.get(item.unitId) ?? []), item.shard]);
  const results: ShardResult[] = [];
  for (const [unitId, shards] of byUnit) {
    const unit = unitOf(manifest, unitId);
    if (unit.type !== 's3-prefix') throw new InputError(`unit "${unitId}" is ${unit.type}: only s3-prefix units are restored shard by shard`);
    const point = await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, unitId);
    if (!point) throw new RestorePointMissingError(`unit "${unitId}" has no restore point in deployment "${ids.deploymentId}"`);
    const outcome = await adapter.restoreShards(unit, point as unknown as RestorePoint<S3PrefixDetails>, shards, adapterContext(deps, manifest, { ...ids, unitId }));
    results.push({ unitId, shards, changes: outcome.changes, writes: outcome.writes, notes: outcome.notes, ...(outcome.keptAt ? { keptAt: outcome.keptAt } : {}) });
  }
  deps.log.info('shards restored', { runId: ids.runId, stage: ids.stage, items: ids.items.length, writes: results.reduce((n, r) => n + r.writes, 0) });
  return { stage: ids.stage, results };
}

/**
 * After "Restore shards": adds every batch's changes and writes to its unit's step and marks it RESTORED. Once only:
 * a step no longer "in progress" (already recorded, e.g. on a retried call) is left as it is.
 */
export async function recordShardRestores(
  deps: WorkflowDeps,
  ids: RunIds & { stage: number; batches: { results: ShardResult[] }[] },
): Promise<{ stage: number; units: string[]; writes: number }> {
  const byUnit = new Map<string, ShardResult[]>();
  for (const r of ids.batches.flatMap((b) => b.results)) byUnit.set(r.unitId, [...(byUnit.get(r.unitId) ?? []), r]);
  let total = 0;
  for (const [unitId, results] of byUnit) {
    const step = await deps.ledger.getStep(ids.runId, ids.stage, unitId);
    if (!step) throw new InputError(`run ${ids.runId} has no step for unit "${unitId}" in stage ${ids.stage}: its restore did not start`);
    if (step.status !== 'FAILED' || !step.notes.some((n) => n.startsWith(IN_PROGRESS))) continue;
    const changes = results.reduce((acc, r) => addChanges(acc, r.changes), addChanges({}, step.changes));
    const writes = results.reduce((n, r) => n + r.writes, step.writes);
    total += writes - step.writes;
    const shards = results.reduce((n, r) => n + r.shards.length, 0);
    const notes = [...step.notes.filter((n) => !n.startsWith(IN_PROGRESS)), `${shards} shard(s) restored by ${results.length} batch(es)`];
    await deps.ledger.putStep({
      ...step,
      status: 'RESTORED',
      changes,
      writes,
      notes,
      keptAt: results.find((r) => r.keptAt)?.keptAt ?? step.keptAt,
      restoredAt: deps.now().toISOString(),
    });
  }
  deps.log.info('shard restores recorded', { runId: ids.runId, stage: ids.stage, units: [...byUnit.keys()], writes: total });
  return { stage: ids.stage, units: [...byUnit.keys()], writes: total };
}
