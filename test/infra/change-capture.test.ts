import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { CHANGE_WINDOW_PARTITION_PREFIX } from '../../core/ledger/ledger.ts';
import { DEPLOYMENT_COMPLETED_DETAIL_TYPE as CORE_COMPLETED, DEPLOYMENT_EVENTS_SOURCE } from '../../core/workflow/change-capture.ts';
import { CHANGE_WINDOW_LEDGER_PARTITION_PREFIX, parseChangeCapture } from '../../infra/constructs/change-capture.ts';
import { PROJECT_ROOT } from '../../infra/constructs/handlers.ts';
import { DEPLOYMENT_COMPLETED_DETAIL_TYPE, DEPLOYMENT_FAILED_SOURCE, changeCapturePattern, triggerInputTemplate } from '../../infra/constructs/trigger-patterns.ts';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';

type Json = Record<string, unknown>;
interface Resource {
  Type: string;
  Properties: Json;
}
interface Statement {
  Sid?: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Json;
}
const asArray = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);

const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Json };
const CAPTURE = [
  { pipeline: 'clicks', locations: [{ bucket: 'acme-lake', prefixes: ['events/clicks/', 'events/views/'] }] },
  { pipeline: 'orders', locations: [{ bucket: 'acme-lake', prefixes: ['orders/'] }, { bucket: 'acme-exports', prefixes: ['daily/'] }] },
];

describe('change capture (template)', () => {
  let app: App;
  let stack: EtlRollbackStack;
  let resources: Record<string, Resource>;
  const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);

  beforeAll(() => {
    app = new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [], changeCapture: JSON.stringify(CAPTURE) } });
    stack = buildEtlRollbackApp(app);
    resources = Template.fromStack(stack).toJSON().Resources as Record<string, Resource>;
  });

  it("turns on EventBridge notifications on each captured bucket, merged with the bucket's own configuration", () => {
    const notifications = ofType('Custom::S3BucketNotifications').map(([, r]) => r.Properties);
    expect(notifications.map((n) => n.BucketName).sort()).toEqual(['acme-exports', 'acme-lake']);
    for (const n of notifications) {
      expect(n.NotificationConfiguration).toEqual({ EventBridgeConfiguration: {} });
      // Managed false: the handler keeps the notifications the bucket already has (an imported bucket).
      expect(n.Managed).toBe(false);
    }
  });

  it('one capture rule per pipeline scoped to its buckets and prefixes, and one for its Deployment Completed events', () => {
    // (the stack's other rule, on the rollback machine's stopped executions, is not change capture's)
    const patterns = ofType('AWS::Events::Rule')
      .map(([, r]) => r.Properties.EventPattern)
      .filter((p) => !JSON.stringify(p).includes('aws.states'));
    expect(patterns).toEqual(
      expect.arrayContaining([
        changeCapturePattern([{ bucket: 'acme-lake', prefixes: ['events/clicks/', 'events/views/'] }]),
        changeCapturePattern([
          { bucket: 'acme-lake', prefixes: ['orders/'] },
          { bucket: 'acme-exports', prefixes: ['daily/'] },
        ]),
        { source: [DEPLOYMENT_FAILED_SOURCE], 'detail-type': [DEPLOYMENT_COMPLETED_DETAIL_TYPE], detail: { pipeline: ['clicks'] } },
        { source: [DEPLOYMENT_FAILED_SOURCE], 'detail-type': [DEPLOYMENT_COMPLETED_DETAIL_TYPE], detail: { pipeline: ['orders'] } },
      ]),
    );
    expect(patterns).toHaveLength(4);
    // Two buckets: one $or branch per bucket, so a prefix of one bucket never admits the same prefix of the other.
    expect(changeCapturePattern([{ bucket: 'a-bucket', prefixes: ['x/'] }, { bucket: 'b-bucket', prefixes: ['y/'] }])).toEqual({
      source: ['aws.s3'],
      'detail-type': ['Object Created', 'Object Deleted'],
      $or: [{ detail: { bucket: { name: ['a-bucket'] }, object: { key: [{ prefix: 'x/' }] } } }, { detail: { bucket: { name: ['b-bucket'] }, object: { key: [{ prefix: 'y/' }] } } }],
    });
    // Every rule targets the capture queue with {pipeline, event}, with the dead-letter queue for what cannot be delivered.
    for (const [, rule] of ofType('AWS::Events::Rule').filter(([, r]) => !JSON.stringify(r.Properties.EventPattern).includes('aws.states'))) {
      const [target] = rule.Properties.Targets as Json[];
      const pipeline = String(rule.Properties.Description).match(/^etl-rollback (\w+):/)![1]!;
      expect((target!.InputTransformer as Json).InputTemplate).toBe(triggerInputTemplate(pipeline));
      expect(target!.DeadLetterConfig).toBeDefined();
    }
  });

  it('the queue is encrypted, TLS-only, with a dead-letter queue after 5 receives, and feeds the function in batches with partial failures', () => {
    const queues = ofType('AWS::SQS::Queue').filter(([id]) => id.startsWith('ChangeCapture'));
    const [queueId, queue] = queues.find(([, q]) => q.Properties.RedrivePolicy !== undefined)!;
    expect(queue.Properties.SqsManagedSseEnabled).toBe(true);
    const redrive = queue.Properties.RedrivePolicy as Json;
    expect(redrive.maxReceiveCount).toBe(5);
    const dlqId = ((redrive.deadLetterTargetArn as Json)['Fn::GetAtt'] as string[])[0]!;
    expect(resources[dlqId]?.Type).toBe('AWS::SQS::Queue');
    expect((resources[dlqId]!.Properties.MessageRetentionPeriod as number) >= 14 * 86_400).toBe(true);
    const policies = ofType('AWS::SQS::QueuePolicy').map(([, p]) => JSON.stringify(p.Properties));
    expect(policies.some((p) => p.includes(queueId) && p.includes('aws:SecureTransport'))).toBe(true);
    const mapping = ofType('AWS::Lambda::EventSourceMapping')[0]![1];
    expect(mapping.Properties).toMatchObject({ BatchSize: 1000, MaximumBatchingWindowInSeconds: 10, FunctionResponseTypes: ['ReportBatchItemFailures'] });
    expect(Number(queue.Properties.VisibilityTimeout)).toBeGreaterThanOrEqual(6 * 60);
  });

  it("the function may read and close change windows only, and append to change logs only", () => {
    const policies = ofType('AWS::IAM::Policy').filter(([id]) => id.startsWith('ChangeCaptureRole'));
    const statements = policies.flatMap(([, p]) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
    const ledger = statements.find((s) => s.Sid === 'LedgerChangeWindows')!;
    expect(asArray(ledger.Action).sort()).toEqual(['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem']);
    expect(ledger.Condition).toEqual({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${CHANGE_WINDOW_PARTITION_PREFIX}*`] } });
    const logs = statements.find((s) => s.Sid === 'AppendChangeLogs')!;
    expect(logs.Action).toBe('s3:PutObject');
    expect(JSON.stringify(logs.Resource)).toContain('/restore-points/*/*/*/changes/*');
    const actions = statements.flatMap((s) => asArray(s.Action));
    expect(actions.filter((a) => a.startsWith('s3:'))).toEqual(['s3:PutObject']);
    for (const s of statements) if (asArray(s.Resource).includes('*')) expect(asArray(s.Action).every((a) => a.startsWith('xray:'))).toBe(true);
  });

  it('infra and core agree on the names they share', () => {
    expect(CHANGE_WINDOW_LEDGER_PARTITION_PREFIX).toBe(CHANGE_WINDOW_PARTITION_PREFIX);
    expect(DEPLOYMENT_COMPLETED_DETAIL_TYPE).toBe(CORE_COMPLETED);
    expect(DEPLOYMENT_FAILED_SOURCE).toBe(DEPLOYMENT_EVENTS_SOURCE);
  });

  it('refuses a configuration it cannot scope: wildcards, empty prefixes, a pipeline twice', () => {
    expect(() => parseChangeCapture([{ pipeline: 'a', locations: [{ bucket: 'lake-a', prefixes: ['x/*'] }] }])).toThrow(/no wildcards/);
    expect(() => parseChangeCapture([{ pipeline: 'a', locations: [{ bucket: 'lake-a', prefixes: [''] }] }])).toThrow(/not a whole bucket/);
    expect(() => parseChangeCapture([{ pipeline: 'a', locations: [{ bucket: 'lake-a', prefixes: ['x/'] }] }, { pipeline: 'a', locations: [{ bucket: 'lake-b', prefixes: ['y/'] }] }])).toThrow(
      /listed twice/,
    );
  });

  it('cdk-nag AwsSolutions: no unacknowledged finding, and the app synthesizes', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join(', ')}`)).toEqual([]);
    expect(() => app.synth({ force: true })).not.toThrow();
  });
});
