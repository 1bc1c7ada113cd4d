import { describe, expect, it } from 'vitest';
import { HANDLERS, loadLocalMachine } from '../../cli/local-runner.ts';

/**
 * The local stand-in for the Distributed Map "Restore shards": aws-local-stepfunctions ignores ItemBatcher, so the
 * runner cuts the items in batches itself and runs statemachines/restore-shards.asl.json once per batch, as AWS runs
 * one child execution per batch. Checked here with a recording "Restore shard" handler (no AWS needed).
 */
describe('local runner: Distributed Map "Restore shards"', () => {
  it('runs the child definition once per batch of MaxItemsPerBatch items, with the BatchInput, and returns the outputs in order', async () => {
    const calls: unknown[] = [];
    const recording = Object.assign(
      async (event: unknown) => {
        calls.push(event);
        const e = event as { items: { unitId: string; shard: number }[] };
        return { stage: 1, results: [{ unitId: 'u', shards: e.items.map((i) => i.shard), changes: {}, writes: 0, notes: [] }] };
      },
      {},
    );
    const { definition, overrides } = loadLocalMachine('rollback', { ...HANDLERS, RestoreShard: recording });
    const states = (definition as { States: Record<string, { Type: string; ResultPath?: string; Next?: string }> }).States;
    expect(states['Restore shards']).toMatchObject({ Type: 'Task', ResultPath: '$.current.shardBatches', Next: 'Record shard restores' });

    const items = Array.from({ length: 9 }, (_, shard) => ({ unitId: 'u', shard }));
    const input = { runId: 'r', pipeline: 'p', deploymentId: 'd', current: { stage: { index: 1 }, shardWork: { items } } };
    const output = (await overrides['Restore shards']!(input)) as { results: { shards: number[] }[] }[];
    expect(calls).toHaveLength(3);
    expect(calls[0]).toEqual({ runId: 'r', pipeline: 'p', deploymentId: 'd', stage: 1, items: items.slice(0, 4) });
    expect(output.map((o) => o.results[0]!.shards)).toEqual([[0, 1, 2, 3], [4, 5, 6, 7], [8]]);
  });

  it('a failing child fails the map with the child error', async () => {
    const failing = async () => {
      const error = new Error('captured version gone');
      error.name = 'RestorePointMissingError';
      throw error;
    };
    const { overrides } = loadLocalMachine('rollback', { ...HANDLERS, RestoreShard: failing });
    const input = { runId: 'r', pipeline: 'p', deploymentId: 'd', current: { stage: { index: 0 }, shardWork: { items: [{ unitId: 'u', shard: 0 }] } } };
    await expect(overrides['Restore shards']!(input)).rejects.toMatchObject({ name: 'RestorePointMissingError' });
  });
});
