import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../infra/constructs/handlers.ts';
import { alarmPattern, deploymentFailedPattern, etlExecutionFailedPattern, triggerInputTemplate } from '../../infra/constructs/trigger-patterns.ts';
import { buildEtlRollbackApp, readContext } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';

type Json = Record<string, unknown>;
interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Json;
}

const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Json };
const ORDERS_ETL = 'arn:aws:states:eu-west-1:123456789012:stateMachine:orders-etl';
const PIPELINES = [
  { pipeline: 'orders', etlStateMachineArns: [ORDERS_ETL], alarmNames: ['orders-errors', 'orders-late'] },
  { pipeline: 'billing', customEvents: true },
  { pipeline: 'events', alarmNames: ['events-lag'], customEvents: false },
];

function testApp(context: Json = {}): App {
  return new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [], ...context } });
}

function logicalId(construct: IConstruct): string {
  const child = construct.node.defaultChild ?? construct;
  return Stack.of(construct).resolve((child as unknown as { logicalId: string }).logicalId) as string;
}

const asArray = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);

describe('EventBridge triggers (template)', () => {
  let app: App;
  let stack: EtlRollbackStack;
  let template: Template;
  let resources: Record<string, { Type: string; Properties: Json }>;

  beforeAll(() => {
    app = testApp({ pipelines: JSON.stringify(PIPELINES) });
    stack = buildEtlRollbackApp(app);
    template = Template.fromStack(stack);
    resources = template.toJSON().Resources as typeof resources;
  });

  it('one rule per pipeline and trigger kind, with exactly the patterns the pattern tests prove', () => {
    // The stack's own rules on stopped rollback and snapshot executions (test/infra/stopped-runs.test.ts) are not triggers.
    const stopped = [logicalId(stack.stoppedRuns.rule!), logicalId(stack.stoppedRuns.snapshotRule!)];
    const rules = Object.entries(resources).filter(([id, r]) => r.Type === 'AWS::Events::Rule' && !stopped.includes(id)).map(([, r]) => r);
    const patterns = rules.map((r) => r.Properties.EventPattern);
    expect(patterns).toHaveLength(5);
    expect(patterns).toEqual(
      expect.arrayContaining([
        etlExecutionFailedPattern([ORDERS_ETL]),
        alarmPattern(['orders-errors', 'orders-late']),
        deploymentFailedPattern('orders'),
        deploymentFailedPattern('billing'),
        alarmPattern(['events-lag']),
      ]),
    );
    expect(stack.triggers!.rules.map((r) => `${r.pipeline}:${r.kind}`).sort()).toEqual(
      ['billing:deploymentFailed', 'events:alarm', 'orders:alarm', 'orders:deploymentFailed', 'orders:etlExecutionFailed'].sort(),
    );
  });

  it('every rule targets the one trigger function with {pipeline, event}, a retry policy and the encrypted DLQ', () => {
    const fnArn = { 'Fn::GetAtt': [logicalId(stack.triggers!.fn), 'Arn'] };
    const dlqArn = { 'Fn::GetAtt': [logicalId(stack.triggers!.deadLetterQueue), 'Arn'] };
    for (const { pipeline, rule } of stack.triggers!.rules) {
      const targets = resources[logicalId(rule)]!.Properties.Targets as Json[];
      expect(targets).toHaveLength(1);
      expect(targets[0]).toMatchObject({
        Arn: fnArn,
        DeadLetterConfig: { Arn: dlqArn },
        RetryPolicy: { MaximumRetryAttempts: 8, MaximumEventAgeInSeconds: 7200 },
        InputTransformer: { InputTemplate: triggerInputTemplate(pipeline) },
      });
    }
    const queue = resources[logicalId(stack.triggers!.deadLetterQueue)]!;
    expect(queue.Properties.SqsManagedSseEnabled).toBe(true);
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [{ Ref: logicalId(stack.triggers!.deadLetterQueue) }],
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
    });
    // Function failures after Lambda's async retries land in the same DLQ.
    const fn = resources[logicalId(stack.triggers!.fn)]!.Properties;
    expect(fn).toMatchObject({ Runtime: 'nodejs22.x', DeadLetterConfig: { TargetArn: dlqArn }, TracingConfig: { Mode: 'Active' } });
    expect((fn.Environment as { Variables: Json }).Variables).toMatchObject({
      ETL_ROLLBACK_ROLLBACK_STATE_MACHINE_ARN: { Ref: logicalId(stack.rollback.stateMachine) },
      ETL_ROLLBACK_LEDGER_TABLE: { Ref: logicalId(stack.ledger.table) },
    });
    // EventBridge may invoke it, from these rules only.
    const permissions = Object.values(resources).filter((r) => r.Type === 'AWS::Lambda::Permission' && JSON.stringify(r.Properties.FunctionName).includes(logicalId(stack.triggers!.fn)));
    expect(permissions).toHaveLength(5);
    for (const p of permissions) expect(p.Properties).toMatchObject({ Action: 'lambda:InvokeFunction', Principal: 'events.amazonaws.com' });
  });

  it('the function may start the rollback machine only, read the ledger, write trigger records; nothing else', () => {
    const roleId = logicalId(stack.triggers!.role);
    const statements = Object.values(resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy' && (r.Properties.Roles as { Ref: string }[]).some((ref) => ref.Ref === roleId))
      .flatMap((r) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
    const byAction = (prefix: string) => statements.filter((s) => asArray(s.Action).some((a) => a.startsWith(prefix)));

    const states = byAction('states:');
    expect(states).toHaveLength(1);
    expect(asArray(states[0]!.Action)).toEqual(['states:StartExecution']);
    expect(asArray(states[0]!.Resource)).toEqual([{ Ref: logicalId(stack.rollback.stateMachine) }]);
    expect(JSON.stringify(statements)).not.toContain(logicalId(stack.snapshot.stateMachine));

    const tableArn = { 'Fn::GetAtt': [logicalId(stack.ledger.table), 'Arn'] };
    const dynamo = byAction('dynamodb:');
    expect(dynamo.map((s) => [s.Sid, asArray(s.Action).sort(), s.Resource, s.Condition])).toEqual([
      ['LedgerRead', ['dynamodb:GetItem', 'dynamodb:Query'], tableArn, undefined],
      ['LedgerTriggerRecords', ['dynamodb:PutItem'], tableArn, { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['TRIGGER#*'] } }],
    ]);

    const actions = statements.flatMap((s) => asArray(s.Action)).sort();
    expect(actions).toEqual(
      ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'logs:CreateLogStream', 'logs:PutLogEvents', 'sqs:SendMessage', 'states:StartExecution', 'xray:PutTelemetryRecords', 'xray:PutTraceSegments'].sort(),
    );
    for (const s of statements) if (asArray(s.Resource).includes('*')) expect(asArray(s.Action).every((a) => a.startsWith('xray:'))).toBe(true);
  });

  it('cdk-nag AwsSolutions: no unacknowledged finding, and the app synthesizes', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join(', ')}`)).toEqual([]);
    expect(() => app.synth({ force: true })).not.toThrow();
  });

  it('no pipelines: no triggers, no trigger rule', () => {
    const plain = buildEtlRollbackApp(testApp());
    expect(plain.triggers).toBeUndefined();
    // Only the stack's own rules on stopped rollback and snapshot executions.
    Template.fromStack(plain).resourceCountIs('AWS::Events::Rule', 2);
  });

  it('context pipelines: JSON text or array, validated with every problem named', () => {
    expect(readContext(testApp({ pipelines: PIPELINES })).pipelines).toHaveLength(3);
    expect(readContext(testApp({ pipelines: '[{"pipeline":"orders"}]' })).pipelines).toEqual([
      { pipeline: 'orders', etlStateMachineArns: [], alarmNames: [], customEvents: true },
    ]);
    expect(() => readContext(testApp({ pipelines: '[{pipeline:orders}]' }))).toThrow(/context pipelines: not valid JSON/);
    const bad = [
      { pipeline: 'Orders' },
      { pipeline: 'billing', etlStateMachineArns: ['arn:aws:states:eu-west-1:123456789012:stateMachine:*'] },
      { pipeline: 'billing', alarmNames: ['billing-*'] },
      { pipeline: 'quiet', customEvents: false },
      { pipeline: 'orders', unknownKey: 1 },
    ];
    let message = '';
    try {
      readContext(testApp({ pipelines: bad }));
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/^context pipelines is invalid:/);
    expect(message).toContain('context pipelines[0].pipeline: must be a pipeline name');
    expect(message).toContain('context pipelines[1].etlStateMachineArns[0]: must be a Step Functions state machine ARN');
    expect(message).toContain('context pipelines[2].alarmNames[0]: must be an exact alarm name');
    expect(message).toContain('context pipelines[3]: pipeline "quiet" has no trigger');
    expect(message).toMatch(/context pipelines\[4\]: Unrecognized key/);
    expect(message).toContain('context pipelines[2].pipeline: pipeline "billing" is listed twice');
    // Stack props are validated the same way.
    expect(() => buildEtlRollbackApp(testApp(), { pipelines: [{ pipeline: 'x', etlStateMachineArns: ['*'] }] })).toThrow(/pipelines\[0\]\.etlStateMachineArns\[0\]/);
  });
});
