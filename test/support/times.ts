import { isUtcTime } from '../../core/manifest/time.ts';

/**
 * Every time in `text` (CLI output, text or JSON) that is not ISO-8601 UTC with the Z suffix: date-times with another
 * offset or none, locale forms (`Sun Nov 29 2026`, `11/29/2026`, `9:30 AM`, `GMT+0100`), and epoch numbers (seconds or
 * milliseconds since 1970, as 10 or 13 digits from 2020 to 2033). Empty when every time is in the CLI's form.
 */
export function nonUtcTimes(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?/g)) {
    if (!isUtcTime(m[0])) found.push(m[0]);
  }
  const patterns = [
    /\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? \d{0,2} ?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\w* \d{1,4}\b/g,
    /\bGMT[+-]\d{4}\b/g,
    /\b\d{1,2}\/\d{1,2}\/\d{2,4}\b/g,
    /\b\d{1,2}:\d{2}(?::\d{2})? ?[AP]M\b/g,
    /(?<![\w.-])1[6-9]\d{8}(?:\d{3})?(?![\w.])/g,
  ];
  for (const p of patterns) for (const m of text.matchAll(p)) found.push(m[0]);
  return found;
}
