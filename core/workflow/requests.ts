import { z } from 'zod';
import { InputError } from '../errors.ts';

/**
 * Inputs of the two state machines: what a console user, the CLI or an EventBridge rule sends. Plain JSON,
 * documented in the README. Validated in the first state so bad input fails before anything is touched.
 */
const id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/, 'must be 1-80 characters: letters, digits, ".", "_", "-"');
const pipeline = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a pipeline name as in the manifest');

export const snapshotRequestSchema = z
  .strictObject({
    pipeline,
    deploymentId: id,
    /** State-bucket key of the manifest (JSON) the CLI uploaded; or the manifest itself. */
    manifestKey: z.string().min(1).optional(),
    manifest: z.unknown().optional(),
    requestedBy: z.string().max(200).default('unknown'),
    reason: z.string().max(2000).default(''),
  })
  .refine((r) => (r.manifestKey === undefined) !== (r.manifest === undefined), {
    message: 'give exactly one of "manifestKey" (a manifest uploaded to the state bucket) or "manifest" (the manifest itself)',
  });

/** What started a run; the trigger function sends `eventbridge`, the CLI `manual`. Absent: `manual` (a console start). */
export const runTriggerSchema = z.strictObject({
  kind: z.enum(['manual', 'eventbridge']),
  source: z.string().max(200).optional(),
  detailType: z.string().max(200).optional(),
  summary: z.string().max(2000).optional(),
});

/**
 * A time to roll back to: ISO-8601 with an explicit UTC offset (`Z` or `+00:00`), not in the future. Other offsets and
 * offset-less times are refused: an operator in an incident must never have a time read in a zone they did not mean.
 */
export const utcTime = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|\+00:00)$/, 'must be an ISO-8601 UTC time with an explicit "Z" (or "+00:00"), e.g. 2026-11-29T09:30:00Z')
  .refine((t) => !Number.isNaN(Date.parse(t)) && new Date(Date.parse(t)).toISOString().slice(0, 10) === t.slice(0, 10), 'is not a valid date and time');

export const rollbackRequestSchema = z
  .strictObject({
    pipeline,
    /** The deployment whose restore points to go back to. Exactly one of `deploymentId`, `toTime` and `undo`. */
    deploymentId: id.optional(),
    /**
     * Roll back to the state at this time (ISO-8601 UTC), from the services' own history, when no restore point was
     * taken: a derived deployment `at-<YYYYMMDDTHHMMSSZ>` is resolved at plan time (core/workflow/as-of.ts).
     */
    toTime: utcTime.optional(),
    /** With `toTime` only: the manifest the pipeline runs with (default: that of its latest deployment). */
    manifest: z.unknown().optional(),
    /**
     * Undo that run: put back what it replaced (core/workflow/undo.ts), through the same staged rollback of the derived
     * deployment `undo-<run>`. Exactly one of `deploymentId`, `toTime` and `undo`; not with `units` or `cascade` (the
     * units are those the run changed).
     */
    undo: id.optional(),
    /** Units to roll back (plus their consumers unless cascade is false). Default: every unit. Not with `resume`. */
    units: z.array(z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a unit id as in the manifest')).min(1).max(1000).optional(),
    /** Default true; not with `resume` (the resumed run's plan is taken as it was). */
    cascade: z.boolean().optional(),
    dryRun: z.boolean().default(false),
    reason: z.string().max(2000).default(''),
    requestedBy: z.string().max(200).default('unknown'),
    /** Start now even outside the manifest's maintenance windows (approval, if required, is still asked for). */
    urgent: z.boolean().default(false),
    /** The run id of a failed run of this pipeline and deployment to resume: its stages are taken over, its verified units skipped. */
    resume: id.optional(),
    trigger: runTriggerSchema.optional(),
  })
  .superRefine((r, ctx) => {
    const given = [r.deploymentId, r.toTime, r.undo].filter((v) => v !== undefined).length;
    if (given !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: r.deploymentId === undefined ? [] : r.toTime !== undefined ? ['toTime'] : ['deploymentId'],
        message:
          'give exactly one of "deploymentId" (roll back to its restore points), "toTime" (roll back to the state at that time) ' +
          'or "undo" (put back what that run replaced)',
      });
    }
    if (r.manifest !== undefined && r.toTime === undefined) {
      ctx.addIssue({ code: 'custom', path: ['manifest'], message: 'only with "toTime": a deployment is rolled back with the manifest it was deployed with' });
    }
    if (r.resume !== undefined && r.toTime !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['toTime'], message: `cannot be given with "resume": resume run "${r.resume}" with the deployment it rolled back to` });
    }
    if (r.undo !== undefined) {
      for (const field of ['units', 'cascade'] as const) {
        if (r[field] !== undefined) {
          ctx.addIssue({ code: 'custom', path: [field], message: `cannot be given with "undo": an undo puts back every unit run "${r.undo}" changed` });
        }
      }
    }
    if (r.resume === undefined) return;
    for (const field of ['units', 'cascade'] as const) {
      if (r[field] !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: [field],
          message: `cannot be given with "resume": a resumed run takes the plan (stages and scope) of run "${r.resume}" as it was`,
        });
      }
    }
  });

export type SnapshotRequest = z.infer<typeof snapshotRequestSchema>;
export type RollbackRequest = z.infer<typeof rollbackRequestSchema>;
export type RollbackRequestInput = z.input<typeof rollbackRequestSchema>;

/** Parses external input; every problem named with its path, as one InputError. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((i) => {
    const path = i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
    return `  ${what}${path}: ${i.message}`;
  });
  throw new InputError(`${what} is invalid:\n${lines.join('\n')}`);
}
