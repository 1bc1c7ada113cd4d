import { z } from 'zod';
import { appendChanges, changeLogFolder, changeOfEvent, s3ObjectEventSchema, type LoggedChange } from '../adapters/s3/change-log.ts';
import { restorePointFolder } from '../adapters/s3/keys.ts';
import { DEFAULT_RETRY_POLICY } from '../adapters/s3/retry.ts';
import type { ChangeWindow } from '../ledger/ledger.ts';
import type { Manifest } from '../manifest/schema.ts';
import type { WorkflowDeps } from './deps.ts';

/**
 * Change capture during a deploy (s3-prefix units with `capture: change-log`).
 *
 * The snapshot opens a window in the ledger for the deployment, naming each such unit's bucket, prefix and log folder,
 * BEFORE the prefix is listed for the restore point: a change made while the listing runs is both in the manifest and in
 * the log, which costs one extra key examined and loses nothing. S3 announces every change to EventBridge; a rule per
 * pipeline (scoped to its buckets and prefixes) sends `{pipeline, event}` to an SQS queue; "Record changes" takes
 * batches from the queue and appends each change to the log of every open window whose unit holds the key. The window
 * closes at `etl-rollback complete` or at the deploy tool's `Deployment Completed` event (same queue); events that
 * happened before the close and arrive late are still logged, later ones are not.
 */

/** Source and detail-type of the event a deploy tool sends when a deploy finished (the same source as `Deployment Failed`). */
export const DEPLOYMENT_EVENTS_SOURCE = 'etl.deployments';
export const DEPLOYMENT_COMPLETED_DETAIL_TYPE = 'Deployment Completed';

/** Opens the deployment's change window if the manifest has change-log units; undefined otherwise. Idempotent. */
export async function openChangeCapture(deps: WorkflowDeps, manifest: Manifest, deploymentId: string): Promise<ChangeWindow | undefined> {
  const units = manifest.units.flatMap((u) =>
    u.type === 's3-prefix' && u.capture === 'change-log'
      ? [{ unitId: u.id, bucket: u.bucket, prefix: u.prefix, logFolder: changeLogFolder(restorePointFolder(manifest.pipeline, deploymentId, u.id)) }]
      : [],
  );
  if (units.length === 0) return undefined;
  const window = await deps.ledger.openChangeWindow({ pipeline: manifest.pipeline, deploymentId, openedAt: deps.now().toISOString(), units });
  deps.log.info('change capture window open', { pipeline: manifest.pipeline, deploymentId, units: units.map((u) => u.unitId), openedAt: window.openedAt });
  return window;
}

export interface CompleteResult {
  pipeline: string;
  deploymentId: string;
  /** The window as it is now; undefined: the deployment captures no changes. */
  window?: ChangeWindow;
  /** False when the window was already closed (its first closing time stands). */
  closed: boolean;
}

/** Declares a deploy complete: its change window closes. Idempotent. */
export async function completeDeployment(deps: Pick<WorkflowDeps, 'ledger' | 'now' | 'log'>, ids: { pipeline: string; deploymentId: string; by: string; at?: Date }): Promise<CompleteResult> {
  await deps.ledger.requireDeployment(ids.pipeline, ids.deploymentId);
  const at = (ids.at ?? deps.now()).toISOString();
  const out = await deps.ledger.closeChangeWindow(ids.pipeline, ids.deploymentId, at, ids.by);
  if (!out) return { pipeline: ids.pipeline, deploymentId: ids.deploymentId, closed: false };
  deps.log.info('change capture window closed', { pipeline: ids.pipeline, deploymentId: ids.deploymentId, closedAt: out.window.closedAt, by: out.window.closedBy, now: out.closed });
  return { pipeline: ids.pipeline, deploymentId: ids.deploymentId, window: out.window, closed: out.closed };
}

// ---------------------------------------------------------------------------------------------------------------------
// "Record changes": SQS batches → change logs
// ---------------------------------------------------------------------------------------------------------------------

/** One message of the capture queue: its delivery id (SQS messageId, stable across redeliveries) and body. */
export interface ChangeDelivery {
  id: string;
  body: string;
}

/** What every capture rule target sends: the rule's pipeline and the event as EventBridge received it. */
const deliveryBodySchema = z.object({ pipeline: z.string().min(1), event: z.record(z.string(), z.unknown()) });

const deploymentCompletedSchema = z.object({
  source: z.literal(DEPLOYMENT_EVENTS_SOURCE),
  'detail-type': z.literal(DEPLOYMENT_COMPLETED_DETAIL_TYPE),
  time: z.string().min(1),
  detail: z.object({ pipeline: z.string().min(1), deploymentId: z.string().min(1) }),
});

export interface RecordChangesResult {
  /** Deliveries to be redelivered (SQS partial batch response). */
  failed: string[];
  /** Changes appended (a change logged for two windows counts twice). */
  recorded: number;
  /** S3 events outside every window or prefix of their pipeline. */
  outside: number;
  /** Windows closed by `Deployment Completed` events. */
  closed: number;
  /** Batch objects written. */
  batches: number;
}

/** An event time to the second is inside a window opened at a millisecond time when it is not before that second. */
function inside(window: ChangeWindow, time: string): boolean {
  const t = Date.parse(time);
  if (Number.isNaN(t)) return false;
  const opened = Math.floor(Date.parse(window.openedAt) / 1000) * 1000;
  return t >= opened && (window.closedAt === undefined || t <= Date.parse(window.closedAt));
}

/**
 * Appends one SQS batch to the change logs: per log folder, one new object holding the batch's changes for it. A
 * delivery that cannot be parsed, or whose log could not be written, is answered as failed (SQS redelivers it, then
 * moves it to the dead-letter queue); the rest of the batch is done.
 */
export async function recordChanges(deps: Pick<WorkflowDeps, 'ledger' | 's3' | 'stateBucket' | 'log'>, deliveries: readonly ChangeDelivery[]): Promise<RecordChangesResult> {
  const result: RecordChangesResult = { failed: [], recorded: 0, outside: 0, closed: 0, batches: 0 };
  const windowsOf = new Map<string, Promise<ChangeWindow[]>>();
  const windows = (pipeline: string) => {
    let w = windowsOf.get(pipeline);
    if (!w) windowsOf.set(pipeline, (w = deps.ledger.listChangeWindows(pipeline)));
    return w;
  };
  const byFolder = new Map<string, { ids: string[]; changes: LoggedChange[] }>();
  const completions: { delivery: string; pipeline: string; deploymentId: string; time: string }[] = [];
  for (const delivery of deliveries) {
    let pipeline: string;
    let event: Record<string, unknown>;
    try {
      ({ pipeline, event } = deliveryBodySchema.parse(JSON.parse(delivery.body)));
    } catch (error) {
      deps.log.warn('change capture: unreadable message', { delivery: delivery.id, error: (error as Error).message.slice(0, 300) });
      result.failed.push(delivery.id);
      continue;
    }
    const completed = deploymentCompletedSchema.safeParse(event);
    if (completed.success) {
      if (completed.data.detail.pipeline !== pipeline) {
        result.outside++;
        continue;
      }
      completions.push({ delivery: delivery.id, pipeline, deploymentId: completed.data.detail.deploymentId, time: completed.data.time });
      continue;
    }
    const s3Event = s3ObjectEventSchema.safeParse(event);
    if (!s3Event.success) {
      deps.log.warn('change capture: not an S3 object event nor a Deployment Completed event', { delivery: delivery.id, issue: s3Event.error.issues[0]?.message });
      result.failed.push(delivery.id);
      continue;
    }
    const { bucket, change } = changeOfEvent(s3Event.data);
    let matched = 0;
    try {
      for (const window of await windows(pipeline)) {
        if (!inside(window, change.time)) continue;
        for (const unit of window.units) {
          if (unit.bucket !== bucket || !change.key.startsWith(unit.prefix)) continue;
          const group = byFolder.get(unit.logFolder) ?? { ids: [], changes: [] };
          group.ids.push(delivery.id);
          group.changes.push(change);
          byFolder.set(unit.logFolder, group);
          matched++;
        }
      }
    } catch (error) {
      deps.log.warn('change capture: reading the change windows failed', { delivery: delivery.id, pipeline, error: (error as Error).message });
      result.failed.push(delivery.id);
      continue;
    }
    if (matched === 0) result.outside++;
  }
  for (const [folder, group] of byFolder) {
    try {
      await appendChanges(deps.s3, DEFAULT_RETRY_POLICY, deps.stateBucket, folder, group.ids, group.changes);
      result.recorded += group.changes.length;
      result.batches++;
    } catch (error) {
      deps.log.warn('change capture: appending to a change log failed; its deliveries will be retried', { folder, deliveries: group.ids.length, error: (error as Error).message });
      result.failed.push(...group.ids);
    }
  }
  // Closing after appending: a batch holding both a deploy's last changes and its completion logs the changes first.
  for (const c of completions) {
    try {
      const out = await deps.ledger.closeChangeWindow(c.pipeline, c.deploymentId, new Date(c.time).toISOString(), 'event:Deployment Completed');
      if (out?.closed) result.closed++;
      if (!out) deps.log.warn('change capture: Deployment Completed for a deployment without a change window', { pipeline: c.pipeline, deploymentId: c.deploymentId });
    } catch (error) {
      deps.log.warn('change capture: closing the window failed', { ...c, error: (error as Error).message });
      result.failed.push(c.delivery);
    }
  }
  result.failed = [...new Set(result.failed)];
  deps.log.info('changes recorded', { deliveries: deliveries.length, ...result, failed: result.failed.length });
  return result;
}

