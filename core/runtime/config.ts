import { z } from 'zod';

const flag = z
  .enum(['true', 'false', '1', '0', ''])
  .optional()
  .transform((v) => v === 'true' || v === '1');

/**
 * Runtime configuration, read from the environment once by whoever wires the clients (a handler at module
 * load, the CLI at start). Endpoints are not here: the AWS SDK reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE>.
 */
export const runtimeConfigSchema = z.object({
  ETL_ROLLBACK_LEDGER_TABLE: z.string().min(3).default('etl-rollback-ledger'),
  ETL_ROLLBACK_STATE_BUCKET: z.string().min(3).default('etl-rollback-state'),
  /** Path-style S3 addressing, for S3-compatible endpoints that have no virtual-host DNS. */
  ETL_ROLLBACK_S3_FORCE_PATH_STYLE: flag,
  /** SNS topic for rollback notifications. Unset (local runs): no messages are sent. */
  ETL_ROLLBACK_TOPIC_ARN: z
    .string()
    .regex(/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$/, 'must be an SNS topic ARN')
    .optional()
    .or(z.literal('').transform(() => undefined)),
  /** Event bus for the rollback's own events (`Rollback Started`, …, source etl.rollback). */
  ETL_ROLLBACK_EVENT_BUS: z.string().min(1).default('default'),
});

export interface RuntimeConfig {
  ledgerTable: string;
  stateBucket: string;
  s3ForcePathStyle: boolean;
  topicArn?: string;
  eventBus: string;
}

export function readRuntimeConfig(env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const parsed = runtimeConfigSchema.parse(env);
  return {
    ledgerTable: parsed.ETL_ROLLBACK_LEDGER_TABLE,
    stateBucket: parsed.ETL_ROLLBACK_STATE_BUCKET,
    s3ForcePathStyle: parsed.ETL_ROLLBACK_S3_FORCE_PATH_STYLE,
    ...(parsed.ETL_ROLLBACK_TOPIC_ARN ? { topicArn: parsed.ETL_ROLLBACK_TOPIC_ARN } : {}),
    eventBus: parsed.ETL_ROLLBACK_EVENT_BUS,
  };
}
