import { ArnFormat, Stack } from 'aws-cdk-lib';
import { Effect, type IRole, Policy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { acknowledge, iam5ResourceFinding } from '../nag.ts';

export interface RdsAccessProps {
  /** DB instance identifiers the `rds-instance` units name. */
  readonly protectedDbInstances: readonly string[];
  /** Aurora DB cluster identifiers the `rds-cluster` units name. */
  readonly protectedDbClusters: readonly string[];
  /** Roles that only read RDS state (dry run, verify, and the other two). */
  readonly readRoles: readonly IRole[];
  /** The capture handler's role: takes snapshots. */
  readonly captureRole: IRole;
  /** The restore handler's role: restores, creates writers, renames, sets deletion protection. */
  readonly restoreRole: IRole;
}

/** Read-back actions: every RDS unit's capture, diff, restore and verify read state with them. */
export const RDS_READ_ACTIONS = ['rds:DescribeDBInstances', 'rds:DescribeDBClusters', 'rds:DescribeDBSnapshots', 'rds:DescribeDBClusterSnapshots', 'rds:ListTagsForResource'];
/** Capture: a tagged manual snapshot. */
export const RDS_CAPTURE_ACTIONS = ['rds:CreateDBSnapshot', 'rds:CreateDBClusterSnapshot', 'rds:AddTagsToResource'];
/** Restore: a tagged copy from the snapshot (or a point in time), a cluster writer, the rename swap, deletion protection. */
export const RDS_RESTORE_ACTIONS = [
  'rds:RestoreDBInstanceFromDBSnapshot',
  'rds:RestoreDBInstanceToPointInTime',
  'rds:RestoreDBClusterFromSnapshot',
  'rds:RestoreDBClusterToPointInTime',
  'rds:CreateDBInstance',
  'rds:ModifyDBInstance',
  'rds:ModifyDBCluster',
  'rds:AddTagsToResource',
];

/**
 * A rollback to a time (`--to`) of a table unit reads its rows from a temporary point-in-time copy of the database's
 * instance or cluster (`<id>-pitr-<hash>`, tagged `etl-rollback:temporary` = `pitr`), which the restore deletes once the
 * merge is verified: the only deletes outside the release handler, limited to those names and that tag.
 */
export const RDS_PITR_COPY_REMOVE_ACTIONS = ['rds:DeleteDBInstance', 'rds:DeleteDBCluster'];
export const PITR_COPY_TAG = 'etl-rollback:temporary';

/** The snapshot names the adapters use: `etlrb-<pipeline>-<deployment>-<unit>`. */
export const SNAPSHOT_PREFIX = 'etlrb-';

const RDS_IDENTIFIER = /^[a-zA-Z](?:-?[a-zA-Z0-9])*$/;

/**
 * RDS access for the rds-instance and rds-cluster units, named instance by instance and cluster by cluster:
 * `db:<id>` / `db:<id>-*` and `cluster:<id>` / `cluster:<id>-*` cover the resource, its restored copy (`<id>-restored-<run>`), its kept original
 * (`<id>-pre-rollback-<run>`) and a cluster's writer (`<id>-w-<run>`); snapshots only by the `etlrb-` prefix. Reading
 * goes to the four data handlers, snapshots to capture, restores and renames to restore. Nothing deletes: release is
 * not a task of the state machines. Nothing is granted when nothing is named.
 */
export class RdsAccess extends Construct {
  readonly policies: readonly Policy[];
  /** ARNs of the instances, clusters (with their derived names) and snapshots granted. */
  readonly resourceArns: readonly string[];

  constructor(scope: Construct, id: string, props: RdsAccessProps) {
    super(scope, id);
    const check = (list: readonly string[], path: string) =>
      list.map((name, i) => {
        const trimmed = name.trim();
        if (!RDS_IDENTIFIER.test(trimmed) || trimmed.length > 41) {
          throw new Error(
            `${path}[${i}]: "${name}" is not an RDS identifier of at most 41 characters (letters, digits, single hyphens, a letter first; no wildcards; the rollback's derived names add 22 characters)`,
          );
        }
        return trimmed.toLowerCase();
      });
    const instances = check(props.protectedDbInstances, 'protectedDbInstances');
    const clusters = check(props.protectedDbClusters, 'protectedDbClusters');
    if (instances.length === 0 && clusters.length === 0) {
      this.policies = [];
      this.resourceArns = [];
      return;
    }

    const stack = Stack.of(this);
    const arn = (resource: string, resourceName: string) => stack.formatArn({ service: 'rds', resource, resourceName, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
    // A cluster's writer instance is a DB instance named after the cluster.
    // The resource itself and the names derived from it (`<id>-…`), never a neighbour such as `<id>2`.
    const dbArns = [...instances, ...clusters].flatMap((name) => [arn('db', name), arn('db', `${name}-*`)]);
    const clusterArns = clusters.flatMap((name) => [arn('cluster', name), arn('cluster', `${name}-*`)]);
    const snapshotArns = [
      ...(instances.length > 0 ? [arn('snapshot', `${SNAPSHOT_PREFIX}*`)] : []),
      ...(clusters.length > 0 ? [arn('cluster-snapshot', `${SNAPSHOT_PREFIX}*`)] : []),
    ];
    const units = [...dbArns, ...clusterArns, ...snapshotArns];
    // Restores and a writer's creation also name the groups the copy joins (the original's subnet, parameter, option
    // and security groups): granted by type, for the restore role only.
    const groupArns = ['og', 'pg', 'cluster-pg', 'subgrp', 'secgrp'].map((type) => arn(type, '*'));
    // Temporary point-in-time copies (and a cluster copy's writer instance, `<id>-pitr-<hash>-w-<run>`).
    const pitrArns = [...[...instances, ...clusters].map((name) => arn('db', `${name}-pitr-*`)), ...clusters.map((name) => arn('cluster', `${name}-pitr-*`))];
    this.resourceArns = units;

    const read = new Policy(this, 'Read', {
      statements: [new PolicyStatement({ sid: 'RdsRead', effect: Effect.ALLOW, actions: RDS_READ_ACTIONS, resources: units })],
      roles: [...props.readRoles],
    });
    const capture = new Policy(this, 'Capture', {
      statements: [
        new PolicyStatement({ sid: 'RdsSnapshot', effect: Effect.ALLOW, actions: RDS_CAPTURE_ACTIONS, resources: [...dbArns.slice(0, instances.length), ...clusterArns, ...snapshotArns] }),
      ],
      roles: [props.captureRole],
    });
    const restore = new Policy(this, 'Restore', {
      statements: [
        new PolicyStatement({ sid: 'RdsRestore', effect: Effect.ALLOW, actions: RDS_RESTORE_ACTIONS, resources: units }),
        new PolicyStatement({
          sid: 'RdsRestoreGroups',
          effect: Effect.ALLOW,
          actions: ['rds:RestoreDBInstanceFromDBSnapshot', 'rds:RestoreDBInstanceToPointInTime', 'rds:RestoreDBClusterFromSnapshot', 'rds:RestoreDBClusterToPointInTime', 'rds:CreateDBInstance'],
          resources: groupArns,
        }),
        new PolicyStatement({
          sid: 'RdsRemovePointInTimeCopies',
          effect: Effect.ALLOW,
          actions: RDS_PITR_COPY_REMOVE_ACTIONS,
          resources: pitrArns,
          conditions: { StringEquals: { [`aws:ResourceTag/${PITR_COPY_TAG}`]: 'pitr' } },
        }),
      ],
      roles: [props.restoreRole],
    });
    this.policies = [read, capture, restore];

    const reasons: Record<string, string> = {};
    instances.forEach((name, i) => {
      reasons[dbArns[i]!] = `The DB instance ${name} named in protectedDbInstances, with the names the rollback derives from it (<id>-restored-<run>, <id>-pre-rollback-<run>), which are made at run time.`;
    });
    clusters.forEach((name, i) => {
      reasons[dbArns[instances.length + i]!] = `The writer instance the rollback creates for a restored copy of the DB cluster ${name} (<id>-w-<run>), named at run time.`;
      reasons[clusterArns[i]!] = `The DB cluster ${name} named in protectedDbClusters, with the names the rollback derives from it (<id>-restored-<run>, <id>-pre-rollback-<run>), which are made at run time.`;
    });
    for (const s of snapshotArns) reasons[s] = 'Only the snapshots etl-rollback takes: their names start with etlrb- and carry the pipeline, deployment and unit, known at run time.';
    for (const g of groupArns) {
      reasons[g] = 'A restore places the copy in the original\'s subnet, parameter, option and security groups, read from the original at capture time; RDS authorizes the restore against each group named.';
    }
    for (const p of pitrArns) {
      reasons[p] = 'Temporary point-in-time copies a rollback to a time reads a table from (<id>-pitr-<hash>, named at run time), deleted by the restore once the merge is verified, and only when tagged etl-rollback:temporary=pitr.';
    }
    for (const policy of this.policies) {
      const named = policy === restore ? [...units, ...groupArns, ...pitrArns] : policy === capture ? [...dbArns.slice(0, instances.length), ...clusterArns, ...snapshotArns] : units;
      for (const resource of named) acknowledge(policy, iam5ResourceFinding(policy, resource), reasons[resource]!);
    }
  }
}
