import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { DRILL_RDS_REMOVE_ACTIONS, DRILL_SOURCE_OBJECT_ACTIONS, DRILL_TAG } from '../../infra/constructs/drill-access.ts';
import { type HandlerName } from '../../infra/constructs/handlers.ts';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
import { type EtlRollbackStack, STATE_MACHINE_FILES } from '../../infra/stack.ts';
import { asArray, logicalId, testApp, type Json } from '../support/template.ts';

interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource?: unknown;
  Condition?: Json;
}

const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:etl/orders-db-AbCdEf';

/** Every statement of every AWS::IAM::Policy, with the roles it is attached to. */
function statementsOf(template: Template): { roles: string[]; statement: Statement }[] {
  return Object.values(template.findResources('AWS::IAM::Policy')).flatMap((resource) => {
    const props = resource.Properties as { Roles: { Ref: string }[]; PolicyDocument: { Statement: Statement[] } };
    return props.PolicyDocument.Statement.map((statement) => ({ roles: props.Roles.map((r) => r.Ref), statement }));
  });
}

describe('drills in the stack: the drill machine, a schedule per pipeline, the alarm, least-privilege grants', () => {
  let stack: EtlRollbackStack;
  let template: Template;
  const role = (name: HandlerName) => logicalId(stack.handlers.byName(name).role);

  beforeAll(() => {
    stack = buildEtlRollbackApp(
      testApp({
        protectedBuckets: 'orders-lake',
        databaseSecretArns: SECRET_ARN,
        protectedDbInstances: 'orders-db',
        protectedDbClusters: 'warehouse',
        drillScratchBuckets: 'orders-drill-scratch',
        drills: JSON.stringify([
          { pipeline: 'orders', schedule: 'cron(0 3 ? * SUN *)' },
          { pipeline: 'billing', schedule: 'rate(7 days)', deployment: 'd-42' },
        ]),
      }),
    );
    template = Template.fromStack(stack);
  });

  it('deploys statemachines/drill.asl.json as written, invoking only its own handlers', () => {
    const machine = template.toJSON().Resources[logicalId(stack.drill.stateMachine)] as { Properties: { DefinitionString: string; DefinitionSubstitutions: Json } };
    expect(machine.Properties.DefinitionString).toBe(readFileSync(STATE_MACHINE_FILES.drill, 'utf8'));
    expect(Object.keys(machine.Properties.DefinitionSubstitutions).sort()).toEqual(
      ['CleanupDrillFunctionArn', 'FinishDrillFunctionArn', 'PlanDrillFunctionArn', 'RehearseUnitFunctionArn', 'VerifyDrillStageFunctionArn'],
    );
  });

  it('a Scheduler schedule per pipeline starts the drill machine with that pipeline, as a role that may start only it', () => {
    const schedules = template.findResources('AWS::Scheduler::Schedule');
    const drills = Object.values(schedules).filter((s) => JSON.stringify(s).includes('rollback drill'));
    expect(drills).toHaveLength(2);
    const orders = stack.drillSchedules.schedules.get('orders')!;
    const props = (template.toJSON().Resources[logicalId(orders)] as { Properties: Json }).Properties as { ScheduleExpression: string; ScheduleExpressionTimezone: string; Target: { Arn: unknown; RoleArn: unknown; Input: string } };
    expect(props.ScheduleExpression).toBe('cron(0 3 ? * SUN *)');
    expect(props.ScheduleExpressionTimezone).toBe('UTC');
    expect(props.Target.Arn).toEqual({ Ref: logicalId(stack.drill.stateMachine) });
    expect(props.Target.RoleArn).toEqual({ 'Fn::GetAtt': [logicalId(stack.drillSchedules.schedulerRole), 'Arn'] });
    expect(JSON.parse(props.Target.Input)).toMatchObject({ pipeline: 'orders', deploymentId: 'latest', trigger: { kind: 'eventbridge', source: 'aws.scheduler' } });
    const billing = (template.toJSON().Resources[logicalId(stack.drillSchedules.schedules.get('billing')!)] as { Properties: { ScheduleExpression: string; Target: { Input: string } } }).Properties;
    expect([billing.ScheduleExpression, JSON.parse(billing.Target.Input).deploymentId]).toEqual(['rate(7 days)', 'd-42']);

    // The scheduler role: assumed by EventBridge Scheduler of this account only; may start the drill machine, nothing else.
    const schedulerRole = template.toJSON().Resources[logicalId(stack.drillSchedules.schedulerRole)] as { Properties: { AssumeRolePolicyDocument: { Statement: Json[] } } };
    expect(schedulerRole.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      expect.objectContaining({ Principal: { Service: 'scheduler.amazonaws.com' }, Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } } }),
    ]);
    const granted = statementsOf(template).filter((s) => s.roles.includes(logicalId(stack.drillSchedules.schedulerRole)));
    expect(granted.map((g) => [g.statement.Action, g.statement.Resource])).toEqual([['states:StartExecution', { Ref: logicalId(stack.drill.stateMachine) }]]);
  });

  it('the dashboard shows drills started, succeeded and failed, and recovery time by pipeline', () => {
    const body = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]!.Properties.DashboardBody);
    for (const metric of ['DrillsStarted', 'DrillsSucceeded', 'DrillFailed', 'DrillRecoveryTime']) expect(body, metric).toContain(metric);
  });

  it('an alarm on DrillFailed (service dimension) notifies the topic', () => {
    const alarm = stack.observability.alarms.drillFailed!;
    const props = (template.toJSON().Resources[logicalId(alarm)] as { Properties: Json }).Properties;
    expect(props).toMatchObject({
      MetricName: 'DrillFailed',
      Namespace: 'EtlRollback',
      Dimensions: [{ Name: 'service', Value: 'etl-rollback' }],
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      AlarmActions: [{ Ref: logicalId(stack.notifications.topic) }],
    });
  });

  it('drill handlers never get write access to the protected data: read the lake, write and delete only under drills/, RDS copies by name and tag', () => {
    const drillRoles = (['plan-drill', 'rehearse-unit', 'verify-drill-stage', 'cleanup-drill', 'finish-drill'] as const).map(role);
    const grants = statementsOf(template).filter((s) => s.roles.some((r) => drillRoles.includes(r)));
    for (const { statement } of grants) {
      const resources = JSON.stringify(statement.Resource);
      if (resources.includes('orders-lake')) expect(asArray(statement.Action).sort()).toEqual([...DRILL_SOURCE_OBJECT_ACTIONS].sort());
      for (const action of asArray(statement.Action).filter((a) => /^s3:(Delete|Put)/.test(a))) {
        expect(resources, `${action} outside drills/`).not.toContain('orders-lake');
        if (/Delete/.test(action)) expect(asArray(statement.Resource).every((r) => JSON.stringify(r).includes('/drills/*'))).toBe(true);
      }
      for (const action of asArray(statement.Action).filter((a) => /^rds:(Delete|Modify|Restore|Create)/.test(a))) {
        // Only the copies' names: never db:orders-db itself, never cluster:warehouse itself or its rollback names.
        for (const r of asArray(statement.Resource).map((x) => JSON.stringify(x))) expect(r).toMatch(/-drill-\*|etlrb-\*|:(og|pg|cluster-pg|subgrp|secgrp):\*/);
        if (/Delete|Modify/.test(action)) expect(statement.Condition).toEqual({ Null: { [`aws:ResourceTag/${DRILL_TAG}`]: 'false' } });
      }
    }
    const remove = grants.find((g) => g.statement.Sid === 'DrillRdsRemove')!;
    expect(remove.roles).toEqual([role('cleanup-drill')]);
    expect(asArray(remove.statement.Action).sort()).toEqual([...DRILL_RDS_REMOVE_ACTIONS].sort());
    const resources = JSON.stringify(remove.statement.Resource);
    for (const name of [':db:orders-db-drill-*', ':db:warehouse-w-drill-*', ':cluster:warehouse-drill-*']) expect(resources).toContain(name);
    // The rollback's data grants (which may write the protected bucket) are not the drill's.
    const dataPolicy = template.toJSON().Resources[logicalId(stack.dataAccess.policy!)] as { Properties: { Roles: { Ref: string }[] } };
    expect(dataPolicy.Properties.Roles.map((r) => r.Ref).filter((r) => drillRoles.includes(r))).toEqual([]);
    // The scratch bucket: written and deleted only under drills/.
    const scratch = grants.filter((g) => JSON.stringify(g.statement.Resource).includes('orders-drill-scratch'));
    expect(scratch.length).toBeGreaterThan(0);
    for (const g of scratch) {
      for (const r of asArray(g.statement.Resource).map((x) => JSON.stringify(x)).filter((x) => x.includes('orders-drill-scratch'))) expect(r).toMatch(/orders-drill-scratch(\/drills\/\*)?"\]\]\}$/);
    }
  });

  it('cdk-nag AwsSolutions: no unacknowledged finding with drills configured', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join(', ')}`)).toEqual([]);
  });

  it('reads the schedule from the manifests themselves (context manifests), with their scratch buckets', () => {
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-drill-manifests-'));
    const orders = join(dir, 'orders.yaml');
    writeFileSync(orders, 'pipeline: orders\nrto: 15m\ndrill:\n  schedule: "rate(7 days)"\n  scratchBucket: orders-drill-scratch\nunits: []\n');
    const plain = join(dir, 'billing.yaml');
    writeFileSync(plain, 'pipeline: billing\nunits: []\n');
    const fromFiles = buildEtlRollbackApp(testApp({ manifests: `${orders},${plain}` }));
    expect([...fromFiles.drillSchedules.schedules.keys()]).toEqual(['orders']);
    const t = Template.fromStack(fromFiles);
    const schedule = t.toJSON().Resources[logicalId(fromFiles.drillSchedules.schedules.get('orders')!)] as { Properties: { ScheduleExpression: string; Target: { Input: string } } };
    expect(schedule.Properties.ScheduleExpression).toBe('rate(7 days)');
    expect(JSON.parse(schedule.Properties.Target.Input)).toMatchObject({ pipeline: 'orders', deploymentId: 'latest' });
    expect(JSON.stringify(statementsOf(t).filter((g) => g.statement.Sid === 'DrillDeleteScratchObjects'))).toContain('orders-drill-scratch/drills/*');
  });

  it('refuses a malformed drill schedule at synth, naming it', () => {
    expect(() => buildEtlRollbackApp(testApp({ drills: JSON.stringify([{ pipeline: 'orders', schedule: 'every sunday' }]) }))).toThrow(/context drills\[0\]\.schedule: must be an EventBridge Scheduler expression/);
  });
});
