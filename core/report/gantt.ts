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

/** Mermaid's gantt reads `dateFormat` tokens; an ISO-8601 UTC time is written in this one. */
const DATE_FORMAT = 'YYYY-MM-DDTHH:mm:ss.SSSZ';

/** Text Mermaid would read as syntax (`:` ends a task name, `#` and `;` start comments or entities) is replaced. */
export function ganttText(text: string): string {
  return text.replace(/[:#;\n\r]/g, ' ').replace(/\s+/g, ' ').trim();
}

/** The gantt of the stages that ran, or undefined when none has times (a dry run, a run refused before any stage). */
export function stagesGantt(title: string, stages: readonly TimedStage[]): string | undefined {
  const ran = stages.filter((s) => s.startedAt !== undefined && s.endedAt !== undefined && !Number.isNaN(Date.parse(s.startedAt)) && !Number.isNaN(Date.parse(s.endedAt)));
  if (ran.length === 0) return undefined;
  const lines = ['gantt', `  title ${ganttText(title)}`, `  dateFormat ${DATE_FORMAT}`, '  axisFormat %H:%M:%S', '  section stages'];
  for (const s of ran) {
    const start = new Date(Date.parse(s.startedAt!));
    // Mermaid draws nothing for a bar that ends where it starts; a stage shorter than a millisecond gets one.
    const end = new Date(Math.max(Date.parse(s.endedAt!), start.getTime() + 1));
    const tag = s.status === 'VERIFIED' ? '' : s.status === 'RESTORED_UNVERIFIED' ? 'active, ' : 'crit, ';
    lines.push(`  stage ${s.index + 1} (${ganttText(s.status)}) :${tag}stage${s.index + 1}, ${start.toISOString()}, ${end.toISOString()}`);
  }
  return lines.join('\n');
}
