import { z } from 'zod';
import { restoreUnit } from '../core/workflow/rollback.ts';
import { metrics, MetricUnit, runIds, taskHandler } from './task.ts';

/** "Restore unit": one unit of one stage. */
export const handler = taskHandler('restore-unit', runIds.extend({ stage: z.number().int().min(0), unitId: z.string().min(1) }), async (deps, input) => {
  const restored = await restoreUnit(deps, input);
  metrics.addMetric('UnitsRestored', MetricUnit.Count, 1);
  metrics.addMetric('RestoreWrites', MetricUnit.Count, restored.writes);
  return restored;
});
