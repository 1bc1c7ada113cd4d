import {
  AddTagsToResourceCommand,
  CreateDBClusterSnapshotCommand,
  CreateDBInstanceCommand,
  DeleteDBClusterCommand,
  DeleteDBClusterSnapshotCommand,
  DeleteDBInstanceCommand,
  DescribeDBClustersCommand,
  DescribeDBClusterSnapshotsCommand,
  DescribeDBInstancesCommand,
  ModifyDBClusterCommand,
  RestoreDBClusterFromSnapshotCommand,
  RestoreDBClusterToPointInTimeCommand,
  type DBCluster,
  type RDSClient,
} from '@aws-sdk/client-rds';
import type { RdsClusterUnit } from '../manifest/schema.ts';
import { clusterWindow } from './rds/window.ts';
import { compareSettings, orUndefined, rdsAdapter, type RdsDetails, type RdsKind, type RdsResource, type RdsSettings } from './rds/engine.ts';
import type { Changes } from './types.ts';
import { derivedIdentifier, MAX_CLUSTER_SNAPSHOT_ID, ownTags, tagList, tagMap } from './rds/names.ts';

/**
 * An Aurora DB cluster as a rollback unit. Capture = a manual DB cluster snapshot; restore = a new cluster from it
 * with the original's settings, plus a writer instance of the original writer's class, swapped in by renaming the
 * clusters (the cluster endpoint name stays); the original cluster is kept, deletion-protected, until release.
 */
export interface RdsClusterSettings extends RdsSettings {
  engine: string;
  engineVersion?: string;
  engineMode?: string;
  port?: number;
  subnetGroup?: string;
  clusterParameterGroup?: string;
  securityGroupIds: string[];
  storageEncrypted?: boolean;
  kmsKeyId?: string;
  iamAuth?: boolean;
  deletionProtection: boolean;
  copyTagsToSnapshot?: boolean;
  serverlessV2?: { MinCapacity?: number; MaxCapacity?: number };
  /** The writer instance's class (`db.r6g.large`, `db.serverless`). */
  writerClass?: string;
}

export type RdsClusterDetails = RdsDetails<RdsClusterSettings>;

async function describeCluster(rds: RDSClient, id: string): Promise<DBCluster | undefined> {
  const out = await orUndefined(rds.send(new DescribeDBClustersCommand({ DBClusterIdentifier: id })));
  return out?.DBClusters?.[0];
}

function resource(c: DBCluster): RdsResource {
  return {
    id: c.DBClusterIdentifier!,
    arn: c.DBClusterArn!,
    status: c.Status ?? 'unknown',
    deletionProtection: c.DeletionProtection ?? false,
    resourceId: c.DbClusterResourceId,
    createdAt: c.ClusterCreateTime?.toISOString(),
    tags: tagMap(c.TagList),
  };
}

/** The writer instance of a restored cluster: `<clusterId>-w-<runshort>`. */
export function writerIdentifier(clusterId: string, runShort: string): string {
  return derivedIdentifier(clusterId, `w-${runShort}`);
}

function restoreSettings(s: RdsClusterSettings) {
  return {
    Engine: s.engine,
    EngineVersion: s.engineVersion,
    Port: s.port,
    DBSubnetGroupName: s.subnetGroup,
    VpcSecurityGroupIds: s.securityGroupIds.length > 0 ? s.securityGroupIds : undefined,
    DBClusterParameterGroupName: s.clusterParameterGroup,
    EnableIAMDatabaseAuthentication: s.iamAuth,
    DeletionProtection: s.deletionProtection,
    CopyTagsToSnapshot: s.copyTagsToSnapshot,
    ...(s.storageEncrypted && s.kmsKeyId ? { KmsKeyId: s.kmsKeyId } : {}),
    ...(s.serverlessV2 ? { ServerlessV2ScalingConfiguration: s.serverlessV2 } : {}),
  };
}

const compared: (keyof RdsClusterSettings)[] = ['engine', 'engineVersion', 'port', 'subnetGroup', 'clusterParameterGroup', 'securityGroupIds'];

export const rdsClusterKind: RdsKind<RdsClusterSettings> = {
  noun: 'DB cluster',
  snapshotMax: MAX_CLUSTER_SNAPSHOT_ID,
  counter: 'dbClusters',
  async describe(rds, id) {
    const c = await describeCluster(rds, id);
    return c ? resource(c) : undefined;
  },
  async describeSnapshot(rds, id) {
    const out = await orUndefined(rds.send(new DescribeDBClusterSnapshotsCommand({ DBClusterSnapshotIdentifier: id })));
    const s = out?.DBClusterSnapshots?.[0];
    if (!s) return undefined;
    return {
      id: s.DBClusterSnapshotIdentifier!,
      arn: s.DBClusterSnapshotArn!,
      status: s.Status ?? 'unknown',
      percent: s.PercentProgress,
      createTime: s.SnapshotCreateTime?.toISOString(),
      sourceId: s.DBClusterIdentifier,
      engine: s.Engine,
      engineVersion: s.EngineVersion,
      tags: tagMap(s.TagList),
    };
  },
  async createSnapshot(rds, sourceId, snapshotId, tags) {
    await rds.send(new CreateDBClusterSnapshotCommand({ DBClusterIdentifier: sourceId, DBClusterSnapshotIdentifier: snapshotId, Tags: tagList(tags) }));
  },
  async deleteSnapshot(rds, id) {
    await orUndefined(rds.send(new DeleteDBClusterSnapshotCommand({ DBClusterSnapshotIdentifier: id })));
  },
  async settings(rds, id) {
    const c = await describeCluster(rds, id);
    if (!c) throw new Error(`DB cluster ${id} disappeared while being read`);
    const writerId = c.DBClusterMembers?.find((m) => m.IsClusterWriter)?.DBInstanceIdentifier;
    const writer = writerId ? (await orUndefined(rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: writerId }))))?.DBInstances?.[0] : undefined;
    return {
      engine: c.Engine!,
      engineVersion: c.EngineVersion,
      engineMode: c.EngineMode,
      port: c.Port,
      subnetGroup: c.DBSubnetGroup,
      clusterParameterGroup: c.DBClusterParameterGroup,
      securityGroupIds: (c.VpcSecurityGroups ?? []).map((g) => g.VpcSecurityGroupId!).sort(),
      storageEncrypted: c.StorageEncrypted,
      kmsKeyId: c.KmsKeyId,
      iamAuth: c.IAMDatabaseAuthenticationEnabled,
      deletionProtection: c.DeletionProtection ?? false,
      copyTagsToSnapshot: c.CopyTagsToSnapshot,
      ...(c.ServerlessV2ScalingConfiguration?.MaxCapacity
        ? { serverlessV2: { MinCapacity: c.ServerlessV2ScalingConfiguration.MinCapacity, MaxCapacity: c.ServerlessV2ScalingConfiguration.MaxCapacity } }
        : {}),
      writerClass: writer?.DBInstanceClass,
      resourceId: c.DbClusterResourceId,
      tags: ownTags(tagMap(c.TagList)),
    };
  },
  async restore(rds, source, targetId, s, tags) {
    if (source.kind === 'snapshot') {
      await rds.send(
        new RestoreDBClusterFromSnapshotCommand({ DBClusterIdentifier: targetId, SnapshotIdentifier: source.snapshotId, ...restoreSettings(s), Tags: tagList(tags) }),
      );
    } else {
      const { Engine: _engine, EngineVersion: _version, ...rest } = restoreSettings(s);
      await rds.send(
        new RestoreDBClusterToPointInTimeCommand({
          DBClusterIdentifier: targetId,
          ...(source.sourceId ? { SourceDBClusterIdentifier: source.sourceId } : { SourceDbClusterResourceId: source.sourceResourceId }),
          RestoreToTime: new Date(source.time),
          ...rest,
          Tags: tagList(tags),
        }),
      );
    }
  },
  /** A restored cluster has no instance: create its writer with the original writer's class, then wait for it. */
  async complete(rds, targetId, ids, s, tags) {
    const writerId = writerIdentifier(ids.identifier, ids.runShort);
    const writer = (await orUndefined(rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: writerId }))))?.DBInstances?.[0];
    if (!writer) {
      await rds.send(
        new CreateDBInstanceCommand({
          DBInstanceIdentifier: writerId,
          DBClusterIdentifier: targetId,
          Engine: s.engine,
          DBInstanceClass: s.writerClass ?? (s.serverlessV2 ? 'db.serverless' : 'db.r6g.large'),
          Tags: tagList(tags),
        }),
      );
      return { pending: `writer instance ${writerId} of DB cluster ${targetId} is being created`, changes: { dbInstancesCreated: 1 } };
    }
    const none: Changes = {};
    if (writer.DBInstanceStatus !== 'available') return { pending: `writer instance ${writerId} is ${writer.DBInstanceStatus}`, changes: none };
    return { changes: none };
  },
  async rename(rds, from, to, deletionProtection) {
    await rds.send(
      new ModifyDBClusterCommand({
        DBClusterIdentifier: from,
        NewDBClusterIdentifier: to,
        ApplyImmediately: true,
        ...(deletionProtection === undefined ? {} : { DeletionProtection: deletionProtection }),
      }),
    );
  },
  async setDeletionProtection(rds, id, on) {
    await rds.send(new ModifyDBClusterCommand({ DBClusterIdentifier: id, DeletionProtection: on, ApplyImmediately: true }));
  },
  async addTags(rds, arn, tags) {
    await rds.send(new AddTagsToResourceCommand({ ResourceName: arn, Tags: tagList(tags) }));
  },
  /** Its instances first (a cluster with instances cannot be deleted), then the cluster; a later release finishes. */
  async remove(rds, r, log) {
    const c = await describeCluster(rds, r.id);
    for (const m of c?.DBClusterMembers ?? []) {
      await orUndefined(rds.send(new DeleteDBInstanceCommand({ DBInstanceIdentifier: m.DBInstanceIdentifier!, SkipFinalSnapshot: true })));
    }
    try {
      await orUndefined(rds.send(new DeleteDBClusterCommand({ DBClusterIdentifier: r.id, SkipFinalSnapshot: true })));
    } catch (error) {
      if ((error as Error).name !== 'InvalidDBClusterStateFault') throw error;
      log.warn('rds cluster not deleted yet: its instances are being deleted; release again to finish', { id: r.id });
    }
  },
  compare(expected, live) {
    return compareSettings(expected, live, compared);
  },
  window: clusterWindow,
};

export const rdsClusterAdapter = rdsAdapter<RdsClusterUnit, RdsClusterSettings>('rds-cluster', rdsClusterKind, (u) => u.clusterId);
