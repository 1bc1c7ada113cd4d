import { z } from 'zod';
import { releaseDeployment } from '../core/workflow/release.ts';
import { deploymentIds, metrics, MetricUnit, taskHandler } from './task.ts';

/** "Release deployment": one expired deployment's restore points, released and recorded. */
export const handler = taskHandler(
  'release-deployment',
  deploymentIds.extend({ now: z.iso.datetime({ offset: true }).optional(), releasedBy: z.string().min(1) }),
  async (deps, input) => {
    const outcome = await releaseDeployment(deps, input);
    if (outcome.released) metrics.addMetric('DeploymentsReleased', MetricUnit.Count, 1);
    else if (outcome.record && !outcome.record.ok) metrics.addMetric('ReleasesFailed', MetricUnit.Count, 1);
    return outcome;
  },
);
