import { restoredCounts, type RunReport } from '../core/report/report.ts';
import { metrics, MetricUnit } from './task.ts';

/**
 * Counts a run outcome (RollbacksStarted, RollbacksSucceeded, RollbacksFailed, …) twice: once for the whole service
 * (what the alarms watch) and once under dimension `pipeline` (the dashboard's per-pipeline rows).
 */
export function countRun(name: string, pipeline: string): void {
  metrics.addMetric(name, MetricUnit.Count, 1);
  const single = metrics.singleMetric();
  single.addDimension('pipeline', pipeline);
  single.addMetric(name, MetricUnit.Count, 1);
}

/**
 * Metrics of a finished (or stopped) rollback, from its report, i.e. from the step outcome counters the ledger holds:
 * objects and rows put back, gate failures, and each stage's duration (dimension `Stage`, 1-based); the same counts and
 * the run's duration again under dimension `pipeline`. Dry runs count nothing: they wrote nothing.
 */
export function publishRunMetrics(report: RunReport): void {
  if (report.dryRun) return;
  const { objects, rows } = restoredCounts(report);
  metrics.addMetric('ObjectsRestored', MetricUnit.Count, objects);
  metrics.addMetric('RowsRestored', MetricUnit.Count, rows);
  metrics.addMetric('RestoreWritesPerRun', MetricUnit.Count, report.totals.writes);
  const gateFailures = report.stages.filter((s) => s.status === 'VERIFY_FAILED').length;
  if (gateFailures > 0) metrics.addMetric('GateFailures', MetricUnit.Count, gateFailures);
  for (const stage of report.stages) {
    if (stage.durationMs === undefined) continue;
    const single = metrics.singleMetric();
    single.addDimension('Stage', String(stage.index + 1));
    single.addMetric('StageDuration', MetricUnit.Milliseconds, stage.durationMs);
  }
  const byPipeline = (name: string, unit: (typeof MetricUnit)[keyof typeof MetricUnit], value: number) => {
    // A single metric is published, dimensions and all, by its first addMetric: one per value.
    const single = metrics.singleMetric();
    single.addDimension('pipeline', report.pipeline);
    single.addMetric(name, unit, value);
  };
  byPipeline('ObjectsRestored', MetricUnit.Count, objects);
  byPipeline('RowsRestored', MetricUnit.Count, rows);
  if (gateFailures > 0) byPipeline('GateFailures', MetricUnit.Count, gateFailures);
  if (report.endedAt) byPipeline('RunDuration', MetricUnit.Milliseconds, Date.parse(report.endedAt) - Date.parse(report.startedAt));
}

/**
 * Metrics of a finished drill: `DrillFailed` (a failed drill, or one over its RTO: what the stack's alarm watches) or
 * `DrillsSucceeded`, and the recovery time it measured (`DrillRecoveryTime`, ms), each for the service and per pipeline.
 * A drill that yielded to a rollback counts neither.
 */
export function publishDrillMetrics(report: RunReport, failed: boolean): void {
  if (failed) countRun('DrillFailed', report.pipeline);
  else if (report.status === 'SUCCEEDED') countRun('DrillsSucceeded', report.pipeline);
  const recovery = report.drill?.recoveryMs;
  if (recovery === undefined) return;
  metrics.addMetric('DrillRecoveryTime', MetricUnit.Milliseconds, recovery);
  const single = metrics.singleMetric();
  single.addDimension('pipeline', report.pipeline);
  single.addMetric('DrillRecoveryTime', MetricUnit.Milliseconds, recovery);
}
