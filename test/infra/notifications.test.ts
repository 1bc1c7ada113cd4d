import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../infra/constructs/handlers.ts';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';

type Json = Record<string, unknown>;
interface Statement {
  Sid?: string;
  Action: string | string[];
  Resource: unknown;
}

const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Json };
const asArray = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);

function logicalId(construct: IConstruct): string {
  const child = construct.node.defaultChild ?? construct;
  return Stack.of(construct).resolve((child as unknown as { logicalId: string }).logicalId) as string;
}

/** Allow statements by the logical id of the role they are attached to. */
function statementsOf(template: Template, roleId: string): Statement[] {
  return Object.values(template.findResources('AWS::IAM::Policy') as Record<string, { Properties: Json }>)
    .filter((p) => (p.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === roleId))
    .flatMap((p) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
}

describe('notifications and pausable rules (template)', () => {
  let stack: EtlRollbackStack;
  let template: Template;

  beforeAll(() => {
    const app = new App({
      context: {
        ...cdkJson.context,
        'aws:cdk:bundling-stacks': [],
        pausableRules: 'orders-load,etl/orders-late-files',
        pausableSchedules: 'etl/orders-hourly,orders-daily',
        scheduleTargetRoleArns: 'arn:aws:iam::111122223333:role/orders-scheduler',
      },
    });
    stack = buildEtlRollbackApp(app);
    template = Template.fromStack(stack);
  });

  it('an SNS topic encrypted with its own rotated KMS key, refusing publishers without TLS, exported as an output', () => {
    template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.objectLike({ 'Fn::GetAtt': [logicalId(stack.notifications.key), 'Arn'] }) });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
    });
    expect(template.toJSON().Outputs.NotificationsTopicArn.Value).toEqual({ Ref: logicalId(stack.notifications.topic) });
  });

  it('publishing handlers may publish to the topic, use its key and put events on the bus, each on exactly that resource', () => {
    for (const name of ['plan-rollback', 'verify-stage', 'finish-run', 'record-failure', 'request-approval'] as const) {
      const statements = statementsOf(template, logicalId(stack.handlers.byName(name).role));
      const publish = statements.find((s) => s.Sid === 'PublishNotifications')!;
      expect(asArray(publish.Action)).toEqual(['sns:Publish']);
      expect(publish.Resource).toEqual({ Ref: logicalId(stack.notifications.topic) });
      const key = statements.find((s) => s.Sid === 'EncryptNotifications')!;
      expect(asArray(key.Action).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
      expect(key.Resource).toEqual({ 'Fn::GetAtt': [logicalId(stack.notifications.key), 'Arn'] });
      const put = statements.find((s) => s.Sid === 'PutRollbackEvents')!;
      expect(asArray(put.Action)).toEqual(['events:PutEvents']);
      expect(JSON.stringify(put.Resource)).toContain(':event-bus/default');
    }
    // Tasks that do not announce get none of it.
    for (const name of ['restore-unit', 'acquire-lock', 'check-window'] as const) {
      const actions = statementsOf(template, logicalId(stack.handlers.byName(name).role)).flatMap((s) => asArray(s.Action));
      expect(actions.filter((a) => /^(sns|events|kms):/.test(a))).toEqual([]);
    }
  });

  it('pause and resume may describe, disable and enable exactly the named rules; no other role may', () => {
    for (const name of ['pause-triggers', 'resume-triggers'] as const) {
      const grant = statementsOf(template, logicalId(stack.handlers.byName(name).role)).find((s) => s.Sid === 'PausePipelineRules')!;
      expect(asArray(grant.Action).sort()).toEqual(['events:DescribeRule', 'events:DisableRule', 'events:EnableRule']);
      const resources = asArray(grant.Resource).map((r) => JSON.stringify(r)).sort();
      expect(resources).toHaveLength(2);
      // formatArn: arn:<partition>:events:<region>:<account>:rule/<name>, flattened by Fn::Join.
      expect(resources[0]).toMatch(/:events:.*:rule\/etl\/orders-late-files"/);
      expect(resources[1]).toMatch(/:events:.*:rule\/orders-load"/);
      expect(resources.join()).not.toContain('*');
    }
    const others = Object.values(template.findResources('AWS::IAM::Policy') as Record<string, { Properties: Json }>)
      .flatMap((p) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
      .filter((s) => asArray(s.Action).some((a) => /^events:(Disable|Enable)Rule$/.test(a)));
    // The two controllers, and the cleanup of stopped rollback executions (it resumes what the run paused).
    expect(others).toHaveLength(3);
    expect(statementsOf(template, logicalId(stack.stoppedRuns.role)).find((s) => s.Sid === 'PausePipelineRules')).toBeDefined();
  });

  it('pause and resume may read and update exactly the named schedules, and pass only their target roles, only to Scheduler', () => {
    for (const name of ['pause-triggers', 'resume-triggers'] as const) {
      const statements = statementsOf(template, logicalId(stack.handlers.byName(name).role));
      const grant = statements.find((s) => s.Sid === 'PausePipelineSchedules')!;
      expect(asArray(grant.Action).sort()).toEqual(['scheduler:GetSchedule', 'scheduler:UpdateSchedule']);
      const resources = asArray(grant.Resource).map((r) => JSON.stringify(r)).sort();
      expect(resources).toHaveLength(2);
      expect(resources[0]).toMatch(/:scheduler:.*:schedule\/default\/orders-daily"/);
      expect(resources[1]).toMatch(/:scheduler:.*:schedule\/etl\/orders-hourly"/);
      const pass = statements.find((s) => s.Sid === 'PassScheduleTargetRoles')! as Statement & { Condition: Json };
      expect(asArray(pass.Action)).toEqual(['iam:PassRole']);
      expect(pass.Resource).toEqual('arn:aws:iam::111122223333:role/orders-scheduler');
      expect(pass.Condition).toEqual({ StringEquals: { 'iam:PassedToService': 'scheduler.amazonaws.com' } });
    }
    const others = Object.values(template.findResources('AWS::IAM::Policy') as Record<string, { Properties: Json }>)
      .flatMap((p) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
      .filter((s) => asArray(s.Action).some((a) => a === 'scheduler:UpdateSchedule' || a === 'iam:PassRole'));
    // The two controllers and the stopped-run cleanup; the release construct's own schedule is created by CloudFormation,
    // not by a role of ours.
    expect(others).toHaveLength(6);
  });

  it('refuses schedules without the roles they run as, and a wildcard schedule', () => {
    const base = { ...cdkJson.context, 'aws:cdk:bundling-stacks': [] };
    expect(() => buildEtlRollbackApp(new App({ context: { ...base, pausableSchedules: 'etl/orders-hourly' } }))).toThrow(/scheduleTargetRoleArns is empty/);
    expect(() => buildEtlRollbackApp(new App({ context: { ...base, pausableSchedules: 'etl/*', scheduleTargetRoleArns: 'arn:aws:iam::111122223333:role/x' } }))).toThrow(
      /pausableSchedules\[0\]/,
    );
    expect(() => buildEtlRollbackApp(new App({ context: { ...base, pausableSchedules: 'etl/a', scheduleTargetRoleArns: 'arn:aws:iam::111122223333:role/*' } }))).toThrow(
      /scheduleTargetRoleArns\[0\]/,
    );
  });

  it('no Lambda role may answer task tokens (approve/reject are the CLI user\'s own permission)', () => {
    const actions = Object.values(template.findResources('AWS::IAM::Policy') as Record<string, { Properties: Json }>).flatMap((p) =>
      (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement.flatMap((s) => asArray(s.Action)),
    );
    expect(actions.filter((a) => /^states:SendTask/.test(a))).toEqual([]);
  });

  it('stays cdk-nag clean, and refuses a wildcard rule', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);
    const app = new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [], pausableRules: 'orders-*' } });
    expect(() => buildEtlRollbackApp(app)).toThrow(/pausableRules\[0\]/);
  });
});
