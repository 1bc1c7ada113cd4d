import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
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
const ORDERS_ETL = 'arn:aws:states:eu-west-1:111122223333:stateMachine:orders-etl';
const CLICKS_ETL = 'arn:aws:states:eu-west-1:111122223333:stateMachine:clicks-etl';

function logicalId(construct: IConstruct): string {
  const child = construct.node.defaultChild ?? construct;
  return Stack.of(construct).resolve((child as unknown as { logicalId: string }).logicalId) as string;
}

function statementsOf(template: Template, roleId: string): Statement[] {
  return Object.values(template.findResources('AWS::IAM::Policy') as Record<string, { Properties: Json }>)
    .filter((p) => (p.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === roleId))
    .flatMap((p) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
}

function build(context: Json): EtlRollbackStack {
  return buildEtlRollbackApp(new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [], ...context } }));
}

describe('replay after restore (template)', () => {
  let stack: EtlRollbackStack;
  let template: Template;

  beforeAll(() => {
    stack = build({ replayStateMachines: `${ORDERS_ETL},${CLICKS_ETL}` });
    template = Template.fromStack(stack);
  });

  it('the rollback role may start exactly the configured replay machines, follow and stop their executions, and keep the .sync managed rule', () => {
    const statements = statementsOf(template, logicalId(stack.rollback.stateMachine.role));
    const start = statements.find((s) => s.Sid === 'ReplayStart')!;
    expect(asArray(start.Action)).toEqual(['states:StartExecution']);
    expect(asArray(start.Resource as string[]).sort()).toEqual([CLICKS_ETL, ORDERS_ETL]);
    const follow = statements.find((s) => s.Sid === 'ReplayFollow')!;
    expect(asArray(follow.Action).sort()).toEqual(['states:DescribeExecution', 'states:StopExecution']);
    expect(asArray(follow.Resource as string[]).sort()).toEqual([
      'arn:aws:states:eu-west-1:111122223333:execution:clicks-etl:*',
      'arn:aws:states:eu-west-1:111122223333:execution:orders-etl:*',
    ]);
    const rule = statements.find((s) => s.Sid === 'ReplaySyncRule')!;
    expect(asArray(rule.Action).sort()).toEqual(['events:DescribeRule', 'events:PutRule', 'events:PutTargets']);
    expect(JSON.stringify(rule.Resource)).toContain(':rule/StepFunctionsGetEventsForStepFunctionsExecutionRule');
    // No other role may start executions of the replay machines.
    const others = Object.values(template.findResources('AWS::IAM::Policy') as Record<string, { Properties: Json }>)
      .filter((p) => !(p.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === logicalId(stack.rollback.stateMachine.role)))
      .flatMap((p) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
      .filter((s) => JSON.stringify(s.Resource).includes('orders-etl'));
    expect(others).toEqual([]);
  });

  it('handlers for Prepare replay and Record replay fill the definition', () => {
    const definition = JSON.stringify(template.findResources('AWS::StepFunctions::StateMachine'));
    expect(definition).toContain('arn:aws:states:::states:startExecution.sync:2');
    expect(stack.handlers.bySubstitution('PrepareReplayFunctionArn')).toBeDefined();
    expect(stack.handlers.bySubstitution('RecordReplayFunctionArn')).toBeDefined();
  });

  it('stays cdk-nag clean; without replay machines nothing is granted; a wildcard is refused', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => `${v.ruleName} ${JSON.stringify(v.violatingResources ?? '')}`)).toEqual([]);
    const bare = build({});
    const bareStatements = statementsOf(Template.fromStack(bare), logicalId(bare.rollback.stateMachine.role));
    expect(bareStatements.filter((s) => s.Sid?.startsWith('Replay'))).toEqual([]);
    expect(bareStatements.flatMap((s) => asArray(s.Action)).filter((a) => a.startsWith('events:'))).toEqual([]);
    expect(() => build({ replayStateMachines: 'arn:aws:states:eu-west-1:111122223333:stateMachine:orders-*' })).toThrow(/replayStateMachines\[0\]/);
  });
});
