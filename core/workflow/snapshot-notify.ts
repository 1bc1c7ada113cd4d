import type { ErrorSummary } from '../ledger/ledger.ts';
import type { Notification } from './notify.ts';

/**
 * The snapshot's events (source `etl.rollback`, like the rollback's). A deploy pipeline that starts the snapshot
 * machine itself subscribes to them: `Restore Points In Place` says the deploy may start, `Restore Points Sealed` that
 * a rollback may restore, `Snapshot Failed` that the deploy must not start. The first two are for systems only
 * (EventBridge); a failure goes to people too (SNS). Sent at least once: a retried task sends again, so a consumer
 * keys on pipeline and deploymentId.
 */
interface SnapshotFacts {
  pipeline: string;
  deploymentId: string;
  /** The snapshot execution's name, when known. */
  execution?: string;
}

const title = (f: SnapshotFacts) => `${f.pipeline} / ${f.deploymentId}`;

export function restorePointsInPlace(f: SnapshotFacts, units: string[], sealing: string[]): Notification {
  return {
    detailType: 'Restore Points In Place',
    audience: 'systems',
    subject: `etl-rollback: ${title(f)} restore points in place`,
    message: `Every unit of ${title(f)} is captured or recording: the deploy may start.${sealing.length > 0 ? ` Sealing while it runs: ${sealing.join(', ')}.` : ''}`,
    detail: { pipeline: f.pipeline, deploymentId: f.deploymentId, ...(f.execution ? { execution: f.execution } : {}), status: 'IN_PLACE', units, sealing },
  };
}

export function restorePointsSealed(f: SnapshotFacts, points: { unitId: string; type: string; count: number }[]): Notification {
  return {
    detailType: 'Restore Points Sealed',
    audience: 'systems',
    subject: `etl-rollback: ${title(f)} restore points sealed`,
    message: `The restore points of ${title(f)} are sealed: a rollback may restore them (${points.map((p) => p.unitId).join(', ')}).`,
    detail: { pipeline: f.pipeline, deploymentId: f.deploymentId, ...(f.execution ? { execution: f.execution } : {}), status: 'READY', points },
  };
}

export function snapshotFailed(f: SnapshotFacts, error: ErrorSummary, wasInPlace: boolean): Notification {
  return {
    detailType: 'Snapshot Failed',
    subject: `etl-rollback: ${title(f)} snapshot FAILED`,
    message: [
      `The snapshot of ${title(f)} failed: ${error.name}: ${error.message}`,
      wasInPlace
        ? 'Its restore points were in place, so the deploy may have started: they keep recording, but no rollback can restore them until the same snapshot is run again under the same deployment id and seals them.'
        : 'The deploy must not start: there is no restore point to roll back to. Fix the cause and run the same snapshot again under the same deployment id.',
      `Status: etl-rollback status ${f.pipeline}`,
    ].join('\n'),
    detail: { pipeline: f.pipeline, deploymentId: f.deploymentId, ...(f.execution ? { execution: f.execution } : {}), status: 'FAILED', wasInPlace, error },
  };
}
