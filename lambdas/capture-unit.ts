import { z } from 'zod';
import { captureUnit } from '../core/workflow/snapshot.ts';
import { deploymentIds, metrics, MetricUnit, taskHandler } from './task.ts';

/** "Capture unit": one unit's restore point. */
export const handler = taskHandler('capture-unit', deploymentIds.extend({ unitId: z.string().min(1) }), async (deps, input) => {
  const captured = await captureUnit(deps, input);
  metrics.addMetric('UnitsCaptured', MetricUnit.Count, 1);
  return captured;
});
