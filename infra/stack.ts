import { join } from 'node:path';
import { CfnOutput, type Duration, Stack, type StackProps } from 'aws-cdk-lib';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { DataAccess } from './constructs/data-access.ts';
import { Handlers, PROJECT_ROOT } from './constructs/handlers.ts';
import { Ledger } from './constructs/ledger.ts';
import { RdsAccess } from './constructs/rds-access.ts';
import { StateBucket } from './constructs/state-bucket.ts';
import { type PipelineTriggerInput, Triggers } from './constructs/triggers.ts';
import { Workflow } from './constructs/workflow.ts';

export interface EtlRollbackStackProps extends StackProps {
  /**
   * Data buckets whose prefixes may be captured and restored (names or ARNs). Only the capture, describe, restore and
   * verify handlers get access to them. Empty: no data-bucket access at all.
   * @default []
   */
  readonly protectedBuckets?: readonly string[];
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
}

export const STATE_MACHINE_FILES = {
  snapshot: join(PROJECT_ROOT, 'statemachines', 'snapshot.asl.json'),
  rollback: join(PROJECT_ROOT, 'statemachines', 'rollback.asl.json'),
} as const;

export class EtlRollbackStack extends Stack {
  readonly ledger: Ledger;
  readonly stateBucket: StateBucket;
  readonly handlers: Handlers;
  readonly dataAccess: DataAccess;
  readonly rdsAccess: RdsAccess;
  readonly snapshot: Workflow;
  readonly rollback: Workflow;
  /** The EventBridge triggers; undefined when no pipeline is configured. */
  readonly triggers?: Triggers;

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

    this.rdsAccess = new RdsAccess(this, 'RdsAccess', {
      protectedDbInstances: props.protectedDbInstances ?? [],
      protectedDbClusters: props.protectedDbClusters ?? [],
      readRoles: this.handlers.dataHandlers.map((handler) => handler.role),
      captureRole: this.handlers.byName('capture-unit').role,
      restoreRole: this.handlers.byName('restore-unit').role,
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

    if ((props.pipelines ?? []).length > 0) {
      this.triggers = new Triggers(this, 'Triggers', {
        pipelines: props.pipelines ?? [],
        ledgerTable: this.ledger.table,
        rollbackStateMachine: this.rollback.stateMachine,
        logRetention: props.logRetention,
      });
    }

    new CfnOutput(this, 'SnapshotStateMachineArn', {
      description: 'Start before every deploy: takes the restore points.',
      value: this.snapshot.stateMachine.stateMachineArn,
    });
    new CfnOutput(this, 'RollbackStateMachineArn', {
      description: 'Start to roll a deployment back, stage by stage.',
      value: this.rollback.stateMachine.stateMachineArn,
    });
    new CfnOutput(this, 'LedgerTableName', { value: this.ledger.table.tableName });
    new CfnOutput(this, 'StateBucketName', { value: this.stateBucket.bucket.bucketName });
  }
}
