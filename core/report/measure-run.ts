import type { Run, Step } from '../ledger/ledger.ts';
import { workOf } from '../plan/requests.ts';
import type { ThroughputSample, UnitSample } from '../plan/throughput.ts';

/**
 * What a finished run measured, from the times its steps recorded in the ledger: how long each stage took, the
 * recovery time (from the first stage's start to the run's end: waits for approval or a window before it are not
 * part of it), and, for a successful run, the throughput record later estimates learn from.
 */

const ms = (iso: string | undefined) => (iso === undefined ? undefined : Date.parse(iso));
const seconds = (fromMs: number, toMs: number) => Math.max(0, (toMs - fromMs) / 1000);

/** A stage's time span from its steps: earliest start (or restore) to latest verification (or restore). */
export function stageSpan(steps: readonly (Step | undefined)[]): { startedAt: string; endedAt: string } | undefined {
  const starts = steps.map((s) => s?.startedAt ?? s?.restoredAt).filter((t): t is string => !!t).sort();
  const ends = steps.map((s) => s?.verifiedAt ?? s?.restoredAt).filter((t): t is string => !!t).sort();
  return starts[0] && ends.length > 0 ? { startedAt: starts[0], endedAt: ends[ends.length - 1]! } : undefined;
}

/** Seconds from the first stage's start to the run's end; undefined when no stage started or the run has not ended. */
export function recoverySeconds(run: Pick<Run, 'endedAt' | 'stages'>, steps: readonly Step[]): number | undefined {
  const first = run.stages.map((st) => stageSpan(steps.filter((s) => s.stage === st.index))).find((span) => span !== undefined);
  const end = ms(run.endedAt);
  return first && end !== undefined ? seconds(Date.parse(first.startedAt), end) : undefined;
}

/**
 * The throughput record of a successful run, or undefined for a dry run, a run that did not succeed, or one whose
 * steps carry no times. Units a resumed run skipped (verified by the run it resumed) are left out: they restored nothing.
 */
export function measureRun(run: Run, steps: readonly Step[], recordedAt: string): ThroughputSample | undefined {
  if (run.dryRun || run.status !== 'SUCCEEDED') return undefined;
  const units: UnitSample[] = [];
  let stagesSeconds = 0;
  for (const stage of run.stages) {
    const own = steps.filter((s) => s.stage === stage.index);
    const span = stageSpan(own);
    if (!span) return undefined;
    stagesSeconds += seconds(Date.parse(span.startedAt), Date.parse(span.endedAt));
    // The gate verifies the stage's units one after the other, after the last restore: each unit's share is the time
    // since the one verified before it.
    const lastRestore = Math.max(...own.map((s) => ms(s.restoredAt) ?? 0));
    let previous = lastRestore;
    for (const step of [...own].sort((a, b) => (ms(a.verifiedAt) ?? 0) - (ms(b.verifiedAt) ?? 0))) {
      const started = ms(step.startedAt);
      const restored = ms(step.restoredAt);
      const verified = ms(step.verifiedAt);
      if (started === undefined || restored === undefined || verified === undefined) return undefined;
      const verifySeconds = seconds(previous, verified);
      previous = Math.max(previous, verified);
      if (step.skippedFrom) continue;
      units.push({ unitId: step.unitId, unitType: step.type, restoreSeconds: seconds(started, restored), verifySeconds, ...workOf(step.changes) });
    }
  }
  const recovery = recoverySeconds(run, [...steps]);
  if (recovery === undefined || run.stages.length === 0) return undefined;
  return {
    pipeline: run.pipeline,
    runId: run.runId,
    runStartedAt: run.startedAt,
    recordedAt,
    stages: run.stages.length,
    overheadSeconds: Math.max(0, recovery - stagesSeconds),
    units,
  };
}
