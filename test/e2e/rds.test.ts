import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  CreateDBClusterCommand,
  CreateDBInstanceCommand,
  DescribeDBClustersCommand,
  DescribeDBClusterSnapshotsCommand,
  DescribeDBInstancesCommand,
  DescribeDBSnapshotsCommand,
  ModifyDBInstanceCommand,
  RDSClient,
  type DBCluster,
  type DBInstance,
} from '@aws-sdk/client-rds';
import type { EventLog } from '../../cli/local-runner.ts';
import { runShort, TAG, tagMap } from '../../core/adapters/rds/names.ts';
import { ensureLedgerTable } from '../../core/ledger/ledger.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import type { RunReport } from '../../core/report/report.ts';
import { allDbClusters, allDbInstances, testS3, uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/** The poll loops run for real, without their waits: Wait states take 0 ms (moto makes RDS resources available at once). */
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

async function instanceIds(prefix: string): Promise<string[]> {
  const all = await allDbInstances(rds);
  return all.map((i) => i.DBInstanceIdentifier!).filter((id) => id.startsWith(prefix)).sort();
}

async function clusterIds(prefix: string): Promise<string[]> {
  const all = await allDbClusters(rds);
  return all.map((c) => c.DBClusterIdentifier!).filter((id) => id.startsWith(prefix)).sort();
}

describe('RDS instance and Aurora cluster: snapshot and staged rollback with poll loops, end to end (definitions, handlers, moto)', () => {
  const pipeline = uniqueName('billing');
  const instanceId = uniqueName('billing-db');
  const clusterId = uniqueName('billing-wh');
  const deployment = 'd-rds-1';
  const manifest = {
    pipeline,
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
        BackupRetentionPeriod: 7,
      }),
    );
    await rds.send(
      new CreateDBClusterCommand({
        DBClusterIdentifier: clusterId,
        Engine: 'aurora-postgresql',
        EngineVersion: '16.4',
        MasterUsername: 'etl',
        MasterUserPassword: 'not-a-secret-1',
        Port: 5432,
      }),
    );
    await rds.send(new CreateDBInstanceCommand({ DBInstanceIdentifier: `${clusterId}-1`, DBClusterIdentifier: clusterId, Engine: 'aurora-postgresql', DBInstanceClass: 'db.r6g.large' }));
  });

  afterAll(() => {
    vi.restoreAllMocks();
  });

  it('snapshot: each RDS unit loops Capture unit → Wait for capture until its snapshot is available, then seals', async () => {
    const entered: string[] = [];
    const out = await runLocal('snapshot', { pipeline, deploymentId: deployment, manifest }, {
      name: uniqueName('snap'),
      waitTimeOverrides: NO_WAITS,
      onEvent: (e: EventLog) => {
        if (e.type === 'StateEntered') entered.push(e.state.name);
      },
    });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    const sealed = (out as { output: { status: string; points: { unitId: string; count: number }[] } }).output;
    expect(sealed.status).toBe('READY');
    expect(sealed.points.map((p) => [p.unitId, p.count])).toEqual([
      ['db', 1],
      ['warehouse', 1],
    ]);
    // The loop ran: a first call started each snapshot and answered "pending", the state machine waited, a second call found it.
    expect(entered.filter((s) => s === 'Capture unit')).toHaveLength(4);
    expect(entered.filter((s) => s === 'Wait for capture')).toHaveLength(2);
    expect(entered.filter((s) => s === 'Count capture poll')).toHaveLength(2);

    const snaps = (await rds.send(new DescribeDBSnapshotsCommand({ DBInstanceIdentifier: instanceId }))).DBSnapshots ?? [];
    expect(snaps.filter((s) => s.SnapshotType === 'manual').map((s) => [s.Status, tagMap(s.TagList)[TAG.deployment]])).toEqual([['available', deployment]]);
    const clusterSnaps = (await rds.send(new DescribeDBClusterSnapshotsCommand({ DBClusterIdentifier: clusterId }))).DBClusterSnapshots ?? [];
    expect(clusterSnaps.filter((s) => s.SnapshotType === 'manual')).toHaveLength(1);
  });

  it('a failure between the two renames stops the run with <id> absent; a rerun completes the swap and verifies', async () => {
    const run1 = uniqueName('run-rds');
    const short = runShort(run1);
    // Fault: the rename of the restored instance to <id> fails once (as if the Lambda died right before it).
    const realSend = RDSClient.prototype.send;
    const spy = vi.spyOn(RDSClient.prototype, 'send').mockImplementation(function (this: RDSClient, command: unknown, ...rest: unknown[]) {
      if (command instanceof ModifyDBInstanceCommand && command.input.NewDBInstanceIdentifier === instanceId) {
        return Promise.reject(Object.assign(new Error('injected: the function stopped before the second rename'), { name: 'InjectedFault' }));
      }
      return (realSend as (...args: unknown[]) => Promise<unknown>).call(this, command, ...rest);
    } as never);
    const failed = await runLocal('rollback', { pipeline, deploymentId: deployment }, { name: run1, waitTimeOverrides: NO_WAITS });
    spy.mockRestore();
    expect(failed).toMatchObject({ status: 'FAILED', error: 'InjectedFault' });

    // Stage 1 (the cluster, the consumer) is swapped; stage 2 (the instance) stopped between its renames.
    expect(await instance(instanceId)).toBeUndefined();
    expect(await instanceIds(instanceId)).toEqual([`${instanceId}-pre-rollback-${short}`, `${instanceId}-restored-${short}`]);
    expect(await clusterIds(clusterId)).toEqual([clusterId, `${clusterId}-pre-rollback-${short}`]);

    const run2 = uniqueName('run-rds');
    const entered: string[] = [];
    const out = await runLocal('rollback', { pipeline, deploymentId: deployment }, {
      name: run2,
      waitTimeOverrides: NO_WAITS,
      onEvent: (e: EventLog) => {
        if (e.type === 'StateEntered') entered.push(e.state.name);
      },
    });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    const report = (out as { output: RunReport }).output;
    expect(report.stages.map((st) => [st.units.map((u) => u.unitId), st.status])).toEqual([
      [['warehouse'], 'VERIFIED'],
      [['db'], 'VERIFIED'],
    ]);
    // The rerun wrote only the missing rename; the cluster was already back (nothing written).
    const db = report.stages[1]!.units[0]!;
    expect(db.changes).toEqual({ dbInstancesRenamed: 1 });
    expect(db.keptAt).toBe(`DB instance ${instanceId}-pre-rollback-${short}`);
    expect(report.stages[0]!.units[0]!.writes).toBe(0);
    expect(entered).toContain('Wait for restore');

    // Read back: <id> is the copy restored from the snapshot by run 1 (same endpoint name); the original is kept, protected.
    const live = (await instance(instanceId))!;
    expect(tagMap(live.TagList)).toMatchObject({ [TAG.run]: run1, [TAG.restoredFrom]: expect.stringMatching(/^snapshot:etlrb-/) });
    expect(live).toMatchObject({ DBInstanceClass: 'db.t3.small', AllocatedStorage: 50, DBInstanceStatus: 'available' });
    expect((await instance(`${instanceId}-pre-rollback-${short}`))!.DeletionProtection).toBe(true);
    expect(await instanceIds(instanceId)).toEqual([instanceId, `${instanceId}-pre-rollback-${short}`]);
    const wh = (await cluster(clusterId))!;
    expect(tagMap(wh.TagList)[TAG.restoredFrom]).toMatch(/^snapshot:etlrb-/);
    expect((await cluster(`${clusterId}-pre-rollback-${short}`))!.DeletionProtection).toBe(true);
    // The restored cluster got a writer of the original writer's class.
    expect((await instance(`${clusterId}-w-${short}`))!.DBInstanceClass).toBe('db.r6g.large');
  });

  it('a second rollback changes nothing and reports zero writes', async () => {
    const out = await runLocal('rollback', { pipeline, deploymentId: deployment }, { name: uniqueName('run-rds'), waitTimeOverrides: NO_WAITS });
    expect(out.status).toBe('SUCCEEDED');
    const report = (out as { output: RunReport }).output;
    expect(report.totals.writes).toBe(0);
    expect(report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    expect(await instanceIds(instanceId)).toHaveLength(2);
  });

  it('a unit that stays pending beyond its poll budget fails the execution with UnitTimedOut, naming the unit', async () => {
    const stuck = async (event: unknown) => ({
      done: false,
      unitId: (event as { unitId: string }).unitId,
      type: 'rds-instance',
      waitSeconds: 30,
      maxPolls: 3,
      status: `rds-instance unit "${(event as { unitId: string }).unitId}": snapshot is creating (poll ${(event as { polls: number }).polls} of 3)`,
    });
    const out = await runLocal('snapshot', { pipeline, deploymentId: 'd-rds-stuck', manifest }, {
      name: uniqueName('snap-stuck'),
      waitTimeOverrides: NO_WAITS,
      handlers: { CaptureUnit: stuck },
    });
    expect(out).toMatchObject({ status: 'FAILED', error: 'UnitTimedOut' });
    expect((out as { cause: string }).cause).toMatch(/unit "(db|warehouse)": snapshot is creating \(poll 3 of 3\)/);
  });
});
