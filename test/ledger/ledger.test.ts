import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Ledger, ensureLedgerTable } from '../../core/ledger/ledger.ts';
import { LockHeldError } from '../../core/errors.ts';
import type { RestorePoint } from '../../core/adapters/types.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';

describe('ledger (DynamoDB on moto)', () => {
  const dynamo = testDynamo();
  const table = uniqueName('ledger');
  let clock = new Date('2026-11-29T03:00:00Z');
  const ledger = new Ledger(dynamo, table, () => clock);

  beforeAll(async () => {
    await ensureLedgerTable(dynamo, table);
    await ensureLedgerTable(dynamo, table); // idempotent
  });

  // The guarantee under truly simultaneous requests is DynamoDB's: each conditional write is atomic. moto's server
  // answers requests on threads without making condition-and-put one step, so on moto two requests that arrive at the
  // same instant can both pass (seen once in CI). What this test owns is the condition expression: every contender,
  // in any order, after the first is refused.
  it('of many rollbacks of one pipeline, in any order, exactly one takes the lock', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 12 }).chain((n) => fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n })), async (order) => {
        const pipeline = uniqueName('p');
        const results: PromiseSettledResult<{ holder: string }>[] = [];
        for (const i of order) results.push(...(await Promise.allSettled([ledger.acquireLock(pipeline, `run-${i}`, 'd-1', 600)])));
        const won = results.filter((r) => r.status === 'fulfilled');
        expect(won).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(LockHeldError);
        const holder = (await ledger.getLock(pipeline))!.holder;
        expect((won[0] as PromiseFulfilledResult<{ holder: string }>).value.holder).toBe(holder);
      }),
      { numRuns: 10 },
    );
  });

  it('the lock is re-entrant for its holder (a retried task), refuses others naming the holder, and expires', async () => {
    const pipeline = uniqueName('p');
    await ledger.acquireLock(pipeline, 'run-a', 'd-1', 600);
    await expect(ledger.acquireLock(pipeline, 'run-a', 'd-1', 600)).resolves.toMatchObject({ holder: 'run-a' });
    await expect(ledger.acquireLock(pipeline, 'run-b', 'd-1', 600)).rejects.toThrow(/locked by run "run-a"/);
    // Releasing a lock one does not hold changes nothing.
    expect(await ledger.releaseLock(pipeline, 'run-b')).toBe(false);
    expect((await ledger.getLock(pipeline))?.holder).toBe('run-a');
    // A run that died holding the lock: after its TTL another run may take it over.
    clock = new Date(clock.getTime() + 601_000);
    await expect(ledger.acquireLock(pipeline, 'run-b', 'd-1', 600)).resolves.toMatchObject({ holder: 'run-b' });
    expect(await ledger.releaseLock(pipeline, 'run-b')).toBe(true);
    expect(await ledger.getLock(pipeline)).toBeUndefined();
  });

  it('registering a deployment twice returns the first record; restore points are immutable once stored', async () => {
    const pipeline = uniqueName('p');
    const first = await ledger.registerDeployment({ pipeline, deploymentId: 'd-1', manifestKey: 'k', units: ['a'] });
    expect(first.created).toBe(true);
    const again = await ledger.registerDeployment({ pipeline, deploymentId: 'd-1', manifestKey: 'other', units: ['b'] });
    expect(again).toMatchObject({ created: false, deployment: { manifestKey: 'k', units: ['a'] } });

    const point: RestorePoint = { unitId: 'a', type: 's3-prefix', capturedAt: clock.toISOString(), count: 3, checksum: 'c1', details: {} };
    await ledger.putRestorePoint(pipeline, 'd-1', point);
    const second = await ledger.putRestorePoint(pipeline, 'd-1', { ...point, count: 99, checksum: 'c2' });
    expect(second).toMatchObject({ count: 3, checksum: 'c1' });
    expect(await ledger.listRestorePoints(pipeline, 'd-1')).toEqual([point]);
  });

  it('steps of a run come back in stage order, whatever order they were written in', async () => {
    const runId = uniqueName('run');
    for (const [stage, unitId] of [[2, 'raw'], [0, 'mart'], [1, 'staging']] as const) {
      await ledger.putStep({ runId, stage, unitId, type: 'postgres-table', status: 'RESTORED', changes: {}, writes: 0, notes: [] });
    }
    expect((await ledger.listSteps(runId)).map((s) => s.unitId)).toEqual(['mart', 'staging', 'raw']);
  });
});

describe('breaking a lock by hand', () => {
  const dynamo = testDynamo();
  const table = uniqueName('ledger');
  const ledger = new Ledger(dynamo, table, () => new Date('2026-11-29T04:00:00Z'));

  beforeAll(async () => {
    await ensureLedgerTable(dynamo, table);
  });

  it('releases the lock whoever holds it and records who broke whose lock and why; an unlocked pipeline is a no-op', async () => {
    const pipeline = uniqueName('p');
    await ledger.acquireLock(pipeline, 'run-dead', 'd-9', 6 * 3600);
    const { broken } = await ledger.breakLock(pipeline, 'jane', 'run-dead was killed with its Lambda; checked in the console');
    expect(broken).toMatchObject({ holder: 'run-dead', deploymentId: 'd-9' });
    expect(await ledger.getLock(pipeline)).toBeUndefined();
    expect(await ledger.listBrokenLocks(pipeline)).toEqual([
      expect.objectContaining({ by: 'jane', reason: 'run-dead was killed with its Lambda; checked in the console', lock: expect.objectContaining({ holder: 'run-dead' }) }),
    ]);
    // A new run can take the pipeline at once.
    await expect(ledger.acquireLock(pipeline, 'run-next', 'd-9', 600)).resolves.toMatchObject({ holder: 'run-next' });
    expect(await new Ledger(dynamo, table).breakLock(uniqueName('free'), 'jane', 'nothing')).toEqual({});
  });
});
