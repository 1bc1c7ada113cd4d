import { join } from 'node:path';
import { CfnOutput, type Duration, Stack, type StackProps } from 'aws-cdk-lib';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { type AuditObjectLockMode, AuditStore } from './constructs/audit.ts';
import { Observability } from './constructs/dashboard.ts';
import { ChangeCapture, type PipelineCaptureInput } from './constructs/change-capture.ts';
import { CustomHandlerAccess } from './constructs/custom-access.ts';
import { DataAccess } from './constructs/data-access.ts';
import { FreezeAccess } from './constructs/freeze-access.ts';
import { GlueAccess } from './constructs/glue-access.ts';
import { DrillAccess } from './constructs/drill-access.ts';
import { type DrillScheduleInput, DrillSchedules } from './constructs/drill-schedules.ts';
import { Handlers, PROJECT_ROOT } from './constructs/handlers.ts';
import { Ledger } from './constructs/ledger.ts';
import { Notifications } from './constructs/notifications.ts';
import { ReplayAccess } from './constructs/replay-access.ts';
import { RdsAccess } from './constructs/rds-access.ts';
import { ReleaseSchedule } from './constructs/release.ts';
import { StateBucket } from './constructs/state-bucket.ts';
import { type PipelineTriggerInput, Triggers } from './constructs/triggers.ts';
import { StoppedRuns } from './constructs/stopped-runs.ts';
import { Workflow } from './constructs/workflow.ts';

export interface EtlRollbackStackProps extends StackProps {
  /**
   * Data buckets whose prefixes may be captured and restored (names or ARNs). Only the capture, describe, restore and
   * verify handlers get access to them. Empty: no data-bucket access at all.
   * @default []
   */
  readonly protectedBuckets?: readonly string[];
  /**
   * The buckets of s3-prefix units with `freeze: true` (each also in protectedBuckets): the freeze handlers may edit
   * their bucket policies, and only theirs. Empty: an s3-prefix freeze fails with AccessDenied, naming the bucket.
   * @default []
   */
  readonly frozenBuckets?: readonly string[];
  /**
   * Secrets Manager secret ARNs with database credentials, readable by the same four handlers only.
   * @default []
   */
  readonly databaseSecretArns?: readonly string[];
  /**
   * RDS DB instance identifiers (`rds-instance` units) and Aurora DB cluster identifiers (`rds-cluster` units) that may be
   * snapshotted and restored: capture may snapshot them, restore may restore and swap them. Empty: no RDS access.
   * @default []
   */
  readonly protectedDbInstances?: readonly string[];
  /** @default [] */
  readonly protectedDbClusters?: readonly string[];
  /**
   * Glue Data Catalog tables (`glue-table` units) that may be captured and restored, as `database/table` (or
   * `<account id>:database/table`): the data handlers may read them, the restore handler write them back. Empty: no Glue access.
   * @default []
   */
  readonly protectedGlueTables?: readonly string[];
  /**
   * Lambda function ARNs of the `custom` units' handlers (`handler.lambdaArn`): the capture, describe, restore and verify
   * handlers may invoke exactly these. Empty: no invoke permission.
   * @default []
   */
  readonly customHandlerArns?: readonly string[];
  /** Minimum life of a restore point's state objects. @default 30 days */
  readonly restorePointRetention?: Duration;
  /** Retention of the handler and state machine log groups. @default RetentionDays.THREE_MONTHS */
  readonly logRetention?: RetentionDays;
  /**
   * Pipelines whose failed deploys start the rollback machine automatically (EventBridge): their ETL state machine ARNs,
   * alarm names, and whether custom `Deployment Failed` events count. Empty: no triggers.
   * @default []
   */
  readonly pipelines?: readonly PipelineTriggerInput[];
  /**
   * EventBridge rules of the pipelines that a rollback may pause while it restores (`policy.pause.rules` in the
   * manifests): `name` on the default bus, `bus/name` otherwise. Only these can be disabled and re-enabled.
   * @default []
   */
  readonly pausableRules?: readonly string[];
  /**
   * EventBridge Scheduler schedules of the pipelines that a rollback may pause (`policy.pause.schedules`): `name` in the
   * default group, `group/name` otherwise; with the roles they run their targets as (needed to write them back).
   * @default []
   */
  readonly pausableSchedules?: readonly string[];
  readonly scheduleTargetRoleArns?: readonly string[];
  /**
   * The pipelines' ETL state machines a rollback may replay after restoring (manifest `replay.stateMachineArn`): full
   * ARNs. Only these may be started (and followed, and stopped) by the rollback state machine.
   * @default []
   */
  readonly replayStateMachines?: readonly string[];
  /**
   * Pipelines whose deploys are change-captured (s3-prefix units with `capture: change-log`): their buckets and the
   * captured prefixes in each. Empty: no change capture.
   * @default []
   */
  readonly changeCapture?: readonly PipelineCaptureInput[];
  /** Bus for the rollback's own events (`source: etl.rollback`). @default 'default' */
  readonly eventBusName?: string;
  /** Default Object Lock retention of the audit bucket's reports and records. @default 365 days */
  readonly auditRetention?: Duration;
  /** Object Lock mode of the audit bucket (see AuditObjectLockMode for the trade-off). @default 'GOVERNANCE' */
  readonly auditObjectLockMode?: AuditObjectLockMode;
  /**
   * Scheduled rollback drills, one per pipeline (the manifests' `drill: { schedule, deployment }`).
   * @default []
   */
  readonly drills?: readonly DrillScheduleInput[];
  /** Buckets manifests name as `drill.scratchBucket`: drills may write and delete under their `drills/` prefix. @default [] */
  readonly drillScratchBuckets?: readonly string[];
}

export const STATE_MACHINE_FILES = {
  snapshot: join(PROJECT_ROOT, 'statemachines', 'snapshot.asl.json'),
  rollback: join(PROJECT_ROOT, 'statemachines', 'rollback.asl.json'),
  release: join(PROJECT_ROOT, 'statemachines', 'release.asl.json'),
  drill: join(PROJECT_ROOT, 'statemachines', 'drill.asl.json'),
} as const;

export class EtlRollbackStack extends Stack {
  readonly ledger: Ledger;
  readonly stateBucket: StateBucket;
  readonly handlers: Handlers;
  readonly dataAccess: DataAccess;
  readonly freezeAccess: FreezeAccess;
  readonly rdsAccess: RdsAccess;
  readonly glueAccess: GlueAccess;
  readonly customHandlerAccess: CustomHandlerAccess;
  readonly snapshot: Workflow;
  readonly rollback: Workflow;
  readonly notifications: Notifications;
  /** The EventBridge triggers; undefined when no pipeline is configured. */
  readonly triggers?: Triggers;
  readonly audit: AuditStore;
  readonly release: Workflow;
  readonly releaseSchedule: ReleaseSchedule;
  readonly observability: Observability;
  /** Change capture during deploys; undefined when no pipeline is configured for it. */
  readonly changeCapture?: ChangeCapture;
  readonly drill: Workflow;
  readonly drillAccess: DrillAccess;
  readonly drillSchedules: DrillSchedules;
  readonly replayAccess: ReplayAccess;
  /** Cleans up rollback executions stopped by StopExecution (or timed out): their failure path never ran. */
  readonly stoppedRuns: StoppedRuns;

  constructor(scope: Construct, id: string, props: EtlRollbackStackProps = {}) {
    super(scope, id, props);

    this.ledger = new Ledger(this, 'Ledger');
    this.stateBucket = new StateBucket(this, 'State', { restorePointRetention: props.restorePointRetention });

    this.handlers = new Handlers(this, 'Handlers', {
      ledgerTable: this.ledger.table,
      stateBucket: this.stateBucket.bucket,
      logRetention: props.logRetention,
    });

    this.dataAccess = new DataAccess(this, 'DataAccess', {
      protectedBuckets: props.protectedBuckets ?? [],
      databaseSecretArns: props.databaseSecretArns ?? [],
      roles: this.handlers.dataHandlers.map((handler) => handler.role),
    });

    this.stoppedRuns = new StoppedRuns(this, 'StoppedRuns', {
      ledgerTable: this.ledger.table,
      stateBucket: this.stateBucket.bucket,
      logRetention: props.logRetention,
    });

    this.freezeAccess = new FreezeAccess(this, 'FreezeAccess', {
      frozenBuckets: props.frozenBuckets ?? [],
      protectedBuckets: props.protectedBuckets ?? [],
      databaseSecretArns: props.databaseSecretArns ?? [],
      // The stopped-run cleanup lifts the freezes of an execution stopped before its own failure path could.
      policyRoles: [...(['freeze-stage', 'lift-freezes'] as const).map((name) => this.handlers.byName(name).role), this.stoppedRuns.role],
      freezeFunction: this.handlers.byName('freeze-stage').fn,
      restoreRoles: (['restore-unit', 'restore-shard', 'verify-stage'] as const).map((name) => this.handlers.byName(name).role),
    });

    this.rdsAccess = new RdsAccess(this, 'RdsAccess', {
      protectedDbInstances: props.protectedDbInstances ?? [],
      protectedDbClusters: props.protectedDbClusters ?? [],
      readRoles: this.handlers.dataHandlers.map((handler) => handler.role),
      captureRole: this.handlers.byName('capture-unit').role,
      restoreRole: this.handlers.byName('restore-unit').role,
    });

    this.glueAccess = new GlueAccess(this, 'GlueAccess', {
      protectedGlueTables: props.protectedGlueTables ?? [],
      readRoles: this.handlers.dataHandlers.map((handler) => handler.role),
      restoreRole: this.handlers.byName('restore-unit').role,
    });

    this.customHandlerAccess = new CustomHandlerAccess(this, 'CustomHandlerAccess', {
      functionArns: props.customHandlerArns ?? [],
      invokerRoles: (['capture-unit', 'describe-changes', 'restore-unit', 'verify-stage'] as const).map((name) => this.handlers.byName(name).role),
    });

    const handler = (name: Parameters<Handlers['byName']>[0]) => this.handlers.byName(name);
    this.notifications = new Notifications(this, 'Notifications', {
      // The stopped-run cleanup notifies and resumes triggers as the failure path's own handlers do.
      publishers: [...(['plan-rollback', 'verify-stage', 'finish-run', 'record-failure', 'request-approval', 'finish-drill', 'mark-in-place', 'seal-snapshot'] as const).map(handler), this.stoppedRuns],
      triggerControllers: [...(['pause-triggers', 'resume-triggers'] as const).map(handler), this.stoppedRuns],
      pausableRules: props.pausableRules ?? [],
      pausableSchedules: props.pausableSchedules ?? [],
      scheduleTargetRoleArns: props.scheduleTargetRoleArns ?? [],
      eventBusName: props.eventBusName,
    });

    const resolveFunction = (placeholder: string) => this.handlers.bySubstitution(placeholder)?.fn;
    this.snapshot = new Workflow(this, 'Snapshot', {
      name: 'snapshot',
      definitionFile: STATE_MACHINE_FILES.snapshot,
      resolveFunction,
      logRetention: props.logRetention,
    });
    this.rollback = new Workflow(this, 'Rollback', {
      name: 'rollback',
      definitionFile: STATE_MACHINE_FILES.rollback,
      resolveFunction,
      logRetention: props.logRetention,
    });

    this.stoppedRuns.addRule(this.rollback.stateMachine);
    this.stoppedRuns.addSnapshotRule(this.snapshot.stateMachine);

    this.replayAccess = new ReplayAccess(this, 'ReplayAccess', { rollback: this.rollback.stateMachine, replayStateMachines: props.replayStateMachines ?? [] });

    if ((props.pipelines ?? []).length > 0) {
      this.triggers = new Triggers(this, 'Triggers', {
        pipelines: props.pipelines ?? [],
        ledgerTable: this.ledger.table,
        rollbackStateMachine: this.rollback.stateMachine,
        logRetention: props.logRetention,
      });
    }

    if ((props.changeCapture ?? []).length > 0) {
      this.changeCapture = new ChangeCapture(this, 'ChangeCapture', {
        pipelines: props.changeCapture ?? [],
        ledgerTable: this.ledger.table,
        stateBucket: this.stateBucket.bucket,
        logRetention: props.logRetention,
      });
    }

    // Audit: every handler role is denied deletes and retention changes; the ones that write reports and records may put.
    this.audit = new AuditStore(this, 'Audit', {
      retention: props.auditRetention,
      mode: props.auditObjectLockMode,
      accessLogBucket: this.stateBucket.accessLogBucket,
      writers: [...(['describe-changes', 'finish-run', 'record-failure', 'seal-snapshot', 'release-deployment', 'finish-drill'] as const).map((name) => this.handlers.byName(name).role), this.stoppedRuns.role],
      runRoles: [...this.handlers.all.map((h) => h.role), this.stoppedRuns.role],
    });
    for (const h of this.handlers.all) h.fn.addEnvironment('ETL_ROLLBACK_AUDIT_BUCKET', this.audit.bucket.bucketName);
    this.stoppedRuns.fn.addEnvironment('ETL_ROLLBACK_AUDIT_BUCKET', this.audit.bucket.bucketName);

    this.release = new Workflow(this, 'Release', {
      name: 'release',
      definitionFile: STATE_MACHINE_FILES.release,
      resolveFunction,
      logRetention: props.logRetention,
    });
    this.releaseSchedule = new ReleaseSchedule(this, 'ReleaseSchedule', {
      releaseStateMachine: this.release.stateMachine,
      releaseRole: this.handlers.byName('release-deployment').role,
      stateBucket: this.stateBucket.bucket,
      databaseSecretArns: props.databaseSecretArns ?? [],
      rdsResourceArns: this.rdsAccess.resourceArns,
    });

    // Drills: their own definition, their own grants (read production, write scratch), a schedule per pipeline.
    this.drill = new Workflow(this, 'Drill', {
      name: 'drill',
      definitionFile: STATE_MACHINE_FILES.drill,
      resolveFunction,
      logRetention: props.logRetention,
    });
    this.drillAccess = new DrillAccess(this, 'DrillAccess', {
      protectedBucketArns: this.dataAccess.bucketArns,
      databaseSecretArns: props.databaseSecretArns ?? [],
      protectedDbInstances: (props.protectedDbInstances ?? []).map((i) => i.trim().toLowerCase()),
      protectedDbClusters: (props.protectedDbClusters ?? []).map((c) => c.trim().toLowerCase()),
      stateBucket: this.stateBucket.bucket,
      scratchBuckets: props.drillScratchBuckets ?? [],
      rehearseRole: handler('rehearse-unit').role,
      verifyRole: handler('verify-drill-stage').role,
      cleanupRole: handler('cleanup-drill').role,
    });
    this.drillSchedules = new DrillSchedules(this, 'DrillSchedules', { drillStateMachine: this.drill.stateMachine, drills: props.drills ?? [] });

    this.observability = new Observability(this, 'Observability', {
      drill: this.drill.stateMachine,
      snapshot: this.snapshot.stateMachine,
      rollback: this.rollback.stateMachine,
      release: this.release.stateMachine,
      ...(this.triggers ? { triggersDeadLetterQueue: this.triggers.deadLetterQueue } : {}),
      alarmTopic: this.notifications.topic,
    });

    new CfnOutput(this, 'SnapshotStateMachineArn', {
      description: 'Start before every deploy: takes the restore points.',
      value: this.snapshot.stateMachine.stateMachineArn,
    });
    new CfnOutput(this, 'RollbackStateMachineArn', {
      description: 'Start to roll a deployment back, stage by stage.',
      value: this.rollback.stateMachine.stateMachineArn,
    });
    new CfnOutput(this, 'NotificationsTopicArn', {
      description: 'Subscribe to get what each rollback does (started, approval asked, each stage, the result).',
      value: this.notifications.topic.topicArn,
    });
    new CfnOutput(this, 'LedgerTableName', { value: this.ledger.table.tableName });
    new CfnOutput(this, 'StateBucketName', { value: this.stateBucket.bucket.bucketName });
    new CfnOutput(this, 'AuditBucketName', { description: 'Reports (JSON, Markdown), snapshot summaries, release records; Object Lock.', value: this.audit.bucket.bucketName });
    new CfnOutput(this, 'ReleaseStateMachineArn', { description: 'Runs daily: releases expired restore points.', value: this.release.stateMachine.stateMachineArn });
    new CfnOutput(this, 'DashboardName', { value: this.observability.dashboard.dashboardName });
    new CfnOutput(this, 'DrillStateMachineArn', { description: 'Start to rehearse a rollback into scratch targets (etl-rollback drill).', value: this.drill.stateMachine.stateMachineArn });
  }
}
