import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateDBClusterCommand, CreateDBInstanceCommand, DescribeDBClustersCommand, DescribeDBInstancesCommand, RDSClient, type DBCluster, type DBInstance } from '@aws-sdk/client-rds';
import { runShort } from '../../core/adapters/rds/names.ts';
import { ensureLedgerTable, Ledger } from '../../core/ledger/ledger.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import type { RunReport } from '../../core/report/report.ts';
import { undoDeploymentId } from '../../core/workflow/undo.ts';
import { allDbClusters, allDbInstances, testS3, uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/** The poll loops run for real, without their waits (moto makes RDS resources available at once). */
const NO_WAITS = { 'Wait for capture': 0, 'Wait for restore': 0 };

const rds = new RDSClient({});

async function instance(id: string): Promise<DBInstance | undefined> {
  try {
    return (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: id }))).DBInstances?.[0];
  } catch (error) {
    if ((error as Error).name === 'DBInstanceNotFoundFault') return undefined;
    throw error;
  }
}

async function cluster(id: string): Promise<DBCluster | undefined> {
  try {
    return (await rds.send(new DescribeDBClustersCommand({ DBClusterIdentifier: id }))).DBClusters?.[0];
  } catch (error) {
    if ((error as Error).name === 'DBClusterNotFoundFault') return undefined;
    throw error;
  }
}

/**
 * `etl-rollback undo <run>` of rds-instance and rds-cluster units, through the rollback state machine run locally with
 * its real handlers against moto. The rollback keeps the instance (cluster) it replaces as `<id>-pre-rollback-<run>`;
 * the undo swaps it back by renames alone (no snapshot, no restore): `<id>` is again the very resource that was live
 * before the rollback (same DbiResourceId / DbClusterResourceId), the rolled-back one kept, protected, as
 * `<id>-pre-rollback-<undo run>`; nothing is deleted. The undo of the undo swaps them back.
 */
describe('undo <run> of RDS units: the kept instance and cluster renamed back, and undoable in turn', () => {
  const pipeline = uniqueName('billing');
  const instanceId = uniqueName('undo-db');
  const clusterId = uniqueName('undo-wh');
  const deployment = 'd-rds-undo';
  const manifest = {
    pipeline,
    units: [
      { id: 'db', type: 'rds-instance', instanceId },
      { id: 'warehouse', type: 'rds-cluster', clusterId, dependsOn: ['db'] },
    ],
  };
  let runLocal: typeof import('../../cli/local-runner.ts').runLocal;
  const ledger = () => new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);

  /**
   * What identifies a resource whatever its name: resource id and creation time (a rename changes neither; moto gives
   * every instance the same DbiResourceId, so the creation time is what tells its instances apart here).
   */
  const instanceKey = (i: DBInstance) => `${i.DbiResourceId}@${i.InstanceCreateTime!.toISOString()}`;
  const clusterKey = (c: DBCluster) => `${c.DbClusterResourceId}@${c.ClusterCreateTime!.toISOString()}`;
  /** Every instance (cluster) named `<id>` or `<id>-…`, by name. */
  const instances = async () =>
    Object.fromEntries((await allDbInstances(rds)).filter((i) => i.DBInstanceIdentifier!.startsWith(instanceId)).map((i) => [i.DBInstanceIdentifier!, instanceKey(i)]));
  const clusters = async () =>
    Object.fromEntries((await allDbClusters(rds)).filter((c) => c.DBClusterIdentifier!.startsWith(clusterId)).map((c) => [c.DBClusterIdentifier!, clusterKey(c)]));
  const run = async (name: string, input: Record<string, unknown>) => {
    const out = await runLocal('rollback', { pipeline, ...input }, { name, waitTimeOverrides: NO_WAITS });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    return (out as { output: RunReport }).output;
  };

  let original: { db: string; wh: string };
  let rolledBack: { db: string; wh: string };
  const rollbackRun = uniqueName('run-rb');
  const undoRun = uniqueName('run-undo');

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
        AllocatedStorage: 20,
        MasterUsername: 'etl',
        MasterUserPassword: 'not-a-secret-1',
        BackupRetentionPeriod: 7,
      }),
    );
    await rds.send(
      new CreateDBClusterCommand({ DBClusterIdentifier: clusterId, Engine: 'aurora-postgresql', EngineVersion: '16.4', MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1' }),
    );
    await rds.send(new CreateDBInstanceCommand({ DBInstanceIdentifier: `${clusterId}-1`, DBClusterIdentifier: clusterId, Engine: 'aurora-postgresql', DBInstanceClass: 'db.r6g.large' }));
    original = { db: instanceKey((await instance(instanceId))!), wh: clusterKey((await cluster(clusterId))!) };

    const snap = await runLocal('snapshot', { pipeline, deploymentId: deployment, manifest }, { name: uniqueName('snap'), waitTimeOverrides: NO_WAITS });
    expect(snap.status, JSON.stringify(snap)).toBe('SUCCEEDED');
    await run(rollbackRun, { deploymentId: deployment });
    rolledBack = { db: instanceKey((await instance(instanceId))!), wh: clusterKey((await cluster(clusterId))!) };
    expect(rolledBack.db).not.toBe(original.db);
    expect(rolledBack.wh).not.toBe(original.wh);
  });

  it('the rollback recorded, without a snapshot, the instance and cluster it was about to replace', async () => {
    const points = await ledger().listRestorePoints(pipeline, undoDeploymentId(rollbackRun));
    const short = runShort(rollbackRun);
    expect(Object.fromEntries(points.map((p) => [p.unitId, p.details]))).toMatchObject({
      db: { identifier: instanceId, snapshotId: '', kept: { kind: 'kept', runId: rollbackRun, keptId: `${instanceId}-pre-rollback-${short}`, deletionProtection: false } },
      warehouse: { identifier: clusterId, snapshotId: '', kept: { kind: 'kept', keptId: `${clusterId}-pre-rollback-${short}` } },
    });
    expect(points.every((p) => p.count === 1)).toBe(true);
    const kept = (unitId: string) => (points.find((p) => p.unitId === unitId)!.details as { kept: { resourceId: string; createdAt: string } }).kept;
    expect(`${kept('db').resourceId}@${kept('db').createdAt}`).toBe(original.db);
    expect(`${kept('warehouse').resourceId}@${kept('warehouse').createdAt}`).toBe(original.wh);
  });

  it('undo: <id> is again the resource live before the rollback; the rolled-back one kept, protected; nothing deleted', async () => {
    const dry = await run(uniqueName('run-undo-dry'), { undo: rollbackRun, dryRun: true });
    const planned = dry.stages.flatMap((st) => st.units);
    expect(planned.map((u) => [u.unitId, u.writes])).toEqual([
      ['warehouse', 2],
      ['db', 2],
    ]);
    const keptDb = `${instanceId}-pre-rollback-${runShort(rollbackRun)}`;
    expect(planned.find((u) => u.unitId === 'db')!.notes.join('\n')).toContain(`undo of run ${rollbackRun}: put back the DB instance ${keptDb} kept by run ${rollbackRun}`);
    expect(await instances()).toEqual({ [instanceId]: rolledBack.db, [keptDb]: original.db });

    const report = await run(undoRun, { undo: rollbackRun });
    expect(report.deploymentId).toBe(undoDeploymentId(rollbackRun));
    expect(report.stages.map((st) => [st.units.map((u) => [u.unitId, u.writes]), st.status])).toEqual([
      [[['warehouse', 2]], 'VERIFIED'],
      [[['db', 2]], 'VERIFIED'],
    ]);
    const short = runShort(undoRun);
    expect(await instances()).toEqual({ [instanceId]: original.db, [`${instanceId}-pre-rollback-${short}`]: rolledBack.db });
    expect(await clusters()).toEqual({ [clusterId]: original.wh, [`${clusterId}-pre-rollback-${short}`]: rolledBack.wh });
    // The original's deletion protection as it was (off); the one the undo replaced protected until release.
    expect((await instance(instanceId))!.DeletionProtection).toBe(false);
    expect((await instance(`${instanceId}-pre-rollback-${short}`))!.DeletionProtection).toBe(true);
    expect((await cluster(`${clusterId}-pre-rollback-${short}`))!.DeletionProtection).toBe(true);
  });

  it('a second undo of the same run changes nothing and verifies', async () => {
    const report = await run(uniqueName('run-undo-again'), { undo: rollbackRun });
    expect(report.totals.writes).toBe(0);
    expect(report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    expect((await instances())[instanceId]).toBe(original.db);
  });

  it('undo of the undo gives back the rolled-back instance and cluster; the original kept again, nothing deleted', async () => {
    const again = uniqueName('run-undo-undo');
    const report = await run(again, { undo: undoRun });
    expect(report.deploymentId).toBe(undoDeploymentId(undoRun));
    expect(report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    const short = runShort(again);
    expect(await instances()).toEqual({ [instanceId]: rolledBack.db, [`${instanceId}-pre-rollback-${short}`]: original.db });
    expect(await clusters()).toEqual({ [clusterId]: rolledBack.wh, [`${clusterId}-pre-rollback-${short}`]: original.wh });
    expect((await instance(`${instanceId}-pre-rollback-${short}`))!.DeletionProtection).toBe(true);
  });
});
