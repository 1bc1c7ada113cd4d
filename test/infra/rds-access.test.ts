import { Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type HandlerName } from '../../infra/constructs/handlers.ts';
import { PITR_COPY_TAG, RDS_CAPTURE_ACTIONS, RDS_PITR_COPY_REMOVE_ACTIONS, RDS_READ_ACTIONS, RDS_RESTORE_ACTIONS } from '../../infra/constructs/rds-access.ts';
import { buildEtlRollbackApp, readContext } from '../../infra/etl-rollback-app.ts';
import type { EtlRollbackStack } from '../../infra/stack.ts';
import { asArray, logicalId, testApp, type Json } from '../support/template.ts';

interface Statement {
  Sid?: string;
  Action: string | string[];
  Resource: unknown;
}


/** Every statement of every IAM policy, with the roles it is attached to; resources flattened to strings. */
function statements(template: Template) {
  return Object.values(template.findResources('AWS::IAM::Policy')).flatMap((resource) => {
    const props = (resource as { Properties: Json }).Properties;
    const roles = (props.Roles as { Ref: string }[]).map((r) => r.Ref).sort();
    return (props.PolicyDocument as { Statement: Statement[] }).Statement.map((statement) => ({
      roles,
      statement,
      resources: asArray(statement.Resource).map((r) => (typeof r === 'string' ? r : JSON.stringify(r))),
    }));
  });
}

const rdsStatements = (template: Template) => statements(template).filter((s) => asArray(s.statement.Action).some((a) => a.startsWith('rds:')));

describe('RDS access', () => {
  let stack: EtlRollbackStack;
  let template: Template;
  const roles = (names: HandlerName[]) => names.map((n) => logicalId(stack.handlers.byName(n).role)).sort();

  beforeAll(() => {
    const app = testApp({ protectedDbInstances: 'orders-db', protectedDbClusters: 'warehouse' });
    expect(readContext(app)).toMatchObject({ protectedDbInstances: ['orders-db'], protectedDbClusters: ['warehouse'] });
    stack = buildEtlRollbackApp(app);
    template = Template.fromStack(stack);
  });

  afterEach(() => vi.restoreAllMocks());

  it('reads: the data handlers may describe the named instance, cluster and etlrb- snapshots only', () => {
    const read = rdsStatements(template).filter((s) => s.statement.Sid === 'RdsRead');
    expect(read).toHaveLength(1);
    expect(read[0]!.roles).toEqual(roles(['capture-unit', 'describe-changes', 'plan-rollback', 'restore-shard', 'restore-unit', 'verify-stage']));
    expect(asArray(read[0]!.statement.Action).sort()).toEqual([...RDS_READ_ACTIONS].sort());
    const resources = read[0]!.resources.join(' ');
    for (const name of [':db:orders-db"', ':db:orders-db-*', ':db:warehouse"', ':db:warehouse-*', ':cluster:warehouse"', ':cluster:warehouse-*']) expect(resources).toContain(name);
    // Never a neighbour: `orders-db2` is not covered by `orders-db-*`.
    expect(resources).not.toContain(':db:orders-db*');
    expect(resources).toContain(':snapshot:etlrb-*');
    expect(resources).toContain(':cluster-snapshot:etlrb-*');
  });

  it('snapshots: only the capture handler, on the named sources and etlrb- snapshots', () => {
    const grants = rdsStatements(template).filter((s) => asArray(s.statement.Action).some((a) => /Create.*Snapshot/.test(a)));
    expect(grants).toHaveLength(1);
    expect(grants[0]!.roles).toEqual(roles(['capture-unit']));
    expect(asArray(grants[0]!.statement.Action).sort()).toEqual([...RDS_CAPTURE_ACTIONS].sort());
    expect(grants[0]!.resources.every((r) => /:(db:orders-db(-\*)?"|cluster:warehouse(-\*)?"|snapshot:etlrb-\*|cluster-snapshot:etlrb-\*)/.test(r))).toBe(true);
  });

  it('restores and renames: only the restore handler; no handler but release may delete anything in RDS', () => {
    // The release handler's ReleaseRds statement (delete snapshots and kept originals) is tested in test/infra/release.test.ts;
    // a drill's copies (restored, then deleted, by name <id>-drill-* and tag only) in test/infra/drill.test.ts.
    // The restore's own deletes of temporary point-in-time copies are tested below.
    const drill = (s: { statement: { Sid?: string } }) => /^DrillRds|^RdsRemovePointInTimeCopies$/.test(s.statement.Sid ?? '');
    const writes = rdsStatements(template).filter((s) => s.statement.Sid !== 'ReleaseRds' && !drill(s) && asArray(s.statement.Action).some((a) => /Restore|Modify|CreateDBInstance/.test(a)));
    expect(new Set(writes.flatMap((w) => w.roles))).toEqual(new Set(roles(['restore-unit'])));
    const main = writes.find((w) => w.statement.Sid === 'RdsRestore')!;
    expect(asArray(main.statement.Action).sort()).toEqual([...RDS_RESTORE_ACTIONS].sort());
    expect(main.resources.some((r) => r.includes(':db:orders-db-*'))).toBe(true);
    const groups = writes.find((w) => w.statement.Sid === 'RdsRestoreGroups')!;
    expect(asArray(groups.statement.Action).every((a) => /Restore|CreateDBInstance/.test(a))).toBe(true);
    for (const { statement, resources } of rdsStatements(template).filter((s) => s.statement.Sid !== 'ReleaseRds' && !drill(s))) {
      expect(asArray(statement.Action).filter((a) => /Delete|\*/.test(a))).toEqual([]);
      expect(resources).not.toContain('*');
    }
  });

  it('the restore handler may delete only temporary point-in-time copies: by their -pitr- names and the tag that proves them ours', () => {
    const removes = rdsStatements(template).filter((s) => s.statement.Sid === 'RdsRemovePointInTimeCopies');
    expect(removes).toHaveLength(1);
    expect(removes[0]!.roles).toEqual(roles(['restore-unit']));
    expect(asArray(removes[0]!.statement.Action).sort()).toEqual([...RDS_PITR_COPY_REMOVE_ACTIONS].sort());
    expect(removes[0]!.resources.every((r) => /:(db:(orders-db|warehouse)|cluster:warehouse)-pitr-\*/.test(r))).toBe(true);
    expect((removes[0]!.statement as unknown as { Condition: Json }).Condition).toEqual({ StringEquals: { [`aws:ResourceTag/${PITR_COPY_TAG}`]: 'pitr' } });
  });

  it('cdk-nag stays clean: each RDS wildcard is acknowledged with its reason, nothing else', () => {
    const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);

    vi.spyOn(Validations.prototype, 'acknowledge').mockImplementation(() => undefined);
    const bare = buildEtlRollbackApp(testApp({ protectedDbInstances: 'orders-db' }));
    const found = new AwsSolutionsChecks().validateScope(bare).violations.map((v) => v.ruleName);
    expect(found.some((id) => id.includes(':db:orders-db-*]'))).toBe(true);
    expect(found.some((id) => id.includes(':snapshot:etlrb-*]'))).toBe(true);
  });

  it('grants no RDS access when no instance or cluster is named, and refuses wildcards', () => {
    const plain = Template.fromStack(buildEtlRollbackApp(testApp()));
    expect(rdsStatements(plain)).toEqual([]);
    expect(() => buildEtlRollbackApp(testApp({ protectedDbInstances: 'orders*' }))).toThrow(/protectedDbInstances\[0\]/);
    expect(() => buildEtlRollbackApp(testApp({ protectedDbClusters: '*' }))).toThrow(/protectedDbClusters\[0\]/);
  });
});
