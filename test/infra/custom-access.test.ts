import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { type HandlerName } from '../../infra/constructs/handlers.ts';
import { buildEtlRollbackApp, readContext } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';
import { asArray, logicalId, testApp, type Json } from '../support/template.ts';

interface Statement {
  Sid?: string;
  Action: string | string[];
  Resource: unknown;
}


/** Every statement of every IAM policy that names a lambda: action, with its roles. */
function invokeStatements(template: Template) {
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .flatMap((resource) => {
      const props = (resource as { Properties: Json }).Properties;
      const roles = ((props.Roles ?? []) as { Ref: string }[]).map((r) => r.Ref).sort();
      return (props.PolicyDocument as { Statement: Statement[] }).Statement.map((statement) => ({ roles, statement, resources: asArray(statement.Resource) }));
    })
    .filter((s) => asArray(s.statement.Action).some((a) => a.startsWith('lambda:')));
}

const REPUBLISH = 'arn:aws:lambda:eu-west-1:111122223333:function:orders-republish';
const CREDITS = 'arn:aws:lambda:eu-west-1:111122223333:function:billing-credit-notes:live';

describe('custom handlers: invoke access', () => {
  let stack: EtlRollbackStack;
  let template: Template;
  const roles = (names: HandlerName[]) => names.map((n) => logicalId(stack.handlers.byName(n).role)).sort();

  beforeAll(() => {
    const app = testApp({ customHandlerArns: `${REPUBLISH},${CREDITS}` });
    expect(readContext(app)).toMatchObject({ customHandlerArns: [REPUBLISH, CREDITS] });
    stack = buildEtlRollbackApp(app);
    template = Template.fromStack(stack);
  });

  it('capture, describe, restore and verify may invoke exactly the configured function ARNs, nothing else', () => {
    // The state machines invoke the stack's own functions (Fn::GetAtt); every invoke of anything else is this one grant.
    const [own, other] = [invokeStatements(template), invokeStatements(template)].map((all, i) =>
      all.filter((s) => s.resources.every((r) => typeof r === 'object' && r !== null && 'Fn::GetAtt' in r) === (i === 0)),
    );
    expect(own!.length).toBeGreaterThan(0);
    expect(other).toHaveLength(1);
    const [grant] = other!;
    expect(grant!.statement.Sid).toBe('InvokeCustomHandlers');
    expect(asArray(grant!.statement.Action)).toEqual(['lambda:InvokeFunction']);
    expect([...grant!.resources].sort()).toEqual([CREDITS, REPUBLISH]);
    expect(grant!.roles).toEqual(roles(['capture-unit', 'describe-changes', 'restore-unit', 'verify-stage']));
    // No task handler role gets any other Lambda permission.
    const handlerRoles = new Set(stack.handlers.all.map((h) => logicalId(h.role)));
    const onHandlerRoles = invokeStatements(template).filter((s) => s.roles.some((r) => handlerRoles.has(r)));
    expect(onHandlerRoles.map((s) => s.statement.Sid)).toEqual(['InvokeCustomHandlers']);
  });

  it('cdk-nag stays clean', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);
  });

  it('grants no invoke when no function is named, and refuses wildcards and what is not a function ARN', () => {
    const none = invokeStatements(Template.fromStack(buildEtlRollbackApp(testApp())));
    expect(none.filter((s) => s.resources.some((r) => typeof r === 'string'))).toEqual([]);
    expect(none.filter((s) => s.statement.Sid === 'InvokeCustomHandlers')).toEqual([]);
    expect(() => buildEtlRollbackApp(testApp({ customHandlerArns: 'arn:aws:lambda:eu-west-1:111122223333:function:*' }))).toThrow(/customHandlerArns\[0\]/);
    expect(() => buildEtlRollbackApp(testApp({ customHandlerArns: `${REPUBLISH},orders-republish` }))).toThrow(/customHandlerArns\[1\].*not a Lambda function ARN/);
    expect(() => buildEtlRollbackApp(testApp({ customHandlerArns: 'arn:aws:sqs:eu-west-1:111122223333:orders' }))).toThrow(/customHandlerArns\[0\]/);
  });
});
