import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { GlueClient } from '@aws-sdk/client-glue';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { SchedulerClient } from '@aws-sdk/client-scheduler';
import { SNSClient } from '@aws-sdk/client-sns';
import { RDSClient } from '@aws-sdk/client-rds';
import { S3Client } from '@aws-sdk/client-s3';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { Ledger } from '../core/ledger/ledger.ts';
import { readRuntimeConfig } from '../core/runtime/config.ts';
import { parseInput } from '../core/workflow/requests.ts';
import type { WorkflowDeps } from '../core/workflow/deps.ts';
import type { AuditDeps } from '../core/report/audit.ts';
import { awsNotifier } from '../core/workflow/notify.ts';
import { lambdaInvoker } from '../core/runtime/custom-invoker.ts';

/**
 * Wiring shared by every task handler: configuration parsed once, SDK clients built once per container,
 * Powertools logger and metrics. Endpoints come from the SDK's own AWS_ENDPOINT_URL* variables.
 */
const config = readRuntimeConfig();
/** The audit bucket (Object Lock, KMS) for reports and records; unset (local runs): they go to the state bucket. */
const auditEnv = parseInput(
  z.object({ ETL_ROLLBACK_AUDIT_BUCKET: z.string().min(3).optional().or(z.literal('').transform(() => undefined)) }),
  process.env,
  'environment',
);
/**
 * The roles the restore writes as (restore-unit, restore-shard, check-frozen-stage), comma-separated: excepted from the
 * bucket policy statement of an s3-prefix write freeze. Set by the stack; unset, an s3-prefix freeze is refused.
 */
const freezeEnv = parseInput(z.object({ ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS: z.string().optional() }), process.env, 'environment');
const freezePrincipals = (freezeEnv.ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS ?? '')
  .split(',')
  .map((arn) => arn.trim())
  .filter((arn) => arn.length > 0);
export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'etl-rollback' });
export const metrics = new Metrics({ namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'EtlRollback', serviceName: 'etl-rollback' });
export { MetricUnit };

const retry = { maxAttempts: 6, retryMode: 'adaptive' as const };
const s3 = new S3Client({ ...retry, forcePathStyle: config.s3ForcePathStyle });
const dynamo = new DynamoDBClient(retry);
const secrets = new SecretsManagerClient(retry);
const rds = new RDSClient(retry);
const glue = new GlueClient(retry);
const events = new EventBridgeClient(retry);
const scheduler = new SchedulerClient(retry);
const sns = new SNSClient(retry);
// custom units' handlers: throttling and service errors retried by the SDK (standard mode), never a function error.
const lambda = new LambdaClient({ maxAttempts: 3 });

export const deps: WorkflowDeps & AuditDeps = {
  ledger: new Ledger(dynamo, config.ledgerTable),
  ...(auditEnv.ETL_ROLLBACK_AUDIT_BUCKET ? { auditBucket: auditEnv.ETL_ROLLBACK_AUDIT_BUCKET } : {}),
  s3,
  rds,
  glue,
  stateBucket: config.stateBucket,
  secrets,
  events,
  scheduler,
  // Messages only when a topic is configured (ETL_ROLLBACK_TOPIC_ARN); events on ETL_ROLLBACK_EVENT_BUS.
  notifier: awsNotifier({ sns, topicArn: config.topicArn, events, eventBus: config.eventBus }),
  invokeCustom: lambdaInvoker(lambda),
  freezePrincipals,
  now: () => new Date(),
  log: {
    info: (message, extra) => (extra ? logger.info(message, extra) : logger.info(message)),
    warn: (message, extra) => (extra ? logger.warn(message, extra) : logger.warn(message)),
  },
};

/** Keys that identify the work in every log line, when the event carries them. */
const PERSISTENT_KEYS = ['pipeline', 'deploymentId', 'runId', 'unitId'] as const;

/**
 * A Step Functions task handler: validates the event with its schema, appends the identifying keys to the
 * logger, calls one core function, returns its plain result. Errors keep their `name`, which the state
 * machine's Catch matches on.
 */
export function taskHandler<S extends z.ZodType, R>(
  name: string,
  schema: S,
  run: (deps: WorkflowDeps, input: z.infer<S>) => Promise<R>,
  /** Identifying keys the input carries under other names (the plan's run id is the execution name). */
  logKeys?: (input: z.infer<S>) => Partial<Record<(typeof PERSISTENT_KEYS)[number], string>>,
) {
  const build = (wired: WorkflowDeps) =>
    middy(async (event: unknown, _context: Context): Promise<R> => {
      const input = parseInput(schema, event, `${name} input`);
      const keys: Record<string, unknown> = { ...(logKeys?.(input) ?? {}) };
      // The keys at the top of the input, or inside an execution's request (Register deployment, Plan rollback).
      const sources = [input, (input as { request?: unknown }).request].filter((v): v is Record<string, unknown> => typeof v === 'object' && v !== null);
      for (const k of PERSISTENT_KEYS) {
        for (const source of sources) {
          const v = source[k];
          if (typeof v === 'string' && keys[k] === undefined) keys[k] = v;
        }
      }
      logger.appendKeys(keys);
      try {
        return await run(wired, input);
      } finally {
        // Only tasks that count something publish (an empty EMF blob per invocation is noise and cost).
        if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
      }
    }).use(injectLambdaContext(logger, { resetKeys: true }));
  /**
   * The same handler with some of its dependencies replaced (the local engine's clock, for one): dependency
   * injection for whoever runs the handler in-process; Lambda uses the default wiring.
   */
  const withDeps = (patch: Partial<WorkflowDeps>) => build({ ...deps, ...patch });
  return Object.assign(build(deps), { withDeps });
}

/** Input of tasks that act on a run. */
export const runIds = z.object({ runId: z.string().min(1), pipeline: z.string().min(1), deploymentId: z.string().min(1) });
/** Input of tasks that act on a deployment. */
export const deploymentIds = z.object({ pipeline: z.string().min(1), deploymentId: z.string().min(1) });
/** A Step Functions Catch result. */
export const caught = z.object({ Error: z.string().optional(), Cause: z.string().optional() }).optional();
