import { join } from 'node:path';
import { Duration } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { Rule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { Effect, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledge, acknowledgeTracedNode22Function, iam5ResourceFinding } from '../nag.ts';
import { HANDLER_BUNDLING, PROJECT_ROOT } from './handlers.ts';

/** The cleanup function's entry file (a rule target, not a state machine task: not in HANDLER_SPECS). */
export const STOPPED_RUN_HANDLER_ENTRY = join(PROJECT_ROOT, 'lambdas', 'cancel-stopped-run.ts');

/** Execution statuses that end a rollback without its own failure path: StopExecution, and the execution's timeout. */
export const STOPPED_STATUSES = ['ABORTED', 'TIMED_OUT'] as const;

export interface StoppedRunsProps {
  readonly ledgerTable: ITable;
  readonly stateBucket: IBucket;
  /** @default RetentionDays.THREE_MONTHS */
  readonly logRetention?: RetentionDays;
}

/**
 * StopExecution (the console's Stop) ends an execution at once: none of its states run after that, so its failure path
 * never runs either. For a rollback, that path resumes the pipeline's triggers, records the run and releases the lock;
 * for a snapshot, it marks the deployment FAILED (a rollback waiting for its seal would wait out its retries) and
 * releases the lock. This function does that work for the stopped execution (core/workflow/cancel.ts,
 * core/workflow/snapshot.ts), started by EventBridge rules on each machine's own executions ending ABORTED or TIMED_OUT
 * (addRule and addSnapshotRule, once the machines exist: the notifications, which are made before them, must already
 * know this function).
 *
 * Its role: the ledger (the run, its steps, the lock, the paused triggers, the deployment), the state bucket's objects
 * (the deployed manifest, the report); the Notifications construct adds publishing and trigger control, the audit
 * store its reports prefix, exactly as for the failure path's own handlers. Events it cannot take land in an encrypted
 * DLQ.
 */
export class StoppedRuns extends Construct {
  readonly fn: NodejsFunction;
  readonly role: Role;
  readonly deadLetterQueue: Queue;
  rule?: Rule;
  snapshotRule?: Rule;

  constructor(scope: Construct, id: string, props: StoppedRunsProps) {
    super(scope, id);

    this.deadLetterQueue = new Queue(this, 'DeadLetterQueue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });

    const logGroup = new LogGroup(this, 'Logs', { retention: props.logRetention ?? RetentionDays.THREE_MONTHS });
    this.role = new Role(this, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: 'etl-rollback cancel-stopped-run function',
    });
    logGroup.grantWrite(this.role);

    this.fn = new NodejsFunction(this, 'Function', {
      description: 'etl-rollback: clean up a stopped rollback execution',
      entry: STOPPED_RUN_HANDLER_ENTRY,
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: 512,
      timeout: Duration.seconds(60),
      tracing: Tracing.ACTIVE,
      role: this.role,
      logGroup,
      retryAttempts: 2,
      deadLetterQueue: this.deadLetterQueue,
      environment: {
        ETL_ROLLBACK_LEDGER_TABLE: props.ledgerTable.tableName,
        ETL_ROLLBACK_STATE_BUCKET: props.stateBucket.bucketName,
        POWERTOOLS_SERVICE_NAME: 'etl-rollback',
        POWERTOOLS_METRICS_NAMESPACE: 'EtlRollback',
        NODE_OPTIONS: '--enable-source-maps',
      },
      bundling: HANDLER_BUNDLING,
    });

    // Ledger: the run, its steps, its lock, its paused triggers, the deployment's status. No scan, no table changes.
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'Ledger',
        effect: Effect.ALLOW,
        actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
        resources: [props.ledgerTable.tableArn],
      }),
    );
    // State bucket: read the deployed manifest, write the report. No delete, no listing.
    const objects = props.stateBucket.arnForObjects('*');
    this.role.addToPrincipalPolicy(
      new PolicyStatement({ sid: 'StateBucketObjects', effect: Effect.ALLOW, actions: ['s3:GetObject', 's3:PutObject'], resources: [objects] }),
    );
    acknowledge(
      this.role,
      iam5ResourceFinding(this.role, objects),
      'Object-level actions on the objects of the one state bucket of this stack (`<bucket ARN>/*`): the manifest and report ' +
        'keys are made at run time (pipeline/deployment/run), so they cannot be listed in advance.',
    );
    acknowledgeTracedNode22Function(this.role, this.fn);
  }

  /** The rule: executions of `rollback` (that machine only) ending ABORTED or TIMED_OUT. */
  addRule(rollback: IStateMachine): Rule {
    this.rule = this.stoppedRule('Rule', 'etl-rollback: a rollback execution was stopped (ABORTED) or timed out: clean up its run', rollback);
    return this.rule;
  }

  /**
   * The rule for `snapshot` (that machine only) ending ABORTED or TIMED_OUT: the same function marks the deployment
   * FAILED if it was still being captured and releases the snapshot's lock (it tells the machines apart by this ARN).
   */
  addSnapshotRule(snapshot: IStateMachine): Rule {
    this.fn.addEnvironment('ETL_ROLLBACK_SNAPSHOT_STATE_MACHINE_ARN', snapshot.stateMachineArn);
    this.snapshotRule = this.stoppedRule('SnapshotRule', 'etl-rollback: a snapshot execution was stopped (ABORTED) or timed out: mark its deployment FAILED, release its lock', snapshot);
    return this.snapshotRule;
  }

  /** A rule on one machine's executions ending ABORTED or TIMED_OUT, targeting the function (DLQ, 8 retries, 2 hours). */
  private stoppedRule(id: string, description: string, machine: IStateMachine): Rule {
    const rule = new Rule(this, id, {
      description,
      eventPattern: {
        source: ['aws.states'],
        detailType: ['Step Functions Execution Status Change'],
        detail: { status: [...STOPPED_STATUSES], stateMachineArn: [machine.stateMachineArn] },
      },
    });
    rule.addTarget(new LambdaFunction(this.fn, { deadLetterQueue: this.deadLetterQueue, retryAttempts: 8, maxEventAge: Duration.hours(2) }));
    return rule;
  }
}
