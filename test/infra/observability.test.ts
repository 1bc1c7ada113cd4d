import { readFileSync } from 'node:fs';
import { Duration } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_DENIED_ACTIONS } from '../../infra/constructs/audit.ts';
import { RDS_RELEASE_ACTIONS } from '../../infra/constructs/release.ts';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';
import { type EtlRollbackStack, STATE_MACHINE_FILES } from '../../infra/stack.ts';
import { asArray, logicalId, testApp, type Json } from '../support/template.ts';

interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource?: unknown;
  Principal?: unknown;
}

const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:etl/orders-db-AbCdEf';

/**
 * Actions AWS authorizes only on Resource "*" (no resource-level permissions), each with the reason. Any other action on
 * "*" fails the walk below.
 */
const STAR_ONLY_ACTIONS: Record<string, string> = {
  'xray:PutTraceSegments': 'X-Ray has no resource-level permissions (Lambda and Step Functions active tracing)',
  'xray:PutTelemetryRecords': 'X-Ray has no resource-level permissions',
  'xray:GetSamplingRules': 'X-Ray has no resource-level permissions',
  'xray:GetSamplingTargets': 'X-Ray has no resource-level permissions',
  'cloudwatch:PutMetricData': 'CloudWatch PutMetricData supports no resource ARN (only a cloudwatch:namespace condition)',
  'logs:CreateLogDelivery': 'CloudWatch Logs vended log delivery (Step Functions logging) supports only "*"',
  'logs:GetLogDelivery': 'vended log delivery supports only "*"',
  'logs:UpdateLogDelivery': 'vended log delivery supports only "*"',
  'logs:DeleteLogDelivery': 'vended log delivery supports only "*"',
  'logs:ListLogDeliveries': 'vended log delivery supports only "*"',
  'logs:PutResourcePolicy': 'vended log delivery writes the log group resource policy; supports only "*"',
  'logs:DescribeResourcePolicies': 'vended log delivery supports only "*"',
  'logs:DescribeLogGroups': 'vended log delivery lists log groups; supports only "*"',
};

/** Every statement of every IAM policy in the template: AWS::IAM::Policy, ManagedPolicy, and inline role policies. */
function iamStatements(template: Template): { where: string; statement: Statement }[] {
  const out: { where: string; statement: Statement }[] = [];
  for (const [id, resource] of Object.entries(template.toJSON().Resources as Record<string, { Type: string; Properties?: Json }>)) {
    const docs: unknown[] = [];
    if (resource.Type === 'AWS::IAM::Policy' || resource.Type === 'AWS::IAM::ManagedPolicy') docs.push(resource.Properties?.PolicyDocument);
    if (resource.Type === 'AWS::IAM::Role') for (const p of asArray(resource.Properties?.Policies as { PolicyDocument: unknown }[] | undefined)) docs.push(p.PolicyDocument);
    for (const doc of docs) for (const statement of asArray((doc as { Statement: Statement[] }).Statement)) out.push({ where: id, statement });
  }
  return out;
}

function bucketPolicyStatements(template: Template, bucketId: string): Statement[] {
  const policies = Object.values(template.findResources('AWS::S3::BucketPolicy')) as { Properties: { Bucket: { Ref: string }; PolicyDocument: { Statement: Statement[] } } }[];
  return policies.filter((p) => p.Properties.Bucket.Ref === bucketId).flatMap((p) => p.Properties.PolicyDocument.Statement);
}

describe('every IAM statement names its resources', () => {
  it.each([
    ['the default stack', {}],
    ['a stack with buckets, secrets, RDS and triggers', { protectedBuckets: 'orders-raw', databaseSecretArns: SECRET_ARN, protectedDbInstances: 'orders-db', pipelines: '[{"pipeline":"orders","alarmNames":["orders-late"]}]' }],
  ])('%s: no Allow on Resource "*" except actions AWS supports only on "*" (each with its reason)', (_name, context) => {
    const template = Template.fromStack(buildEtlRollbackApp(testApp(context)));
    const statements = iamStatements(template);
    expect(statements.length).toBeGreaterThan(20);
    const offending: string[] = [];
    for (const { where, statement } of statements) {
      if (statement.Effect !== 'Allow') continue;
      if (!asArray(statement.Resource).includes('*')) continue;
      for (const action of asArray(statement.Action)) if (!(action in STAR_ONLY_ACTIONS)) offending.push(`${where}: ${action} on "*"`);
    }
    expect(offending).toEqual([]);
    for (const reason of Object.values(STAR_ONLY_ACTIONS)) expect(reason.length).toBeGreaterThan(20);
  });
});

describe('audit, release and observability (template)', () => {
  let stack: EtlRollbackStack;
  let template: Template;
  let resources: Record<string, { Type: string; Properties: Json; DeletionPolicy?: string }>;

  beforeAll(() => {
    stack = buildEtlRollbackApp(testApp({ databaseSecretArns: SECRET_ARN, protectedDbInstances: 'orders-db', pipelines: '[{"pipeline":"orders","alarmNames":["orders-late"]}]' }));
    template = Template.fromStack(stack);
    resources = template.toJSON().Resources;
  });

  describe('audit bucket', () => {
    it('Object Lock in GOVERNANCE mode, 365 days by default, versioned, customer-managed KMS key with rotation, private, access-logged, retained', () => {
      const bucket = resources[logicalId(stack.audit.bucket)]!;
      expect(bucket.DeletionPolicy).toBe('Retain');
      expect(bucket.Properties).toMatchObject({
        ObjectLockEnabled: true,
        ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: 'GOVERNANCE', Days: 365 } } },
        VersioningConfiguration: { Status: 'Enabled' },
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            { ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: { 'Fn::GetAtt': [logicalId(stack.audit.key), 'Arn'] } }, BucketKeyEnabled: true },
          ],
        },
        PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
        LoggingConfiguration: { DestinationBucketName: { Ref: logicalId(stack.stateBucket.accessLogBucket) }, LogFilePrefix: 'audit-bucket/' },
      });
      const key = resources[logicalId(stack.audit.key)]!;
      expect(key.Type).toBe('AWS::KMS::Key');
      expect(key.Properties.EnableKeyRotation).toBe(true);
      expect(key.DeletionPolicy).toBe('Retain');
    });

    it('TLS only; the roles that run rollbacks are denied every delete and retention change by the bucket policy', () => {
      const statements = bucketPolicyStatements(template, logicalId(stack.audit.bucket));
      expect(statements).toContainEqual(expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }));
      const deny = statements.find((st) => st.Sid === 'RunRolesNeverDeleteOrShortenRetention')!;
      expect(deny.Effect).toBe('Deny');
      expect(asArray(deny.Action)).toEqual(expect.arrayContaining(['s3:DeleteObject*', 's3:PutObjectRetention', 's3:BypassGovernanceRetention']));
      expect(asArray(deny.Action).sort()).toEqual([...AUDIT_DENIED_ACTIONS].sort());
      const principals = asArray((deny.Principal as { AWS: unknown }).AWS);
      // Every task handler's role, and the stopped-run cleanup's (it writes reports too).
      const roles = [...stack.handlers.all.map((h) => h.role), stack.stoppedRuns.role].map((role) => ({ 'Fn::GetAtt': [logicalId(role), 'Arn'] }));
      expect(principals).toHaveLength(roles.length);
      expect(principals).toEqual(expect.arrayContaining(roles));
      expect(JSON.stringify(deny.Resource)).toContain(logicalId(stack.audit.bucket));
    });

    it('writers may put reports and records and use the key to encrypt; no IAM policy allows anything else on the audit bucket', () => {
      const bucketId = logicalId(stack.audit.bucket);
      const onAudit = iamStatements(template).filter(({ statement }) => JSON.stringify(statement.Resource ?? '').includes(bucketId));
      expect(onAudit.length).toBe(7); // describe-changes, finish-run, record-failure, seal-snapshot, release-deployment, finish-drill, the stopped-run cleanup
      for (const { statement } of onAudit) {
        expect(statement.Effect).toBe('Allow');
        expect(asArray(statement.Action)).toEqual(['s3:PutObject']);
        expect(JSON.stringify(statement.Resource)).toContain('/reports/*');
        expect(JSON.stringify(statement.Resource)).toContain('/deployments/*');
        expect(asArray(statement.Resource)).toHaveLength(2);
      }
      const keyUse = iamStatements(template).filter(({ statement }) => JSON.stringify(statement.Resource ?? '').includes(logicalId(stack.audit.key)));
      for (const { statement } of keyUse) expect(asArray(statement.Action)).toEqual(['kms:GenerateDataKey']);
    });

    it('honours the mode and retention props (COMPLIANCE, 30 days)', () => {
      const other = buildEtlRollbackApp(testApp(), { auditObjectLockMode: 'COMPLIANCE', auditRetention: Duration.days(30) });
      Template.fromStack(other).hasResourceProperties('AWS::S3::Bucket', {
        ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: 30 } } },
      });
      expect(() => buildEtlRollbackApp(testApp(), { auditRetention: Duration.hours(36) })).toThrow(/whole number of days/);
    });
  });

  describe('release', () => {
    it('the release machine is the file as written; a daily EventBridge Scheduler schedule starts it with a role that may start only it', () => {
      const machine = resources[logicalId(stack.release.stateMachine)]!;
      expect(machine.Properties.DefinitionString).toBe(readFileSync(STATE_MACHINE_FILES.release, 'utf8'));
      const schedule = resources[logicalId(stack.releaseSchedule.schedule)]!;
      expect(schedule.Type).toBe('AWS::Scheduler::Schedule');
      expect(schedule.Properties).toMatchObject({
        ScheduleExpression: 'cron(0 3 * * ? *)',
        ScheduleExpressionTimezone: 'UTC',
        Target: { Arn: { Ref: logicalId(stack.release.stateMachine) }, RoleArn: { 'Fn::GetAtt': [logicalId(stack.releaseSchedule.schedulerRole), 'Arn'] }, Input: '{}' },
      });
      const roleStatements = iamStatements(template).filter(({ statement }) => statement.Sid === 'StartRelease');
      expect(roleStatements).toHaveLength(1);
      expect(roleStatements[0]!.statement).toMatchObject({ Action: 'states:StartExecution', Resource: { Ref: logicalId(stack.release.stateMachine) } });
    });

    it("only the release handler may delete, and only restore-point objects of the state bucket, the named secrets' shadow tables and the named RDS resources", () => {
      const policy = resources[logicalId(stack.releaseSchedule.policy)]!;
      expect((policy.Properties.Roles as { Ref: string }[]).map((r) => r.Ref)).toEqual([logicalId(stack.handlers.byName('release-deployment').role)]);
      const statements = (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement;
      const objects = statements.find((st) => st.Sid === 'ReleaseRestorePointObjects')!;
      expect(asArray(objects.Action)).toEqual(['s3:DeleteObject', 's3:DeleteObjectVersion']);
      expect(objects.Resource).toEqual({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [logicalId(stack.stateBucket.bucket), 'Arn'] }, '/restore-points/*']] });
      expect(statements.find((st) => st.Sid === 'ReleaseDatabaseSecrets')).toMatchObject({ Action: 'secretsmanager:GetSecretValue', Resource: SECRET_ARN });
      const rds = statements.find((st) => st.Sid === 'ReleaseRds')!;
      expect(asArray(rds.Action)).toEqual(expect.arrayContaining(RDS_RELEASE_ACTIONS));
      expect(JSON.stringify(rds.Resource)).toContain(':db:orders-db');
      // No other statement in the stack deletes in S3 or RDS (the protected-data grants are the data handlers'; a drill's
      // cleanup deletes only its scratch copies, test/infra/drill.test.ts; a rollback to a time deletes only its own
      // tagged point-in-time copies, test/infra/rds-access.test.ts; a write freeze deletes only a bucket policy it
      // emptied, test/infra/freeze-access.test.ts).
      for (const { statement } of iamStatements(template)) {
        if (['ReleaseRestorePointObjects', 'ReleaseRds', 'ProtectedObjects', 'DrillDeleteScratchObjects', 'DrillRdsRemove', 'RdsRemovePointInTimeCopies', 'FrozenBucketPolicies'].includes(statement.Sid ?? '')) continue;
        expect(asArray(statement.Action).filter((a) => /^(s3|rds):Delete/.test(a))).toEqual([]);
      }
    });
  });

  describe('dashboard and alarms', () => {
    it('one dashboard: runs started/succeeded/failed, duration per stage, objects and rows restored, gate failures, time since last restore point', () => {
      const dashboards = template.findResources('AWS::CloudWatch::Dashboard');
      expect(Object.keys(dashboards)).toHaveLength(1);
      const body = JSON.stringify(Object.values(dashboards)[0]!.Properties.DashboardBody);
      for (const metric of ['RollbacksStarted', 'RollbacksSucceeded', 'RollbacksFailed', 'StageDuration', 'ObjectsRestored', 'RowsRestored', 'GateFailures', 'TimeSinceLastRestorePoint']) {
        expect(body, metric).toContain(metric);
      }
      expect(body).toContain('EtlRollback,Stage,service');
      expect(body).toContain('EtlRollback,pipeline,service');
    });

    it('alarms on a failed rollback, a failed rollback execution, a deploy without restore point, trigger dead letters, a failed release and a failed drill, each to the notifications topic', () => {
      const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')) as { Properties: Json }[];
      const byMetric = (name: string) => alarms.filter((a) => a.Properties.MetricName === name);
      const topic = [{ Ref: logicalId(stack.notifications.topic) }];
      const expectAlarm = (name: string, namespace: string, dimensions: unknown) => {
        const found = byMetric(name).find((a) => JSON.stringify(a.Properties.Dimensions) === JSON.stringify(dimensions));
        expect(found, `${namespace}/${name}`).toBeDefined();
        expect(found!.Properties).toMatchObject({
          Namespace: namespace,
          Threshold: 1,
          ComparisonOperator: 'GreaterThanOrEqualToThreshold',
          EvaluationPeriods: 1,
          TreatMissingData: 'notBreaching',
          AlarmActions: topic,
        });
      };
      expectAlarm('RollbacksFailed', 'EtlRollback', [{ Name: 'service', Value: 'etl-rollback' }]);
      expectAlarm('TriggerWithoutRestorePoint', 'EtlRollback', [{ Name: 'service', Value: 'etl-rollback' }]);
      expectAlarm('ExecutionsFailed', 'AWS/States', [{ Name: 'StateMachineArn', Value: { Ref: logicalId(stack.rollback.stateMachine) } }]);
      expectAlarm('ExecutionsFailed', 'AWS/States', [{ Name: 'StateMachineArn', Value: { Ref: logicalId(stack.release.stateMachine) } }]);
      expectAlarm('ApproximateNumberOfMessagesVisible', 'AWS/SQS', [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [logicalId(stack.triggers!.deadLetterQueue), 'QueueName'] } }]);
      expectAlarm('DrillFailed', 'EtlRollback', [{ Name: 'service', Value: 'etl-rollback' }]);
      expect(alarms).toHaveLength(6);
    });

    it('without triggers there is no dead-letter alarm', () => {
      const plain = Template.fromStack(buildEtlRollbackApp(testApp()));
      const names = Object.values(plain.findResources('AWS::CloudWatch::Alarm')).map((a) => (a as { Properties: Json }).Properties.MetricName);
      expect(names.sort()).toEqual(['DrillFailed', 'ExecutionsFailed', 'ExecutionsFailed', 'RollbacksFailed', 'TriggerWithoutRestorePoint']);
    });
  });
});
