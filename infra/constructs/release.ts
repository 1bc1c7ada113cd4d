import { Stack } from 'aws-cdk-lib';
import { Effect, type IRole, Policy, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { CfnSchedule } from 'aws-cdk-lib/aws-scheduler';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledge, iam5ResourceFinding } from '../nag.ts';
import { RDS_READ_ACTIONS } from './rds-access.ts';

/** What releasing an RDS restore point does: delete its snapshot, and delete the original a rollback kept aside. */
export const RDS_RELEASE_ACTIONS = ['rds:DeleteDBSnapshot', 'rds:DeleteDBClusterSnapshot', 'rds:ModifyDBInstance', 'rds:ModifyDBCluster', 'rds:DeleteDBInstance', 'rds:DeleteDBCluster'];
/** Where the restore points' own objects live in the state bucket (version manifests, copies). */
export const RESTORE_POINT_PREFIX = 'restore-points/*';

export interface ReleaseScheduleProps {
  readonly releaseStateMachine: IStateMachine;
  /** The role of the "Release deployment" handler. */
  readonly releaseRole: IRole;
  readonly stateBucket: IBucket;
  readonly databaseSecretArns: readonly string[];
  /** The RDS instances, clusters and etlrb- snapshots named in the stack (RdsAccess.resourceArns). */
  readonly rdsResourceArns: readonly string[];
  /** EventBridge Scheduler expression (UTC). @default 'cron(0 3 * * ? *)': every day at 03:00 */
  readonly scheduleExpression?: string;
}

/**
 * The daily release: an EventBridge Scheduler schedule starts the release machine, whose "Release deployment" handler may delete
 * exactly what a restore point owns: objects under `restore-points/` in the state bucket, shadow tables (through the
 * named database secrets) and, for RDS units, the `etlrb-` snapshots and the kept originals of the named instances
 * and clusters. Nothing in the protected data buckets.
 */
export class ReleaseSchedule extends Construct {
  readonly schedule: CfnSchedule;
  readonly schedulerRole: Role;
  readonly policy: Policy;

  constructor(scope: Construct, id: string, props: ReleaseScheduleProps) {
    super(scope, id);

    // EventBridge Scheduler (not an event rule): its own role, which may start this one state machine and nothing else.
    this.schedulerRole = new Role(this, 'SchedulerRole', {
      assumedBy: new ServicePrincipal('scheduler.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } } }),
      description: 'etl-rollback: the daily release schedule starts the release state machine',
    });
    this.schedulerRole.addToPrincipalPolicy(
      new PolicyStatement({ sid: 'StartRelease', effect: Effect.ALLOW, actions: ['states:StartExecution'], resources: [props.releaseStateMachine.stateMachineArn] }),
    );
    this.schedule = new CfnSchedule(this, 'Daily', {
      description: 'etl-rollback: release restore points whose retention has ended',
      scheduleExpression: props.scheduleExpression ?? 'cron(0 3 * * ? *)',
      scheduleExpressionTimezone: 'UTC',
      flexibleTimeWindow: { mode: 'FLEXIBLE', maximumWindowInMinutes: 30 },
      target: {
        arn: props.releaseStateMachine.stateMachineArn,
        roleArn: this.schedulerRole.roleArn,
        input: '{}',
        retryPolicy: { maximumRetryAttempts: 4, maximumEventAgeInSeconds: 6 * 3600 },
      },
    });

    const restorePointObjects = props.stateBucket.arnForObjects(RESTORE_POINT_PREFIX);
    const statements = [
      new PolicyStatement({
        sid: 'ReleaseRestorePointObjects',
        effect: Effect.ALLOW,
        actions: ['s3:DeleteObject', 's3:DeleteObjectVersion'],
        resources: [restorePointObjects],
      }),
    ];
    if (props.databaseSecretArns.length > 0) {
      statements.push(new PolicyStatement({ sid: 'ReleaseDatabaseSecrets', effect: Effect.ALLOW, actions: ['secretsmanager:GetSecretValue'], resources: [...props.databaseSecretArns] }));
    }
    if (props.rdsResourceArns.length > 0) {
      statements.push(new PolicyStatement({ sid: 'ReleaseRds', effect: Effect.ALLOW, actions: [...RDS_READ_ACTIONS, ...RDS_RELEASE_ACTIONS], resources: [...props.rdsResourceArns] }));
    }
    this.policy = new Policy(this, 'Policy', { statements, roles: [props.releaseRole] });
    acknowledge(
      this.policy,
      iam5ResourceFinding(this.policy, restorePointObjects),
      'Delete on the restore-points/ prefix of the one state bucket of this stack: a released restore point owns the objects ' +
        'under restore-points/<pipeline>/<deployment>/<unit>/, whose names are made at capture time.',
    );
    for (const arn of props.rdsResourceArns.filter((a) => a.includes('*'))) {
      acknowledge(
        this.policy,
        iam5ResourceFinding(this.policy, arn),
        'RDS resources named in protectedDbInstances/protectedDbClusters and the names derived from them (<id>-pre-rollback-<run> ' +
          'kept originals, etlrb- snapshots): release deletes exactly what the restore point and its rollbacks made.',
      );
    }
  }
}
