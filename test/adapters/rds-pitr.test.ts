import { GlueClient } from '@aws-sdk/client-glue';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CreateDBClusterCommand,
  CreateDBInstanceCommand,
  DescribeDBClustersCommand,
  DescribeDBInstancesCommand,
  RDSClient,
  type DBCluster,
  type DBInstance,
} from '@aws-sdk/client-rds';
import { rdsClusterAdapter } from '../../core/adapters/rds-cluster.ts';
import { rdsInstanceAdapter } from '../../core/adapters/rds-instance.ts';
import { runShort, shortHash, TAG, tagMap } from '../../core/adapters/rds/names.ts';
import { writerIdentifier } from '../../core/adapters/rds-cluster.ts';
import { ensureTemporaryCopy, removeTemporaryCopy, temporaryIdentifier, type CopyStep } from '../../core/adapters/rds/temporary-copy.ts';
import { isoUtc } from '../../core/adapters/rds/window.ts';
import type { AdapterContext, Outcome, RestorePoint, UnitAdapter } from '../../core/adapters/types.ts';
import { exitCodeOf, OutsideRestorableWindowError } from '../../core/errors.ts';
import { rdsClusterUnitSchema, rdsInstanceUnitSchema, type Unit } from '../../core/manifest/schema.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { testS3, uniqueName } from '../support/aws.ts';

// `--to` for RDS units: the point is resolved from the restorable window (no snapshot exists), and its restore is a
// point-in-time restore followed by the ordinary rename swap. Read back from moto's RDS API, which implements
// RestoreDBInstanceToPointInTime / RestoreDBClusterToPointInTime (instances are available at once, no data plane).

const rds = new RDSClient({});
const s3 = testS3();
const stateBucket = uniqueName('rds-pitr-state');

beforeAll(async () => {
  await ensureStateBucket(s3, stateBucket);
});

function ctx(deploymentId: string, runId?: string): AdapterContext {
  return {
    pipeline: 'billing',
    deploymentId,
    runId,
    s3,
    rds,
    glue: new GlueClient({}),
    stateBucket,
    postgres: { connect: () => Promise.reject(new Error('an RDS unit opens no PostgreSQL connection')) },
    mysql: { connect: () => Promise.reject(new Error('an RDS unit opens no MySQL connection')) },
    retentionDays: 14,
    now: () => new Date(),
    log: { info: () => undefined, warn: () => undefined },
  };
}

async function restoreToEnd<U extends Unit, D>(adapter: Pick<UnitAdapter<U, D>, 'restore'>, u: U, point: RestorePoint<D>, c: AdapterContext): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (let calls = 1; calls <= 20; calls++) {
    const outcome = await adapter.restore(u, point, c);
    outcomes.push(outcome);
    if (!outcome.pending) return outcomes;
  }
  throw new Error('restore did not finish in 20 calls');
}

const writes = (outcomes: Outcome[]) => outcomes.reduce((sum, o) => sum + o.writes, 0);

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

/** A moment strictly inside a window that opened when the resource was made (moto: creation time to now). */
async function momentAfterCreation(): Promise<Date> {
  await new Promise((r) => setTimeout(r, 1100));
  return new Date(Date.now() - 100);
}

describe('rds-instance --to (point-in-time restore)', () => {
  it('resolves the time inside the window, restores to it into -restored-<run>, swaps names, keeps the original; a rerun writes nothing', async () => {
    const id = uniqueName('pitrsrc');
    await rds.send(
      new CreateDBInstanceCommand({
        DBInstanceIdentifier: id,
        Engine: 'postgres',
        EngineVersion: '16.3',
        DBInstanceClass: 'db.t3.micro',
        AllocatedStorage: 20,
        MasterUsername: 'etl',
        MasterUserPassword: 'not-a-secret-1',
        BackupRetentionPeriod: 7,
      }),
    );
    const u = rdsInstanceUnitSchema.parse({ id: 'ledger', type: 'rds-instance', instanceId: id });
    const at = await momentAfterCreation();
    const deployment = `at-${isoUtc(at).replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
    const { point, shows } = await rdsInstanceAdapter.asOf!(u, at, ctx(deployment));
    expect(point.details.pointInTime).toBe(isoUtc(at));
    expect(point.capturedAt).toBe(isoUtc(at));
    expect(point.details.snapshotId).toBe('');
    expect(point.count).toBe(1);
    expect(shows.join('\n')).toContain(`point-in-time restore to ${isoUtc(at)}`);
    expect(shows.join('\n')).toMatch(/restorable window \[\S+Z, \S+Z\]/);

    const dry = await rdsInstanceAdapter.diff(u, point, ctx(deployment, 'run-to-1'));
    expect(dry.changes).toEqual({ dbInstancesRestoredToPointInTime: 1, dbInstancesRenamed: 2 });
    expect(dry.notes[0]).toContain(`point-in-time restore to ${isoUtc(at)}`);

    const outcomes = await restoreToEnd(rdsInstanceAdapter, u, point, ctx(deployment, 'run-to-1'));
    expect(outcomes[0]!.changes).toEqual({ dbInstancesRestoredToPointInTime: 1 });
    const live = (await instance(id))!;
    expect(tagMap(live.TagList)[TAG.restoredFrom]).toBe(`pitr:${isoUtc(at)}`);
    const kept = (await instance(`${id}-pre-rollback-${runShort('run-to-1')}`))!;
    expect(kept.DeletionProtection).toBe(true);
    expect(await instance(`${id}-restored-${runShort('run-to-1')}`)).toBeUndefined();
    expect((await rdsInstanceAdapter.verify(u, point, ctx(deployment, 'run-to-1'))).every((c) => c.ok)).toBe(true);

    const again = await restoreToEnd(rdsInstanceAdapter, u, point, ctx(deployment, 'run-to-1'));
    expect(writes(again)).toBe(0);

    // Release: no snapshot to delete (none was taken); the kept original is removed.
    await rdsInstanceAdapter.release(u, point, ctx(deployment, 'run-to-1'));
    expect(await instance(kept.DBInstanceIdentifier!)).toBeUndefined();
    expect(await instance(id)).toBeDefined();
  });

  it('refuses a time outside the restorable window, naming the resource and the window, touching nothing', async () => {
    const id = uniqueName('pitrwin');
    await rds.send(
      new CreateDBInstanceCommand({ DBInstanceIdentifier: id, Engine: 'mysql', DBInstanceClass: 'db.t3.micro', AllocatedStorage: 20, MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', BackupRetentionPeriod: 3 }),
    );
    const u = rdsInstanceUnitSchema.parse({ id: 'ledger', type: 'rds-instance', instanceId: id });
    for (const at of [new Date('2020-01-01T00:00:00Z'), new Date(Date.now() + 3_600_000)]) {
      const error = await rdsInstanceAdapter.asOf!(u, at, ctx('at-x')).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OutsideRestorableWindowError);
      expect(exitCodeOf(error)).toBe(2);
      const message = (error as Error).message;
      expect(message).toContain(`DB instance ${id}`);
      expect(message).toContain(isoUtc(at));
      expect(message).toMatch(/restorable window is \[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z, \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\]/);
    }
    expect((await instance(id))!.DBInstanceStatus).toBe('available');
    expect(await instance(`${id}-restored-${runShort('x')}`)).toBeUndefined();
  });

  it('refuses an instance without automated backups: it has no window at all', async () => {
    const id = uniqueName('pitrnone');
    await rds.send(
      new CreateDBInstanceCommand({ DBInstanceIdentifier: id, Engine: 'postgres', DBInstanceClass: 'db.t3.micro', AllocatedStorage: 20, MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', BackupRetentionPeriod: 0 }),
    );
    const u = rdsInstanceUnitSchema.parse({ id: 'ledger', type: 'rds-instance', instanceId: id });
    await expect(rdsInstanceAdapter.asOf!(u, new Date(), ctx('at-y'))).rejects.toThrow(/automated backups are off/);
  });
});

describe('rds-cluster --to (point-in-time restore)', () => {
  it('restores the cluster to the time with a writer instance, swaps names and verifies', async () => {
    const id = uniqueName('pitrclu');
    await rds.send(
      new CreateDBClusterCommand({ DBClusterIdentifier: id, Engine: 'aurora-postgresql', EngineVersion: '16.4', MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', Port: 5432 }),
    );
    await rds.send(new CreateDBInstanceCommand({ DBInstanceIdentifier: `${id}-1`, DBClusterIdentifier: id, Engine: 'aurora-postgresql', DBInstanceClass: 'db.r6g.large' }));
    const u = rdsClusterUnitSchema.parse({ id: 'wh', type: 'rds-cluster', clusterId: id });
    const at = await momentAfterCreation();
    const { point } = await rdsClusterAdapter.asOf!(u, at, ctx('at-c'));
    expect(point.details.pointInTime).toBe(isoUtc(at));

    const outcomes = await restoreToEnd(rdsClusterAdapter, u, point, ctx('at-c', 'run-to-c'));
    const all = outcomes.reduce<Record<string, number>>((sum, o) => {
      for (const [k, v] of Object.entries(o.changes)) sum[k] = (sum[k] ?? 0) + v;
      return sum;
    }, {});
    expect(all).toMatchObject({ dbClustersRestoredToPointInTime: 1, dbInstancesCreated: 1, dbClustersRenamed: 2 });
    expect(tagMap((await cluster(id))!.TagList)[TAG.restoredFrom]).toBe(`pitr:${isoUtc(at)}`);
    expect((await cluster(`${id}-pre-rollback-${runShort('run-to-c')}`))!.DeletionProtection).toBe(true);
    expect((await rdsClusterAdapter.verify(u, point, ctx('at-c', 'run-to-c'))).every((c) => c.ok)).toBe(true);

    await expect(rdsClusterAdapter.asOf!(u, new Date('2021-06-01T00:00:00Z'), ctx('at-c'))).rejects.toThrow(
      /DB cluster \S+ cannot be restored to 2021-06-01T00:00:00Z: that is before the earliest restorable time; its restorable window is \[/,
    );
  });
});

describe('temporary point-in-time copy (the control path of a table unit\'s --to)', () => {
  it('of a cluster: made with its writer, answers the endpoint once available, deleted only when its tags say this run made it', async () => {
    const id = uniqueName('pitrtmp');
    await rds.send(
      new CreateDBClusterCommand({ DBClusterIdentifier: id, Engine: 'aurora-mysql', MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', Port: 3306 }),
    );
    await rds.send(new CreateDBInstanceCommand({ DBInstanceIdentifier: `${id}-1`, DBClusterIdentifier: id, Engine: 'aurora-mysql', DBInstanceClass: 'db.r6g.large' }));
    const at = await momentAfterCreation();
    const source = { rds: { clusterId: id }, time: isoUtc(at) };
    const c = ctx('at-t', 'run-t');
    const ids = { id: temporaryIdentifier(source.rds, 'run-t', 'carts'), point: `billing/at-t/carts`, runId: 'run-t', unitId: 'carts' };
    expect(ids.id).toMatch(new RegExp(`^${id}-pitr-[0-9a-f]{8}$`));
    const steps: CopyStep[] = [];
    for (let i = 0; i < 10 && !steps.some((s) => 'endpoint' in s); i++) steps.push(await ensureTemporaryCopy(c, source, ids));
    expect(steps[0]!.changes).toEqual({ dbClustersRestoredToPointInTime: 1 });
    expect(steps.flatMap((s) => Object.keys(s.changes))).toContain('dbInstancesCreated');
    const made = (await cluster(ids.id))!;
    expect(steps.at(-1)).toEqual({ endpoint: { host: made.Endpoint, port: made.Port }, changes: {} });
    expect(tagMap(made.TagList)).toMatchObject({ 'etl-rollback:temporary': 'pitr', [TAG.run]: 'run-t', [TAG.restoredFrom]: `pitr:${isoUtc(at)}` });
    expect(await instance(writerIdentifier(ids.id, shortHash('run-t')))).toBeDefined();

    // Another run's names do not prove it ours: nothing is deleted, and making it again is refused.
    expect(await removeTemporaryCopy(c, source.rds, { ...ids, runId: 'run-other' })).toBe(0);
    await expect(ensureTemporaryCopy(c, source, { ...ids, runId: 'run-other' })).rejects.toThrow(/is not this run's point-in-time copy/);
    expect(await cluster(ids.id)).toBeDefined();

    expect(await removeTemporaryCopy(c, source.rds, ids)).toBe(1);
    const left = await cluster(ids.id);
    expect(left === undefined || left.Status === 'deleting').toBe(true);
    expect(await instance(writerIdentifier(ids.id, shortHash('run-t')))).toBeUndefined();
    expect((await cluster(id))!.Status).toBe('available');
  });
});
