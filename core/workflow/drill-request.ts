import { z } from 'zod';
import { runTriggerSchema } from './requests.ts';

/**
 * Input of the drill state machine, from the CLI, the console or the pipeline's drill schedule:
 *
 *   { "pipeline": "orders", "deploymentId": "latest" }
 *   { "pipeline": "orders", "deploymentId": "d-42", "requestedBy": "jane", "reason": "quarterly drill" }
 */
export const drillRequestSchema = z.strictObject({
  pipeline: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a pipeline name as in the manifest'),
  /** A deployment id, or `latest`: the pipeline's most recent deployment with sealed restore points. */
  deploymentId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/, 'must be "latest" or a deployment id (1-80 characters: letters, digits, ".", "_", "-")').default('latest'),
  requestedBy: z.string().max(200).default('unknown'),
  reason: z.string().max(2000).default(''),
  trigger: runTriggerSchema.optional(),
});

export type DrillRequest = z.infer<typeof drillRequestSchema>;
