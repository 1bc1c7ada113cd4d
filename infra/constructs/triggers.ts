import { join } from 'node:path';
import { Duration } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { type IRule, Rule, RuleTargetInput, type RuleTargetInputProperties } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { Effect, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { z } from 'zod';
import { acknowledge, acknowledgeTracedNode22Function } from '../nag.ts';
import { HANDLER_BUNDLING, PROJECT_ROOT } from './handlers.ts';
import { alarmPattern, deploymentFailedPattern, etlExecutionFailedPattern, type EventPatternJson, triggerInputTemplate } from './trigger-patterns.ts';

/** The trigger function's entry file (a rule target, not a state machine task: not in HANDLER_SPECS). */
export const TRIGGER_HANDLER_ENTRY = join(PROJECT_ROOT, 'lambdas', 'start-rollback-from-event.ts');
/** Partition-key prefix of the ledger's trigger records (core/ledger/ledger.ts): the only items the function writes. */
export const TRIGGER_LEDGER_PARTITION_PREFIX = 'TRIGGER#';

const STATE_MACHINE_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/;

/** One pipeline's triggers: which ETL state machines and alarms belong to it, and whether custom events count. */
export const pipelineTriggerSchema = z.strictObject({
  pipeline: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a pipeline name as in the manifest (lowercase letters, digits, "_", "-")'),
  etlStateMachineArns: z
    .array(z.string().regex(STATE_MACHINE_ARN, 'must be a Step Functions state machine ARN (arn:aws:states:<region>:<account>:stateMachine:<name>; no wildcards)'))
    .default([]),
  alarmNames: z.array(z.string().min(1, 'must not be empty').max(255).refine((n) => !n.includes('*'), 'must be an exact alarm name (no wildcards)')).default([]),
  customEvents: z.boolean().default(true),
});
export type PipelineTriggerConfig = z.infer<typeof pipelineTriggerSchema>;
export type PipelineTriggerInput = z.input<typeof pipelineTriggerSchema>;

export const pipelineTriggersSchema = z.array(pipelineTriggerSchema).superRefine((pipelines, ctx) => {
  const seen = new Set<string>();
  pipelines.forEach((p, i) => {
    if (seen.has(p.pipeline)) ctx.addIssue({ code: 'custom', path: [i, 'pipeline'], message: `pipeline "${p.pipeline}" is listed twice` });
    seen.add(p.pipeline);
    if (p.etlStateMachineArns.length === 0 && p.alarmNames.length === 0 && !p.customEvents) {
      ctx.addIssue({ code: 'custom', path: [i], message: `pipeline "${p.pipeline}" has no trigger: give etlStateMachineArns, alarmNames or customEvents: true` });
    }
  });
});

/** Validates the `pipelines` configuration; every problem named with its path, in one error. */
export function parsePipelineTriggers(value: unknown, what = 'pipelines'): PipelineTriggerConfig[] {
  const parsed = pipelineTriggersSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((issue) => {
    const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
    return `  ${what}${path}: ${issue.message}`;
  });
  throw new Error(`${what} is invalid:\n${lines.join('\n')}`);
}

export interface TriggersProps {
  readonly pipelines: readonly PipelineTriggerInput[];
  readonly ledgerTable: ITable;
  readonly rollbackStateMachine: IStateMachine;
  /** @default RetentionDays.THREE_MONTHS */
  readonly logRetention?: RetentionDays;
}

export type TriggerKind = 'etlExecutionFailed' | 'alarm' | 'deploymentFailed';

export interface TriggerRule {
  readonly pipeline: string;
  readonly kind: TriggerKind;
  readonly rule: Rule;
  readonly pattern: EventPatternJson;
}

/**
 * EventBridge rules that start the rollback machine when a deploy goes wrong, per pipeline: its ETL state machine's
 * execution FAILED/TIMED_OUT/ABORTED, one of its alarms entering ALARM, a custom `Deployment Failed` event for it.
 * Every rule targets one function ("Start rollback from event") with `{pipeline, event}`; delivery is retried and what
 * cannot be delivered (or fails in the function after Lambda's async retries) lands in an encrypted SQS DLQ. The
 * function may start executions of the rollback machine, read the ledger and write trigger records; nothing else.
 */
export class Triggers extends Construct {
  readonly fn: NodejsFunction;
  readonly role: Role;
  readonly deadLetterQueue: Queue;
  readonly rules: readonly TriggerRule[];
  readonly pipelines: readonly PipelineTriggerConfig[];

  constructor(scope: Construct, id: string, props: TriggersProps) {
    super(scope, id);
    this.pipelines = parsePipelineTriggers(props.pipelines);

    this.deadLetterQueue = new Queue(this, 'DeadLetterQueue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    acknowledge(
      this.deadLetterQueue,
      'AwsSolutions-SQS3',
      'This queue is itself the dead-letter queue of the trigger rules targets and of the trigger function; a DLQ of ' +
        'a DLQ would only move the same undeliverable trigger events one queue further.',
    );

    const logGroup = new LogGroup(this, 'Logs', { retention: props.logRetention ?? RetentionDays.THREE_MONTHS });
    this.role = new Role(this, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: 'etl-rollback start-rollback-from-event trigger function',
    });
    logGroup.grantWrite(this.role);

    this.fn = new NodejsFunction(this, 'Function', {
      description: 'etl-rollback: Start rollback from event',
      entry: TRIGGER_HANDLER_ENTRY,
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: 256,
      timeout: Duration.seconds(30),
      tracing: Tracing.ACTIVE,
      role: this.role,
      logGroup,
      // Failures after Lambda's async retries (an event of an unknown shape, the ledger unreachable) go to the same DLQ.
      retryAttempts: 2,
      deadLetterQueue: this.deadLetterQueue,
      environment: {
        ETL_ROLLBACK_LEDGER_TABLE: props.ledgerTable.tableName,
        ETL_ROLLBACK_ROLLBACK_STATE_MACHINE_ARN: props.rollbackStateMachine.stateMachineArn,
        POWERTOOLS_SERVICE_NAME: 'etl-rollback',
        POWERTOOLS_METRICS_NAMESPACE: 'EtlRollback',
        NODE_OPTIONS: '--enable-source-maps',
      },
      bundling: HANDLER_BUNDLING,
    });

    // Start executions of the rollback machine, and nothing else in Step Functions.
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'StartRollback',
        effect: Effect.ALLOW,
        actions: ['states:StartExecution'],
        resources: [props.rollbackStateMachine.stateMachineArn],
      }),
    );
    // Read the ledger (deployments, runs, the lock) ...
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'LedgerRead',
        effect: Effect.ALLOW,
        actions: ['dynamodb:GetItem', 'dynamodb:Query'],
        resources: [props.ledgerTable.tableArn],
      }),
    );
    // ... and write its own trigger records only: items whose partition key starts with TRIGGER#.
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'LedgerTriggerRecords',
        effect: Effect.ALLOW,
        actions: ['dynamodb:PutItem'],
        resources: [props.ledgerTable.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${TRIGGER_LEDGER_PARTITION_PREFIX}*`] } },
      }),
    );

    acknowledgeTracedNode22Function(this.role, this.fn);

    const rules: TriggerRule[] = [];
    for (const config of this.pipelines) {
      const scope = new Construct(this, `Pipeline-${config.pipeline}`);
      const add = (kind: TriggerKind, pattern: EventPatternJson, description: string) => {
        const rule = new Rule(scope, pascalCase(kind), {
          description: `etl-rollback ${config.pipeline}: ${description}`,
          eventPattern: { source: pattern.source, detailType: pattern['detail-type'], detail: pattern.detail },
        });
        rule.addTarget(
          new LambdaFunction(this.fn, {
            event: new PipelineEventInput(config.pipeline),
            deadLetterQueue: this.deadLetterQueue,
            retryAttempts: 8,
            maxEventAge: Duration.hours(2),
          }),
        );
        rules.push({ pipeline: config.pipeline, kind, rule, pattern });
      };
      if (config.etlStateMachineArns.length > 0) {
        add('etlExecutionFailed', etlExecutionFailedPattern(config.etlStateMachineArns), 'ETL execution failed, timed out or was aborted');
      }
      if (config.alarmNames.length > 0) add('alarm', alarmPattern(config.alarmNames), 'an ETL alarm entered ALARM');
      if (config.customEvents) add('deploymentFailed', deploymentFailedPattern(config.pipeline), 'Deployment Failed event');
    }
    this.rules = rules;
  }
}

/** `{"pipeline": <the rule's pipeline>, "event": <the event as received>}` (see triggerInputTemplate). */
export class PipelineEventInput extends RuleTargetInput {
  constructor(private readonly pipeline: string) {
    super();
  }

  bind(_rule: IRule): RuleTargetInputProperties {
    return { inputTemplate: triggerInputTemplate(this.pipeline) };
  }
}

function pascalCase(name: string): string {
  return name
    .split(/[-_]/)
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}
