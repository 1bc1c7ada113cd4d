import { z } from 'zod';

/**
 * The manifest's rollback policy: when a rollback may run (maintenance windows), whether a person must approve it
 * first, and which of the pipeline's own EventBridge rules are paused while its data is being restored.
 *
 *   policy:
 *     windows: ["Sat 00:00-06:00 UTC", "Mon-Fri 22:00-02:00 Europe/Berlin"]
 *     approval: { required: true, timeoutMinutes: 240 }   # allowSelfApproval: false (four eyes) by default
 *     pause:
 *       rules:
 *         - name: orders-nightly-load
 *         - { name: orders-late-files, eventBus: etl }
 *       schedules:                          # EventBridge Scheduler
 *         - { name: orders-hourly, group: etl }
 *
 * A window is `<days> <HH:MM>-<HH:MM> <time zone>`: days are `daily`, a day (`Sat`), a range (`Mon-Fri`) or a comma
 * list of those (`Sat,Sun`, `Mon,Wed-Fri`); the end may be earlier than the start (the window crosses midnight, and
 * belongs to the day it starts on) and may be `24:00`; the time zone is `UTC` or an IANA name (`Europe/Berlin`), so
 * daylight saving time is followed. A run outside every window waits until the next one opens, unless `urgent`.
 */

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

export interface MaintenanceWindow {
  /** As written in the manifest. */
  text: string;
  /** Days the window opens on, 0 = Sunday. */
  days: number[];
  /** Minutes after local midnight. */
  start: number;
  /** Minutes after local midnight; not after `start` when the window crosses midnight. */
  end: number;
  timeZone: string;
}

const WINDOW = /^(\S+)\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})\s+(\S+)$/;

function dayIndex(name: string): number | undefined {
  const i = DAY_NAMES.indexOf(name.toLowerCase() as (typeof DAY_NAMES)[number]);
  return i < 0 ? undefined : i;
}

function validTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Parses one window; returns what is wrong with it as a string when it cannot be parsed. */
export function parseWindow(text: string): MaintenanceWindow | string {
  const m = WINDOW.exec(text.trim());
  if (!m) return 'must be "<days> HH:MM-HH:MM <time zone>", e.g. "Sat 00:00-06:00 UTC" or "Mon-Fri 22:00-02:00 Europe/Berlin"';
  const [, daysText, sh, sm, eh, em, zone] = m as unknown as [string, string, string, string, string, string, string];
  const days = new Set<number>();
  if (daysText.toLowerCase() === 'daily') {
    for (let d = 0; d < 7; d++) days.add(d);
  } else {
    for (const part of daysText.split(',')) {
      const [from, to, extra] = part.split('-');
      const a = dayIndex(from ?? '');
      const b = to === undefined ? a : dayIndex(to);
      if (a === undefined || b === undefined || extra !== undefined) {
        return `unknown days "${part}": use "daily", a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun), a range ("Mon-Fri") or a comma list ("Sat,Sun")`;
      }
      for (let d = a; ; d = (d + 1) % 7) {
        days.add(d);
        if (d === b) break;
      }
    }
  }
  const start = Number(sh) * 60 + Number(sm);
  const end = Number(eh) * 60 + Number(em);
  if (Number(sh) > 23 || Number(sm) > 59) return `start ${sh}:${sm} is not a time of day (00:00-23:59)`;
  if (Number(em) > 59 || end > 24 * 60) return `end ${eh}:${em} is not a time of day (00:00-24:00)`;
  if (start === end) return 'start and end are equal: a window needs a length (for all day, write 00:00-24:00)';
  if (!validTimeZone(zone)) return `unknown time zone "${zone}": use UTC or an IANA name such as Europe/Berlin`;
  return { text, days: [...days].sort(), start, end, timeZone: zone };
}

const windowText = z.string().superRefine((text, ctx) => {
  const parsed = parseWindow(text);
  if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
});

/** An EventBridge rule name: 1-64 of letters, digits, ".", "-", "_". */
const ruleName = z.string().regex(/^[.\-_A-Za-z0-9]{1,64}$/, 'must be an EventBridge rule name (1-64 letters, digits, ".", "-", "_"; no wildcards)');
const busName = z.string().regex(/^[/.\-_A-Za-z0-9]{1,256}$/, 'must be an event bus name (letters, digits, ".", "-", "_", "/")');

export const pauseRuleSchema = z.strictObject({
  name: ruleName,
  /** The bus the rule is on. Default: the account's default bus. */
  eventBus: busName.default('default'),
});

/** An EventBridge Scheduler schedule or group name: 1-64 of letters, digits, ".", "-", "_". */
const scheduleName = z.string().regex(/^[.\-_A-Za-z0-9]{1,64}$/, 'must be an EventBridge Scheduler name (1-64 letters, digits, ".", "-", "_"; no wildcards)');

export const pauseScheduleSchema = z.strictObject({
  name: scheduleName,
  /** The schedule group. Default: the account's `default` group. */
  group: scheduleName.default('default'),
});

export const policySchema = z
  .strictObject({
    /** When a rollback may start. None: any time. */
    windows: z.array(windowText).default([]),
    /** A person must approve the run (etl-rollback approve <run>) before anything is restored. */
    approval: z
      .strictObject({
        required: z.boolean().default(true),
        /** Without a decision for this long, the run stops (recorded REJECTED, nothing touched). Default 4 hours. */
        timeoutMinutes: z.number().int().min(1).max(7 * 24 * 60).default(240),
        /** Four eyes: by default whoever asked for the rollback may reject it but not approve it. */
        allowSelfApproval: z.boolean().default(false),
      })
      .optional(),
    /** The pipeline's own triggers, disabled while its data is being restored and re-enabled at the end. */
    pause: z
      .strictObject({
        rules: z.array(pauseRuleSchema).default([]),
        schedules: z.array(pauseScheduleSchema).default([]),
      })
      .optional(),
  })
  .superRefine((policy, ctx) => {
    const seen = new Map<string, number>();
    (policy.pause?.rules ?? []).forEach((rule, i) => {
      const id = `${rule.eventBus}/${rule.name}`;
      const first = seen.get(id);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['pause', 'rules', i, 'name'], message: `rule "${rule.name}" on bus "${rule.eventBus}" is already listed at pause.rules[${first}]` });
      } else seen.set(id, i);
    });
    const seenSchedules = new Map<string, number>();
    (policy.pause?.schedules ?? []).forEach((schedule, i) => {
      const id = `${schedule.group}/${schedule.name}`;
      const first = seenSchedules.get(id);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['pause', 'schedules', i, 'name'], message: `schedule "${schedule.name}" in group "${schedule.group}" is already listed at pause.schedules[${first}]` });
      } else seenSchedules.set(id, i);
    });
  });

export type Policy = z.infer<typeof policySchema>;
export type PauseRule = z.infer<typeof pauseRuleSchema>;
export type PauseSchedule = z.infer<typeof pauseScheduleSchema>;

// ── windows in time ─────────────────────────────────────────────────────────

const formatters = new Map<string, Intl.DateTimeFormat>();

function localTime(at: Date, timeZone: string): { day: number; minute: number } {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(timeZone, f);
  }
  let day = 0;
  let hour = 0;
  let minute = 0;
  for (const part of f.formatToParts(at)) {
    if (part.type === 'weekday') day = dayIndex(part.value) ?? 0;
    else if (part.type === 'hour') hour = Number(part.value) % 24;
    else if (part.type === 'minute') minute = Number(part.value);
  }
  return { day, minute: hour * 60 + minute };
}

/** Whether `at` falls inside the window (start inclusive, end exclusive). */
export function insideWindow(window: MaintenanceWindow, at: Date): boolean {
  const { day, minute } = localTime(at, window.timeZone);
  if (window.start < window.end) return window.days.includes(day) && minute >= window.start && minute < window.end;
  return (window.days.includes(day) && minute >= window.start) || (window.days.includes((day + 6) % 7) && minute < window.end);
}

export function parseWindows(texts: readonly string[]): MaintenanceWindow[] {
  return texts.map((text) => {
    const parsed = parseWindow(text);
    if (typeof parsed === 'string') throw new Error(`window "${text}": ${parsed}`);
    return parsed;
  });
}

const MINUTE = 60_000;
/** Far enough to find the next opening of any weekly window, DST shifts included. */
const SEARCH_MINUTES = 8 * 24 * 60;

/**
 * Where `at` stands against the windows: inside one (which), or outside all of them and when the next one opens
 * (a whole minute, so the state machine's Wait gets a plain RFC 3339 timestamp). No windows: always inside.
 */
export function windowStatus(windows: readonly MaintenanceWindow[], at: Date): { open: true; window?: string } | { open: false; nextOpenAt: Date; window: string } {
  if (windows.length === 0) return { open: true };
  const now = windows.find((w) => insideWindow(w, at));
  if (now) return { open: true, window: now.text };
  const first = Math.floor(at.getTime() / MINUTE) * MINUTE + MINUTE;
  for (let i = 0; i < SEARCH_MINUTES; i++) {
    const t = new Date(first + i * MINUTE);
    const opening = windows.find((w) => insideWindow(w, t));
    if (opening) return { open: false, nextOpenAt: t, window: opening.text };
  }
  throw new Error(`no maintenance window opens within 8 days of ${at.toISOString()} (windows: ${windows.map((w) => w.text).join('; ')})`);
}
