import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { Effect, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { type BundlingOptions, NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { acknowledge, acknowledgeTracedNode22Function, iam5ResourceFinding } from '../nag.ts';

/** Repository root: entry files, the lock file and tsconfig.json are found from here. */
export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * One entry per Task of the state machines: the handler file `lambdas/<name>.ts`, the `${…}` name the definitions use
 * for its ARN, whether it runs long (adapters that list, copy or compare data), and whether it touches the protected
 * data (the data buckets and databases being rolled back).
 */
export const HANDLER_SPECS = [
  { name: 'begin-snapshot', substitution: 'BeginSnapshotFunctionArn', long: false, dataAccess: false },
  { name: 'capture-unit', substitution: 'CaptureUnitFunctionArn', long: true, dataAccess: true },
  { name: 'mark-in-place', substitution: 'MarkInPlaceFunctionArn', long: false, dataAccess: false },
  { name: 'seal-snapshot', substitution: 'SealSnapshotFunctionArn', long: false, dataAccess: false },
  { name: 'record-failure', substitution: 'RecordFailureFunctionArn', long: false, dataAccess: false },
  // Data access and the long timeout for a rollback to a time: its plan reads each unit's history (an s3-prefix's
  // versions, a database's recovery window) to resolve the derived deployment's restore points. It writes no data.
  { name: 'plan-rollback', substitution: 'PlanRollbackFunctionArn', long: true, dataAccess: true },
  { name: 'describe-changes', substitution: 'DescribeChangesFunctionArn', long: true, dataAccess: true },
  { name: 'acquire-lock', substitution: 'AcquireLockFunctionArn', long: false, dataAccess: false },
  { name: 'restore-unit', substitution: 'RestoreUnitFunctionArn', long: true, dataAccess: true },
  { name: 'restore-shard', substitution: 'RestoreShardFunctionArn', long: true, dataAccess: true },
  { name: 'verify-stage', substitution: 'VerifyStageFunctionArn', long: true, dataAccess: true },
  { name: 'finish-run', substitution: 'FinishRunFunctionArn', long: false, dataAccess: false },
  { name: 'release-lock', substitution: 'ReleaseLockFunctionArn', long: false, dataAccess: false },
  { name: 'check-window', substitution: 'CheckWindowFunctionArn', long: false, dataAccess: false },
  { name: 'check-cancel', substitution: 'CheckCancelFunctionArn', long: false, dataAccess: false },
  { name: 'request-approval', substitution: 'RequestApprovalFunctionArn', long: false, dataAccess: false },
  { name: 'pause-triggers', substitution: 'PauseTriggersFunctionArn', long: false, dataAccess: false },
  { name: 'resume-triggers', substitution: 'ResumeTriggersFunctionArn', long: false, dataAccess: false },
  { name: 'list-expired-deployments', substitution: 'ListExpiredDeploymentsFunctionArn', long: true, dataAccess: false },
  { name: 'release-deployment', substitution: 'ReleaseDeploymentFunctionArn', long: true, dataAccess: false },
  // Drills: no DataAccess (which may write the protected data); their own read-only and scratch grants (DrillAccess).
  { name: 'plan-drill', substitution: 'PlanDrillFunctionArn', long: false, dataAccess: false },
  { name: 'rehearse-unit', substitution: 'RehearseUnitFunctionArn', long: true, dataAccess: false },
  { name: 'verify-drill-stage', substitution: 'VerifyDrillStageFunctionArn', long: true, dataAccess: false },
  { name: 'cleanup-drill', substitution: 'CleanupDrillFunctionArn', long: true, dataAccess: false },
  { name: 'finish-drill', substitution: 'FinishDrillFunctionArn', long: false, dataAccess: false },
  { name: 'prepare-replay', substitution: 'PrepareReplayFunctionArn', long: false, dataAccess: false },
  { name: 'record-replay', substitution: 'RecordReplayFunctionArn', long: false, dataAccess: false },
  // Write freezes: no object access (FreezeAccess: the frozen buckets' policies, and the database secrets for the grants).
  { name: 'freeze-stage', substitution: 'FreezeStageFunctionArn', long: false, dataAccess: false },
  { name: 'lift-freezes', substitution: 'LiftFreezesFunctionArn', long: false, dataAccess: false },
] as const;

export type HandlerSpec = (typeof HANDLER_SPECS)[number];
export type HandlerName = HandlerSpec['name'];

const LONG_TIMEOUT = Duration.minutes(5);
const SHORT_TIMEOUT = Duration.seconds(30);

/**
 * ESM output still meets CommonJS dependencies (pg, parts of the SDK's dependency tree) that call `require`: give the
 * bundle a real one. The alias avoids clashing with anything esbuild emits.
 */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __etlRollbackCreateRequire } from 'node:module'; " +
  'const require = __etlRollbackCreateRequire(import.meta.url);';

/** How every handler is bundled (the task handlers and the trigger function alike). */
export const HANDLER_BUNDLING: BundlingOptions = {
  format: OutputFormat.ESM,
  target: 'node22',
  mainFields: ['module', 'main'],
  banner: ESM_REQUIRE_BANNER,
  minify: true,
  sourceMap: true,
  sourcesContent: false,
  tsconfig: join(PROJECT_ROOT, 'tsconfig.json'),
  // Bundle the AWS SDK v3 (setting externalModules replaces the default `@aws-sdk/*` exclusion): the code runs with
  // the SDK versions pinned in package-lock.json and exercised by the tests, not with whatever version the runtime
  // image carries that day. pg's optional native binding is never installed: keep it out.
  externalModules: ['pg-native'],
  forceDockerBundling: false,
};

export interface HandlersProps {
  readonly ledgerTable: ITable;
  readonly stateBucket: IBucket;
  /** @default RetentionDays.THREE_MONTHS */
  readonly logRetention?: RetentionDays;
}

export interface Handler {
  readonly spec: HandlerSpec;
  readonly fn: NodejsFunction;
  readonly role: Role;
}

/**
 * One Lambda function per Task handler, each with its own role (no managed policies), its own log group with a
 * retention, active tracing, and access to the ledger table and the state bucket. Access to the protected data is
 * granted separately (DataAccess), to the data-touching handlers only.
 */
export class Handlers extends Construct {
  readonly all: readonly Handler[];

  constructor(scope: Construct, id: string, props: HandlersProps) {
    super(scope, id);

    this.all = HANDLER_SPECS.map((spec) => this.createHandler(spec, props));
  }

  /** The handler whose ARN fills `${substitution}` in a definition, if any. */
  bySubstitution(substitution: string): Handler | undefined {
    return this.all.find((handler) => handler.spec.substitution === substitution);
  }

  byName(name: HandlerName): Handler {
    const handler = this.all.find((h) => h.spec.name === name);
    if (!handler) throw new Error(`unknown handler "${name}" (known: ${HANDLER_SPECS.map((s) => s.name).join(', ')})`);
    return handler;
  }

  get dataHandlers(): readonly Handler[] {
    return this.all.filter((handler) => handler.spec.dataAccess);
  }

  private createHandler(spec: HandlerSpec, props: HandlersProps): Handler {
    const entry = join(PROJECT_ROOT, 'lambdas', `${spec.name}.ts`);
    if (!existsSync(entry)) throw new Error(`handler "${spec.name}": entry file ${entry} does not exist`);

    const scope = new Construct(this, pascalCase(spec.name));

    const logGroup = new LogGroup(scope, 'Logs', {
      retention: props.logRetention ?? RetentionDays.THREE_MONTHS,
    });

    // An explicit role instead of the default one: the default attaches the AWSLambdaBasicExecutionRole managed
    // policy (logs:* on every log group); this role may write to its own log group only.
    const role = new Role(scope, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `etl-rollback ${spec.name} handler`,
    });
    logGroup.grantWrite(role);

    const fn = new NodejsFunction(scope, 'Function', {
      description: `etl-rollback: ${spec.name}`,
      entry,
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: 512,
      timeout: spec.long ? LONG_TIMEOUT : SHORT_TIMEOUT,
      tracing: Tracing.ACTIVE,
      role,
      logGroup,
      environment: {
        ETL_ROLLBACK_LEDGER_TABLE: props.ledgerTable.tableName,
        ETL_ROLLBACK_STATE_BUCKET: props.stateBucket.bucketName,
        POWERTOOLS_SERVICE_NAME: 'etl-rollback',
        POWERTOOLS_METRICS_NAMESPACE: 'EtlRollback',
        // Stack traces in the logs point at the TypeScript sources (the bundle ships its source map).
        NODE_OPTIONS: '--enable-source-maps',
      },
      bundling: HANDLER_BUNDLING,
    });

    // Ledger: read/write on the one table (no index ARNs exist; no KMS grants needed with the AWS managed key).
    props.ledgerTable.grantReadWriteData(role);

    // State bucket: list it, read and write objects (and their versions); no delete, no bucket configuration.
    const objects = props.stateBucket.arnForObjects('*');
    role.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'StateBucketList',
        effect: Effect.ALLOW,
        actions: ['s3:ListBucket', 's3:ListBucketVersions'],
        resources: [props.stateBucket.bucketArn],
      }),
    );
    role.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'StateBucketObjects',
        effect: Effect.ALLOW,
        actions: ['s3:GetObject', 's3:GetObjectVersion', 's3:PutObject', 's3:AbortMultipartUpload'],
        resources: [objects],
      }),
    );

    acknowledge(
      role,
      iam5ResourceFinding(role, objects),
      'Object-level actions on the objects of the one state bucket of this stack (`<bucket ARN>/*`); object keys are ' +
        'made at run time (pipeline/deployment/unit), so they cannot be listed in advance.',
    );
    acknowledgeTracedNode22Function(role, fn);

    return { spec, fn, role };
  }
}

function pascalCase(kebab: string): string {
  return kebab
    .split('-')
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}
