import { z } from 'zod';
import type { CustomHandlerRef } from '../manifest/schema.ts';

/**
 * The contract between etl-rollback and a `custom` unit's handler (see custom.ts for what each action means). Kept
 * apart from the adapter so that the adapter context (types.ts) can name the invoker without importing the adapter.
 */

/** Largest handler restore point kept, as JSON text: a ledger item holds at most 400 KB. */
export const MAX_CUSTOM_RESTORE_POINT_BYTES = 256 * 1024;

export const customActions = ['capture', 'restore', 'verify'] as const;
export type CustomAction = (typeof customActions)[number];

/** What a handler is called with. */
export const customRequestSchema = z.strictObject({
  action: z.enum(customActions),
  pipeline: z.string().min(1),
  deploymentId: z.string().min(1),
  unitId: z.string().min(1),
  runId: z.string().min(1).optional(),
  restorePoint: z.json().optional(),
  dryRun: z.boolean(),
});
export type CustomRequest = z.infer<typeof customRequestSchema>;

/** What a handler answers. Counters are named like the adapters' (`messagesSent`), whole and not negative. */
export const customAnswerSchema = z.object({
  restorePoint: z.json().optional(),
  changed: z.record(
    z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, 'counter names are letters, digits and "_" (e.g. "messagesSent")'),
    z.number().int().nonnegative(),
  ),
  verified: z.boolean().optional(),
  message: z.string().max(4000),
});
export type CustomAnswer = z.infer<typeof customAnswerSchema>;

/**
 * Calls a handler and gives back its raw answer (the adapter validates it). Throws with the handler's own message when
 * the handler fails; throws an InputError when the handler cannot be run where this invoker runs (a `module` in AWS).
 */
export type CustomInvoker = (handler: CustomHandlerRef, request: CustomRequest, timeoutSeconds: number) => Promise<unknown>;
