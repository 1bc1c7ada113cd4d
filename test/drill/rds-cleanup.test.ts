import type { RDSClient } from '@aws-sdk/client-rds';
import { describe, expect, it } from 'vitest';
import { drillShort } from '../../core/adapters/drill/names.ts';
import { DRILL_TAG, rdsInstanceScratch } from '../../core/adapters/drill/rds-scratch.ts';
import type { AdapterContext } from '../../core/adapters/types.ts';
import type { RdsInstanceUnit } from '../../core/manifest/schema.ts';

/**
 * The RDS states moto never shows (it makes and deletes instances at once): a drill copy still being created when the
 * drill stopped, one restored with deletion protection, one someone else named like a drill copy. A stand-in RDS
 * client answers DescribeDBInstances from a table and records every other call.
 */
function fakeRds(instance: { status: string; tags: Record<string, string>; deletionProtection?: boolean } | undefined) {
  const calls: string[] = [];
  let current = instance;
  const client = {
    async send(command: { constructor: { name: string }; input: Record<string, unknown> }) {
      const name = command.constructor.name.replace(/Command$/, '');
      if (name === 'DescribeDBInstances') {
        if (!current) throw Object.assign(new Error('not found'), { name: 'DBInstanceNotFoundFault' });
        return {
          DBInstances: [
            {
              DBInstanceIdentifier: command.input.DBInstanceIdentifier,
              DBInstanceArn: `arn:aws:rds:us-east-1:123456789012:db:${String(command.input.DBInstanceIdentifier)}`,
              DBInstanceStatus: current.status,
              DeletionProtection: current.deletionProtection ?? false,
              TagList: Object.entries(current.tags).map(([Key, Value]) => ({ Key, Value })),
            },
          ],
        };
      }
      calls.push(`${name} ${JSON.stringify(command.input)}`);
      if (name === 'DeleteDBInstance') current = undefined;
      return {};
    },
  };
  return { client: client as unknown as RDSClient, calls };
}

const unit: RdsInstanceUnit = { id: 'db', type: 'rds-instance', instanceId: 'orders-db', dependsOn: [], checks: { count: true, checksum: true } };
const runId = 'drill-orders-d-1-20261129T030000000Z-ab12';
const scratch = { runId, short: drillShort(runId), s3Bucket: 'state' };
const ctx = (rds: RDSClient) => ({ rds, log: { info: () => undefined, warn: () => undefined } }) as unknown as AdapterContext;
const copy = `orders-db-drill-${drillShort(runId)}`;

describe('cleanup of an RDS drill copy', () => {
  it('waits while the copy is still being created, without calling delete', async () => {
    const { client, calls } = fakeRds({ status: 'creating', tags: { [DRILL_TAG]: runId } });
    const out = await rdsInstanceScratch.cleanup(unit, ctx(client), scratch);
    expect(out.pending?.status).toBe(`DB instance ${copy} is creating; it is deleted once that is done`);
    expect(calls).toEqual([]);
  });

  it('turns deletion protection off on its own copy, then deletes it without a final snapshot', async () => {
    const { client, calls } = fakeRds({ status: 'available', tags: { [DRILL_TAG]: runId }, deletionProtection: true });
    const out = await rdsInstanceScratch.cleanup(unit, ctx(client), scratch);
    expect(out).toEqual({ removed: [`DB instance ${copy}`] });
    expect(calls).toEqual([
      `ModifyDBInstance ${JSON.stringify({ DBInstanceIdentifier: copy, DeletionProtection: false, ApplyImmediately: true })}`,
      `DeleteDBInstance ${JSON.stringify({ DBInstanceIdentifier: copy, SkipFinalSnapshot: true })}`,
    ]);
  });

  it('refuses an instance with the drill copy\'s name that another run (or nobody) tagged, and one gone is nothing to do', async () => {
    const foreign = fakeRds({ status: 'available', tags: { [DRILL_TAG]: 'drill-someone-else' } });
    await expect(rdsInstanceScratch.cleanup(unit, ctx(foreign.client), scratch)).rejects.toThrow(/is not the scratch copy of drill .* the drill does not touch it/);
    const untagged = fakeRds({ status: 'available', tags: {} });
    await expect(rdsInstanceScratch.cleanup(unit, ctx(untagged.client), scratch)).rejects.toThrow(/tag etl-rollback:drill=absent/);
    expect([...foreign.calls, ...untagged.calls]).toEqual([]);
    expect(await rdsInstanceScratch.cleanup(unit, ctx(fakeRds(undefined).client), scratch)).toEqual({ removed: [] });
  });
});
