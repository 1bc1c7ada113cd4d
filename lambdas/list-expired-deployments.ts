import { z } from 'zod';
import { listExpiredDeployments } from '../core/workflow/release.ts';
import { metrics, MetricUnit, taskHandler } from './task.ts';

/**
 * "List expired deployments": the release machine's first state. Also publishes, per pipeline, the age of its latest
 * sealed restore point (`TimeSinceLastRestorePoint`, seconds, dimension `pipeline`) once a day.
 */
export const handler = taskHandler('list-expired-deployments', z.object({ now: z.iso.datetime({ offset: true }).optional() }), async (deps, input) => {
  const listing = await listExpiredDeployments(deps, input);
  for (const p of listing.pipelines) {
    if (p.secondsSinceLastRestorePoint === undefined) continue;
    const single = metrics.singleMetric();
    single.addDimension('pipeline', p.pipeline);
    single.addMetric('TimeSinceLastRestorePoint', MetricUnit.Seconds, p.secondsSinceLastRestorePoint);
  }
  metrics.addMetric('ReleaseCandidates', MetricUnit.Count, listing.candidates.length);
  return listing;
});
