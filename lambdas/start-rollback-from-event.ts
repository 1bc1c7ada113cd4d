import { SFNClient } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import { parseInput } from '../core/workflow/requests.ts';
import { startRollbackFromEvent, triggerInputSchema } from '../core/workflow/trigger.ts';
import { logger, MetricUnit, metrics, taskHandler } from './task.ts';

/**
 * "Start rollback from event": the target of the EventBridge trigger rules (not a state machine task). The rule sends
 * `{pipeline, event}`; the core resolves the deployment and starts the rollback machine at most once per attempt.
 */
const env = parseInput(
  z.object({
    ETL_ROLLBACK_ROLLBACK_STATE_MACHINE_ARN: z
      .string()
      .regex(/^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/, 'must be the ARN of the rollback state machine'),
  }),
  process.env,
  'environment',
);

const sfn = new SFNClient({ maxAttempts: 6, retryMode: 'adaptive' });

export const handler = taskHandler('start-rollback-from-event', triggerInputSchema, (deps, input) =>
  startRollbackFromEvent(
    {
      ledger: deps.ledger,
      sfn,
      rollbackStateMachineArn: env.ETL_ROLLBACK_ROLLBACK_STATE_MACHINE_ARN,
      now: deps.now,
      log: {
        info: (message, extra) => logger.info(message, extra ?? {}),
        warn: (message, extra) => logger.warn(message, extra ?? {}),
        error: (message, extra) => logger.error(message, extra ?? {}),
      },
      metric: (name) => metrics.addMetric(name, MetricUnit.Count, 1),
    },
    input,
  ),
);
