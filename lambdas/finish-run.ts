import { finishRun } from '../core/workflow/rollback.ts';
import { countRun, publishRunMetrics } from './run-metrics.ts';
import { runIds, taskHandler } from './task.ts';

/** "Finish run": the run succeeded; write its report. */
export const handler = taskHandler('finish-run', runIds, async (deps, input) => {
  const report = await finishRun(deps, input);
  countRun('RollbacksSucceeded', report.pipeline);
  publishRunMetrics(report);
  return report;
});
