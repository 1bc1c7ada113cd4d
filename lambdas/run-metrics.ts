import { restoredCounts, type RunReport } from '../core/report/report.ts';
import { metrics, MetricUnit } from './task.ts';

/**
 * Metrics of a finished (or stopped) rollback, from its report, i.e. from the step outcome counters the ledger holds:
 * objects and rows put back, gate failures, and each stage's duration (dimension `Stage`, 1-based). Dry runs count
 * nothing: they wrote nothing.
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
}
