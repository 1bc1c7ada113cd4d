/**
 * A run's stages on a time line: a Mermaid `gantt` with one bar per stage that ran, from its first unit's restore to
 * its last unit's verification (the times the steps recorded in the ledger). Renders in GitHub, GitLab and most
 * Markdown viewers; times are UTC, to the second.
 */

export interface TimedStage {
  index: number;
  status: string;
  startedAt?: string;
  endedAt?: string;
}

/**
 * Mermaid's gantt parses dates with dayjs in strict mode: a date must format back to the same text. `T` and `Z` are
 * written as escaped literals (`[T]`, `[Z]`), so an ISO-8601 UTC time from the ledger round-trips exactly (an unescaped
 * `Z` would be the zone offset, which formats as `+00:00` and fails the strict check). The chart then shows UTC times.
 */
export const GANTT_DATE_FORMAT = 'YYYY-MM-DD[T]HH:mm:ss.SSS[Z]';

/** Text Mermaid would read as syntax (`:` ends a task name, `#` and `;` start comments or entities) is replaced. */
export function ganttText(text: string): string {
  return text.replace(/[:#;\n\r]/g, ' ').replace(/\s+/g, ' ').trim();
}

/** The gantt of the stages that ran, or undefined when none has times (a dry run, a run refused before any stage). */
export function stagesGantt(title: string, stages: readonly TimedStage[]): string | undefined {
  const ran = stages.filter((s) => s.startedAt !== undefined && s.endedAt !== undefined && !Number.isNaN(Date.parse(s.startedAt)) && !Number.isNaN(Date.parse(s.endedAt)));
  if (ran.length === 0) return undefined;
  const lines = ['gantt', `  title ${ganttText(title)} (UTC)`, `  dateFormat ${GANTT_DATE_FORMAT}`, '  axisFormat %H:%M:%S', '  section stages'];
  for (const s of ran) {
    const start = new Date(Date.parse(s.startedAt!));
    // Mermaid draws nothing for a bar that ends where it starts; a stage shorter than a millisecond gets one.
    const end = new Date(Math.max(Date.parse(s.endedAt!), start.getTime() + 1));
    const tag = s.status === 'VERIFIED' ? '' : s.status === 'RESTORED_UNVERIFIED' ? 'active, ' : 'crit, ';
    lines.push(`  stage ${s.index + 1} (${ganttText(s.status)}) :${tag}stage${s.index + 1}, ${start.toISOString()}, ${end.toISOString()}`);
  }
  return lines.join('\n');
}
