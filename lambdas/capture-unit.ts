import { z } from 'zod';
import { captureUnit } from '../core/workflow/snapshot.ts';
import { deploymentIds, metrics, MetricUnit, taskHandler } from './task.ts';

/**
 * "Capture unit": one unit's restore point, or "not yet" (the state machine waits and calls again); with `until:
 * 'in-place'`, a copy-on-write table only as far as its triggers. "Seal unit": the same call, `until: 'sealed'`.
 */
export const handler = taskHandler(
  'capture-unit',
  deploymentIds.extend({ unitId: z.string().min(1), polls: z.number().int().min(0).optional(), until: z.enum(['in-place', 'sealed']).optional() }),
  async (deps, input) => {
    const captured = await captureUnit(deps, input);
    if (captured.done && !('inPlace' in captured)) metrics.addMetric('UnitsCaptured', MetricUnit.Count, 1);
    return captured;
  },
);
