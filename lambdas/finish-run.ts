import { finishRun } from '../core/workflow/rollback.ts';
import { publishRunMetrics } from './run-metrics.ts';
import { metrics, MetricUnit, runIds, taskHandler } from './task.ts';

/** "Finish run": the run succeeded; write its report. */
export const handler = taskHandler('finish-run', runIds, async (deps, input) => {
  const report = await finishRun(deps, input);
  metrics.addMetric('RollbacksSucceeded', MetricUnit.Count, 1);
  publishRunMetrics(report);
  return report;
});
