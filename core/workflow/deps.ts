import type { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import type { GlueClient } from '@aws-sdk/client-glue';
import type { RDSClient } from '@aws-sdk/client-rds';
import type { SchedulerClient } from '@aws-sdk/client-scheduler';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { AdapterContext, Log } from '../adapters/types.ts';
import type { CustomInvoker } from '../adapters/custom.ts';
import type { Ledger } from '../ledger/ledger.ts';
import { StateStore, stateKeys } from '../runtime/state-store.ts';
import { validateManifest } from '../manifest/load.ts';
import type { Manifest, Unit } from '../manifest/schema.ts';
import { mysqlConnector, postgresConnector } from '../runtime/connections.ts';
import { RestorePointMissingError } from '../errors.ts';
import type { Notifier } from './notify.ts';

/** What the workflow steps need, passed in by the handler, the CLI or a test. */
export interface WorkflowDeps {
  ledger: Ledger;
  s3: S3Client;
  rds: RDSClient;
  glue: GlueClient;
  stateBucket: string;
  secrets?: SecretsManagerClient;
  /** EventBridge: pauses and resumes the pipeline's rules named in the manifest's policy. */
  events?: EventBridgeClient;
  /** EventBridge Scheduler: pauses and resumes the pipeline's schedules named in the manifest's policy. */
  scheduler?: SchedulerClient;
  /** Where rollback notifications go (SNS, EventBridge); undefined: none are sent. */
  notifier?: Notifier;
  /**
   * How database connectors are made from the manifest's connections (default: postgresConnector, mysqlConnector).
   * Whoever runs the steps in-process may wrap them (to put faults into sessions, to count statements).
   */
  connectors?: {
    postgres: typeof postgresConnector;
    mysql: typeof mysqlConnector;
  };
  /** Calls `custom` units' handlers (core/adapters/custom.ts): a Lambda invoker in AWS, the CLI's module invoker locally. */
  invokeCustom?: CustomInvoker;
  /**
   * The principal ARNs the restore writes as (the restore handlers' roles in AWS): excepted from an s3-prefix unit's
   * write freeze. Empty or absent: an s3-prefix freeze is refused, since it would refuse the restore's own writes.
   */
  freezePrincipals?: string[];
  now(): Date;
  log: Log;
}

export function stateStore(deps: WorkflowDeps): StateStore {
  return new StateStore(deps.s3, deps.stateBucket);
}

/** The manifest as it was when the deployment's restore points were taken. */
export async function deployedManifest(deps: WorkflowDeps, pipeline: string, deploymentId: string): Promise<Manifest> {
  const key = stateKeys.manifest(pipeline, deploymentId);
  const raw = await stateStore(deps).getJson<unknown>(key);
  if (raw === undefined) {
    throw new RestorePointMissingError(`the manifest of deployment "${deploymentId}" of pipeline "${pipeline}" is missing from s3://${deps.stateBucket}/${key}`);
  }
  return validateManifest(raw, `s3://${deps.stateBucket}/${key}`);
}

export function unitOf(manifest: Manifest, unitId: string): Unit {
  const unit = manifest.units.find((u) => u.id === unitId);
  if (!unit) throw new RestorePointMissingError(`unit "${unitId}" is not in the manifest of pipeline "${manifest.pipeline}" (known: ${manifest.units.map((u) => u.id).join(', ')})`);
  return unit;
}

/** The context an adapter runs in. Adapters open and end their own database connections through it. */
export function adapterContext(
  deps: WorkflowDeps,
  manifest: Manifest,
  ids: { deploymentId: string; runId?: string; unitId: string },
): AdapterContext {
  return {
    pipeline: manifest.pipeline,
    deploymentId: ids.deploymentId,
    runId: ids.runId,
    s3: deps.s3,
    rds: deps.rds,
    glue: deps.glue,
    stateBucket: deps.stateBucket,
    postgres: (deps.connectors?.postgres ?? postgresConnector)(manifest.connections, deps.secrets),
    mysql: (deps.connectors?.mysql ?? mysqlConnector)(manifest.connections, deps.secrets),
    retentionDays: manifest.retention.days,
    ...(deps.invokeCustom ? { invokeCustom: deps.invokeCustom } : {}),
    now: deps.now,
    log: deps.log,
  };
}

/** A Step Functions `Catch` result: `{Error, Cause}`; Cause is a Lambda error JSON in AWS, plain text locally. */
export interface CaughtError {
  Error?: string;
  Cause?: string;
}

export function summarizeCaught(error: CaughtError | undefined): { name: string; message: string } {
  const name = error?.Error ?? 'Error';
  let message = error?.Cause ?? '';
  try {
    const parsed = JSON.parse(message) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === 'string') message = parsed.errorMessage;
  } catch {
    /* plain text cause */
  }
  return { name, message };
}
