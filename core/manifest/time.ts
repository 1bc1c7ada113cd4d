import { InputError } from '../errors.ts';

/**
 * Times, as the CLI reads and prints them: ISO-8601 in UTC with the `Z` suffix, `2026-11-29T09:30:00Z` (seconds and a
 * fraction optional on input: `2026-11-29T09:30Z`, `2026-11-29T09:30:00.250Z`). Nothing else is accepted: a time with
 * another offset (`+01:00`) or none (`2026-11-29T09:30:00`, read as local time by JavaScript) is refused as bad input
 * (exit 2) rather than normalised, because a rollback to the wrong hour is worse than a retyped flag, and a time
 * without an offset means a different instant on every machine. Printed times are `toISOString()` (milliseconds) or
 * `formatUtc` (seconds), both in this form.
 *
 * Maintenance windows are not instants and keep their own form (`Sat 00:00-06:00 Europe/Berlin`, core/manifest/policy.ts).
 */
export const UTC_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?Z$/;

/** An example of the accepted form, for error messages. */
export const UTC_EXAMPLE = '2026-11-29T09:30:00Z';

/**
 * Parses `text` as an ISO-8601 UTC time; throws InputError naming `where` (the flag, or the manifest path) and the
 * expected form otherwise, including for dates that do not exist (`2026-02-30T00:00:00Z`).
 */
export function parseUtcTime(text: string, where: string): Date {
  const m = UTC_TIME.exec(text.trim());
  const refuse = (why: string) => new InputError(`${where}: "${text}" ${why}; give an ISO-8601 time in UTC with the Z suffix, e.g. ${UTC_EXAMPLE}`);
  if (!m) {
    if (/(?:[+-]\d{2}:?\d{2}|[+-]\d{2})$/.test(text.trim()) && /T\d/.test(text)) throw refuse('has a UTC offset other than Z');
    throw refuse('is not an ISO-8601 UTC time');
  }
  const [, y, mo, d, h, mi, s = '0', frac = '0'] = m;
  const at = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), Math.floor(Number(`0.${frac}`) * 1000)));
  const roundTrips =
    at.getUTCFullYear() === Number(y) && at.getUTCMonth() === Number(mo) - 1 && at.getUTCDate() === Number(d) && at.getUTCHours() === Number(h) && at.getUTCMinutes() === Number(mi) && at.getUTCSeconds() === Number(s);
  if (!roundTrips) throw refuse('is not a real date and time');
  return at;
}

/** `2026-11-29T09:30:00Z`: ISO-8601 UTC to the second. */
export function formatUtc(at: Date): string {
  return at.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Whether `text` is a time as the CLI prints it (ISO-8601 UTC, `Z`, seconds with an optional fraction). */
export function isUtcTime(text: string): boolean {
  return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$/.test(text);
}
