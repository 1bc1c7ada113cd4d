import { markInPlace } from '../core/workflow/snapshot.ts';
import { deploymentIds, metrics, MetricUnit, taskHandler } from './task.ts';

/** "Restore points in place": the deployment becomes IN_PLACE, so the deploy may start while the seal is read. */
export const handler = taskHandler('mark-in-place', deploymentIds, async (deps, input) => {
  const inPlace = await markInPlace(deps, input);
  metrics.addMetric('UnitsSealedAfterInPlace', MetricUnit.Count, inPlace.sealing.length);
  return inPlace;
});
