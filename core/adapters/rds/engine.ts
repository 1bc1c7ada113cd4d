import { createHash } from 'node:crypto';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { RDSClient } from '@aws-sdk/client-rds';
import { EtlRollbackError, EXIT, PreflightError, RestorePointMissingError } from '../../errors.ts';
import { StateStore } from '../../runtime/state-store.ts';
import type { Unit } from '../../manifest/schema.ts';
import type { AdapterContext, CaptureResult, Changes, Check, Diff, Outcome, Pending, RestorePoint, UnitAdapter } from '../types.ts';
import { derivedIdentifier, pointKey, runShort, snapshotIdentifier, TAG, type Tags } from './names.ts';
import { checkInWindow, isoUtc, type RestorableWindow } from './window.ts';

/**
 * The shared life of an RDS instance or Aurora cluster unit. Every call does at most one mutating RDS call, then
 * answers "pending" (the state machine waits and calls again) or "done". Progress is read back from RDS on every call
 * (describe), so a call may fail, be retried or be resumed by a later run at any point.
 *
 *   capture:  CreateDB(Cluster)Snapshot `etlrb-<pipeline>-<deployment>-<unit>` → pending until `available` → point
 *   asOf:     (a `--to` rollback, no snapshot) the time checked against the restorable window → a point whose restore
 *             is a point-in-time restore to that time; everything after the restored copy is made is the same
 *   restore:  restore snapshot (or point in time) to `<id>-restored-<run>` → wait → [cluster: writer instance → wait]
 *             → rename `<id>` to `<id>-pre-rollback-<run>` (deletion protection on) → wait → rename the restored
 *             one to `<id>` → wait → done
 *
 * Which run's names a restore uses is kept in a small swap record in the state bucket (written before the first
 * mutation), so that a rerun by another run finds a swap that stopped between the two renames and completes it.
 *
 *   undoRecord: (`etl-rollback undo`, core/workflow/undo.ts) no capture: what a restore replaces is exactly the
 *             instance (cluster) it keeps as `<id>-pre-rollback-<run>`, a name known before it writes. The record is a
 *             "kept" point naming it and its resource id; its restore is the same swap with no restore step (the
 *             "restored" one is the kept one): rename `<id>` to `<id>-pre-rollback-<undo run>` (deletion protection on),
 *             then the kept one to `<id>` (deletion protection back to what it was). The undo of the undo swaps back.
 */

/** What the RDS adapters need of an instance or cluster, read back from RDS. */
export interface RdsResource {
  id: string;
  arn: string;
  status: string;
  deletionProtection: boolean;
  /** DbiResourceId / DbClusterResourceId and creation time: what a rename does not change (a kept point's identity). */
  resourceId?: string;
  createdAt?: string;
  tags: Tags;
}

export interface RdsSnapshot {
  id: string;
  arn: string;
  status: string;
  percent?: number;
  createTime?: string;
  sourceId?: string;
  engine?: string;
  engineVersion?: string;
  tags: Tags;
}

/** What every kind's settings hold besides its own fields. */
export interface RdsSettings {
  /** DbiResourceId / DbClusterResourceId of the original: the source of a point-in-time restore once it was renamed. */
  resourceId?: string;
  /** The original's own tags (not ours), given to the restored copy. */
  tags?: Tags;
}

/** Where a restore reads from. */
export type RestoreSource = { kind: 'snapshot'; snapshotId: string } | { kind: 'pitr'; time: string; sourceId?: string; sourceResourceId?: string };

/** One kind of RDS resource (instance or cluster): the calls that differ between the two. */
export interface RdsKind<S extends RdsSettings> {
  /** "DB instance" / "DB cluster", for messages. */
  noun: string;
  snapshotMax: number;
  /** Names the change counters: `dbInstancesRestored`... */
  counter: string;
  describe(rds: RDSClient, id: string): Promise<RdsResource | undefined>;
  describeSnapshot(rds: RDSClient, id: string): Promise<RdsSnapshot | undefined>;
  createSnapshot(rds: RDSClient, sourceId: string, snapshotId: string, tags: Tags): Promise<void>;
  deleteSnapshot(rds: RDSClient, id: string): Promise<void>;
  /** The original's settings, recorded in the restore point so that the restored copy gets the same. */
  settings(rds: RDSClient, id: string): Promise<S>;
  restore(rds: RDSClient, source: RestoreSource, targetId: string, settings: S, tags: Tags): Promise<void>;
  /**
   * After the restored resource is available: what else it needs before the swap (a cluster's writer instance).
   * Answers a pending status, or undefined when ready; `wrote` counts the writes it made.
   */
  complete?(rds: RDSClient, targetId: string, ids: { identifier: string; runShort: string }, settings: S, tags: Tags): Promise<{ pending?: string; changes: Changes }>;
  rename(rds: RDSClient, from: string, to: string, deletionProtection?: boolean): Promise<void>;
  setDeletionProtection(rds: RDSClient, id: string, on: boolean): Promise<void>;
  addTags(rds: RDSClient, arn: string, tags: Tags): Promise<void>;
  /** Deletes the resource (and, for a cluster, its instances), without a final snapshot. */
  remove(rds: RDSClient, resource: RdsResource, log: AdapterContext['log']): Promise<void>;
  /** The live settings compared with the point's, for verify. */
  compare(expected: S, live: S): Check[];
  /** The span of times a point-in-time restore can reach (rds/window.ts); undefined: no such resource. */
  window(rds: RDSClient, id: string): Promise<RestorableWindow | undefined>;
}

export interface RdsDetails<S> {
  /** The instance or cluster identifier, as in the manifest (lowercase, as RDS stores it). */
  identifier: string;
  /** Empty for a point-in-time point. */
  snapshotId: string;
  snapshotArn: string;
  settings: S;
  /**
   * Set on a point made by `asOf` (a `--to` rollback): restore to this time (ISO-8601 UTC) from the automated backups,
   * never from a snapshot. Equal to the point's `capturedAt`.
   */
  pointInTime?: string;
  /** Set on a point recorded for undo (`undoRecord`): put back the instance (cluster) a run kept; no snapshot. */
  kept?: KeptPoint;
}

/**
 * The instance (cluster) run `runId` replaced: it keeps it as `keptId`. Identified by its resource id (DbiResourceId /
 * DbClusterResourceId) and creation time, which a rename does not change, so verify and a rerun know it whatever its
 * name (the pair, not the resource id alone: a resource reporting a reused or blank resource id is not taken for it).
 */
export interface KeptPoint {
  kind: 'kept';
  runId: string;
  /** `<id>-pre-rollback-<short run>`; empty when the run found no `<id>` (nothing was live to put back). */
  keptId: string;
  resourceId: string;
  createdAt: string;
  /** The original's deletion protection, given back when it takes `<id>` again (the swap turned it on). */
  deletionProtection: boolean;
}

/** Which run's names a restore of this point uses; written before the first mutation. */
export interface SwapRecord {
  runId: string;
  runShort: string;
  restoredId: string;
  keptId: string;
  startedAt: string;
}

/** RDS is in a state the adapter will not guess its way out of (both names taken, a failed snapshot). */
export class RdsStateError extends EtlRollbackError {
  override readonly name = 'RdsStateError';
  readonly exitCode = EXIT.failed;
}

/** Seconds between polls: an RDS snapshot or restore takes minutes; a rename about one. */
export const RDS_POLL_SECONDS = 30;
/** At most 6 hours of polling per capture or restore (720 polls of 30 s). */
export const RDS_MAX_POLLS = (6 * 60 * 60) / RDS_POLL_SECONDS;

const pending = (status: string): Pending => ({ waitSeconds: RDS_POLL_SECONDS, status });

function pointIds(unit: { id: string }, ctx: AdapterContext) {
  return { pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, unitId: unit.id };
}

export function swapKeyPrefix(ids: { pipeline: string; deploymentId: string; unitId: string }): string {
  return `rds-swaps/${ids.pipeline}/${ids.deploymentId}/${ids.unitId}/`;
}

async function readSwaps(s3: S3Client, bucket: string, prefix: string): Promise<SwapRecord[]> {
  const store = new StateStore(s3, bucket);
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    keys.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  const records = await Promise.all(keys.map((k) => store.getJson<SwapRecord>(k)));
  return records.filter((r): r is SwapRecord => r !== undefined).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
}

function describeSource(source: string | undefined): string {
  if (!source) return 'unknown source';
  return source.startsWith('snapshot:') ? `snapshot ${source.slice('snapshot:'.length)}` : `point-in-time restore to ${source.slice('pitr:'.length)}`;
}

/** The adapter of one RDS kind. */
export function rdsAdapter<U extends Unit & { type: 'rds-instance' | 'rds-cluster' }, S extends RdsSettings>(
  type: U['type'],
  kind: RdsKind<S>,
  identifierOf: (unit: U) => string,
): UnitAdapter<U, RdsDetails<S>, CaptureResult<RdsDetails<S>>> {
  const idOf = (unit: U) => identifierOf(unit).toLowerCase();

  async function capture(unit: U, ctx: AdapterContext): Promise<CaptureResult<RdsDetails<S>>> {
    const id = idOf(unit);
    const ids = pointIds(unit, ctx);
    const snapshotId = snapshotIdentifier(ids, kind.snapshotMax);
    const snapshot = await kind.describeSnapshot(ctx.rds, snapshotId);
    if (!snapshot) {
      const live = await kind.describe(ctx.rds, id);
      if (!live) throw new PreflightError(`${type} unit "${unit.id}": there is no ${kind.noun} "${id}" to take a snapshot of`);
      if (live.status !== 'available') return { pending: pending(`${kind.noun} ${id} is ${live.status}; the snapshot starts once it is available`) };
      await kind.createSnapshot(ctx.rds, id, snapshotId, {
        [TAG.pipeline]: ctx.pipeline,
        [TAG.deployment]: ctx.deploymentId,
        [TAG.unit]: unit.id,
        [TAG.point]: pointKey(ids),
      });
      ctx.log.info('rds snapshot started', { unitId: unit.id, snapshotId });
      return { pending: pending(`snapshot ${snapshotId} of ${kind.noun} ${id} was started`) };
    }
    if (snapshot.tags[TAG.point] !== pointKey(ids) || snapshot.sourceId?.toLowerCase() !== id) {
      throw new PreflightError(
        `${type} unit "${unit.id}": snapshot ${snapshotId} exists but was not taken for this restore point ` +
          `(its tag ${TAG.point} is "${snapshot.tags[TAG.point] ?? ''}", its source "${snapshot.sourceId ?? ''}"); delete or rename it`,
      );
    }
    if (snapshot.status === 'failed' || snapshot.status === 'error') {
      throw new RdsStateError(`${type} unit "${unit.id}": snapshot ${snapshotId} is ${snapshot.status}; delete it and take the snapshot again`);
    }
    if (snapshot.status !== 'available') {
      return { pending: pending(`snapshot ${snapshotId} is ${snapshot.status}${snapshot.percent !== undefined ? ` (${snapshot.percent}%)` : ''}`) };
    }
    const settings = await kind.settings(ctx.rds, id);
    const capturedAt = snapshot.createTime ?? ctx.now().toISOString();
    // RDS holds no row count we could read: count is 1 (one database image) and the checksum digests what identifies
    // that image (snapshot ARN, source, creation time, engine and version, source resource id).
    const checksum = createHash('sha256')
      .update(JSON.stringify([snapshot.arn, id, capturedAt, snapshot.engine, snapshot.engineVersion, settings.resourceId ?? '']))
      .digest('hex');
    return {
      unitId: unit.id,
      type,
      capturedAt,
      count: 1,
      checksum,
      details: { identifier: id, snapshotId, snapshotArn: snapshot.arn, settings },
    };
  }

  /** Is `resource` the instance (cluster) a kept point names? By resource id and creation time: a rename keeps both. */
  function isKeptOne(resource: RdsResource, keptPoint: KeptPoint): boolean {
    return (resource.resourceId ?? '') === keptPoint.resourceId && (resource.createdAt ?? '') === keptPoint.createdAt;
  }

  /** The swap this restore continues (a started one, possibly of an earlier run), or a new one for this run. */
  async function currentSwap(unit: U, point: RestorePoint<RdsDetails<S>>, ctx: AdapterContext, live: RdsResource | undefined) {
    const id = point.details.identifier;
    const swaps = await readSwaps(ctx.s3, ctx.stateBucket, swapKeyPrefix(pointIds(unit, ctx)));
    const last = swaps.at(-1);
    if (last) {
      const restored = await kind.describe(ctx.rds, last.restoredId);
      const kept = await kind.describe(ctx.rds, last.keptId);
      // A swap that was undone (etl-rollback undo renamed the original it kept back to `<id>`): finished, not started.
      // The original carries the tags the swap gave it before renaming it.
      const undone = !restored && !kept && live?.tags[TAG.keptFor] === pointKey(pointIds(unit, ctx)) && live.tags[TAG.run] === last.runId;
      // Started and not finished: the restored copy still has its own name, or nothing was created yet; or this run
      // just renamed it and `<id>` is not visible yet.
      if (!undone && (restored || !kept || (!live && last.runId === ctx.runId))) return { swap: last, restored, kept, created: false };
    }
    if (!ctx.runId) throw new RdsStateError(`${type} unit "${unit.id}": a restore needs a run id`);
    const short = runShort(ctx.runId);
    const swap: SwapRecord = {
      runId: ctx.runId,
      runShort: short,
      // A kept point's "restored" instance is the one the undone run kept.
      restoredId: point.details.kept ? point.details.kept.keptId : derivedIdentifier(id, `restored-${short}`),
      keptId: derivedIdentifier(id, `pre-rollback-${short}`),
      startedAt: ctx.now().toISOString(),
    };
    if (swaps.some((s) => s.runShort === short) || live?.id === swap.keptId) {
      throw new RdsStateError(`${type} unit "${unit.id}": run ${ctx.runId} already swapped ${kind.noun} ${id} once; start a new run to restore it again`);
    }
    return { swap, restored: undefined, kept: undefined, created: true };
  }

  async function snapshotSource(point: RestorePoint<RdsDetails<S>>, ctx: AdapterContext): Promise<RestoreSource | undefined> {
    if (point.details.pointInTime !== undefined || !point.details.snapshotId) return undefined;
    const snapshot = await kind.describeSnapshot(ctx.rds, point.details.snapshotId);
    return snapshot?.status === 'available' ? { kind: 'snapshot', snapshotId: snapshot.id } : undefined;
  }

  function sourceTag(source: RestoreSource): string {
    return source.kind === 'snapshot' ? `snapshot:${source.snapshotId}` : `pitr:${source.time}`;
  }

  async function restore(unit: U, point: RestorePoint<RdsDetails<S>>, ctx: AdapterContext): Promise<Outcome> {
    const id = point.details.identifier;
    const key = pointKey(pointIds(unit, ctx));
    const changes: Changes = {};
    const outcome = (notes: string[], extra: Partial<Outcome> = {}): Outcome => ({
      changes,
      writes: Object.values(changes).reduce((a, b) => a + b, 0),
      notes,
      ...extra,
    });
    const live = await kind.describe(ctx.rds, id);
    const keptPoint = point.details.kept;
    if (keptPoint && !keptPoint.keptId) {
      throw new RestorePointMissingError(
        `${type} unit "${unit.id}": run ${keptPoint.runId} found no ${kind.noun} ${id}, so it replaced nothing there; there is nothing to put back (rename or delete ${id} by hand)`,
      );
    }

    // Done (by this run or an earlier one): `<id>` is the copy restored from this point, or (a kept point) the very
    // instance the undone run kept. Finish: the kept originals stay protected from deletion until release.
    if (live && (keptPoint ? isKeptOne(live, keptPoint) : live.tags[TAG.point] === key && live.tags[TAG.restoredFrom])) {
      if (live.status !== 'available') return outcome([], { pending: pending(`${kind.noun} ${id} (restored) is ${live.status}`) });
      const kept: string[] = [];
      for (const swap of await readSwaps(ctx.s3, ctx.stateBucket, swapKeyPrefix(pointIds(unit, ctx)))) {
        const original = await kind.describe(ctx.rds, swap.keptId);
        if (!original) continue;
        kept.push(original.id);
        if (!original.deletionProtection && original.status === 'available') {
          await kind.setDeletionProtection(ctx.rds, original.id, true);
          changes.deletionProtectionSet = (changes.deletionProtectionSet ?? 0) + 1;
        }
      }
      const notes = [
        keptPoint
          ? `${kind.noun} ${id} is again the one run ${keptPoint.runId} replaced (resource id ${keptPoint.resourceId})`
          : `${kind.noun} ${id} is restored from ${describeSource(live.tags[TAG.restoredFrom])} (run ${live.tags[TAG.run] ?? '?'})`,
      ];
      if (kept.length > 0) notes.push(`the replaced original is kept as ${kept.join(', ')}, deletion protection on, until the restore point is released`);
      return outcome(notes, kept.length > 0 ? { keptAt: kept.map((k) => `${kind.noun} ${k}`).join(', ') } : {});
    }

    const { swap, restored, kept, created } = await currentSwap(unit, point, ctx, live);
    const tags: Tags = {
      ...ownTagsOf(point.details.settings),
      [TAG.pipeline]: ctx.pipeline,
      [TAG.deployment]: ctx.deploymentId,
      [TAG.unit]: unit.id,
      [TAG.point]: key,
      [TAG.run]: swap.runId,
    };

    if (keptPoint) {
      // 1. No restore: the "restored" one is the instance the undone run kept, under its kept name.
      const keptOne = restored ?? (created ? await kind.describe(ctx.rds, swap.restoredId) : undefined);
      if (!keptOne) {
        if (kept && !live) return outcome([], { pending: pending(`waiting for ${swap.restoredId} to appear as ${id}`) });
        throw new RestorePointMissingError(
          `${type} unit "${unit.id}": ${kind.noun} ${swap.restoredId}, which run ${keptPoint.runId} kept (resource id ${keptPoint.resourceId}), ` +
            `no longer exists (deleted by hand, or released): there is nothing to put back`,
        );
      }
      if (!isKeptOne(keptOne, keptPoint)) {
        throw new RdsStateError(
          `${type} unit "${unit.id}": ${kind.noun} ${keptOne.id} is not the one run ${keptPoint.runId} kept (resource id ${keptPoint.resourceId}, created ${keptPoint.createdAt}); rename it, then rerun`,
        );
      }
      if (keptOne.status !== 'available') return outcome([], { pending: pending(`${kind.noun} ${keptOne.id} is ${keptOne.status}`) });
    }
    // Written before the first mutation (and, for a kept point, once the kept one is known to be there).
    if (created) await new StateStore(ctx.s3, ctx.stateBucket).putJson(`${swapKeyPrefix(pointIds(unit, ctx))}${swap.runShort}.json`, swap);

    // 1. The restored copy, under its own name.
    if (!restored && !keptPoint) {
      if (kept && !live) return outcome([], { pending: pending(`waiting for ${swap.restoredId} to appear as ${id}`) });
      let source = await snapshotSource(point, ctx);
      if (!source) {
        // A point-in-time point, or the snapshot is gone: point-in-time restore to the point's time (for a snapshot
        // point, the moment of capture), from the original's backups.
        const original = live && live.id === id && (await kind.settings(ctx.rds, id)).resourceId === point.details.settings.resourceId;
        source = original
          ? { kind: 'pitr', time: point.capturedAt, sourceId: id }
          : { kind: 'pitr', time: point.capturedAt, sourceResourceId: point.details.settings.resourceId };
      }
      await kind.restore(ctx.rds, source, swap.restoredId, point.details.settings, { ...tags, [TAG.restoredFrom]: sourceTag(source) });
      changes[source.kind === 'snapshot' ? `${kind.counter}RestoredFromSnapshot` : `${kind.counter}RestoredToPointInTime`] = 1;
      ctx.log.info('rds restore started', { unitId: unit.id, target: swap.restoredId, source: sourceTag(source) });
      return outcome([`${kind.noun} ${swap.restoredId} restored from ${describeSource(sourceTag(source))}`], {
        pending: pending(`${kind.noun} ${swap.restoredId} is being restored from ${describeSource(sourceTag(source))}`),
      });
    }
    if (restored && restored.status !== 'available') return outcome([], { pending: pending(`${kind.noun} ${swap.restoredId} is ${restored.status}`) });
    if (kind.complete && !keptPoint) {
      const done = await kind.complete(ctx.rds, swap.restoredId, { identifier: id, runShort: swap.runShort }, point.details.settings, tags);
      Object.assign(changes, done.changes);
      if (done.pending) return outcome([], { pending: pending(done.pending) });
    }

    // 2. The original steps aside, protected from deletion, under `<id>-pre-rollback-<run>`.
    if (live) {
      if (kept) {
        throw new RdsStateError(
          `${type} unit "${unit.id}": both ${kind.noun} ${id} and ${swap.keptId} exist and ${id} is not the restored copy; ` +
            `rename or delete one of them, then rerun`,
        );
      }
      if (live.status !== 'available') return outcome([], { pending: pending(`${kind.noun} ${id} is ${live.status}; it is renamed once available`) });
      await kind.addTags(ctx.rds, live.arn, { [TAG.keptFor]: key, [TAG.run]: swap.runId });
      await kind.rename(ctx.rds, id, swap.keptId, true);
      changes[`${kind.counter}Renamed`] = (changes[`${kind.counter}Renamed`] ?? 0) + 1;
      ctx.log.info('rds original renamed', { unitId: unit.id, from: id, to: swap.keptId });
      return outcome([`${kind.noun} ${id} renamed to ${swap.keptId} (kept, deletion protection on)`], {
        keptAt: `${kind.noun} ${swap.keptId}`,
        pending: pending(`${kind.noun} ${id} is being renamed to ${swap.keptId}`),
      });
    }

    // 3. `<id>` is free (the original was renamed, or was gone): the restored copy takes its name and endpoint (a kept
    // one its deletion protection from before the swap that kept it).
    if (kept && kept.status !== 'available') return outcome([], { pending: pending(`${kind.noun} ${swap.keptId} is ${kept.status}`) });
    await kind.rename(ctx.rds, swap.restoredId, id, keptPoint?.deletionProtection);
    changes[`${kind.counter}Renamed`] = (changes[`${kind.counter}Renamed`] ?? 0) + 1;
    ctx.log.info('rds restored copy renamed', { unitId: unit.id, from: swap.restoredId, to: id });
    return outcome([`${kind.noun} ${swap.restoredId} renamed to ${id}`], {
      ...(kept ? { keptAt: `${kind.noun} ${swap.keptId}` } : {}),
      pending: pending(`${kind.noun} ${swap.restoredId} is being renamed to ${id}`),
    });
  }

  async function diff(unit: U, point: RestorePoint<RdsDetails<S>>, ctx: AdapterContext): Promise<Diff> {
    const id = point.details.identifier;
    const live = await kind.describe(ctx.rds, id);
    if (live && live.tags[TAG.point] === pointKey(pointIds(unit, ctx)) && live.tags[TAG.restoredFrom]) {
      return { changes: {}, writes: 0, notes: [`${kind.noun} ${id} is already restored from ${describeSource(live.tags[TAG.restoredFrom])}: nothing to do`] };
    }
    const short = runShort(ctx.runId ?? 'dry-run');
    const keptPoint = point.details.kept;
    if (keptPoint) {
      if (live && isKeptOne(live, keptPoint)) return { changes: {}, writes: 0, notes: [`${kind.noun} ${id} already is the one run ${keptPoint.runId} replaced: nothing to do`] };
      const keptId = derivedIdentifier(id, `pre-rollback-${short}`);
      const changes: Changes = { [`${kind.counter}Renamed`]: live ? 2 : 1 };
      const notes = [
        live
          ? `swap: rename ${id} to ${keptId} (kept, deletion protection on), then ${keptPoint.keptId} (kept by run ${keptPoint.runId}) back to ${id}`
          : `${kind.noun} ${id} does not exist: ${keptPoint.keptId} (kept by run ${keptPoint.runId}) is renamed back to ${id}`,
      ];
      return { changes, writes: Object.values(changes).reduce((a, b) => a + b, 0), notes };
    }
    const restoredId = derivedIdentifier(id, `restored-${short}`);
    const keptId = derivedIdentifier(id, `pre-rollback-${short}`);
    const source = await snapshotSource(point, ctx);
    const from = source
      ? `snapshot ${point.details.snapshotId}`
      : point.details.pointInTime !== undefined
        ? `point-in-time restore to ${point.details.pointInTime}`
        : `point-in-time restore to ${point.capturedAt} (snapshot ${point.details.snapshotId} is missing)`;
    const changes: Changes = {
      [source ? `${kind.counter}RestoredFromSnapshot` : `${kind.counter}RestoredToPointInTime`]: 1,
      [`${kind.counter}Renamed`]: live ? 2 : 1,
    };
    const notes = [
      `restore ${kind.noun} ${restoredId} from ${from}, with the original's settings`,
      live
        ? `swap: rename ${id} to ${keptId} (kept, deletion protection on), then ${restoredId} to ${id} (same endpoint name)`
        : `${kind.noun} ${id} does not exist: ${restoredId} is renamed to ${id}`,
    ];
    return { changes, writes: Object.values(changes).reduce((a, b) => a + b, 0), notes };
  }

  async function verify(unit: U, point: RestorePoint<RdsDetails<S>>, ctx: AdapterContext): Promise<Check[]> {
    const id = point.details.identifier;
    const live = await kind.describe(ctx.rds, id);
    const checks: Check[] = [{ name: 'exists', ok: live !== undefined, expected: id, actual: live ? live.id : 'absent' }];
    if (!live) return checks;
    checks.push({ name: 'status', ok: live.status === 'available', expected: 'available', actual: live.status });
    const keptPoint = point.details.kept;
    if (keptPoint) {
      const expected = `resource id ${keptPoint.resourceId}, created ${keptPoint.createdAt} (kept by run ${keptPoint.runId})`;
      checks.push({ name: 'keptOne', ok: isKeptOne(live, keptPoint), expected, actual: `resource id ${live.resourceId ?? 'none'}, created ${live.createdAt ?? 'unknown'}` });
      return checks;
    }
    const fromSnapshot = `snapshot:${point.details.snapshotId}`;
    const fromPitr = `pitr:${point.capturedAt}`;
    const accepted = point.details.pointInTime !== undefined ? [fromPitr] : [fromSnapshot, fromPitr];
    const actualSource = live.tags[TAG.restoredFrom] ?? 'not restored by etl-rollback';
    checks.push({
      name: 'restoredFrom',
      ok: live.tags[TAG.point] === pointKey(pointIds(unit, ctx)) && accepted.includes(actualSource),
      expected: accepted.join(' or '),
      actual: actualSource,
    });
    checks.push(...kind.compare(point.details.settings, await kind.settings(ctx.rds, id)));
    return checks;
  }

  async function release(unit: U, point: RestorePoint<RdsDetails<S>>, ctx: AdapterContext): Promise<void> {
    const key = pointKey(pointIds(unit, ctx));
    const snapshot = point.details.snapshotId ? await kind.describeSnapshot(ctx.rds, point.details.snapshotId) : undefined;
    if (snapshot && snapshot.tags[TAG.point] === key) {
      await kind.deleteSnapshot(ctx.rds, snapshot.id);
      ctx.log.info('rds snapshot deleted', { unitId: unit.id, snapshotId: snapshot.id });
    }
    for (const swap of await readSwaps(ctx.s3, ctx.stateBucket, swapKeyPrefix(pointIds(unit, ctx)))) {
      if (ctx.runId && swap.runId !== ctx.runId) continue;
      const kept = await kind.describe(ctx.rds, swap.keptId);
      // Only an original this point's rollback set aside (tagged when it was renamed), never anything else.
      if (!kept || kept.tags[TAG.keptFor] !== key) continue;
      if (kept.deletionProtection) await kind.setDeletionProtection(ctx.rds, kept.id, false);
      await kind.remove(ctx.rds, kept, ctx.log);
      ctx.log.info('rds kept original deleted', { unitId: unit.id, id: kept.id });
    }
  }

  /**
   * A `--to` rollback's point: no snapshot was taken before the deploy, so the restore reads the automated backups at
   * `at`. Checked against the restorable window now (plan time), refused outside it with the window named. Count and
   * checksum are as a snapshot point's: one database image, identified by the source, its resource id and the time.
   */
  async function asOf(unit: U, at: Date, ctx: AdapterContext): Promise<{ point: RestorePoint<RdsDetails<S>>; shows: string[] }> {
    const id = idOf(unit);
    const window = await kind.window(ctx.rds, id);
    if (!window) throw new PreflightError(`${type} unit "${unit.id}": there is no ${kind.noun} "${id}" to restore to a point in time`);
    checkInWindow(`${type} unit "${unit.id}" (${kind.noun} ${id})`, at, window);
    const settings = await kind.settings(ctx.rds, id);
    const time = isoUtc(at);
    const checksum = createHash('sha256').update(JSON.stringify(['pitr', id, time, settings.resourceId ?? ''])).digest('hex');
    return {
      point: { unitId: unit.id, type, capturedAt: time, count: 1, checksum, details: { identifier: id, snapshotId: '', snapshotArn: '', settings, pointInTime: time } },
      shows: [
        `${kind.noun} ${id}: point-in-time restore to ${time} (restorable window [${isoUtc(window.earliest)}, ${isoUtc(window.latest)}]), ` +
          `then the rename swap (the current one kept as ${id}-pre-rollback-<run>)`,
      ],
    };
  }

  /**
   * The record `etl-rollback undo` needs before run `ctx.runId` restores the unit (point of `ctx.deploymentId`,
   * `undo-<run>`): no snapshot (minutes, and not needed). The restore keeps what it replaces, the live `<id>`, as
   * `<id>-pre-rollback-<short run>`; the record names that and the live one's resource id. Count and checksum as a
   * snapshot point's: one database image, identified by what names it. Reads only.
   */
  async function undoRecord(unit: U, ctx: AdapterContext): Promise<CaptureResult<RdsDetails<S>>> {
    const id = idOf(unit);
    if (!ctx.runId) throw new RdsStateError(`${type} unit "${unit.id}": an undo record needs the run id`);
    const live = await kind.describe(ctx.rds, id);
    const settings: S = live ? await kind.settings(ctx.rds, id) : ({} as S);
    const keptPoint: KeptPoint = {
      kind: 'kept',
      runId: ctx.runId,
      // No `<id>`: the run replaces nothing (the restored copy takes a free name); the restore of the record says so.
      keptId: live ? derivedIdentifier(id, `pre-rollback-${runShort(ctx.runId)}`) : '',
      resourceId: live?.resourceId ?? '',
      createdAt: live?.createdAt ?? '',
      deletionProtection: live?.deletionProtection ?? false,
    };
    const checksum = createHash('sha256').update(JSON.stringify(['kept', id, keptPoint.keptId, keptPoint.resourceId, keptPoint.createdAt])).digest('hex');
    return {
      unitId: unit.id,
      type,
      capturedAt: ctx.now().toISOString(),
      count: live ? 1 : 0,
      checksum,
      details: { identifier: id, snapshotId: '', snapshotArn: '', settings, kept: keptPoint },
    };
  }

  return { type, maxPolls: RDS_MAX_POLLS, capture, diff, restore, verify, release, asOf, undoRecord };
}

function ownTagsOf(settings: RdsSettings): Tags {
  return settings.tags ?? {};
}

/** Verify's comparison of the live settings with the point's, one check per setting. */
export function compareSettings<S>(expected: S, live: S, keys: (keyof S)[]): Check[] {
  return keys.map((k) => {
    const e = JSON.stringify(expected[k] ?? null);
    const a = JSON.stringify(live[k] ?? null);
    return { name: `setting ${String(k)}`, ok: e === a, expected: e, actual: a };
  });
}

/** An RDS "not found" fault, by name (DBInstanceNotFoundFault, DBClusterSnapshotNotFoundFault, ...). */
export function isNotFound(error: unknown): boolean {
  const name = (error as { name?: string } | null)?.name ?? '';
  return /NotFound(Fault)?$/.test(name);
}

export async function orUndefined<T>(call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}
