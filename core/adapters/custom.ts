import { createHash } from 'node:crypto';
import { z } from 'zod';
import { CompensationFailedError, EtlRollbackError, InputError, RestorePointMissingError } from '../errors.ts';
import type { CustomHandlerRef, CustomUnit } from '../manifest/schema.ts';
import { MAX_CUSTOM_RESTORE_POINT_BYTES, customAnswerSchema, customRequestSchema, type CustomAnswer, type CustomRequest } from './custom-contract.ts';
import type { AdapterContext, Changes, Check, Diff, Outcome, RestorePoint, UnitAdapter } from './types.ts';

/**
 * custom adapter: compensating actions for changes no other adapter can undo (messages already published, an API
 * already called, an external system loaded). The manifest names a handler; etl-rollback calls it at the same points
 * as any adapter, and the stage machinery (restore, gate, report, resume) treats the unit like any other.
 *
 * The contract (both directions validated with zod):
 *
 *   request  { action: "capture" | "restore" | "verify", pipeline, deploymentId, unitId, runId?, restorePoint?, dryRun }
 *   answer   { restorePoint?: <JSON>, changed: { <counter>: number }, verified?: boolean, message: string }
 *
 * - capture (snapshot, before the deploy): answer what the handler needs to compensate later in `restorePoint` (any
 *   JSON, at most 256 KiB: bulky state belongs in the handler's own store, with its key here). It is kept in the ledger
 *   (the restore point's `details`) with a checksum, and handed back unchanged at restore and verify. The restore
 *   point's `count` is the sum of the capture's `changed` counters (what the handler recorded).
 * - restore (`dryRun: false`): carry out the compensation; `changed` counts what it did (`retractionsSent: 3`). It is
 *   called again after a failure or on a rerun, so it must be idempotent: do nothing twice, answer zeros when done.
 * - restore with `dryRun: true` (the rollback's dry run): count what a restore would do, do nothing.
 * - verify (the stage's gate): `verified: true` when the compensation is complete; `false` fails the gate with
 *   `message`.
 * - A handler that throws (or, in Lambda, ends with a function error), does not answer within `timeoutSeconds`, or
 *   answers outside the contract fails the unit with `CompensationFailedError` naming the unit and the handler and
 *   carrying the handler's message; the run stops there (exit code 1) and its report names the unit FAILED.
 * - Release (retention ended) does not call the handler: the restore point lives in the ledger only.
 *
 * Where the handler runs is not this file's business: the adapter calls `ctx.invokeCustom`, which whoever wires the
 * workflow provides. In AWS (lambdas/task.ts) that is `lambdaInvoker` (core/runtime/custom-invoker.ts): the "Capture
 * unit", "Describe changes", "Restore unit" and "Verify stage" functions call the handler's Lambda function themselves
 * with the AWS SDK (Invoke, RequestResponse), with the SDK's retries for throttling and service errors and the unit's
 * `timeoutSeconds` as the call's deadline, and IAM allows `lambda:InvokeFunction` on exactly the function ARNs given to
 * the stack at synth (context `customHandlerArns`). That keeps the state machine definitions unchanged: the unit goes
 * through the same Restore unit / Verify stage states, Catch paths and reports as every other. The cost: a handler runs
 * inside those functions' 5-minute timeout, so in AWS it must answer well within it (start long work and return; let
 * `verify` check it). The CLI's `--local` runs use an in-process invoker instead (cli/custom-handlers.ts): a `module`
 * handler is imported from its file, relative to the manifest, and called directly.
 */

export {
  MAX_CUSTOM_RESTORE_POINT_BYTES,
  customActions,
  customAnswerSchema,
  customRequestSchema,
  type CustomAction,
  type CustomAnswer,
  type CustomInvoker,
  type CustomRequest,
} from './custom-contract.ts';

export interface CustomDetails {
  /** The handler as the manifest named it at capture. */
  handler: CustomHandlerRef;
  /** What the handler answered as its restore point (null: nothing). */
  restorePoint: z.infer<ReturnType<typeof z.json>> | null;
  /** The handler's message at capture. */
  message: string;
}

/** How a handler is named in messages: its function ARN, or `<module>#<export>`. */
export function describeHandler(handler: CustomHandlerRef): string {
  return 'lambdaArn' in handler ? handler.lambdaArn : `${handler.module}#${handler.export}`;
}

/** JSON with keys sorted at every level: the same value always gives the same text (and checksum). */
function sortedJson(value: unknown): string {
  const norm = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(norm);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v as Record<string, unknown>).sort().map((k) => [k, norm((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(norm(value) ?? null);
}

export const customChecksum = (restorePoint: unknown): string => `sha256:${createHash('sha256').update(sortedJson(restorePoint)).digest('hex')}`;

const sum = (changes: Changes) => Object.values(changes).reduce((a, b) => a + b, 0);

function issuesText(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(answer)'}: ${i.message}`).join('; ');
}

/** Calls the unit's handler, with its deadline; every failure comes back as CompensationFailedError (or InputError). */
async function call(unit: CustomUnit, ctx: AdapterContext, request: Omit<CustomRequest, 'pipeline' | 'deploymentId' | 'unitId'>): Promise<CustomAnswer> {
  const who = `unit "${unit.id}": handler ${describeHandler(unit.handler)}`;
  if (!ctx.invokeCustom) throw new InputError(`${who}: this runner cannot call custom handlers (no invoker is wired)`);
  const full = customRequestSchema.parse({ pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, unitId: unit.id, ...request });
  let timer: NodeJS.Timeout | undefined;
  let raw: unknown;
  try {
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new CompensationFailedError(`${who} did not answer "${request.action}" within ${unit.timeoutSeconds} s (timeoutSeconds)`)),
        unit.timeoutSeconds * 1000,
      );
    });
    raw = await Promise.race([ctx.invokeCustom(unit.handler, full, unit.timeoutSeconds), deadline]);
  } catch (error) {
    // Ours pass through: an InputError (the handler cannot run here), our own timeout.
    if (error instanceof EtlRollbackError) throw error;
    const message = (error as { message?: unknown } | null)?.message;
    throw new CompensationFailedError(`${who} failed at ${request.action}${request.dryRun ? ' (dry run)' : ''}: ${typeof message === 'string' && message ? message : String(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
  const parsed = customAnswerSchema.safeParse(raw);
  if (!parsed.success) throw new CompensationFailedError(`${who} gave a malformed answer to "${request.action}": ${issuesText(parsed.error)}`);
  const answer = parsed.data;
  if (request.action === 'verify' && answer.verified === undefined) {
    throw new CompensationFailedError(`${who} gave a malformed answer to "verify": verified: expected true or false`);
  }
  ctx.log.info('custom handler answered', { unit: unit.id, handler: describeHandler(unit.handler), action: request.action, dryRun: request.dryRun, changed: answer.changed });
  return answer;
}

/** The handler's restore point, checked against the checksum sealed with it. */
function storedPoint(unit: CustomUnit, point: RestorePoint<CustomDetails>): CustomDetails['restorePoint'] {
  const kept = point.details.restorePoint ?? null;
  if (customChecksum(kept) !== point.checksum) {
    throw new RestorePointMissingError(`restore point of unit "${unit.id}" does not match its checksum (${point.checksum}): it was changed after the snapshot`);
  }
  return kept;
}

export const customAdapter: UnitAdapter<CustomUnit, CustomDetails> = {
  type: 'custom',

  async capture(unit, ctx) {
    const answer = await call(unit, ctx, { action: 'capture', dryRun: false });
    const kept = answer.restorePoint ?? null;
    const size = Buffer.byteLength(JSON.stringify(kept));
    if (size > MAX_CUSTOM_RESTORE_POINT_BYTES) {
      throw new CompensationFailedError(
        `unit "${unit.id}": handler ${describeHandler(unit.handler)} answered a restore point of ${size.toLocaleString('en-US')} bytes; at most ` +
          `${MAX_CUSTOM_RESTORE_POINT_BYTES.toLocaleString('en-US')} are kept in the ledger: keep bulky state in the handler's own store and answer its key`,
      );
    }
    return {
      unitId: unit.id,
      type: 'custom',
      capturedAt: ctx.now().toISOString(),
      count: sum(answer.changed),
      checksum: customChecksum(kept),
      details: { handler: unit.handler, restorePoint: kept, message: answer.message },
    };
  },

  async diff(unit, point, ctx): Promise<Diff> {
    const restorePoint = storedPoint(unit, point);
    const answer = await call(unit, ctx, { action: 'restore', dryRun: true, ...(ctx.runId ? { runId: ctx.runId } : {}), restorePoint });
    return { changes: answer.changed, writes: sum(answer.changed), notes: answer.message ? [answer.message] : [] };
  },

  async restore(unit, point, ctx): Promise<Outcome> {
    const restorePoint = storedPoint(unit, point);
    const answer = await call(unit, ctx, { action: 'restore', dryRun: false, ...(ctx.runId ? { runId: ctx.runId } : {}), restorePoint });
    return { changes: answer.changed, writes: sum(answer.changed), notes: answer.message ? [answer.message] : [] };
  },

  async verify(unit, point, ctx): Promise<Check[]> {
    const restorePoint = storedPoint(unit, point);
    const answer = await call(unit, ctx, { action: 'verify', dryRun: false, ...(ctx.runId ? { runId: ctx.runId } : {}), restorePoint });
    const ok = answer.verified === true;
    return [{ name: 'compensation', ok, expected: 'verified', actual: ok ? 'verified' : 'not verified', ...(answer.message ? { detail: answer.message } : {}) }];
  },

  async release(unit, _point, ctx) {
    // The handler's restore point lives in the ledger, which drops it with the deployment; the handler keeps its own.
    ctx.log.info('custom unit released (nothing to drop)', { unit: unit.id, handler: describeHandler(unit.handler) });
  },
};
