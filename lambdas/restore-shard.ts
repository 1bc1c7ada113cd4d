import { z } from 'zod';
import { collectShards, recordShardRestores, restoreShards } from '../core/workflow/restore-shards.ts';
import { metrics, MetricUnit, runIds, taskHandler } from './task.ts';

const shardItem = z.object({ unitId: z.string().min(1), shard: z.number().int().min(0) });
const shardResult = z.object({
  unitId: z.string().min(1),
  shards: z.array(z.number().int().min(0)),
  changes: z.record(z.string(), z.number()),
  writes: z.number().int().min(0),
  notes: z.array(z.string()),
  keptAt: z.string().optional(),
});

/**
 * "Collect shards" (after the stage's units, in the rollback machine): the shards the units left, as one list.
 * "Restore shard" (the child of the Distributed Map "Restore shards", statemachines/restore-shards.asl.json): restores
 * one batch of shards. "Record shard restores" (after the map, in the rollback machine): `batches` is the map's output,
 * recorded on the units' steps.
 */
export const handler = taskHandler(
  'restore-shard',
  z.union([
    runIds.extend({ stage: z.number().int().min(0), items: z.array(shardItem).min(1) }),
    runIds.extend({ stage: z.number().int().min(0), restored: z.array(z.looseObject({ shards: z.array(shardItem).optional() })) }),
    runIds.extend({ stage: z.number().int().min(0), batches: z.array(z.object({ results: z.array(shardResult) })) }),
  ]),
  async (deps, input) => {
    if ('batches' in input) return recordShardRestores(deps, input);
    if ('restored' in input) return collectShards(input);
    const restored = await restoreShards(deps, input);
    metrics.addMetric('ShardsRestored', MetricUnit.Count, input.items.length);
    metrics.addMetric('RestoreWrites', MetricUnit.Count, restored.results.reduce((n, r) => n + r.writes, 0));
    return restored;
  },
);
