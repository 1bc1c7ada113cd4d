import { describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { Ledger, ensureLedgerTable } from '../../core/ledger/ledger.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

describe('etl-rollback unlock', () => {
  it('breaks a lock left by a dead run, records it, and refuses to do so without a reason', async () => {
    const table = uniqueName('ledger');
    await ensureLedgerTable(testDynamo(), table);
    const ledger = new Ledger(testDynamo(), table);
    const pipeline = uniqueName('orders');
    await ledger.acquireLock(pipeline, 'rollback-orders-d-1-x', 'd-1', 6 * 3600);

    const noReason = await cli('unlock', pipeline, '--local', '--ledger-table', table);
    expect(noReason.code).toBe(2);
    expect((await ledger.getLock(pipeline))?.holder).toBe('rollback-orders-d-1-x');

    const r = await cli('unlock', pipeline, '--reason', 'its execution was aborted', '--requested-by', 'jane', '--local', '--ledger-table', table);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('held by run "rollback-orders-d-1-x"');
    expect(await ledger.getLock(pipeline)).toBeUndefined();
    expect(await ledger.listBrokenLocks(pipeline)).toEqual([expect.objectContaining({ by: 'jane', reason: 'its execution was aborted' })]);

    const again = await cli('unlock', pipeline, '--reason', 'again', '--local', '--ledger-table', table);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('not locked');
  });
});
