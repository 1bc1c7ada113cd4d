import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { Stack } from 'aws-cdk-lib';
import { Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Code, Function as LambdaFunction, Runtime } from 'aws-cdk-lib/aws-lambda';
import { FreezeAccess, FREEZE_POLICY_ACTIONS } from '../../infra/constructs/freeze-access.ts';
import { type HandlerName } from '../../infra/constructs/handlers.ts';
import { buildEtlRollbackApp, readContext } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';
import { asArray, logicalId, testApp, type Json } from '../support/template.ts';

interface Statement {
  Sid?: string;
  Action: string | string[];
  Resource: unknown;
}

const SECRET = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:warehouse-AbCdEf';

/** Every statement of every IAM policy, with its roles. */
function statements(template: Template) {
  return Object.values(template.findResources('AWS::IAM::Policy')).flatMap((resource) => {
    const props = (resource as { Properties: Json }).Properties;
    const roles = (props.Roles as { Ref: string }[]).map((r) => r.Ref).sort();
    return (props.PolicyDocument as { Statement: Statement[] }).Statement.map((statement) => ({ roles, statement }));
  });
}

describe('write freeze access', () => {
  let stack: EtlRollbackStack;
  let template: Template;
  const roles = (names: HandlerName[]) => names.map((n) => logicalId(stack.handlers.byName(n).role)).sort();

  beforeAll(() => {
    const app = testApp({ protectedBuckets: 'orders-raw,orders-mart', frozenBuckets: 'orders-raw', databaseSecretArns: SECRET });
    expect(readContext(app)).toMatchObject({ frozenBuckets: ['orders-raw'] });
    stack = buildEtlRollbackApp(app);
    template = Template.fromStack(stack);
  });

  it('only the freeze and lift handlers may edit bucket policies, and only those of the frozen buckets', () => {
    const editing = statements(template).filter((s) => asArray(s.statement.Action).some((a) => /BucketPolicy$/.test(a)));
    expect(editing).toHaveLength(1);
    expect(editing[0]!.statement.Sid).toBe('FrozenBucketPolicies');
    // And the cleanup of an execution stopped at once (StopExecution), which lifts what its failure path could not.
    expect(editing[0]!.roles).toEqual([...roles(['freeze-stage', 'lift-freezes']), expect.stringMatching(/^StoppedRunsRole/)]);
    expect(asArray(editing[0]!.statement.Action).sort()).toEqual([...FREEZE_POLICY_ACTIONS].sort());
    expect(asArray(editing[0]!.statement.Resource).map((r) => JSON.stringify(r))).toEqual([
      JSON.stringify({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::orders-raw']] }),
    ]);
    // The freeze handlers read the database secrets (table grants) and touch no object of the data.
    const secrets = statements(template).filter((s) => s.statement.Sid === 'FreezeDatabaseSecrets');
    expect(secrets).toHaveLength(1);
    expect(secrets[0]!.roles).toEqual([...roles(['freeze-stage', 'lift-freezes']), expect.stringMatching(/^StoppedRunsRole/)]);
    expect(asArray(secrets[0]!.statement.Resource)).toEqual([SECRET]);
    const freezeRoles = new Set(roles(['freeze-stage', 'lift-freezes']));
    const onData = statements(template).filter((st) => st.roles.some((r) => freezeRoles.has(r)) && /orders-(raw|mart)/.test(JSON.stringify(st.statement.Resource)));
    expect(onData.map((st) => st.statement.Sid)).toEqual(['FrozenBucketPolicies']);
  });

  it('the freezing function knows the restore roles its statement excepts', () => {
    const fn = template.toJSON().Resources[logicalId(stack.handlers.byName('freeze-stage').fn)] as { Properties: { Environment: { Variables: Record<string, unknown> } } };
    const value = JSON.stringify(fn.Properties.Environment.Variables.ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS);
    for (const name of ['restore-unit', 'restore-shard', 'verify-stage'] as const) expect(value).toContain(logicalId(stack.handlers.byName(name).role));
  });

  it('cdk-nag stays clean', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);
  });

  it('refuses a frozen bucket that is not protected', () => {
    // The construct alone, in a bare stack: the refusal needs no synth of the whole app.
    const bare = new Stack(testApp(), 'Bare');
    const role = new Role(bare, 'Role', { assumedBy: new ServicePrincipal('lambda.amazonaws.com') });
    const fn = new LambdaFunction(bare, 'Fn', { runtime: Runtime.NODEJS_22_X, handler: 'index.handler', code: Code.fromInline('export const handler = () => 0;') });
    const props = { protectedBuckets: ['orders-raw'], databaseSecretArns: [], policyRoles: [role], freezeFunction: fn, restoreRoles: [role] };
    expect(() => new FreezeAccess(bare, 'NotProtected', { ...props, frozenBuckets: ['orders-mart'] })).toThrow(/frozenBuckets\[0\]: "orders-mart" is not in protectedBuckets/);
    expect(() => new FreezeAccess(bare, 'Wildcard', { ...props, frozenBuckets: ['orders-*'] })).toThrow(/frozenBuckets\[0\]: "orders-\*" is neither/);
  });
});
