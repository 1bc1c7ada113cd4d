import { z } from 'zod';
import { restoreUnit } from '../core/workflow/rollback.ts';
import { metrics, MetricUnit, runIds, taskHandler } from './task.ts';

/** "Restore unit": one unit of one stage, or one step of it (the state machine waits and calls again). */
export const handler = taskHandler(
  'restore-unit',
  runIds.extend({ stage: z.number().int().min(0), unitId: z.string().min(1), polls: z.number().int().min(0).optional() }),
  async (deps, input) => {
    const restored = await restoreUnit(deps, input);
    if (restored.done) {
      metrics.addMetric('UnitsRestored', MetricUnit.Count, 1);
      metrics.addMetric('RestoreWrites', MetricUnit.Count, restored.writes);
    }
    return restored;
  },
);
