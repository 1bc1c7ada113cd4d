import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { Construct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';
import { asArray, logicalId, testApp, type Json } from '../support/template.ts';

interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
}

/**
 * StopExecution of a rollback (issue 10, part 5) or of a snapshot: an EventBridge rule on each machine's own executions
 * ending ABORTED or TIMED_OUT starts the cleanup function; its role reaches the ledger table, the state bucket's objects, the
 * audit reports, the notifications and the pausable triggers, nothing else; cdk-nag has nothing unacknowledged.
 */
describe('stopped rollback executions are cleaned up (template)', () => {
  let stack: EtlRollbackStack;
  let resources: Record<string, { Type: string; Properties: Json }>;

  beforeAll(() => {
    stack = buildEtlRollbackApp(testApp({ pausableRules: 'orders-load' }));
    resources = Template.fromStack(stack).toJSON().Resources as typeof resources;
  });

  /** The rule's pattern: that machine's executions ending ABORTED or TIMED_OUT; its one target: the function, with the DLQ. */
  function expectStoppedRule(rule: Construct, machine: Construct): void {
    const props = resources[logicalId(rule)]!.Properties;
    expect(props.EventPattern).toEqual({
      source: ['aws.states'],
      'detail-type': ['Step Functions Execution Status Change'],
      detail: { status: ['ABORTED', 'TIMED_OUT'], stateMachineArn: [{ Ref: logicalId(machine) }] },
    });
    const targets = props.Targets as { Arn: unknown; DeadLetterConfig?: { Arn: unknown } }[];
    expect(targets.map((t) => t.Arn)).toEqual([{ 'Fn::GetAtt': [logicalId(stack.stoppedRuns.fn), 'Arn'] }]);
    expect(targets[0]!.DeadLetterConfig?.Arn).toEqual({ 'Fn::GetAtt': [logicalId(stack.stoppedRuns.deadLetterQueue), 'Arn'] });
  }

  it('one rule, scoped to the rollback state machine ARN and to ABORTED / TIMED_OUT, targets the cleanup function with a DLQ', () => {
    expectStoppedRule(stack.stoppedRuns.rule!, stack.rollback.stateMachine);
    const fn = resources[logicalId(stack.stoppedRuns.fn)]!.Properties;
    expect(fn).toMatchObject({ Runtime: 'nodejs22.x', TracingConfig: { Mode: 'Active' } });
    expect(Object.keys((fn.Environment as { Variables: Json }).Variables)).toEqual(
      expect.arrayContaining(['ETL_ROLLBACK_LEDGER_TABLE', 'ETL_ROLLBACK_STATE_BUCKET', 'ETL_ROLLBACK_AUDIT_BUCKET', 'ETL_ROLLBACK_TOPIC_ARN']),
    );
  });

  it('a second rule, scoped to the snapshot state machine ARN, targets the same function, which is told that ARN', () => {
    expectStoppedRule(stack.stoppedRuns.snapshotRule!, stack.snapshot.stateMachine);
    const variables = (resources[logicalId(stack.stoppedRuns.fn)]!.Properties.Environment as { Variables: Json }).Variables as Record<string, unknown>;
    expect(variables.ETL_ROLLBACK_SNAPSHOT_STATE_MACHINE_ARN).toEqual({ Ref: logicalId(stack.snapshot.stateMachine) });
  });

  it('least privilege: the ledger table, state objects, audit reports, notifications and the pausable rule; no "*" but X-Ray, no delete on S3', () => {
    const role = logicalId(stack.stoppedRuns.role);
    const statements = Object.values(resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy' && asArray(r.Properties.Roles as unknown[]).some((x) => JSON.stringify(x) === JSON.stringify({ Ref: role })))
      .flatMap((r) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
    const actions = statements.flatMap((s) => asArray(s.Action));
    expect(actions).toEqual(expect.arrayContaining(['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 's3:GetObject', 's3:PutObject', 'sns:Publish', 'events:EnableRule']));
    expect(actions.filter((a) => /^s3:Delete|^states:|^dynamodb:Scan|^dynamodb:DeleteTable|^rds:|^secretsmanager:/.test(a))).toEqual([]);
    const ledger = statements.find((s) => s.Sid === 'Ledger')!;
    expect(ledger.Resource).toEqual({ 'Fn::GetAtt': [logicalId(stack.ledger.table), 'Arn'] });
    for (const s of statements) {
      if (s.Resource === '*') expect(asArray(s.Action).every((a) => a.startsWith('xray:'))).toBe(true);
    }
  });

  it('cdk-nag AwsSolutions: nothing unacknowledged', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join(', ')}`)).toEqual([]);
  });
});
