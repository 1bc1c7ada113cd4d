import { join } from 'node:path';
import { Duration, Stack } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { type CfnRule, Rule } from 'aws-cdk-lib/aws-events';
import { SqsQueue } from 'aws-cdk-lib/aws-events-targets';
import { Effect, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Bucket, type IBucket } from 'aws-cdk-lib/aws-s3';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { z } from 'zod';
import { acknowledge, acknowledgeTracedNode22Function, iam5ResourceFinding } from '../nag.ts';
import { HANDLER_BUNDLING, PROJECT_ROOT } from './handlers.ts';
import { PipelineEventInput } from './triggers.ts';
import { changeCapturePattern, deploymentCompletedPattern, type CaptureLocation } from './trigger-patterns.ts';

/** The "Record changes" function's entry file (an SQS consumer, not a state machine task). */
export const RECORD_CHANGES_ENTRY = join(PROJECT_ROOT, 'lambdas', 'record-changes.ts');
/** Partition-key prefix of change windows in the ledger (core/ledger/ledger.ts CHANGE_WINDOW_PARTITION_PREFIX). */
export const CHANGE_WINDOW_LEDGER_PARTITION_PREFIX = 'CHANGES#';
/** Where change logs are written in the state bucket: `restore-points/<pipeline>/<deployment>/<unit>/changes/…`. */
export const CHANGE_LOG_OBJECTS = 'restore-points/*/*/*/changes/*';

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** One pipeline's captured prefixes (its s3-prefix units with `capture: change-log`), by bucket. */
export const pipelineCaptureSchema = z.strictObject({
  pipeline: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a pipeline name as in the manifest (lowercase letters, digits, "_", "-")'),
  locations: z
    .array(
      z.strictObject({
        bucket: z.string().regex(BUCKET_NAME, 'must be an S3 bucket name'),
        prefixes: z.array(z.string().min(1, 'must not be empty: capture a prefix, not a whole bucket').refine((p) => !p.includes('*'), 'must be a key prefix (no wildcards)')).min(1),
      }),
    )
    .min(1),
});
export type PipelineCaptureInput = z.input<typeof pipelineCaptureSchema>;
export type PipelineCapture = z.infer<typeof pipelineCaptureSchema>;

/** Validates the `changeCapture` configuration; every problem named with its path, in one error. */
export function parseChangeCapture(value: unknown, what = 'changeCapture'): PipelineCapture[] {
  const parsed = z
    .array(pipelineCaptureSchema)
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((p, i) => {
        if (seen.has(p.pipeline)) ctx.addIssue({ code: 'custom', path: [i, 'pipeline'], message: `pipeline "${p.pipeline}" is listed twice` });
        seen.add(p.pipeline);
        const buckets = p.locations.map((l) => l.bucket);
        if (new Set(buckets).size !== buckets.length) ctx.addIssue({ code: 'custom', path: [i, 'locations'], message: 'a bucket is listed twice: give it once with all its prefixes' });
      });
    })
    .safeParse(value);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((issue) => `  ${what}${issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')}: ${issue.message}`);
  throw new Error(`${what} is invalid:\n${lines.join('\n')}`);
}

export interface ChangeCaptureProps {
  readonly pipelines: readonly PipelineCaptureInput[];
  readonly ledgerTable: ITable;
  readonly stateBucket: IBucket;
  /** @default RetentionDays.THREE_MONTHS */
  readonly logRetention?: RetentionDays;
}

/**
 * Change capture during deploys (core/workflow/change-capture.ts): S3 sends every event of the captured buckets to
 * EventBridge (the buckets' notification configuration gets `EventBridgeConfiguration`, merged with what they have);
 * one rule per pipeline, scoped to its buckets and prefixes, and one for its `Deployment Completed` events, deliver
 * `{pipeline, event}` to an encrypted SQS queue; "Record changes" consumes it in batches (partial batch responses) and
 * appends to the deployments' change logs in the state bucket. What cannot be delivered or handled lands in a
 * dead-letter queue, never lost silently; the rollback's full listing check repairs whatever the log missed.
 */
export class ChangeCapture extends Construct {
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;
  readonly fn: NodejsFunction;
  readonly role: Role;
  readonly rules: readonly { pipeline: string; kind: 'changes' | 'completed'; rule: Rule; pattern: Record<string, unknown> }[];
  readonly pipelines: readonly PipelineCapture[];

  constructor(scope: Construct, id: string, props: ChangeCaptureProps) {
    super(scope, id);
    this.pipelines = parseChangeCapture(props.pipelines);

    this.deadLetterQueue = new Queue(this, 'DeadLetterQueue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    acknowledge(
      this.deadLetterQueue,
      'AwsSolutions-SQS3',
      'This queue is itself the dead-letter queue of the change-capture queue and of the capture rules targets; a DLQ ' +
        'of a DLQ would only move the same undeliverable change events one queue further.',
    );
    const functionTimeout = Duration.seconds(60);
    this.queue = new Queue(this, 'Queue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(4),
      // AWS's advice for a Lambda event source: at least six times the function's timeout.
      visibilityTimeout: Duration.seconds(functionTimeout.toSeconds() * 6),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });

    const logGroup = new LogGroup(this, 'Logs', { retention: props.logRetention ?? RetentionDays.THREE_MONTHS });
    this.role = new Role(this, 'Role', { assumedBy: new ServicePrincipal('lambda.amazonaws.com'), description: 'etl-rollback record-changes function' });
    logGroup.grantWrite(this.role);
    this.fn = new NodejsFunction(this, 'Function', {
      description: 'etl-rollback: Record changes',
      entry: RECORD_CHANGES_ENTRY,
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: 512,
      timeout: functionTimeout,
      tracing: Tracing.ACTIVE,
      role: this.role,
      logGroup,
      environment: {
        ETL_ROLLBACK_LEDGER_TABLE: props.ledgerTable.tableName,
        ETL_ROLLBACK_STATE_BUCKET: props.stateBucket.bucketName,
        POWERTOOLS_SERVICE_NAME: 'etl-rollback',
        POWERTOOLS_METRICS_NAMESPACE: 'EtlRollback',
        NODE_OPTIONS: '--enable-source-maps',
      },
      bundling: HANDLER_BUNDLING,
    });
    // Up to 1,000 changes a batch, gathered for up to 10 s: one log object per batch and unit, not one per change.
    this.fn.addEventSource(new SqsEventSource(this.queue, { batchSize: 1000, maxBatchingWindow: Duration.seconds(10), reportBatchItemFailures: true }));

    // Ledger: read the change windows and close them (Deployment Completed), only items under CHANGES#.
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'LedgerChangeWindows',
        effect: Effect.ALLOW,
        actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem'],
        resources: [props.ledgerTable.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${CHANGE_WINDOW_LEDGER_PARTITION_PREFIX}*`] } },
      }),
    );
    // State bucket: append batches to change logs, nothing else (no read, no delete).
    const logObjects = props.stateBucket.arnForObjects(CHANGE_LOG_OBJECTS);
    this.role.addToPrincipalPolicy(new PolicyStatement({ sid: 'AppendChangeLogs', effect: Effect.ALLOW, actions: ['s3:PutObject'], resources: [logObjects] }));
    acknowledge(
      this.role,
      iam5ResourceFinding(this.role, logObjects),
      'PutObject on the change-log objects of the state bucket only (restore-points/<pipeline>/<deployment>/<unit>/changes/*); ' +
        'deployments and units are named at run time, so the key segments cannot be listed in advance.',
    );
    acknowledgeTracedNode22Function(this.role, this.fn);

    // Every captured bucket sends its events to EventBridge (merged into its notification configuration).
    const buckets = [...new Set(this.pipelines.flatMap((p) => p.locations.map((l) => l.bucket)))].sort();
    buckets.forEach((name, i) => Bucket.fromBucketName(this, `Bucket${i}`, name).enableEventBridgeNotification());
    this.acknowledgeNotificationsHandler();

    const rules: ChangeCapture['rules'][number][] = [];
    for (const p of this.pipelines) {
      const pipelineScope = new Construct(this, `Pipeline-${p.pipeline}`);
      const locations: CaptureLocation[] = p.locations.map((l) => ({ bucket: l.bucket, prefixes: l.prefixes }));
      const add = (kind: 'changes' | 'completed', pattern: Record<string, unknown>, description: string) => {
        const rule = new Rule(pipelineScope, kind === 'changes' ? 'Changes' : 'DeploymentCompleted', {
          description: `etl-rollback ${p.pipeline}: ${description}`,
          eventPattern: { source: pattern.source as string[] },
        });
        // The whole pattern as EventBridge stores it (`$or` included, which CDK's typed EventPattern cannot express).
        (rule.node.defaultChild as CfnRule).addPropertyOverride('EventPattern', pattern);
        rule.addTarget(new SqsQueue(this.queue, { message: new PipelineEventInput(p.pipeline), deadLetterQueue: this.deadLetterQueue, retryAttempts: 8, maxEventAge: Duration.hours(6) }));
        rules.push({ pipeline: p.pipeline, kind, rule, pattern });
      };
      add('changes', changeCapturePattern(locations), 'S3 changes of the captured prefixes, for the change log');
      add('completed', deploymentCompletedPattern(p.pipeline) as unknown as Record<string, unknown>, 'Deployment Completed event (closes the change capture)');
    }
    this.rules = rules;
  }

  /** cdk-nag findings of CDK's own bucket-notifications handler (a singleton at the stack's root), each with its reason. */
  private acknowledgeNotificationsHandler(): void {
    const stack = Stack.of(this);
    for (const child of stack.node.children) {
      if (!child.node.id.startsWith('BucketNotificationsHandler')) continue;
      acknowledge(
        child,
        'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
        "CDK's bucket-notifications custom resource (aws-s3) runs with the AWSLambdaBasicExecutionRole managed policy; " +
          'it only writes its own logs. It runs at deploy time only, to merge EventBridgeConfiguration into the captured buckets.',
      );
      acknowledge(
        child,
        'AwsSolutions-IAM5[Resource::*]',
        "CDK's bucket-notifications custom resource is granted s3:PutBucketNotification (and GetBucketNotification) on " +
          '"*" by CDK itself; it is invoked by CloudFormation only, for the captured buckets named in this stack.',
      );
      acknowledge(child, 'AwsSolutions-L1', "CDK's bucket-notifications custom resource: its runtime is chosen and updated by the CDK release, not by this project.");
    }
  }
}
