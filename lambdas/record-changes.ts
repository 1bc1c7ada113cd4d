import { z } from 'zod';
import { recordChanges } from '../core/workflow/change-capture.ts';
import { MetricUnit, metrics, taskHandler } from './task.ts';

/**
 * "Record changes": consumes the change-capture queue (SQS event source, partial batch responses). Each message is
 * `{pipeline, event}` from a capture rule; the core appends S3 changes to the deployments' change logs and closes
 * windows on `Deployment Completed`. Messages it could not handle are answered as failures: SQS redelivers them, then
 * moves them to the dead-letter queue.
 */
const sqsBatchSchema = z.object({
  Records: z.array(z.object({ messageId: z.string().min(1), body: z.string() })),
});

export const handler = taskHandler('record-changes', sqsBatchSchema, async (deps, input) => {
  const result = await recordChanges(
    deps,
    input.Records.map((r) => ({ id: r.messageId, body: r.body })),
  );
  metrics.addMetric('ChangesRecorded', MetricUnit.Count, result.recorded);
  if (result.failed.length > 0) metrics.addMetric('ChangeDeliveriesFailed', MetricUnit.Count, result.failed.length);
  return { batchItemFailures: result.failed.map((itemIdentifier) => ({ itemIdentifier })) };
});
