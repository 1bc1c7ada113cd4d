import { type App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { type PipelineCapture, parseChangeCapture } from './constructs/change-capture.ts';
import { readFileSync } from 'node:fs';
import { type DrillScheduleConfig, drillsFromManifests, parseDrillSchedules } from './constructs/drill-schedules.ts';
import { type PipelineTriggerConfig, parsePipelineTriggers } from './constructs/triggers.ts';
import { EtlRollbackStack, type EtlRollbackStackProps } from './stack.ts';

/** The construct id of the one stack; the CloudFormation stack name defaults to it. */
export const STACK_ID = 'EtlRollbackStack';

export interface EtlRollbackContext {
  readonly protectedBuckets: string[];
  /** Buckets of s3-prefix units with `freeze: true` (`-c frozenBuckets=orders-lake`). */
  readonly frozenBuckets?: string[];
  readonly databaseSecretArns: string[];
  readonly protectedDbInstances?: string[];
  readonly protectedDbClusters?: string[];
  /** Glue tables of `glue-table` units (`-c protectedGlueTables=lake/orders,lake/items`). */
  readonly protectedGlueTables?: string[];
  /** Lambda functions of `custom` units' handlers (`-c customHandlerArns=arn:aws:lambda:eu-west-1:111122223333:function:orders-republish`). */
  readonly customHandlerArns?: string[];
  /** Pipelines' EventBridge rules a rollback may pause (`-c pausableRules=orders-load,etl/orders-late-files`). */
  readonly pausableRules?: string[];
  /** Pipelines' EventBridge Scheduler schedules a rollback may pause (`-c pausableSchedules=etl/orders-hourly`)… */
  readonly pausableSchedules?: string[];
  /** …and the roles those schedules run as (`-c scheduleTargetRoleArns=arn:aws:iam::111122223333:role/orders-scheduler`). */
  readonly scheduleTargetRoleArns?: string[];
  /** Pipelines' ETL state machines a rollback may replay (`-c replayStateMachines=arn:aws:states:…:stateMachine:orders-etl`). */
  readonly replayStateMachines?: string[];
  readonly stackName?: string;
  /** EventBridge triggers per pipeline (context `pipelines`: a JSON array, in cdk.json or `-c pipelines='[…]'`). */
  readonly pipelines?: PipelineTriggerConfig[];
  /** Change capture per pipeline (context `changeCapture`: `[{"pipeline","locations":[{"bucket","prefixes":[…]}]}]`). */
  readonly changeCapture?: PipelineCapture[];
  /** Scheduled drills per pipeline (context `drills`: a JSON array, `-c drills='[{"pipeline":"orders","schedule":"rate(7 days)"}]'`). */
  readonly drills?: DrillScheduleConfig[];
  /** Buckets manifests name as `drill.scratchBucket` (`-c drillScratchBuckets=orders-drill-scratch`). */
  readonly drillScratchBuckets?: string[];
}

/**
 * Reads the optional context: `protectedBuckets` and `databaseSecretArns` as a comma list (`-c protectedBuckets=a,b`)
 * or a JSON array (cdk.json), `stackName` as a string.
 */
export function readContext(app: App): EtlRollbackContext {
  const stackName = app.node.tryGetContext('stackName') as unknown;
  if (stackName !== undefined && (typeof stackName !== 'string' || stackName.trim() === '')) {
    throw new Error(`context stackName: expected a non-empty string, got ${JSON.stringify(stackName)}`);
  }
  return {
    protectedBuckets: listContext(app, 'protectedBuckets'),
    databaseSecretArns: listContext(app, 'databaseSecretArns'),
    ...optionalList('frozenBuckets', listContext(app, 'frozenBuckets')),
    ...optionalList('protectedDbInstances', listContext(app, 'protectedDbInstances')),
    ...optionalList('protectedDbClusters', listContext(app, 'protectedDbClusters')),
    ...optionalList('protectedGlueTables', listContext(app, 'protectedGlueTables')),
    ...optionalList('customHandlerArns', listContext(app, 'customHandlerArns')),
    ...optionalList('pausableRules', listContext(app, 'pausableRules')),
    ...optionalList('pausableSchedules', listContext(app, 'pausableSchedules')),
    ...optionalList('scheduleTargetRoleArns', listContext(app, 'scheduleTargetRoleArns')),
    ...optionalList('replayStateMachines', listContext(app, 'replayStateMachines')),
    ...(typeof stackName === 'string' ? { stackName: stackName.trim() } : {}),
    ...pipelinesContext(app),
    ...changeCaptureContext(app),
    ...drillsAndScratchBuckets(app),
  };
}

/**
 * Builds the etl-rollback app into `app`: the one stack, configured from context (props override context), and
 * cdk-nag's AwsSolutions checks as a validation plugin, so every synth fails on an unacknowledged finding.
 */
export function buildEtlRollbackApp(app: App, overrides: EtlRollbackStackProps = {}): EtlRollbackStack {
  const context = readContext(app);
  const stack = new EtlRollbackStack(app, STACK_ID, {
    description: 'etl-rollback: restore points before ETL deploys, staged and verified rollback',
    ...(context.stackName ? { stackName: context.stackName } : {}),
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
    terminationProtection: true,
    protectedBuckets: context.protectedBuckets,
    databaseSecretArns: context.databaseSecretArns,
    frozenBuckets: context.frozenBuckets ?? [],
    protectedDbInstances: context.protectedDbInstances ?? [],
    protectedDbClusters: context.protectedDbClusters ?? [],
    protectedGlueTables: context.protectedGlueTables ?? [],
    customHandlerArns: context.customHandlerArns ?? [],
    pausableRules: context.pausableRules ?? [],
    pausableSchedules: context.pausableSchedules ?? [],
    scheduleTargetRoleArns: context.scheduleTargetRoleArns ?? [],
    replayStateMachines: context.replayStateMachines ?? [],
    ...(context.pipelines ? { pipelines: context.pipelines } : {}),
    ...(context.changeCapture ? { changeCapture: context.changeCapture } : {}),
    ...(context.drills ? { drills: context.drills } : {}),
    ...(context.drillScratchBuckets ? { drillScratchBuckets: context.drillScratchBuckets } : {}),
    ...overrides,
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return stack;
}

/** `{ key: list }` when the list is not empty (so an app without RDS units reads the same context as before). */
function optionalList<K extends string>(key: K, list: string[]): Partial<Record<K, string[]>> {
  return list.length > 0 ? ({ [key]: list } as Partial<Record<K, string[]>>) : {};
}

function listContext(app: App, key: string): string[] {
  const value = app.node.tryGetContext(key) as unknown;
  if (value === undefined || value === null) return [];
  const items = typeof value === 'string' ? value.split(',') : value;
  if (!Array.isArray(items) || items.some((item) => typeof item !== 'string')) {
    throw new Error(`context ${key}: expected a comma-separated string or an array of strings, got ${JSON.stringify(value)}`);
  }
  return (items as string[]).map((item) => item.trim()).filter((item) => item !== '');
}

/** Context `pipelines`: a JSON array (cdk.json) or its JSON text (`-c pipelines='[…]'`), validated at synth. */
function pipelinesContext(app: App): { pipelines?: PipelineTriggerConfig[] } {
  let value = app.node.tryGetContext('pipelines') as unknown;
  if (value === undefined || value === null || value === '') return {};
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch (error) {
      throw new Error(`context pipelines: not valid JSON (${(error as Error).message}); expected e.g. [{"pipeline":"orders","alarmNames":["orders-errors"]}]`, {
        cause: error,
      });
    }
  }
  return { pipelines: parsePipelineTriggers(value, 'context pipelines') };
}

/** Context `changeCapture`: a JSON array (cdk.json) or its JSON text (`-c changeCapture='[…]'`), validated at synth. */
function changeCaptureContext(app: App): { changeCapture?: PipelineCapture[] } {
  let value = app.node.tryGetContext('changeCapture') as unknown;
  if (value === undefined || value === null || value === '') return {};
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch (error) {
      throw new Error(
        `context changeCapture: not valid JSON (${(error as Error).message}); expected e.g. [{"pipeline":"clicks","locations":[{"bucket":"lake","prefixes":["events/"]}]}]`,
        { cause: error },
      );
    }
  }
  return { changeCapture: parseChangeCapture(value, 'context changeCapture') };
}

/**
 * Drill schedules: context `manifests` (manifest files, comma list or array: each one's `drill` field), and context
 * `drills` (a JSON array, or its text: `-c drills='[…]'`) for pipelines whose manifests the stack is not given.
 * Validated at synth.
 */
function drillsContext(app: App): { drills?: DrillScheduleConfig[]; drillScratchBuckets?: string[] } {
  const files = listContext(app, 'manifests').map((path) => ({ path, text: readFileSync(path, 'utf8') }));
  const fromManifests = drillsFromManifests(files);
  const listed = listedDrills(app);
  const drills = [...fromManifests.drills, ...(listed ?? [])];
  return {
    ...(drills.length > 0 || listed ? { drills: parseDrillSchedules(drills, 'context drills') } : {}),
    ...(fromManifests.scratchBuckets.length > 0 ? { drillScratchBuckets: fromManifests.scratchBuckets } : {}),
  };
}

/** The drills and the scratch buckets they may write: those the manifests name, and those given in context. */
function drillsAndScratchBuckets(app: App): { drills?: DrillScheduleConfig[]; drillScratchBuckets?: string[] } {
  const { drills, drillScratchBuckets = [] } = drillsContext(app);
  const buckets = [...new Set([...drillScratchBuckets, ...listContext(app, 'drillScratchBuckets')])];
  return { ...(drills ? { drills } : {}), ...optionalList('drillScratchBuckets', buckets) };
}

function listedDrills(app: App): unknown[] | undefined {
  let value = app.node.tryGetContext('drills') as unknown;
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch (error) {
      throw new Error(`context drills: not valid JSON (${(error as Error).message}); expected e.g. [{"pipeline":"orders","schedule":"cron(0 3 ? * SUN *)"}]`, { cause: error });
    }
  }
  if (!Array.isArray(value)) return parseDrillSchedules(value, 'context drills');
  return value as unknown[];
}
