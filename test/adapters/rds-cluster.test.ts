import { GlueClient } from '@aws-sdk/client-glue';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CreateDBClusterCommand,
  CreateDBInstanceCommand,
  DeleteDBClusterSnapshotCommand,
  DescribeDBClustersCommand,
  DescribeDBClusterSnapshotsCommand,
  DescribeDBInstancesCommand,
  RDSClient,
  type DBCluster,
} from '@aws-sdk/client-rds';
import { rdsClusterAdapter as adapter, type RdsClusterDetails } from '../../core/adapters/rds-cluster.ts';
import { runShort, snapshotIdentifier, TAG, tagMap } from '../../core/adapters/rds/names.ts';
import { isPendingCapture, type AdapterContext, type Outcome, type RestorePoint } from '../../core/adapters/types.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { rdsClusterUnitSchema, type RdsClusterUnit } from '../../core/manifest/schema.ts';
import { testS3, uniqueName } from '../support/aws.ts';

// Read back from moto's RDS API. moto quirk seen here: after a cluster rename, DBClusterMembers and an instance's
// DBClusterIdentifier still carry the old cluster name; the adapter finds a writer by its own name, never by membership.

const rds = new RDSClient({});
const s3 = testS3();
const stateBucket = uniqueName('rdsc-state');

beforeAll(async () => {
  await ensureStateBucket(s3, stateBucket);
});

function ctx(deploymentId: string, runId?: string): AdapterContext {
  return {
    pipeline: 'sales',
    deploymentId,
    runId,
    s3,
    rds,
    glue: new GlueClient({}),
    stateBucket,
    postgres: { connect: () => Promise.reject(new Error('unused')) },
    mysql: { connect: () => Promise.reject(new Error('unused')) },
    retentionDays: 14,
    now: () => new Date(),
    log: { info: () => undefined, warn: () => undefined },
  };
}

const unit = (clusterId: string): RdsClusterUnit => rdsClusterUnitSchema.parse({ id: 'wh', type: 'rds-cluster', clusterId });

async function createCluster(id: string): Promise<void> {
  await rds.send(
    new CreateDBClusterCommand({ DBClusterIdentifier: id, Engine: 'aurora-postgresql', EngineVersion: '16.4', MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', Port: 5432, Tags: [{ Key: 'team', Value: 'bi' }] }),
  );
  await rds.send(new CreateDBInstanceCommand({ DBInstanceIdentifier: `${id}-1`, DBClusterIdentifier: id, Engine: 'aurora-postgresql', DBInstanceClass: 'db.r6g.xlarge' }));
}

async function cluster(id: string): Promise<DBCluster | undefined> {
  try {
    return (await rds.send(new DescribeDBClustersCommand({ DBClusterIdentifier: id }))).DBClusters?.[0];
  } catch (error) {
    if ((error as Error).name === 'DBClusterNotFoundFault') return undefined;
    throw error;
  }
}

async function captureToEnd(u: RdsClusterUnit, c: AdapterContext): Promise<RestorePoint<RdsClusterDetails>> {
  for (let i = 0; i < 20; i++) {
    const r = await adapter.capture(u, c);
    if (!isPendingCapture(r)) return r;
  }
  throw new Error('capture did not finish');
}

async function restoreToEnd(u: RdsClusterUnit, p: RestorePoint<RdsClusterDetails>, c: AdapterContext): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (let i = 0; i < 20; i++) {
    const o = await adapter.restore(u, p, c);
    outcomes.push(o);
    if (!o.pending) return outcomes;
  }
  throw new Error('restore did not finish');
}

describe('rds-cluster adapter against moto', () => {
  it('captures a tagged cluster snapshot with the writer class, restores it with a writer, swaps, keeps the original protected', async () => {
    const id = uniqueName('whc');
    await createCluster(id);
    const u = unit(id);
    const point = await captureToEnd(u, ctx('d-1'));
    expect(point.details.snapshotId).toBe(snapshotIdentifier({ pipeline: 'sales', deploymentId: 'd-1', unitId: 'wh' }, 63));
    expect(point.details.settings).toMatchObject({ engine: 'aurora-postgresql', engineVersion: '16.4', port: 5432, writerClass: 'db.r6g.xlarge', tags: { team: 'bi' } });
    const snaps = (await rds.send(new DescribeDBClusterSnapshotsCommand({ DBClusterIdentifier: id }))).DBClusterSnapshots ?? [];
    expect(snaps.filter((s) => s.SnapshotType === 'manual').map((s) => tagMap(s.TagList)[TAG.point])).toEqual(['sales/d-1/wh']);

    const runId = 'run-c1';
    const short = runShort(runId);
    const outcomes = await restoreToEnd(u, point, ctx('d-1', runId));
    const changes: Record<string, number> = {};
    for (const o of outcomes) for (const [k, v] of Object.entries(o.changes)) changes[k] = (changes[k] ?? 0) + v;
    expect(changes).toEqual({ dbClustersRestoredFromSnapshot: 1, dbInstancesCreated: 1, dbClustersRenamed: 2 });

    const live = (await cluster(id))!;
    expect(tagMap(live.TagList)).toMatchObject({ team: 'bi', [TAG.restoredFrom]: `snapshot:${point.details.snapshotId}` });
    const kept = (await cluster(`${id}-pre-rollback-${short}`))!;
    expect(kept.DeletionProtection).toBe(true);
    const writer = (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: `${id}-w-${short}` }))).DBInstances![0]!;
    expect(writer.DBInstanceClass).toBe('db.r6g.xlarge');
    expect((await adapter.verify(u, point, ctx('d-1', runId))).filter((ch) => !ch.ok)).toEqual([]);
    expect((await restoreToEnd(u, point, ctx('d-1', 'run-c2'))).reduce((s, o) => s + o.writes, 0)).toBe(0);
  });

  it('falls back to a point-in-time restore of the cluster when its snapshot is gone', async () => {
    const id = uniqueName('whp');
    await createCluster(id);
    const u = unit(id);
    const point = await captureToEnd(u, ctx('d-2'));
    await rds.send(new DeleteDBClusterSnapshotCommand({ DBClusterSnapshotIdentifier: point.details.snapshotId }));
    const outcomes = await restoreToEnd(u, point, ctx('d-2', 'run-p'));
    expect(outcomes[0]!.changes).toEqual({ dbClustersRestoredToPointInTime: 1 });
    expect(tagMap((await cluster(id))!.TagList)[TAG.restoredFrom]).toBe(`pitr:${point.capturedAt}`);
    expect((await adapter.verify(u, point, ctx('d-2', 'run-p'))).every((ch) => ch.ok)).toBe(true);
  });
});
