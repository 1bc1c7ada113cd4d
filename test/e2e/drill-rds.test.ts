import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateDBClusterCommand, CreateDBInstanceCommand, DescribeDBClustersCommand, RDSClient, type DBInstance } from '@aws-sdk/client-rds';
import { drillShort } from '../../core/adapters/drill/names.ts';
import { DRILL_TAG, drillIdentifier } from '../../core/adapters/drill/rds-scratch.ts';
import { tagMap } from '../../core/adapters/rds/names.ts';
import { ensureLedgerTable } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { allDbClusters, allDbInstances, testS3, uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/** Poll loops run for real, without their waits (moto makes RDS resources available, and deletes them, at once). */
const NO_WAITS = { 'Wait for capture': 0, 'Wait for rehearsal': 0, 'Wait for cleanup': 0 };

const rds = new RDSClient({});

async function instances(): Promise<DBInstance[]> {
  return allDbInstances(rds);
}

describe('RDS drill: a temporary instance (and cluster) restored from the snapshot, verified, then deleted (moto)', () => {
  const pipeline = uniqueName('billing');
  const instanceId = uniqueName('billing-db');
  const clusterId = uniqueName('billing-wh');
  const deployment = 'd-rds-drill';
  const manifest = {
    pipeline,
    rto: '1h',
    units: [
      { id: 'db', type: 'rds-instance', instanceId },
      { id: 'warehouse', type: 'rds-cluster', clusterId, dependsOn: ['db'] },
    ],
  };
  let runLocal: typeof import('../../cli/local-runner.ts').runLocal;

  beforeAll(async () => {
    await ensureLedgerTable(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    await ensureStateBucket(testS3(), process.env.ETL_ROLLBACK_STATE_BUCKET!);
    ({ runLocal } = await import('../../cli/local-runner.ts'));
    await rds.send(
      new CreateDBInstanceCommand({
        DBInstanceIdentifier: instanceId,
        Engine: 'postgres',
        EngineVersion: '16.3',
        DBInstanceClass: 'db.t3.small',
        AllocatedStorage: 50,
        MasterUsername: 'etl',
        MasterUserPassword: 'not-a-secret-1',
        DeletionProtection: true,
      }),
    );
    await rds.send(new CreateDBClusterCommand({ DBClusterIdentifier: clusterId, Engine: 'aurora-postgresql', EngineVersion: '16.4', MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', Port: 5432 }));
    await rds.send(new CreateDBInstanceCommand({ DBInstanceIdentifier: `${clusterId}-1`, DBClusterIdentifier: clusterId, Engine: 'aurora-postgresql', DBInstanceClass: 'db.r6g.large' }));
    const snap = await runLocal('snapshot', { pipeline, deploymentId: deployment, manifest }, { name: uniqueName('snap'), waitTimeOverrides: NO_WAITS });
    expect(snap.status, JSON.stringify(snap)).toBe('SUCCEEDED');
  });

  afterAll(() => {
    vi.restoreAllMocks();
  });

  it('restores <id>-drill-<short> from the snapshot, gates it, deletes it without a final snapshot; the originals only described', async () => {
    const original = (await instances()).find((i) => i.DBInstanceIdentifier === instanceId)!;
    const originalCluster = (await rds.send(new DescribeDBClustersCommand({ DBClusterIdentifier: clusterId }))).DBClusters![0]!;
    // Every RDS call the drill makes, as sent.
    const sent: { command: string; input: Record<string, unknown> }[] = [];
    const realSend = RDSClient.prototype.send;
    const spy = vi.spyOn(RDSClient.prototype, 'send').mockImplementation(function (this: RDSClient, command: { constructor: { name: string }; input: Record<string, unknown> }, ...rest: unknown[]) {
      sent.push({ command: command.constructor.name.replace(/Command$/, ''), input: command.input });
      return (realSend as (...args: unknown[]) => Promise<unknown>).call(this, command, ...rest);
    } as never);
    const name = `drill-${pipeline}-${Date.now()}`;
    const out = await runLocal('drill', { pipeline, deploymentId: 'latest', requestedBy: 'ops' }, { name, waitTimeOverrides: NO_WAITS });
    spy.mockRestore();
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    const report = (out as { output: RunReport }).output;
    expect(report.stages.map((st) => [st.units.map((u) => u.unitId), st.status])).toEqual([
      [['warehouse'], 'VERIFIED'],
      [['db'], 'VERIFIED'],
    ]);
    const db = report.stages[1]!.units[0]!;
    expect(db.checks?.every((c) => c.ok)).toBe(true);
    expect(db.checks?.map((c) => c.name)).toEqual(expect.arrayContaining(['exists', 'status', 'restoredFrom']));

    const short = drillShort(name);
    const scratchId = drillIdentifier(instanceId, short);
    const scratchCluster = drillIdentifier(clusterId, short);
    const restore = sent.filter((c) => c.command === 'RestoreDBInstanceFromDBSnapshot');
    expect(restore.map((c) => c.input.DBInstanceIdentifier)).toEqual([scratchId]);
    expect(String(restore[0]!.input.DBSnapshotIdentifier)).toMatch(/^etlrb-/);
    expect(restore[0]!.input.DeletionProtection).toBe(false);
    expect(tagMap(restore[0]!.input.Tags as { Key: string; Value: string }[])[DRILL_TAG]).toBe(name);
    expect(sent.filter((c) => c.command === 'RestoreDBClusterFromSnapshot').map((c) => c.input.DBClusterIdentifier)).toEqual([scratchCluster]);
    const deletes = sent.filter((c) => c.command === 'DeleteDBInstance' || c.command === 'DeleteDBCluster');
    expect(deletes.map((c) => [c.command, c.input.DBInstanceIdentifier ?? c.input.DBClusterIdentifier, c.input.SkipFinalSnapshot])).toEqual(
      expect.arrayContaining([
        ['DeleteDBInstance', scratchId, true],
        ['DeleteDBCluster', scratchCluster, true],
      ]),
    );
    // Nothing but Describe calls named the originals.
    const touching = sent.filter((c) => !c.command.startsWith('Describe') && !c.command.startsWith('List') && Object.values(c.input).some((v) => v === instanceId || v === clusterId || v === `${clusterId}-1`));
    expect(touching).toEqual([]);

    // The copies are gone; the originals are as they were.
    const after = await instances();
    expect(after.filter((i) => i.DBInstanceIdentifier!.includes('-drill-'))).toEqual([]);
    const clustersAfter = await allDbClusters(rds);
    expect(clustersAfter.filter((c) => c.DBClusterIdentifier!.includes('-drill-'))).toEqual([]);
    const same = after.find((i) => i.DBInstanceIdentifier === instanceId)!;
    expect([same.DBInstanceArn, same.DBInstanceStatus, same.InstanceCreateTime, same.DeletionProtection]).toEqual([original.DBInstanceArn, 'available', original.InstanceCreateTime, true]);
    const sameCluster = clustersAfter.find((c) => c.DBClusterIdentifier === clusterId)!;
    expect([sameCluster.DBClusterArn, sameCluster.Status]).toEqual([originalCluster.DBClusterArn, originalCluster.Status]);
    expect(report.drill?.cleanup).toMatchObject({ complete: true });
    expect(report.drill?.cleanup.removed).toEqual(expect.arrayContaining([`DB instance ${scratchId}`, `DB cluster ${scratchCluster}`]));
    expect(report.drill?.overRto).toBe(false);
  });
});
