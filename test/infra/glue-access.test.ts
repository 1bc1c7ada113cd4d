import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { GLUE_READ_ACTIONS, GLUE_RESTORE_ACTIONS } from '../../infra/constructs/glue-access.ts';
import { type HandlerName } from '../../infra/constructs/handlers.ts';
import { buildEtlRollbackApp, readContext } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';
import { asArray, logicalId, testApp, type Json } from '../support/template.ts';

interface Statement {
  Sid?: string;
  Action: string | string[];
  Resource: unknown;
}


/** Every Glue statement of every IAM policy, with its roles; resources flattened to strings. */
function glueStatements(template: Template) {
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .flatMap((resource) => {
      const props = (resource as { Properties: Json }).Properties;
      const roles = (props.Roles as { Ref: string }[]).map((r) => r.Ref).sort();
      return (props.PolicyDocument as { Statement: Statement[] }).Statement.map((statement) => ({
        roles,
        statement,
        resources: asArray(statement.Resource).map((r) => (typeof r === 'string' ? r : JSON.stringify(r))),
      }));
    })
    .filter((s) => asArray(s.statement.Action).some((a) => a.startsWith('glue:')));
}

describe('Glue access', () => {
  let stack: EtlRollbackStack;
  let template: Template;
  const roles = (names: HandlerName[]) => names.map((n) => logicalId(stack.handlers.byName(n).role)).sort();

  beforeAll(() => {
    const app = testApp({ protectedGlueTables: 'lake/orders,111122223333:shared/items' });
    expect(readContext(app)).toMatchObject({ protectedGlueTables: ['lake/orders', '111122223333:shared/items'] });
    stack = buildEtlRollbackApp(app);
    template = Template.fromStack(stack);
  });

  it('the data handlers may read the named tables, naming catalog, database and table', () => {
    const read = glueStatements(template).filter((s) => s.statement.Sid === 'GlueRead');
    expect(read).toHaveLength(1);
    expect(read[0]!.roles).toEqual(roles(['capture-unit', 'describe-changes', 'plan-rollback', 'restore-shard', 'restore-unit', 'verify-stage']));
    expect(asArray(read[0]!.statement.Action).sort()).toEqual([...GLUE_READ_ACTIONS].sort());
    const resources = read[0]!.resources;
    expect(resources).toHaveLength(6);
    const joined = resources.join(' ');
    for (const part of [':catalog"', ':database/lake"', ':table/lake/orders"', ':111122223333:catalog"', ':111122223333:database/shared"', ':111122223333:table/shared/items"']) {
      expect(joined).toContain(part);
    }
    expect(resources.every((r) => r.includes(':glue:') && !r.includes('*'))).toBe(true);
  });

  it('only the restore handler writes, on the same named resources; nothing deletes a table', () => {
    const writes = glueStatements(template).filter((s) => asArray(s.statement.Action).some((a) => !GLUE_READ_ACTIONS.includes(a)));
    expect(writes).toHaveLength(1);
    expect(writes[0]!.statement.Sid).toBe('GlueRestore');
    expect(writes[0]!.roles).toEqual(roles(['restore-unit']));
    expect(asArray(writes[0]!.statement.Action).sort()).toEqual([...GLUE_RESTORE_ACTIONS].sort());
    expect(writes[0]!.resources.join(' ')).toContain(':table/lake/orders"');
    for (const { statement } of glueStatements(template)) expect(asArray(statement.Action).filter((a) => /DeleteTable|\*/.test(a))).toEqual([]);
  });

  it('cdk-nag stays clean', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);
  });

  it('grants no Glue access when no table is named, and refuses wildcards and malformed names', () => {
    expect(glueStatements(Template.fromStack(buildEtlRollbackApp(testApp())))).toEqual([]);
    expect(() => buildEtlRollbackApp(testApp({ protectedGlueTables: 'lake/*' }))).toThrow(/protectedGlueTables\[0\]/);
    expect(() => buildEtlRollbackApp(testApp({ protectedGlueTables: 'lake/orders,orders' }))).toThrow(/protectedGlueTables\[1\]/);
    expect(() => buildEtlRollbackApp(testApp({ protectedGlueTables: 'Lake/orders' }))).toThrow(/protectedGlueTables\[0\].*lowercase/);
  });
});
