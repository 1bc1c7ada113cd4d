import type { Changes, Check } from '../adapters/types.ts';
import type { ReplayRecord, Run, RunTrigger, Step } from '../ledger/ledger.ts';
import type { RunEstimate } from '../plan/estimate.ts';
import { workOf } from '../plan/requests.ts';
import { estimateBasis, estimateVsActual, estimateVsActualMarkdown, formatSeconds, renderEstimate, renderEstimateVsActual, type EstimateVsActualRow } from './estimate-text.ts';
import { stagesGantt } from './gantt.ts';
import { recoverySeconds, stageSpan } from './measure-run.ts';

/**
 * The report of a rollback run: what each stage and unit changed, how each verified, and, for a run that
 * stopped, exactly which stages are restored, which failed and which were never started — a partial state
 * is always flagged.
 */
export type StageStatus = 'VERIFIED' | 'RESTORED_UNVERIFIED' | 'VERIFY_FAILED' | 'FAILED' | 'NOT_STARTED' | 'WOULD_CHANGE' | 'NO_CHANGE';

export interface UnitReport {
  unitId: string;
  type: string;
  status: Step['status'] | 'NOT_STARTED' | 'WOULD_CHANGE' | 'NO_CHANGE';
  changes: Changes;
  writes: number;
  notes: string[];
  keptAt?: string;
  checks?: Check[];
  /** Not restored by this run: the resumed run had verified it (the gate still checked it). */
  skippedFrom?: string;
}

export interface StageReport {
  index: number;
  status: StageStatus;
  units: UnitReport[];
  /** When the stage's first unit restore started, and when its last unit was restored or verified (from the steps). */
  startedAt?: string;
  endedAt?: string;
  durationMs?: number;
}

export interface RunReport {
  runId: string;
  pipeline: string;
  deploymentId: string;
  status: Run['status'];
  dryRun: boolean;
  requestedBy: string;
  reason: string;
  startedAt: string;
  endedAt?: string;
  /** What started the run: a person (`manual`) or an EventBridge trigger. */
  trigger?: RunTrigger;
  /** The run this one resumed. */
  resumedFrom?: string;
  /** Units not restored again because the resumed run had verified them (each still re-verified by its stage's gate). */
  skipped?: { stage: number; unitId: string }[];
  /** True when some stages were restored and others were not: the pipeline's data is mixed. */
  partial: boolean;
  /** Writes made (or, in a dry run, that a rollback would make), by kind. */
  totals: { writes: number; changes: Changes };
  stages: StageReport[];
  error?: { name: string; message: string };
  /** What the run was estimated to cost and take when it was planned (a dry run: what a rollback would). */
  estimate?: RunEstimate;
  /** Seconds from the first stage's start to the run's end (waits for approval or a window before it are not counted). */
  recoverySeconds?: number;
  /** The pipeline's replay after every stage verified (manifest `replay`): execution, status, start and stop. */
  replay?: ReplayRecord;
  /** Set on the report of a rollback drill (core/workflow/drill.ts): restores went to scratch targets, never production. */
  drill?: DrillFacts;
}

/** What a drill measured and left behind, beside the stages every run report has. */
export interface DrillFacts {
  /** The manifest's RTO as written (`15m`) and in seconds; absent when the manifest sets none. */
  rto?: string;
  rtoSeconds?: number;
  /** Restores and gates, from the first unit's restore to the last stage's gate (cleanup not included). */
  recoveryMs?: number;
  overRto: boolean;
  /** Where each unit was rehearsed. */
  scratch: { unitId: string; target: string }[];
  /** Scratch targets removed; `complete` false when some could not be (named in `error`). */
  cleanup: { removed: string[]; complete: boolean; error?: string };
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** The drill's RTO line: `recovery 42.0 s of RTO 15m (900 s): within`. */
export function describeRecovery(d: DrillFacts): string {
  const measured = d.recoveryMs === undefined ? 'not measured (the drill stopped)' : seconds(d.recoveryMs);
  const target = d.rto ? ` of RTO ${d.rto} (${d.rtoSeconds} s): ${d.overRto ? 'OVER' : 'within'}` : ' (no RTO set)';
  return `recovery ${measured}${target}`;
}

export function addChanges(into: Changes, more: Changes): Changes {
  for (const [k, v] of Object.entries(more)) into[k] = (into[k] ?? 0) + v;
  return into;
}

function stageStatus(units: UnitReport[]): StageStatus {
  if (units.every((u) => u.status === 'NOT_STARTED')) return 'NOT_STARTED';
  if (units.some((u) => u.status === 'FAILED' || u.status === 'NOT_STARTED')) return 'FAILED';
  if (units.some((u) => u.status === 'VERIFY_FAILED')) return 'VERIFY_FAILED';
  if (units.every((u) => u.status === 'VERIFIED')) return 'VERIFIED';
  if (units.every((u) => u.status === 'NO_CHANGE')) return 'NO_CHANGE';
  if (units.some((u) => u.status === 'WOULD_CHANGE' || u.status === 'NO_CHANGE')) return 'WOULD_CHANGE';
  return 'RESTORED_UNVERIFIED';
}

/** A stage's timing from its steps: earliest start (or restore) to latest verification (or restore). */
function stageTiming(steps: (Step | undefined)[]): Pick<StageReport, 'startedAt' | 'endedAt' | 'durationMs'> {
  const span = stageSpan(steps);
  if (!span) return {};
  return { ...span, durationMs: Math.max(0, Date.parse(span.endedAt) - Date.parse(span.startedAt)) };
}

/** Objects and rows a run put back, from the step outcome counters (`objectsCopied`, `rowsInserted`, ...). */
export function restoredCounts(report: RunReport): { objects: number; rows: number } {
  let objects = 0;
  let rows = 0;
  for (const [name, n] of Object.entries(report.totals.changes)) {
    // Left alone (`objectsUnchanged`) or kept aside (`rowsQuarantined`): not put back.
    if (isUntouched(name) || /Quarantined$/.test(name)) continue;
    if (/^(objects|deleteMarkers)/.test(name)) objects += n;
    else if (/^rows/.test(name)) rows += n;
  }
  return { objects, rows };
}

/** Builds the report from the run and its steps as the ledger holds them (not from anyone's memory). */
export function buildReport(run: Run, steps: Step[], types: Record<string, string>): RunReport {
  const byUnit = new Map(steps.map((s) => [`${s.stage}#${s.unitId}`, s]));
  const totals = { writes: 0, changes: {} as Changes };
  const stages: StageReport[] = run.stages.map((stage) => {
    const units: UnitReport[] = stage.units.map((unitId) => {
      const step = byUnit.get(`${stage.index}#${unitId}`);
      if (!step) return { unitId, type: types[unitId] ?? 'unknown', status: 'NOT_STARTED', changes: {}, writes: 0, notes: [] };
      totals.writes += step.writes;
      addChanges(totals.changes, step.changes);
      const status = run.dryRun ? (step.writes > 0 ? 'WOULD_CHANGE' : 'NO_CHANGE') : step.status;
      return {
        unitId,
        type: step.type,
        status,
        changes: step.changes,
        writes: step.writes,
        notes: step.notes,
        keptAt: step.keptAt,
        checks: step.checks,
        ...(step.skippedFrom ? { skippedFrom: step.skippedFrom } : {}),
      };
    });
    return { index: stage.index, status: stageStatus(units), units, ...stageTiming(stage.units.map((u) => byUnit.get(`${stage.index}#${u}`))) };
  });
  const touched = stages.filter((s) => s.status !== 'NOT_STARTED').length;
  const recovery = run.dryRun ? undefined : recoverySeconds(run, steps);
  const partial = !run.dryRun && run.status !== 'SUCCEEDED' && touched > 0 && stages.some((s) => s.status !== 'VERIFIED');
  return {
    runId: run.runId,
    pipeline: run.pipeline,
    deploymentId: run.deploymentId,
    status: run.status,
    dryRun: run.dryRun,
    requestedBy: run.requestedBy,
    reason: run.reason,
    startedAt: run.startedAt,
    endedAt: run.endedAt,
    ...(run.trigger ? { trigger: run.trigger } : {}),
    ...(run.resumedFrom
      ? { resumedFrom: run.resumedFrom, skipped: stages.flatMap((st) => st.units.filter((u) => u.skippedFrom).map((u) => ({ stage: st.index, unitId: u.unitId }))) }
      : {}),
    partial,
    totals,
    stages,
    error: run.error,
    ...(run.estimate ? { estimate: run.estimate } : {}),
    ...(recovery !== undefined ? { recoverySeconds: recovery } : {}),
    ...(run.replay ? { replay: run.replay } : {}),
  };
}

/** A run's estimate set against what it did, per stage and in total; undefined for a dry run or a run without estimate. */
export function reportEstimateVsActual(report: RunReport): EstimateVsActualRow[] | undefined {
  if (!report.estimate || report.dryRun) return undefined;
  return estimateVsActual(report.estimate, {
    stages: report.stages.map((st) => {
      const work = st.units.reduce((w, u) => {
        const more = workOf(u.changes);
        return { objects: w.objects + more.objects, rows: w.rows + more.rows };
      }, { objects: 0, rows: 0 });
      return { index: st.index, durationMs: st.durationMs, ...work, ran: st.status !== 'NOT_STARTED' };
    }),
    recoverySeconds: report.recoverySeconds,
  });
}

/** Counters that describe what was left alone rather than written (`objectsUnchanged`). */
const isUntouched = (name: string) => /Unchanged$/.test(name);

function formatChanges(changes: Changes, withUntouched = true): string {
  const entries = Object.entries(changes).filter(([k, v]) => v > 0 && (withUntouched || !isUntouched(k)));
  const written = entries.filter(([k]) => !isUntouched(k)).map(([k, v]) => `${k} ${v}`);
  const left = entries.filter(([k]) => isUntouched(k)).map(([k, v]) => `${k} ${v}`);
  return [written.length ? written.join(', ') : 'no changes', ...left].join('; ');
}

/** The trigger in words: `manual`, or `eventbridge aws.cloudwatch / CloudWatch Alarm State Change: <summary>`. */
export function describeTrigger(trigger: RunTrigger): string {
  const origin = [trigger.source, trigger.detailType].filter(Boolean).join(' / ');
  return `${trigger.kind}${origin ? ` ${origin}` : ''}${trigger.summary ? `: ${trigger.summary}` : ''}`;
}

const skippedText = (report: RunReport) =>
  report.skipped?.length ? report.skipped.map((s) => `${s.unitId} (stage ${s.stage + 1})`).join(', ') : 'none';

/** The report as a person reads it in a terminal. */
export function renderReport(report: RunReport): string {
  const lines: string[] = [];
  const title = report.drill ? 'Drill' : report.dryRun ? 'Dry run' : 'Rollback';
  lines.push(`${title} ${report.runId} of ${report.pipeline}/${report.deploymentId}: ${report.status}${report.partial ? ' — PARTIAL: some stages restored, others not (see below)' : ''}`);
  if (report.trigger) lines.push(`  trigger: ${describeTrigger(report.trigger)}`);
  if (report.resumedFrom) lines.push(`  resumed from run ${report.resumedFrom}; skipped (verified by it, re-verified now): ${skippedText(report)}`);
  if (report.drill) lines.push(`  ${describeRecovery(report.drill)}; into scratch targets only, cleanup ${report.drill.cleanup.complete ? 'complete' : 'INCOMPLETE'}`);
  for (const stage of report.stages) {
    lines.push(`  stage ${stage.index + 1}: ${stage.status}${stage.durationMs !== undefined ? ` (${seconds(stage.durationMs)})` : ''}`);
    for (const u of stage.units) {
      const checks = u.checks?.length ? `; checks ${u.checks.filter((c) => c.ok).length}/${u.checks.length} ok` : '';
      const failed = u.checks?.filter((c) => !c.ok).map((c) => `${c.name} expected ${c.expected}, got ${c.actual}${c.detail ? ` (${c.detail})` : ''}`) ?? [];
      lines.push(`    ${u.unitId} (${u.type}): ${u.status} — ${formatChanges(u.changes)}${checks}`);
      for (const f of failed) lines.push(`      ✗ ${f}`);
      for (const n of u.notes) lines.push(`      · ${n}`);
      if (u.keptAt && u.writes > 0) lines.push(`      replaced data kept in ${u.keptAt}`);
    }
  }
  const total = report.totals.writes > 0 ? ` (${formatChanges(report.totals.changes, false)})` : '';
  if (report.drill) lines.push(`  total: ${report.totals.writes} writes to production; into scratch targets: ${formatChanges(report.totals.changes, false)}`);
  else lines.push(report.dryRun ? `  total: a rollback would make ${report.totals.writes} writes${total}` : `  total: ${report.totals.writes} writes${total}`);
  if (report.replay) lines.push(`  ${replayText(report)}`);
  if (report.error) lines.push(`  error: ${report.error.name}: ${report.error.message}`);
  if (report.dryRun && report.estimate) lines.push(...renderEstimate(report.estimate));
  const compared = reportEstimateVsActual(report);
  if (compared) lines.push(`  estimate against actual (${estimateBasis(report.estimate!)}):`, ...renderEstimateVsActual(compared, '    '));
  return lines.join('\n');
}

/** The replay in one line; for a failed one, that the data is nonetheless restored and verified. */
export function replayText(report: RunReport): string {
  const r = report.replay!;
  const when = [r.startDate ? `started ${r.startDate}` : '', r.stopDate ? `stopped ${r.stopDate}` : ''].filter(Boolean).join(', ');
  const failed = r.status !== 'SUCCEEDED' && r.status !== 'RUNNING';
  const verified = report.stages.length > 0 && report.stages.every((s) => s.status === 'VERIFIED');
  const head = failed && verified ? `data restored and verified; replay ${r.status === 'NOT_APPROVED' ? 'not approved' : 'failed'}` : `replay ${r.status}`;
  return `${head}: execution ${r.executionArn ?? '(not started)'} ${r.status}${when ? ` (${when})` : ''}${r.error ? ` — ${r.error.name}${r.error.message ? `: ${r.error.message}` : ''}` : ''}`;
}

const mdEscape = (text: string) => text.replace(/[|\\`*_<>]/g, (c) => `\\${c}`);

/**
 * The report as Markdown, for the audit store, a ticket or a postmortem: who, why, what each stage changed, how
 * each unit verified, and — for a run that stopped — which stages are restored and which are not.
 */
export function renderMarkdown(report: RunReport): string {
  const out: string[] = [];
  const kind = report.drill ? 'Drill' : report.dryRun ? 'Dry run' : 'Rollback';
  out.push(`# ${kind} of ${mdEscape(report.pipeline)} / ${mdEscape(report.deploymentId)}: ${report.status}`);
  out.push('');
  if (report.partial) {
    out.push('> **Partial state.** Some stages were restored and others were not: the pipeline holds data from both sides of the');
    out.push('> deploy. Resume it (`rollback … --resume <run>`) or rerun the same rollback to finish it, or undo the restored stages.');
    out.push('');
  }
  out.push('| | |', '|---|---|');
  out.push(`| run | \`${report.runId}\` |`);
  if (report.trigger) out.push(`| trigger | ${mdEscape(describeTrigger(report.trigger))} |`);
  if (report.resumedFrom) {
    out.push(`| resumed from | \`${report.resumedFrom}\` |`);
    out.push(`| skipped (verified by the resumed run, re-verified now) | ${mdEscape(skippedText(report))} |`);
  }
  out.push(`| requested by | ${mdEscape(report.requestedBy)} |`);
  out.push(`| reason | ${report.reason ? mdEscape(report.reason) : '(none given)'} |`);
  out.push(`| started | ${report.startedAt} |`);
  if (report.endedAt) out.push(`| ended | ${report.endedAt} |`);
  out.push(`| ${report.drill ? 'writes to production' : report.dryRun ? 'writes a rollback would make' : 'writes'} | ${report.totals.writes} |`);
  if (report.recoverySeconds !== undefined && !report.drill) out.push(`| recovery time (first stage start to end) | ${formatSeconds(report.recoverySeconds)} |`);
  if (report.replay) out.push(`| replay | ${mdEscape(replayText(report))} |`);
  if (report.error) out.push(`| error | ${mdEscape(report.error.name)}: ${mdEscape(report.error.message).replace(/\n/g, '<br>')} |`);
  if (report.drill) out.push(...drillRows(report.drill));
  out.push('');
  for (const stage of report.stages) {
    out.push(`## Stage ${stage.index + 1}: ${stage.status}`, '');
    if (stage.startedAt && stage.endedAt) out.push(`${stage.startedAt} → ${stage.endedAt} (${((stage.durationMs ?? 0) / 1000).toFixed(1)} s)`, '');
    out.push('| unit | type | status | changes | checks | replaced data kept in |', '|---|---|---|---|---|---|');
    for (const u of stage.units) {
      const checks = u.checks?.length
        ? u.checks.map((c) => `${c.ok ? '✓' : '✗'} ${mdEscape(c.name)}${c.ok ? '' : ` (expected ${mdEscape(String(c.expected))}, got ${mdEscape(String(c.actual))})`}`).join('<br>')
        : '';
      const kept = u.keptAt && u.writes > 0 ? mdEscape(u.keptAt) : '';
      out.push(`| ${mdEscape(u.unitId)} | ${u.type} | ${u.status} | ${mdEscape(formatChanges(u.changes))} | ${checks} | ${kept} |`);
    }
    const notes = stage.units.flatMap((u) => u.notes.map((n) => `- ${mdEscape(u.unitId)}: ${mdEscape(n)}`));
    if (notes.length) out.push('', ...notes);
    out.push('');
  }
  const gantt = stagesGantt(`${report.pipeline} / ${report.deploymentId}: ${report.runId}`, report.stages);
  if (gantt) out.push('## Stages as they ran', '', '```mermaid', gantt, '```', '');
  const compared = reportEstimateVsActual(report);
  if (compared) out.push('## Estimate against actual', '', mdEscape(estimateBasis(report.estimate!)), '', ...estimateVsActualMarkdown(compared), '');
  else if (report.estimate) out.push('## Estimate', '', mdEscape(estimateBasis(report.estimate)), '', '```text', ...renderEstimate(report.estimate, ''), '```', '');
  else if (report.drill && gantt) {
    out.push(
      '## Estimate against actual',
      '',
      "No estimate: a drill copies each unit's whole restore point into its scratch target, not only what a rollback would write; its recovery time is set against the RTO above.",
      '',
    );
  } else if (!report.dryRun && gantt) {
    out.push(
      '## Estimate against actual',
      '',
      'No estimate: a rollback carries the estimate of the latest dry run of its deployment with the same stages, and there was none since the',
      "deployment's last rollback (a resumed run carries none).",
      '',
    );
  }
  return out.join('\n');
}

/** The drill's rows of the Markdown summary table: RTO, scratch targets, cleanup. */
function drillRows(d: DrillFacts): string[] {
  return [
    `| recovery time | ${mdEscape(describeRecovery(d))} |`,
    `| scratch targets | ${d.scratch.map((t) => `${mdEscape(t.unitId)}: ${mdEscape(t.target)}`).join('<br>') || '(none)'} |`,
    `| cleanup | ${d.cleanup.complete ? 'complete' : '**INCOMPLETE**'}${d.cleanup.removed.length ? `: ${d.cleanup.removed.map(mdEscape).join('<br>')}` : ''}${d.cleanup.error ? `<br>${mdEscape(d.cleanup.error)}` : ''} |`,
  ];
}
