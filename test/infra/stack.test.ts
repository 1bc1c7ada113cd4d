import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Duration, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { Effect, PolicyStatement, Role } from 'aws-cdk-lib/aws-iam';
import { Bucket } from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { DATA_BUCKET_ACTIONS, DATA_OBJECT_ACTIONS } from '../../infra/constructs/data-access.ts';
import { HANDLER_SPECS, PROJECT_ROOT, type HandlerName } from '../../infra/constructs/handlers.ts';
import { composeDefinition, definitionPlaceholders } from '../../infra/constructs/workflow.ts';
import { buildEtlRollbackApp, readContext } from '../../infra/etl-rollback-app.ts';
import { type EtlRollbackStack, STATE_MACHINE_FILES } from '../../infra/stack.ts';

type Json = Record<string, unknown>;
interface CfnResource {
  Type: string;
  Properties: Json;
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
}
interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
}

const DATA_HANDLERS: HandlerName[] = ['capture-unit', 'describe-changes', 'plan-rollback', 'restore-unit', 'restore-shard', 'verify-stage'];
const NOTIFYING: HandlerName[] = ['plan-rollback', 'verify-stage', 'finish-run', 'record-failure', 'request-approval', 'finish-drill', 'mark-in-place', 'seal-snapshot'];
const LONG_RUNNING: HandlerName[] = [
  'plan-rollback',
  'capture-unit',
  'restore-unit',
  'restore-shard',
  'verify-stage',
  'describe-changes',
  'list-expired-deployments',
  'release-deployment',
  'rehearse-unit',
  'verify-drill-stage',
  'cleanup-drill',
];
/** The drill's handlers: a read-only grant on the protected buckets and the secrets of their own (test/infra/drill.test.ts). */
const DRILL_READERS: HandlerName[] = ['rehearse-unit', 'verify-drill-stage', 'cleanup-drill'];
const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:etl/orders-db-AbCdEf';

const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { app: string; context: Json };

/**
 * The app as `cdk synth` builds it (same builder, same cdk.json context), except that asset bundling is skipped
 * (`aws:cdk:bundling-stacks: []`): the template is identical apart from asset hashes, and a synth takes seconds.
 */
function testApp(context: Json = {}): App {
  return new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [], ...context } });
}

function resources(template: Template, type: string): Record<string, CfnResource> {
  return template.findResources(type) as Record<string, CfnResource>;
}

function logicalId(construct: IConstruct): string {
  const stack = Stack.of(construct);
  const child = construct.node.defaultChild ?? construct;
  return stack.resolve((child as unknown as { logicalId: string }).logicalId) as string;
}

function getAtt(construct: IConstruct): Json {
  return { 'Fn::GetAtt': [logicalId(construct), 'Arn'] };
}

function asArray<T>(value: T | T[]): T[] {
  return Array.isArray(value) ? value : [value];
}

/** Every Allow statement of every AWS::IAM::Policy, with the logical ids of the roles it is attached to. */
function policyStatements(template: Template): { policy: string; roles: string[]; statement: Statement }[] {
  return Object.entries(resources(template, 'AWS::IAM::Policy')).flatMap(([policy, resource]) => {
    const document = resource.Properties.PolicyDocument as { Statement: Statement[] };
    const roles = (resource.Properties.Roles as { Ref: string }[]).map((r) => r.Ref);
    return document.Statement.map((statement) => ({ policy, roles, statement }));
  });
}

/** Logical id of a handler's role, by handler name. */
function roleIds(stack: EtlRollbackStack, names: readonly HandlerName[]): string[] {
  return names.map((name) => logicalId(stack.handlers.byName(name).role)).sort();
}

describe('EtlRollbackStack', () => {
  let app: App;
  let stack: EtlRollbackStack;
  let template: Template;

  beforeAll(() => {
    app = testApp({
      protectedBuckets: 'orders-raw, arn:aws:s3:::orders-mart',
      databaseSecretArns: SECRET_ARN,
    });
    stack = buildEtlRollbackApp(app);
    template = Template.fromStack(stack);
  });

  describe('definitions', () => {
    it.each(Object.entries(STATE_MACHINE_FILES))('every ${…} in %s names a handler ARN', (_name, file) => {
      const text = readFileSync(file, 'utf8');
      expect(() => JSON.parse(text)).not.toThrow();
      const placeholders = [...text.matchAll(/\$\{([^}]*)\}/g)].map((m) => m[1]);
      expect(placeholders.length).toBeGreaterThan(0);
      const known = new Set<string>(HANDLER_SPECS.map((spec) => spec.substitution));
      const unresolved = placeholders.filter((name) => !known.has(name ?? ''));
      expect(unresolved, `unresolved placeholders in ${file}`).toEqual([]);
    });

    it('every handler is used by a definition and has its entry file', () => {
      const used = new Set(Object.values(STATE_MACHINE_FILES).flatMap((f) => definitionPlaceholders(readFileSync(f, 'utf8'))));
      for (const spec of HANDLER_SPECS) {
        expect(used.has(spec.substitution), `${spec.substitution} is not used by any definition`).toBe(true);
        expect(readFileSync(join(PROJECT_ROOT, 'lambdas', `${spec.name}.ts`), 'utf8')).toMatch(/export const handler\b/);
      }
    });

    it('refuses to synthesize a definition with a placeholder that names no handler', async () => {
      const { Workflow } = await import('../../infra/constructs/workflow.ts');
      const scratch = new Stack(new App(), 'Scratch');
      const file = join(PROJECT_ROOT, 'statemachines', 'snapshot.asl.json');
      expect(() => new Workflow(scratch, 'W', { name: 'w', definitionFile: file, resolveFunction: () => undefined })).toThrow(
        /no function for \$\{BeginSnapshotFunctionArn\}/,
      );
    });
  });

  describe('state machines', () => {
    it.each([
      ['snapshot', () => stack.snapshot, ['begin-snapshot', 'capture-unit', 'mark-in-place', 'seal-snapshot', 'record-failure']],
      [
        'rollback',
        () => stack.rollback,
        [
          'plan-rollback',
          'describe-changes',
          'check-window',
          'acquire-lock',
          'request-approval',
          'pause-triggers',
          'check-cancel',
          'freeze-stage',
          'restore-unit',
          'restore-shard',
          'verify-stage',
          'prepare-replay',
          'record-replay',
          'lift-freezes',
          'resume-triggers',
          'finish-run',
          'release-lock',
          'record-failure',
        ],
      ],
    ] as const)('%s: the file as written, every placeholder filled with its function ARN', (name, workflow, handlers) => {
      const machine = template.toJSON().Resources[logicalId(workflow().stateMachine)] as CfnResource;
      const props = machine.Properties;
      expect(props.StateMachineType).toBe('STANDARD');
      expect(props.TracingConfiguration).toEqual({ Enabled: true });
      expect(props.LoggingConfiguration).toMatchObject({ Level: 'ALL', IncludeExecutionData: false });

      const definition = props.DefinitionString as string;
      expect(typeof definition).toBe('string');
      // The file as written; a Distributed Map processor naming its DefinitionFile gets that file's states composed in.
      expect(definition).toBe(composeDefinition(readFileSync(STATE_MACHINE_FILES[name], 'utf8'), STATE_MACHINE_FILES[name]).definition);

      const substitutions = props.DefinitionSubstitutions as Record<string, unknown>;
      const expected = Object.fromEntries(
        handlers.map((h) => {
          const handler = stack.handlers.byName(h);
          return [handler.spec.substitution, getAtt(handler.fn)];
        }),
      );
      expect(substitutions).toEqual(expected);

      // What CloudFormation deploys: no ${…} of ours left, valid JSON, and every Task invokes one of these functions.
      const arnOf = (id: string) => `arn:aws:lambda:eu-west-1:123456789012:function:${id}`;
      let deployed = definition;
      for (const [key, value] of Object.entries(substitutions)) {
        deployed = deployed.split(`\${${key}}`).join(arnOf((value as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0]));
      }
      expect(deployed).not.toMatch(/\$\{/);
      const taskResources = collectTaskResources(JSON.parse(deployed));
      expect(taskResources.length).toBeGreaterThan(0);
      const functionArns = Object.values(substitutions).map((v) => arnOf((v as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0]));
      for (const resource of taskResources) expect(functionArns).toContain(resource);
      for (const value of Object.values(substitutions)) {
        const [id] = (value as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'];
        expect(template.toJSON().Resources[id].Type).toBe('AWS::Lambda::Function');
      }
    });

    it.each(['snapshot', 'rollback'] as const)('%s: the role may invoke exactly the functions its definition names', (name) => {
      const workflow = name === 'snapshot' ? stack.snapshot : stack.rollback;
      const roleId = logicalId(workflow.stateMachine.role);
      const statements = policyStatements(template).filter((s) => s.roles.includes(roleId));
      const lambdaStatements = statements.filter((s) => asArray(s.statement.Action).some((a) => a.startsWith('lambda:')));

      expect(lambdaStatements).toHaveLength(1);
      const invoke = lambdaStatements[0]!.statement;
      expect(asArray(invoke.Action)).toEqual(['lambda:InvokeFunction']);
      const granted = asArray(invoke.Resource);
      expect(granted).not.toContain('*');
      const expected = [...workflow.functions.values()].map((fn) => getAtt(fn));
      expect(granted).toHaveLength(expected.length);
      expect(granted).toEqual(expect.arrayContaining(expected));

      // The only "*" statement is CDK's log delivery + X-Ray one, without lambda or data actions.
      for (const { statement } of statements) {
        if (asArray(statement.Resource).includes('*')) {
          expect(asArray(statement.Action).every((a) => a.startsWith('logs:') || a.startsWith('xray:'))).toBe(true);
        }
      }
    });
  });

  describe('handlers', () => {
    it('one Node.js 22 arm64 function per handler, tracing on, own log group with retention', () => {
      const functions = resources(template, 'AWS::Lambda::Function');
      // One per task handler, and the stopped-run cleanup (a rule target, not a task).
      expect(Object.keys(functions)).toHaveLength(HANDLER_SPECS.length + 1);
      for (const resource of Object.values(functions)) {
        expect(resource.Properties.Runtime).toBe('nodejs22.x');
      }
      const logGroups = resources(template, 'AWS::Logs::LogGroup');
      for (const spec of HANDLER_SPECS) {
        const handler = stack.handlers.byName(spec.name);
        const props = functions[logicalId(handler.fn)]!.Properties;
        expect(props).toMatchObject({
          Handler: 'index.handler',
          Architectures: ['arm64'],
          MemorySize: 512,
          Timeout: LONG_RUNNING.includes(spec.name) ? 300 : 30,
          TracingConfig: { Mode: 'Active' },
          Role: getAtt(handler.role),
        });
        expect((props.Environment as { Variables: Json }).Variables).toEqual({
          ETL_ROLLBACK_LEDGER_TABLE: { Ref: logicalId(stack.ledger.table) },
          ETL_ROLLBACK_STATE_BUCKET: { Ref: logicalId(stack.stateBucket.bucket) },
          ETL_ROLLBACK_AUDIT_BUCKET: { Ref: logicalId(stack.audit.bucket) },
          POWERTOOLS_SERVICE_NAME: 'etl-rollback',
          POWERTOOLS_METRICS_NAMESPACE: 'EtlRollback',
          NODE_OPTIONS: '--enable-source-maps',
          // The handlers that announce what a run does get the notifications topic and the events bus.
          ...(NOTIFYING.includes(spec.name)
            ? { ETL_ROLLBACK_TOPIC_ARN: { Ref: logicalId(stack.notifications.topic) }, ETL_ROLLBACK_EVENT_BUS: 'default' }
            : {}),
          // The freezing function: the restore roles its bucket policy statement excepts.
          ...(spec.name === 'freeze-stage'
            ? { ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS: { 'Fn::Join': [',', (['restore-unit', 'restore-shard', 'verify-stage'] as const).map((n) => getAtt(stack.handlers.byName(n).role))] } }
            : {}),
        });
        const logGroupRef = (props.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref;
        expect(logGroups[logGroupRef]!.Properties.RetentionInDays).toBeGreaterThan(0);
      }
    });

    it('handler roles carry no managed policies', () => {
      const handlerRoles = roleIds(stack, HANDLER_SPECS.map((s) => s.name));
      const roles = resources(template, 'AWS::IAM::Role');
      for (const id of handlerRoles) expect(roles[id]!.Properties.ManagedPolicyArns).toBeUndefined();
    });

    it('no policy grants any s3, dynamodb, secretsmanager or lambda action on "*"', () => {
      for (const { statement } of policyStatements(template)) {
        if (!asArray(statement.Resource).includes('*')) continue;
        for (const action of asArray(statement.Action)) expect(action).toMatch(/^(logs|xray):/);
      }
    });
  });

  describe('data access', () => {
    const dataActions = [...DATA_BUCKET_ACTIONS, ...DATA_OBJECT_ACTIONS];
    const partition = (name: string) => ({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, `:s3:::${name}`]] });

    it('grants the S3 data actions on exactly the protected buckets, to the data handlers only', () => {
      const rawArn = stack.resolve(stack.dataAccess.bucketArns[0]);
      // A bucket given by name becomes an ARN in the stack's partition; one given as an ARN is used as is.
      expect([partition('orders-raw'), 'arn:aws:s3:::orders-raw']).toContainEqual(rawArn);

      // Statements naming a data bucket: exactly the two of the DataAccess policy, attached to the four data roles (and the
      // drill's read-only one, whose actions test/infra/drill.test.ts checks).
      const grants = policyStatements(template).filter((s) => s.statement.Sid !== 'DrillReadProtectedObjects' && /orders-(raw|mart)/.test(JSON.stringify(s.statement.Resource)));
      expect(grants.map((g) => g.statement.Sid).sort()).toEqual(['ProtectedBuckets', 'ProtectedObjects']);
      for (const grant of grants) expect(grant.roles.sort()).toEqual(roleIds(stack, DATA_HANDLERS));
      // Actions only data handling needs appear nowhere else.
      const dataOnly = dataActions.filter((a) => /Delete|GetBucketVersioning|GetLifecycleConfiguration/.test(a));
      // (The release handler's delete of restore-point objects in the state bucket is tested in test/infra/release.test.ts.)
      for (const { statement } of policyStatements(template)) {
        if (statement.Sid === 'ReleaseRestorePointObjects' || statement.Sid === 'DrillDeleteScratchObjects') continue;
        if (asArray(statement.Action).some((a) => dataOnly.includes(a))) expect(statement.Sid).toMatch(/^Protected/);
      }

      const buckets = grants.find((g) => g.statement.Sid === 'ProtectedBuckets')!.statement;
      expect(asArray(buckets.Action).sort()).toEqual([...DATA_BUCKET_ACTIONS].sort());
      expect(asArray(buckets.Resource)).toHaveLength(2);
      expect(asArray(buckets.Resource)).toEqual(expect.arrayContaining([rawArn, 'arn:aws:s3:::orders-mart']));

      const objects = grants.find((g) => g.statement.Sid === 'ProtectedObjects')!.statement;
      expect(asArray(objects.Action).sort()).toEqual([...DATA_OBJECT_ACTIONS].sort());
      expect(asArray(objects.Resource)).toHaveLength(2);
      expect(asArray(objects.Resource)).toEqual(
        expect.arrayContaining([stack.resolve(`${stack.dataAccess.bucketArns[0]}/*`), 'arn:aws:s3:::orders-mart/*']),
      );
    });

    it('grants GetSecretValue on exactly the named secrets, to the data handlers only', () => {
      // (Release drops shadow tables with the same secrets: its ReleaseDatabaseSecrets grant is tested in test/infra/release.test.ts.)
      const all = policyStatements(template).filter((s) => s.statement.Sid !== 'ReleaseDatabaseSecrets' && asArray(s.statement.Action).some((a) => a.startsWith('secretsmanager:')));
      // The drill's handlers read the same secrets (their scratch schema is made through them): the same action, the same ARNs.
      const drill = all.filter((g) => g.statement.Sid === 'DrillDatabaseSecrets');
      expect(drill.flatMap((g) => g.roles).sort()).toEqual(roleIds(stack, DRILL_READERS));
      for (const g of drill) expect([g.statement.Action, g.statement.Resource]).toEqual(['secretsmanager:GetSecretValue', SECRET_ARN]);
      // The write freeze's handlers revoke and grant back table privileges through the same secrets.
      const freeze = all.filter((g) => g.statement.Sid === 'FreezeDatabaseSecrets');
      // (and the stopped-run cleanup, which lifts the freezes of an execution stopped at once)
      expect(freeze.flatMap((g) => g.roles).sort()).toEqual([...roleIds(stack, ['freeze-stage', 'lift-freezes']), expect.stringMatching(/^StoppedRunsRole/)]);
      for (const g of freeze) expect(asArray(g.statement.Resource)).toEqual([SECRET_ARN]);
      const grants = all.filter((g) => g.statement.Sid !== 'DrillDatabaseSecrets' && g.statement.Sid !== 'FreezeDatabaseSecrets');
      expect(grants).toHaveLength(1);
      expect(asArray(grants[0]!.statement.Action)).toEqual(['secretsmanager:GetSecretValue']);
      expect(asArray(grants[0]!.statement.Resource)).toEqual([SECRET_ARN]);
      expect(grants[0]!.roles.sort()).toEqual(roleIds(stack, DATA_HANDLERS));
    });
  });

  describe('state bucket', () => {
    it('is versioned, KMS-encrypted, private, TLS-only, access-logged and retained', () => {
      const bucket = template.toJSON().Resources[logicalId(stack.stateBucket.bucket)] as CfnResource;
      expect(bucket.DeletionPolicy).toBe('Retain');
      expect(bucket.Properties).toMatchObject({
        VersioningConfiguration: { Status: 'Enabled' },
        BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms' } }] },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        LoggingConfiguration: { DestinationBucketName: { Ref: logicalId(stack.stateBucket.accessLogBucket) } },
      });
      template.hasResourceProperties('AWS::S3::BucketPolicy', {
        Bucket: { Ref: logicalId(stack.stateBucket.bucket) },
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    });

    it('never expires noncurrent versions sooner than the restore-point retention (default 30 days)', () => {
      const bucket = template.toJSON().Resources[logicalId(stack.stateBucket.bucket)] as CfnResource;
      const rules = (bucket.Properties.LifecycleConfiguration as { Rules: Json[] }).Rules;
      for (const rule of rules) {
        expect(rule.ExpirationInDays, 'current versions are never expired').toBeUndefined();
        const noncurrent = rule.NoncurrentVersionExpiration as { NoncurrentDays: number } | undefined;
        if (noncurrent) expect(noncurrent.NoncurrentDays).toBeGreaterThanOrEqual(30);
        expect(rule.NoncurrentVersionExpirationInDays).toBeUndefined();
      }
      expect(rules.some((r) => r.NoncurrentVersionExpiration)).toBe(true);
    });
  });

  describe('ledger', () => {
    it('pk/sk strings, on-demand, TTL on expiresAt, PITR, encrypted, retained', () => {
      const tables = resources(template, 'AWS::DynamoDB::Table');
      expect(Object.keys(tables)).toHaveLength(1);
      const table = Object.values(tables)[0]!;
      expect(table.DeletionPolicy).toBe('Retain');
      expect(table.Properties).toMatchObject({
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        AttributeDefinitions: expect.arrayContaining([
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ]),
        BillingMode: 'PAY_PER_REQUEST',
        TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        SSESpecification: { SSEEnabled: true },
        DeletionProtectionEnabled: true,
      });
    });
  });

  it('outputs the state machine ARNs, the ledger table name and the state bucket name', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs.SnapshotStateMachineArn!.Value).toEqual({ Ref: logicalId(stack.snapshot.stateMachine) });
    expect(outputs.RollbackStateMachineArn!.Value).toEqual({ Ref: logicalId(stack.rollback.stateMachine) });
    expect(outputs.LedgerTableName!.Value).toEqual({ Ref: logicalId(stack.ledger.table) });
    expect(outputs.StateBucketName!.Value).toEqual({ Ref: logicalId(stack.stateBucket.bucket) });
  });

  describe('cdk-nag AwsSolutions', () => {
    it('reports no unacknowledged finding, errors or warnings', () => {
      const report = new AwsSolutionsChecks(undefined, { verbose: true }).validateScope(stack);
      expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join(', ')}`)).toEqual([]);
      expect(report.success).toBe(true);
    });

    it('runs on synth as a validation plugin, and the app synthesizes', () => {
      expect(() => app.synth({ force: true })).not.toThrow();
    });

    it('every acknowledgment names one rule or finding and says why', () => {
      const acknowledgments = collectAcknowledgments(stack);
      expect(acknowledgments.length).toBeGreaterThan(0);
      for (const { id, reason } of acknowledgments) {
        expect(id).toMatch(/^AwsSolutions-[A-Z]+\d+(\[.+\])?$/);
        expect(id).not.toBe('AwsSolutions-IAM5'); // only granular IAM5 findings, never the whole rule
        expect(reason.length).toBeGreaterThan(40);
      }
      // None at stack or app level.
      expect(acknowledgments.filter((a) => a.path === stack.node.path || a.path === '')).toEqual([]);
    });
  });
});

describe('EtlRollbackStack without protected buckets or secrets', () => {
  it('grants no data-bucket or secret access at all (no "*" fallback), and honours the retention prop', () => {
    const app = testApp();
    expect(readContext(app)).toEqual({ protectedBuckets: [], databaseSecretArns: [] });
    const stack = buildEtlRollbackApp(app, { restorePointRetention: Duration.days(45) });
    const template = Template.fromStack(stack);

    expect(stack.dataAccess.policy).toBeUndefined();
    for (const { statement } of policyStatements(template)) {
      // Only release deletes, and only restore-point objects of the state bucket (test/infra/release.test.ts); and a
      // drill's cleanup, only its scratch copies under drills/ (test/infra/drill.test.ts).
      if (statement.Sid === 'ReleaseRestorePointObjects' || statement.Sid === 'DrillDeleteScratchObjects') continue;
      // No literal S3 ARN at all (the state bucket is referenced by GetAtt), no "*" S3 grant, no secret, no delete.
      expect(JSON.stringify(statement.Resource)).not.toContain(':s3:::');
      for (const action of asArray(statement.Action)) {
        expect(action).not.toMatch(/^secretsmanager:|^s3:Delete|^s3:GetBucketVersioning|^s3:GetLifecycleConfiguration/);
        if (action.startsWith('s3:')) expect(asArray(statement.Resource)).not.toContain('*');
      }
    }
    template.hasResourceProperties('AWS::S3::Bucket', {
      VersioningConfiguration: { Status: 'Enabled' },
      LifecycleConfiguration: { Rules: Match.arrayWith([Match.objectLike({ NoncurrentVersionExpiration: { NoncurrentDays: 45 } })]) },
    });
  });

  it('takes the CloudFormation stack name from context', () => {
    const stack = buildEtlRollbackApp(testApp({ stackName: 'etl-rollback-dev' }));
    expect(stack.stackName).toBe('etl-rollback-dev');
    expect(stack.terminationProtection).toBe(true);
  });

  it('rejects a wildcard or malformed bucket and secret', () => {
    expect(() => buildEtlRollbackApp(testApp({ protectedBuckets: '*' }))).toThrow(/protectedBuckets\[0\]/);
    expect(() => buildEtlRollbackApp(testApp({ databaseSecretArns: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:*' }))).toThrow(
      /databaseSecretArns\[0\]/,
    );
  });
});

describe('cdk-nag catches what is not acknowledged', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('without the acknowledgments, exactly the acknowledged findings are reported', () => {
    const acknowledged = collectAcknowledgments(
      buildEtlRollbackApp(testApp({ protectedBuckets: 'orders-raw', databaseSecretArns: SECRET_ARN })),
    ).map((a) => a.id);

    vi.spyOn(Validations.prototype, 'acknowledge').mockImplementation(() => undefined);
    const bare = buildEtlRollbackApp(testApp({ protectedBuckets: 'orders-raw', databaseSecretArns: SECRET_ARN }));
    const report = new AwsSolutionsChecks().validateScope(bare);

    expect(report.success).toBe(false);
    const found = report.violations.map((v) => v.ruleName);
    expect(new Set(found)).toEqual(new Set(acknowledged));
    expect(found).toContain('AwsSolutions-L1');
    expect(found.some((id) => id.startsWith('AwsSolutions-IAM5[Resource::') && id.endsWith(':s3:::orders-raw/*]'))).toBe(true);
    expect(report.violations.find((v) => v.ruleName === 'AwsSolutions-L1')!.violatingResources).toHaveLength(HANDLER_SPECS.length + 1); // + the stopped-run cleanup
  });

  it('a non-compliant resource and an unlisted wildcard fail the synth', () => {
    const app = testApp();
    const stack = buildEtlRollbackApp(app);
    new Bucket(stack, 'UnloggedPlainBucket');
    stack.handlers.byName('finish-run').role.addToPrincipalPolicy(
      new PolicyStatement({ effect: Effect.ALLOW, actions: ['s3:GetObject'], resources: ['arn:aws:s3:::someone-elses-bucket/*'] }),
    );
    const loose = new Role(stack, 'LooseRole', { assumedBy: stack.handlers.byName('finish-run').role });
    loose.addToPrincipalPolicy(new PolicyStatement({ actions: ['s3:*'], resources: ['*'] }));

    const report = new AwsSolutionsChecks().validateScope(stack);
    const found = report.violations.map((v) => v.ruleName);
    expect(found).toEqual(
      expect.arrayContaining([
        'AwsSolutions-S1',
        'AwsSolutions-S10',
        'AwsSolutions-IAM5[Resource::arn:aws:s3:::someone-elses-bucket/*]',
        'AwsSolutions-IAM5[Action::s3:*]',
        'AwsSolutions-IAM5[Resource::*]',
      ]),
    );
    expect(() => app.synth()).toThrow(/AwsSolutions-S10/);
  });
});

/**
 * The function every Task state invokes, nested Map iterators included: its `Resource`, or for the Lambda callback
 * integration (`lambda:invoke.waitForTaskToken`, the approval) its `Parameters.FunctionName`.
 */
function collectTaskResources(node: unknown): string[] {
  if (Array.isArray(node)) return node.flatMap(collectTaskResources);
  if (typeof node !== 'object' || node === null) return [];
  const record = node as Json;
  const callback = record.Resource === 'arn:aws:states:::lambda:invoke.waitForTaskToken';
  const fn = callback ? (record.Parameters as Json | undefined)?.FunctionName : record.Resource;
  // "Replay pipeline" starts another state machine (granted by ReplayAccess, see replay-access.test.ts), not a function.
  const startsExecution = record.Resource === 'arn:aws:states:::states:startExecution.sync:2';
  const own = record.Type === 'Task' && typeof fn === 'string' && !startsExecution ? [fn] : [];
  return [...own, ...Object.values(record).flatMap(collectTaskResources)];
}

function collectAcknowledgments(root: IConstruct): { path: string; id: string; reason: string }[] {
  return root.node.findAll().flatMap((construct) =>
    construct.node.metadata
      .filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
      .flatMap((entry) =>
        Object.entries(entry.data as Record<string, string>).map(([id, reason]) => ({
          path: construct.node.path,
          id: id.replace(/^annotation::/i, ''),
          reason: typeof reason === 'string' ? reason : JSON.stringify(reason),
        })),
      ),
  );
}
