import { adapterFor } from '../adapters/registry.ts';
import type { RestorePoint } from '../adapters/types.ts';
import { LockHeldError } from '../errors.ts';
import type { Deployment, DeploymentStatus, ReleasedUnit, ReleaseRecord, RunIndexEntry } from '../ledger/ledger.ts';
import { auditBucketOf, auditKeys, auditSafely, writeAuditJson } from '../report/audit.ts';
import { adapterContext, deployedManifest, type WorkflowDeps } from './deps.ts';

/**
 * Release: a restore point lives `retention.days` (the deployed manifest's, default 14) after its deployment was
 * registered; then a daily job deletes what only the restore point needed (version manifests, shadow tables, DB
 * snapshots, kept originals), through each unit adapter's `release`, and records it. Never released: a deployment whose
 * latest rollback failed or stopped part-way (its restore point is the way back), one being snapshotted or rolled
 * back, and one whose pipeline is locked. The release itself holds the pipeline's lock, so no rollback starts mid-way.
 */

/** The manifest schema's default `retention.days`, for a deployment whose manifest cannot be read. */
const DEFAULT_RETENTION_DAYS = 14;

/** Deployment states whose restore points may be released once expired. */
export const RELEASABLE: readonly DeploymentStatus[] = ['READY', 'ROLLED_BACK', 'FAILED'];
/** Deployment states that hold a sealed restore point (the "last restore point" of a pipeline). */
const SEALED: readonly DeploymentStatus[] = ['READY', 'ROLLING_BACK', 'ROLLED_BACK', 'ROLLBACK_FAILED'];
/** How long a release may hold its pipeline's lock. */
export const RELEASE_LOCK_TTL_SECONDS = 15 * 60;

export type SkipCode = 'ROLLBACK_FAILED' | 'IN_PROGRESS' | 'LOCKED' | 'LAST_RUN_FAILED' | 'RUN_IN_PROGRESS';

export interface ReleaseCandidate {
  pipeline: string;
  deploymentId: string;
  status: DeploymentStatus;
  createdAt: string;
  retentionDays: number;
  expiredAt: string;
}

export interface SkippedDeployment extends ReleaseCandidate {
  code: SkipCode;
  reason: string;
}

export interface PipelineFreshness {
  pipeline: string;
  /** When the pipeline's most recent sealed restore point was taken (its deployment's registration). */
  lastRestorePointAt?: string;
  secondsSinceLastRestorePoint?: number;
}

export interface ExpiredListing {
  now: string;
  candidates: ReleaseCandidate[];
  skipped: SkippedDeployment[];
  /** Deployments not expired yet. */
  kept: number;
  pipelines: PipelineFreshness[];
}

function nowOf(deps: WorkflowDeps, now?: string): Date {
  return now ? new Date(now) : deps.now();
}

async function retentionDaysOf(deps: WorkflowDeps, d: Deployment): Promise<number> {
  try {
    return (await deployedManifest(deps, d.pipeline, d.deploymentId)).retention.days;
  } catch {
    // A deployment whose manifest is gone (a snapshot refused early): the default retention applies.
    return DEFAULT_RETENTION_DAYS;
  }
}

/** Why a deployment must be kept although expired; undefined if it may be released. */
async function refusal(deps: WorkflowDeps, d: Deployment, runs: RunIndexEntry[]): Promise<{ code: SkipCode; reason: string } | undefined> {
  if (d.status === 'ROLLBACK_FAILED') return { code: 'ROLLBACK_FAILED', reason: 'its latest rollback failed or stopped part-way: the restore point is the way back' };
  if (!RELEASABLE.includes(d.status)) return { code: 'IN_PROGRESS', reason: `it is ${d.status}` };
  // An undo record (core/workflow/undo.ts) of a run that stopped part-way is the way back from that run, as the restore
  // point of a deployment whose rollback failed is: kept, for the same reason.
  if (d.origin?.kind === 'undo') {
    const source = await deps.ledger.getRun(d.origin.runId);
    if (source?.status === 'FAILED' || source?.status === 'CANCELLED') {
      return { code: 'LAST_RUN_FAILED', reason: `it holds what run ${source.runId} replaced, and that run stopped part-way (${source.status}): undo ${source.runId} is the way back` };
    }
  }
  const lock = await deps.ledger.getLock(d.pipeline);
  // The lock is about the present: compared with the real clock, even when releasing as of another time (--now).
  if (lock && lock.expiresAt * 1000 > deps.now().getTime()) return { code: 'LOCKED', reason: `pipeline "${d.pipeline}" is locked by ${lock.holder} (since ${lock.acquiredAt})` };
  const latest = runs.find((r) => r.deploymentId === d.deploymentId && !r.dryRun);
  if (latest) {
    const run = await deps.ledger.getRun(latest.runId);
    if (run?.status === 'FAILED') return { code: 'LAST_RUN_FAILED', reason: `its latest rollback run ${run.runId} FAILED` };
    if (run?.status === 'PLANNED' || run?.status === 'RUNNING') return { code: 'RUN_IN_PROGRESS', reason: `its latest rollback run ${run.runId} is ${run.status}` };
  }
  return undefined;
}

/** First state of the release machine: which deployments' restore points have expired and may be released. */
export async function listExpiredDeployments(deps: WorkflowDeps, input: { now?: string } = {}): Promise<ExpiredListing> {
  const now = nowOf(deps, input.now);
  const byPipeline = new Map<string, Deployment[]>();
  for (const d of await deps.ledger.scanDeployments()) byPipeline.set(d.pipeline, [...(byPipeline.get(d.pipeline) ?? []), d]);
  const candidates: ReleaseCandidate[] = [];
  const skipped: SkippedDeployment[] = [];
  const pipelines: PipelineFreshness[] = [];
  let kept = 0;
  for (const [pipeline, deployments] of [...byPipeline].sort(([a], [b]) => a.localeCompare(b))) {
    // Freshness is about deploys: a derived deployment (an undo's record) is no restore point taken before a deploy.
    const sealed = deployments.filter((d) => SEALED.includes(d.status) && d.origin === undefined).map((d) => d.createdAt).sort();
    const last = sealed[sealed.length - 1];
    pipelines.push({ pipeline, ...(last ? { lastRestorePointAt: last, secondsSinceLastRestorePoint: Math.max(0, Math.round((now.getTime() - Date.parse(last)) / 1000)) } : {}) });
    const runs = await deps.ledger.listRunIndex(pipeline);
    for (const d of deployments.sort((a, b) => a.createdAt.localeCompare(b.createdAt))) {
      if (d.status === 'RELEASED') continue;
      const retentionDays = await retentionDaysOf(deps, d);
      const expiredAt = new Date(Date.parse(d.createdAt) + retentionDays * 86_400_000);
      if (expiredAt.getTime() > now.getTime()) {
        kept++;
        continue;
      }
      const candidate: ReleaseCandidate = { pipeline, deploymentId: d.deploymentId, status: d.status, createdAt: d.createdAt, retentionDays, expiredAt: expiredAt.toISOString() };
      const why = await refusal(deps, d, runs);
      if (why) skipped.push({ ...candidate, ...why });
      else candidates.push(candidate);
    }
  }
  deps.log.info('expired deployments listed', { candidates: candidates.length, skipped: skipped.length, kept });
  return { now: now.toISOString(), candidates, skipped, kept, pipelines };
}

export interface ReleaseOutcome {
  pipeline: string;
  deploymentId: string;
  released: boolean;
  /** Set when the deployment was left alone (no longer eligible, locked, already released). */
  skipped?: { code: SkipCode | 'ALREADY_RELEASED'; reason: string };
  record?: ReleaseRecord;
}

/** What a unit's release deletes, from its restore point, in words a person can check. */
function describeDeleted(deps: WorkflowDeps, point: RestorePoint): string[] {
  const d = point.details as Record<string, unknown>;
  const out: string[] = [];
  if (typeof d.manifestKey === 'string') out.push(`s3://${deps.stateBucket}/${d.manifestKey.replace(/[^/]*$/, '')} (version manifest${d.mode === 'copy' ? ' and copies' : ''})`);
  if (typeof d.shadowTable === 'string') out.push(`${typeof d.connection === 'string' ? `${d.connection}:` : ''}${d.shadowTable} (shadow copy)`);
  if (typeof d.snapshotId === 'string') out.push(`${d.snapshotId} (DB snapshot), and any original kept by a rollback of this restore point`);
  return out.length > 0 ? out : [`the ${point.type} restore point of unit "${point.unitId}"`];
}

/**
 * Releases one expired deployment: re-checks that it may be released, takes the pipeline's lock, calls every unit
 * adapter's `release`, records what was deleted (ledger release record, audit copy) and marks the deployment
 * RELEASED. A unit whose release fails is recorded with its error and the deployment keeps its status, so the next
 * run of the job tries again (every adapter's release is idempotent).
 */
export async function releaseDeployment(
  deps: WorkflowDeps,
  input: { pipeline: string; deploymentId: string; now?: string; releasedBy: string },
): Promise<ReleaseOutcome> {
  // `now` (the listing's time) decided expiry; what happens here is checked against the present again.
  const ids = { pipeline: input.pipeline, deploymentId: input.deploymentId };
  const deployment = await deps.ledger.requireDeployment(input.pipeline, input.deploymentId);
  if (deployment.status === 'RELEASED') return { ...ids, released: false, skipped: { code: 'ALREADY_RELEASED', reason: 'already released' } };
  const why = await refusal(deps, deployment, await deps.ledger.listRunIndex(input.pipeline));
  if (why) {
    deps.log.info('release skipped', { ...ids, ...why });
    return { ...ids, released: false, skipped: why };
  }
  const holder = `release-${input.deploymentId}`;
  try {
    await deps.ledger.acquireLock(input.pipeline, holder, input.deploymentId, RELEASE_LOCK_TTL_SECONDS);
  } catch (error) {
    if (error instanceof LockHeldError) return { ...ids, released: false, skipped: { code: 'LOCKED', reason: error.message } };
    throw error;
  }
  try {
    const manifest = await deployedManifest(deps, input.pipeline, input.deploymentId);
    const units: ReleasedUnit[] = [];
    for (const point of await deps.ledger.listRestorePoints(input.pipeline, input.deploymentId)) {
      const unit = manifest.units.find((u) => u.id === point.unitId);
      const deleted = describeDeleted(deps, point);
      try {
        if (!unit) throw new Error(`unit "${point.unitId}" is not in the deployed manifest`);
        await adapterFor(unit).release(unit, point, adapterContext(deps, manifest, { deploymentId: input.deploymentId, unitId: point.unitId }));
        units.push({ unitId: point.unitId, type: point.type, deleted });
        deps.log.info('restore point released', { ...ids, unitId: point.unitId, type: point.type, deleted });
      } catch (error) {
        const e = { name: (error as Error).name, message: (error as Error).message };
        units.push({ unitId: point.unitId, type: point.type, deleted: [], error: e });
        deps.log.warn('restore point release failed', { ...ids, unitId: point.unitId, error: e });
      }
    }
    const ok = units.every((u) => !u.error);
    const record: ReleaseRecord = {
      ...ids,
      releasedAt: deps.now().toISOString(),
      previousStatus: deployment.status,
      retentionDays: manifest.retention.days,
      releasedBy: input.releasedBy,
      units,
      ok,
    };
    const released = ok && (await deps.ledger.markReleased(input.pipeline, input.deploymentId, deployment.status));
    await deps.ledger.putReleaseRecord(record);
    await auditSafely(deps.log, `release of ${input.pipeline}/${input.deploymentId}`, () =>
      writeAuditJson(deps.s3, auditBucketOf(deps) ?? deps.stateBucket, auditKeys.release(input.pipeline, input.deploymentId), record),
    );
    deps.log.info(released ? 'deployment released' : 'deployment release incomplete', { ...ids, units: units.length, ok });
    return { ...ids, released, record };
  } finally {
    await deps.ledger.releaseLock(input.pipeline, holder);
  }
}
