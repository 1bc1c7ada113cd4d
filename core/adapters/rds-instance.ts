import {
  AddTagsToResourceCommand,
  CreateDBSnapshotCommand,
  DeleteDBInstanceCommand,
  DeleteDBSnapshotCommand,
  DescribeDBInstancesCommand,
  DescribeDBSnapshotsCommand,
  ModifyDBInstanceCommand,
  RestoreDBInstanceFromDBSnapshotCommand,
  RestoreDBInstanceToPointInTimeCommand,
  type DBInstance,
  type RDSClient,
} from '@aws-sdk/client-rds';
import type { RdsInstanceUnit } from '../manifest/schema.ts';
import { instanceWindow } from './rds/window.ts';
import { compareSettings, orUndefined, rdsAdapter, type RdsDetails, type RdsKind, type RdsResource, type RdsSettings } from './rds/engine.ts';
import { MAX_DB_SNAPSHOT_ID, ownTags, tagList, tagMap } from './rds/names.ts';

/**
 * An RDS DB instance as a rollback unit. Capture = a manual DB snapshot; restore = a new instance from it with the
 * original's settings, swapped in by renames (the endpoint name stays); the original is kept, deletion-protected,
 * until the restore point is released. See rds/engine.ts for the steps.
 */
export interface RdsInstanceSettings extends RdsSettings {
  engine: string;
  engineVersion?: string;
  instanceClass: string;
  subnetGroup?: string;
  parameterGroup?: string;
  optionGroup?: string;
  securityGroupIds: string[];
  port?: number;
  multiAZ: boolean;
  availabilityZone?: string;
  storageType?: string;
  allocatedStorage?: number;
  iops?: number;
  storageThroughput?: number;
  publiclyAccessible?: boolean;
  iamAuth?: boolean;
  deletionProtection: boolean;
  copyTagsToSnapshot?: boolean;
  autoMinorVersionUpgrade?: boolean;
}

export type RdsInstanceDetails = RdsDetails<RdsInstanceSettings>;

async function describeInstance(rds: RDSClient, id: string): Promise<DBInstance | undefined> {
  const out = await orUndefined(rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: id })));
  return out?.DBInstances?.[0];
}

function resource(i: DBInstance): RdsResource {
  return {
    id: i.DBInstanceIdentifier!,
    arn: i.DBInstanceArn!,
    status: i.DBInstanceStatus ?? 'unknown',
    deletionProtection: i.DeletionProtection ?? false,
    resourceId: i.DbiResourceId,
    createdAt: i.InstanceCreateTime?.toISOString(),
    tags: tagMap(i.TagList),
  };
}

export function instanceSettings(i: DBInstance): RdsInstanceSettings {
  const multiAZ = i.MultiAZ ?? false;
  return {
    engine: i.Engine!,
    engineVersion: i.EngineVersion,
    instanceClass: i.DBInstanceClass!,
    subnetGroup: i.DBSubnetGroup?.DBSubnetGroupName,
    parameterGroup: i.DBParameterGroups?.[0]?.DBParameterGroupName,
    optionGroup: i.OptionGroupMemberships?.[0]?.OptionGroupName,
    securityGroupIds: (i.VpcSecurityGroups ?? []).map((g) => g.VpcSecurityGroupId!).sort(),
    port: i.Endpoint?.Port ?? i.DbInstancePort,
    multiAZ,
    ...(multiAZ ? {} : { availabilityZone: i.AvailabilityZone }),
    storageType: i.StorageType,
    allocatedStorage: i.AllocatedStorage,
    iops: i.Iops,
    storageThroughput: i.StorageThroughput,
    publiclyAccessible: i.PubliclyAccessible,
    iamAuth: i.IAMDatabaseAuthenticationEnabled,
    deletionProtection: i.DeletionProtection ?? false,
    copyTagsToSnapshot: i.CopyTagsToSnapshot,
    autoMinorVersionUpgrade: i.AutoMinorVersionUpgrade,
    resourceId: i.DbiResourceId,
    tags: ownTags(tagMap(i.TagList)),
  };
}

function isDefaultGroup(name: string | undefined): boolean {
  return name === undefined || name.startsWith('default:') || name.startsWith('default.');
}

/** The settings both restore calls take, from the original's. */
function restoreSettings(s: RdsInstanceSettings) {
  return {
    DBInstanceClass: s.instanceClass,
    Port: s.port,
    DBSubnetGroupName: s.subnetGroup,
    MultiAZ: s.multiAZ,
    AvailabilityZone: s.multiAZ ? undefined : s.availabilityZone,
    PubliclyAccessible: s.publiclyAccessible,
    AutoMinorVersionUpgrade: s.autoMinorVersionUpgrade,
    // A default group (`default:postgres-16`, `default.postgres16`) is what RDS picks anyway: name only custom ones.
    OptionGroupName: isDefaultGroup(s.optionGroup) ? undefined : s.optionGroup,
    DBParameterGroupName: isDefaultGroup(s.parameterGroup) ? undefined : s.parameterGroup,
    VpcSecurityGroupIds: s.securityGroupIds.length > 0 ? s.securityGroupIds : undefined,
    StorageType: s.storageType,
    Iops: s.iops,
    StorageThroughput: s.storageThroughput,
    EnableIAMDatabaseAuthentication: s.iamAuth,
    CopyTagsToSnapshot: s.copyTagsToSnapshot,
    DeletionProtection: s.deletionProtection,
  };
}

const compared: (keyof RdsInstanceSettings)[] = ['engine', 'engineVersion', 'instanceClass', 'port', 'multiAZ', 'subnetGroup', 'parameterGroup', 'securityGroupIds', 'storageType'];

export const rdsInstanceKind: RdsKind<RdsInstanceSettings> = {
  noun: 'DB instance',
  snapshotMax: MAX_DB_SNAPSHOT_ID,
  counter: 'dbInstances',
  async describe(rds, id) {
    const i = await describeInstance(rds, id);
    return i ? resource(i) : undefined;
  },
  async describeSnapshot(rds, id) {
    const out = await orUndefined(rds.send(new DescribeDBSnapshotsCommand({ DBSnapshotIdentifier: id })));
    const s = out?.DBSnapshots?.[0];
    if (!s) return undefined;
    return {
      id: s.DBSnapshotIdentifier!,
      arn: s.DBSnapshotArn!,
      status: s.Status ?? 'unknown',
      percent: s.PercentProgress,
      createTime: s.SnapshotCreateTime?.toISOString(),
      sourceId: s.DBInstanceIdentifier,
      engine: s.Engine,
      engineVersion: s.EngineVersion,
      tags: tagMap(s.TagList),
    };
  },
  async createSnapshot(rds, sourceId, snapshotId, tags) {
    await rds.send(new CreateDBSnapshotCommand({ DBInstanceIdentifier: sourceId, DBSnapshotIdentifier: snapshotId, Tags: tagList(tags) }));
  },
  async deleteSnapshot(rds, id) {
    await orUndefined(rds.send(new DeleteDBSnapshotCommand({ DBSnapshotIdentifier: id })));
  },
  async settings(rds, id) {
    const i = await describeInstance(rds, id);
    if (!i) throw new Error(`DB instance ${id} disappeared while being read`);
    return instanceSettings(i);
  },
  async restore(rds, source, targetId, s, tags) {
    if (source.kind === 'snapshot') {
      await rds.send(
        new RestoreDBInstanceFromDBSnapshotCommand({
          DBInstanceIdentifier: targetId,
          DBSnapshotIdentifier: source.snapshotId,
          ...restoreSettings(s),
          AllocatedStorage: s.allocatedStorage,
          Tags: tagList(tags),
        }),
      );
    } else {
      await rds.send(
        new RestoreDBInstanceToPointInTimeCommand({
          TargetDBInstanceIdentifier: targetId,
          ...(source.sourceId ? { SourceDBInstanceIdentifier: source.sourceId } : { SourceDbiResourceId: source.sourceResourceId }),
          RestoreTime: new Date(source.time),
          ...restoreSettings(s),
          AllocatedStorage: s.allocatedStorage,
          Tags: tagList(tags),
        }),
      );
    }
  },
  async rename(rds, from, to, deletionProtection) {
    await rds.send(
      new ModifyDBInstanceCommand({
        DBInstanceIdentifier: from,
        NewDBInstanceIdentifier: to,
        ApplyImmediately: true,
        ...(deletionProtection === undefined ? {} : { DeletionProtection: deletionProtection }),
      }),
    );
  },
  async setDeletionProtection(rds, id, on) {
    await rds.send(new ModifyDBInstanceCommand({ DBInstanceIdentifier: id, DeletionProtection: on, ApplyImmediately: true }));
  },
  async addTags(rds, arn, tags) {
    await rds.send(new AddTagsToResourceCommand({ ResourceName: arn, Tags: tagList(tags) }));
  },
  async remove(rds, r) {
    await orUndefined(rds.send(new DeleteDBInstanceCommand({ DBInstanceIdentifier: r.id, SkipFinalSnapshot: true })));
  },
  compare(expected, live) {
    return compareSettings(expected, live, compared);
  },
  window: instanceWindow,
};

export const rdsInstanceAdapter = rdsAdapter<RdsInstanceUnit, RdsInstanceSettings>('rds-instance', rdsInstanceKind, (u) => u.instanceId);
