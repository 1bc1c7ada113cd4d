import { z } from 'zod';

/**
 * Replay after restore: once every stage of a rollback has passed its gate, the rollback starts the pipeline's own ETL
 * state machine with an input rendered from `input`, waits for it (`states:startExecution.sync:2`), and lets its
 * outcome decide the run. The data stays restored and verified whatever the replay does.
 *
 *   replay:
 *     stateMachineArn: arn:aws:states:eu-west-1:123456789012:stateMachine:orders-etl
 *     input:                                  # a JSON template; placeholders are replaced by the restored scope
 *       mode: replay
 *       deployment: "{{deploymentId}}"        # a whole-string placeholder keeps the value's type (units is an array)
 *       units: "{{units}}"
 *       note: "rollback {{runId}} of {{pipeline}}"
 *     timeoutMinutes: 60                      # default 60; a replay still running then is stopped and fails the run
 *     approval: true                          # default false: a person approves the replay (etl-rollback approve <run>)
 *
 * Placeholders: `{{deploymentId}}`, `{{runId}}`, `{{pipeline}}`, `{{units}}` (the ids of the restored units, in stage
 * order), `{{partitions}}` (unit id → its partition scope, for the units in scope that have one: `partition`, `where`
 * or Glue `partitions`).
 */
export const REPLAY_PLACEHOLDERS = ['deploymentId', 'runId', 'pipeline', 'units', 'partitions'] as const;
export type ReplayPlaceholder = (typeof REPLAY_PLACEHOLDERS)[number];

const PLACEHOLDER = /\{\{\s*([A-Za-z]+)\s*\}\}/g;

/** A JSON value (the template, and what it renders to). */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };
export const jsonSchema: z.ZodType<Json> = z.lazy(() => z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(jsonSchema), z.record(z.string(), jsonSchema)]));

/** Placeholders a template names that the restored scope does not offer. */
export function unknownPlaceholders(template: Json): string[] {
  const found = new Set<string>();
  const walk = (v: Json) => {
    if (typeof v === 'string') {
      for (const m of v.matchAll(PLACEHOLDER)) if (!(REPLAY_PLACEHOLDERS as readonly string[]).includes(m[1]!)) found.add(m[1]!);
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(template);
  return [...found];
}

/** The ARN of a Standard state machine (`.sync:2` waits only for those). */
const stateMachineArn = z
  .string()
  .regex(/^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/, 'must be a state machine ARN (arn:aws:states:<region>:<account>:stateMachine:<name>)');

export const replaySchema = z
  .strictObject({
    stateMachineArn,
    /** The execution input as a JSON object template (see above). Default: the whole restored scope. */
    input: z.record(z.string(), jsonSchema).default({ deploymentId: '{{deploymentId}}', runId: '{{runId}}', units: '{{units}}', partitions: '{{partitions}}' }),
    timeoutMinutes: z.number().int().min(1).max(7 * 24 * 60).default(60),
    approval: z.boolean().default(false),
  })
  .superRefine((r, ctx) => {
    const unknown = unknownPlaceholders(r.input);
    if (unknown.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['input'], message: `unknown placeholder(s) ${unknown.map((u) => `{{${u}}}`).join(', ')}: use ${REPLAY_PLACEHOLDERS.map((p) => `{{${p}}}`).join(', ')}` });
    }
  });

export type Replay = z.infer<typeof replaySchema>;

/** What a replay's input template is rendered with: the scope a rollback restored. */
export interface ReplayScope {
  deploymentId: string;
  runId: string;
  pipeline: string;
  units: string[];
  partitions: Record<string, Json>;
}

/**
 * Renders a template: a string that is one placeholder becomes the value itself (`"{{units}}"` → an array); a
 * placeholder inside a longer string is replaced by the value's text (JSON for arrays and objects).
 */
export function renderReplayInput(template: Record<string, Json>, scope: ReplayScope): Record<string, Json> {
  const values: Record<ReplayPlaceholder, Json> = { ...scope };
  const render = (v: Json): Json => {
    if (typeof v === 'string') {
      const whole = /^\{\{\s*([A-Za-z]+)\s*\}\}$/.exec(v);
      if (whole && whole[1]! in values) return values[whole[1] as ReplayPlaceholder];
      return v.replace(PLACEHOLDER, (text, name: string) => {
        if (!(name in values)) return text;
        const value = values[name as ReplayPlaceholder];
        return typeof value === 'string' ? value : JSON.stringify(value);
      });
    }
    if (Array.isArray(v)) return v.map(render);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, render(x)]));
    return v;
  };
  return render(template) as Record<string, Json>;
}
