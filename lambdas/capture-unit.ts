import { z } from 'zod';
import { captureUnit } from '../core/workflow/snapshot.ts';
import { deploymentIds, metrics, MetricUnit, taskHandler } from './task.ts';

/** "Capture unit": one unit's restore point, or "not yet" (the state machine waits and calls again). */
export const handler = taskHandler(
  'capture-unit',
  deploymentIds.extend({ unitId: z.string().min(1), polls: z.number().int().min(0).optional() }),
  async (deps, input) => {
    const captured = await captureUnit(deps, input);
    if (captured.done) metrics.addMetric('UnitsCaptured', MetricUnit.Count, 1);
    return captured;
  },
);
