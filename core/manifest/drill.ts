import { z } from 'zod';

/**
 * Recovery-time objectives and scheduled rollback drills, as the manifest writes them:
 *
 *   rto: 15m                                     # a drill slower than this is a failed drill
 *   drill:
 *     schedule: "cron(0 3 ? * SUN *)"            # or "rate(7 days)": an EventBridge Scheduler expression
 *     deployment: latest                         # the deployment whose restore point is rehearsed (default latest)
 *     scratchBucket: orders-drill-scratch        # optional: where S3 units are rehearsed (default: the state bucket)
 *
 * Durations are kept as written (`90s`, `15m`, `1h`) in the manifest: the deployed manifest is stored as JSON and
 * validated again when a drill reads it, so the schema's output must be valid input. `durationSeconds` reads one.
 */

const DURATION = /^([1-9][0-9]{0,5})(s|m|h)$/;
const UNIT_SECONDS = { s: 1, m: 60, h: 3600 } as const;
/** The longest RTO a manifest may set: a day. A drill is one state machine execution, and an RTO above a day is no target. */
export const MAX_RTO_SECONDS = 24 * 3600;

/** Seconds of a duration text, or what is wrong with it. */
export function parseDuration(text: string): number | string {
  const m = DURATION.exec(text.trim());
  // The loader adds what it got to the message: `(got "15 minutes")`.
  if (!m) return 'must be a duration: a whole number followed by s, m or h ("90s", "15m", "1h")';
  const seconds = Number(m[1]) * UNIT_SECONDS[m[2] as keyof typeof UNIT_SECONDS];
  if (seconds > MAX_RTO_SECONDS) return `must be at most 24h (${MAX_RTO_SECONDS} s); ${text.trim()} is ${seconds} s`;
  return seconds;
}

export const durationSchema = z.string().superRefine((text, ctx) => {
  const parsed = parseDuration(text);
  if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
});

/** Seconds of a duration the schema accepted. */
export function durationSeconds(text: string): number {
  const parsed = parseDuration(text);
  if (typeof parsed === 'string') throw new Error(`invalid duration: ${parsed}`);
  return parsed;
}

/** An EventBridge Scheduler expression; the service checks the fields, this only the form (cron with six fields). */
const SCHEDULE = /^(?:cron\((\S+ ){5}\S+\)|rate\([1-9][0-9]* (?:minute|minutes|hour|hours|day|days)\))$/;

export const drillSchema = z.strictObject({
  schedule: z
    .string()
    .regex(SCHEDULE, 'must be an EventBridge Scheduler expression: "cron(<6 fields>)" such as "cron(0 3 ? * SUN *)", or "rate(<n> <minutes|hours|days>)" such as "rate(7 days)"'),
  /** `latest` (the pipeline's most recent deployment with a sealed restore point) or a deployment id. */
  deployment: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/, 'must be "latest" or a deployment id (1-80 characters: letters, digits, ".", "_", "-")').default('latest'),
  /** Bucket S3 units are rehearsed in (under `drills/<run>/`); default: the state bucket. Never one of the units' buckets' prefixes. */
  scratchBucket: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid S3 bucket name')
    .optional(),
});

export type DrillSettings = z.infer<typeof drillSchema>;
