import { ArnFormat, Stack } from 'aws-cdk-lib';
import { Effect, type IRole, Policy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { acknowledge, iam5ResourceFinding } from '../nag.ts';
import { RDS_READ_ACTIONS, SNAPSHOT_PREFIX } from './rds-access.ts';

/** Where a drill's scratch objects live in the state bucket and in the scratch buckets. */
export const DRILL_SCRATCH_PREFIX = 'drills/*';
/** The tag every RDS copy a drill makes carries (core/adapters/drill/rds-scratch.ts); deletes require it. */
export const DRILL_TAG = 'etl-rollback:drill';

/** Reading a protected bucket's captured versions: the source of a scratch copy. Nothing that writes. */
export const DRILL_SOURCE_OBJECT_ACTIONS = ['s3:GetObject', 's3:GetObjectVersion', 's3:GetObjectTagging', 's3:GetObjectVersionTagging'];
/** Making an RDS scratch copy: a tagged restore from an `etlrb-` snapshot, and a cluster's writer. */
export const DRILL_RDS_RESTORE_ACTIONS = ['rds:RestoreDBInstanceFromDBSnapshot', 'rds:RestoreDBClusterFromSnapshot', 'rds:CreateDBInstance', 'rds:AddTagsToResource'];
/** Removing an RDS scratch copy (deletion protection off first, if it came with the snapshot). */
export const DRILL_RDS_REMOVE_ACTIONS = ['rds:ModifyDBInstance', 'rds:ModifyDBCluster', 'rds:DeleteDBInstance', 'rds:DeleteDBCluster'];

export interface DrillAccessProps {
  /** ARNs of the protected buckets (DataAccess.bucketArns). */
  readonly protectedBucketArns: readonly string[];
  readonly databaseSecretArns: readonly string[];
  /** The identifiers as RdsAccess validated them (lowercase). */
  readonly protectedDbInstances: readonly string[];
  readonly protectedDbClusters: readonly string[];
  readonly stateBucket: IBucket;
  /** Buckets manifests name as `drill.scratchBucket` (names). */
  readonly scratchBuckets: readonly string[];
  /** "Rehearse unit": reads restore points, writes scratch copies. */
  readonly rehearseRole: IRole;
  /** "Verify scratch stage": reads scratch copies. */
  readonly verifyRole: IRole;
  /** "Clean up scratch targets": deletes scratch copies, and nothing else. */
  readonly cleanupRole: IRole;
}

/**
 * What the drill's handlers may do, kept apart from the rollback's grants so that a drill cannot write production even
 * by mistake: the protected buckets are only read (the rollback handlers' DataAccess is not given to them), writes and
 * deletes go to `drills/*` of the state bucket and the named scratch buckets, RDS restores and deletes only name
 * `<id>-drill-*` (and a cluster's writer `<id>-w-drill-*`), and deletes require the drill tag. The database secrets are
 * what the databases grant: the scratch schema is the drill's own, the production tables are read (see the README).
 */
export class DrillAccess extends Construct {
  readonly policies: readonly Policy[];

  constructor(scope: Construct, id: string, props: DrillAccessProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const partition = stack.partition;
    const scratchBucketArns = props.scratchBuckets.map((b) => `arn:${partition}:s3:::${b}`);
    const stateScratch = props.stateBucket.arnForObjects(DRILL_SCRATCH_PREFIX);
    const scratchObjects = [stateScratch, ...scratchBucketArns.map((a) => `${a}/${DRILL_SCRATCH_PREFIX}`)];
    const rds = (resource: string, name: string) => stack.formatArn({ service: 'rds', resource, resourceName: name, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
    const instances = props.protectedDbInstances;
    const clusters = props.protectedDbClusters;
    const drillDbs = [...instances.map((i) => rds('db', `${i}-drill-*`)), ...clusters.map((c) => rds('db', `${c}-w-drill-*`))];
    const drillClusters = clusters.map((c) => rds('cluster', `${c}-drill-*`));
    const snapshots = [...(instances.length > 0 ? [rds('snapshot', `${SNAPSHOT_PREFIX}*`)] : []), ...(clusters.length > 0 ? [rds('cluster-snapshot', `${SNAPSHOT_PREFIX}*`)] : [])];
    const groups = ['og', 'pg', 'cluster-pg', 'subgrp', 'secgrp'].map((type) => rds(type, '*'));
    const anyRds = instances.length + clusters.length > 0;
    const secrets = props.databaseSecretArns.length > 0 ? [new PolicyStatement({ sid: 'DrillDatabaseSecrets', effect: Effect.ALLOW, actions: ['secretsmanager:GetSecretValue'], resources: [...props.databaseSecretArns] })] : [];
    const scratchBuckets = scratchBucketArns.length > 0 ? [new PolicyStatement({ sid: 'DrillScratchBuckets', effect: Effect.ALLOW, actions: ['s3:ListBucket', 's3:ListBucketVersions'], resources: scratchBucketArns })] : [];
    const rdsRead = anyRds
      ? [new PolicyStatement({ sid: 'DrillRdsRead', effect: Effect.ALLOW, actions: RDS_READ_ACTIONS, resources: [...drillDbs, ...drillClusters, ...snapshots] })]
      : [];

    // A Policy without statements fails the synth: one is made only when there is something to grant.
    const policy = (policyId: string, policyRole: IRole, statements: PolicyStatement[]) =>
      statements.length > 0 ? new Policy(this, policyId, { roles: [policyRole], statements }) : undefined;
    const rehearse = policy('Rehearse', props.rehearseRole, [
      ...(props.protectedBucketArns.length > 0
        ? [new PolicyStatement({ sid: 'DrillReadProtectedObjects', effect: Effect.ALLOW, actions: DRILL_SOURCE_OBJECT_ACTIONS, resources: props.protectedBucketArns.map((a) => `${a}/*`) })]
        : []),
      ...(scratchBucketArns.length > 0
        ? [new PolicyStatement({ sid: 'DrillWriteScratchObjects', effect: Effect.ALLOW, actions: ['s3:GetObject', 's3:PutObject', 's3:PutObjectTagging', 's3:AbortMultipartUpload'], resources: scratchBucketArns.map((a) => `${a}/${DRILL_SCRATCH_PREFIX}`) })]
        : []),
      ...scratchBuckets,
      ...secrets,
      ...rdsRead,
      ...(anyRds
        ? [
            new PolicyStatement({ sid: 'DrillRdsRestore', effect: Effect.ALLOW, actions: DRILL_RDS_RESTORE_ACTIONS, resources: [...drillDbs, ...drillClusters, ...snapshots] }),
            new PolicyStatement({ sid: 'DrillRdsRestoreGroups', effect: Effect.ALLOW, actions: ['rds:RestoreDBInstanceFromDBSnapshot', 'rds:RestoreDBClusterFromSnapshot', 'rds:CreateDBInstance'], resources: groups }),
          ]
        : []),
    ]);
    const verify = policy('Verify', props.verifyRole, [
      ...(scratchBucketArns.length > 0 ? [new PolicyStatement({ sid: 'DrillReadScratchObjects', effect: Effect.ALLOW, actions: ['s3:GetObject'], resources: scratchBucketArns.map((a) => `${a}/${DRILL_SCRATCH_PREFIX}`) })] : []),
      ...scratchBuckets,
      ...secrets,
      ...rdsRead,
    ]);
    const cleanup = policy('Cleanup', props.cleanupRole, [
      new PolicyStatement({ sid: 'DrillDeleteScratchObjects', effect: Effect.ALLOW, actions: ['s3:DeleteObject', 's3:DeleteObjectVersion'], resources: scratchObjects }),
      ...scratchBuckets,
      ...secrets,
      ...rdsRead,
      ...(anyRds
        ? [
            new PolicyStatement({
              sid: 'DrillRdsRemove',
              effect: Effect.ALLOW,
              actions: DRILL_RDS_REMOVE_ACTIONS,
              resources: [...drillDbs, ...drillClusters],
              // Only what carries the drill tag: a resource someone else named `<id>-drill-…` is not the drill's.
              conditions: { Null: { [`aws:ResourceTag/${DRILL_TAG}`]: 'false' } },
            }),
          ]
        : []),
    ]);
    this.policies = [rehearse, verify, cleanup].filter((p): p is Policy => p !== undefined);

    const reasons = new Map<string, string>([
      ...props.protectedBucketArns.map((a) => [`${a}/*`, `Read-only object actions on the protected bucket ${a} named in protectedBuckets: a drill copies a unit's captured versions (keys known at capture) to its scratch prefix.`] as [string, string]),
      ...scratchObjects.map((a) => [a, 'The drills/ prefix of the state bucket or of a scratch bucket named in drillScratchBuckets: a drill writes its scratch copies under drills/<run>/<unit>/, named at run time, and its cleanup deletes them.'] as [string, string]),
      ...drillDbs.map((a) => [a, 'RDS copies a drill makes of the named instances and clusters (<id>-drill-<run>, a cluster writer <id>-w-drill-<run>), named at run time; deletes also require the etl-rollback:drill tag.'] as [string, string]),
      ...drillClusters.map((a) => [a, 'Aurora cluster copies a drill makes of the named clusters (<id>-drill-<run>), named at run time; deletes also require the etl-rollback:drill tag.'] as [string, string]),
      ...snapshots.map((a) => [a, 'Only the snapshots etl-rollback takes (etlrb- prefix): a drill restores its copy from the restore point\'s snapshot.'] as [string, string]),
      ...groups.map((a) => [a, 'A restored copy joins the original\'s subnet, parameter, option and security groups; RDS authorizes the restore against each group named.'] as [string, string]),
    ]);
    // Each policy acknowledges the wildcards it holds, each with its reason (and no other).
    for (const made of this.policies) {
      const json = JSON.stringify(stack.resolve(made.document.toJSON()));
      for (const [resource, reason] of reasons) {
        if (json.includes(JSON.stringify(stack.resolve(resource)).slice(1, -1))) acknowledge(made, iam5ResourceFinding(made, resource), reason);
      }
    }
  }
}
