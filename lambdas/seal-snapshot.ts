import { recordSnapshotSummary } from '../core/report/audit.ts';
import { sealSnapshot } from '../core/workflow/snapshot.ts';
import { deploymentIds, taskHandler } from './task.ts';

/** "Seal restore points": the deployment becomes READY; its summary goes to the audit store. */
export const handler = taskHandler('seal-snapshot', deploymentIds, async (deps, input) => {
  const sealed = await sealSnapshot(deps, input);
  await recordSnapshotSummary(deps, sealed);
  return sealed;
});
