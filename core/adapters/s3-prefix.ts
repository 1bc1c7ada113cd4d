import type { S3PrefixUnit } from '../manifest/schema.ts';
import { InputError, PreflightError } from '../errors.ts';
import type { AdapterContext, Changes, Diff, Outcome, RestorePoint, UnitAdapter } from './types.ts';
import { describeAsOf, differencesFromNow, resolveVersionedAt } from './s3/as-of.ts';
import { planChangeLogRestore, type ChangeLogPlan } from './s3/change-log-restore.ts';
import { changeLogFolder } from './s3/change-log.ts';
import { captureCopy, copyPlanChanges, copyPlanNotes, copyPlanWrites, executeCopy, planCopy, quarantineFolder, verifyCopy } from './s3/copy-mode.ts';
import { deleteInBatches, listPrefix, type IoOptions, type Listing } from './s3/io.ts';
import { compareKeys, manifestKeyFor, nameSome, restorePointFolder, s3Url } from './s3/keys.ts';
import {
  DEFAULT_SHARD_SIZE,
  COPY_MANIFEST_FORMAT,
  MANIFEST_FORMAT,
  expandShards,
  isShardIndex,
  loadPointManifest,
  loadPointStored,
  pointFrom,
  readShard,
  readStoredManifest,
  assertSameTarget,
  writeManifestOnce,
  writeShardedManifestOnce,
  type AnyManifest,
  type S3PrefixDetails,
  type StoredManifest,
} from './s3/manifest.ts';
import { prefixesOverlap } from './s3/preflight.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from './s3/retry.ts';
import {
  captureVersioned,
  executeVersioned,
  holdBack,
  planChanges,
  planNotes,
  planRestore,
  planVersioned,
  planWrites,
  resolveHeads,
  verifyVersioned,
  type RestorePlan,
} from './s3/versioned.ts';
import { archiveRetrievalPricesFor } from '../plan/prices.ts';
import { MAYBE_ARCHIVED_CLASSES, archiveNotes, archivePending, findWaiting, requestRetrievals, type WaitingVersion } from './s3/archive.ts';

/**
 * s3-prefix adapter. Two modes, chosen per unit (`mode`), recorded in the restore point:
 *
 * versioned (default; s3/versioned.ts) – capture records the version ids under the prefix (no data copied), after
 *   checking that the bucket keeps versions (versioning on, no lifecycle rule expiring or archiving noncurrent versions
 *   under the prefix sooner than retention.days). Restore writes only what differs: a key hidden only by delete markers
 *   gets them removed (no data copied); a changed key gets a server-side copy of its captured version (multipart copy
 *   above `multipartThresholdBytes`), marked with the version it reproduces so that a rerun never writes it again; a key
 *   added since is hidden behind a delete marker. The bad versions stay as noncurrent versions.
 * copy (s3/copy-mode.ts) – for unversioned buckets: capture copies the prefix into the state bucket; restore
 *   quarantines what it overwrites or deletes, then copies back only what differs.
 *
 * Retries: see s3/retry.ts (request-level retries are the SDK's; per-key DeleteObjects errors, and requests the SDK did
 * not retry, are ours). Deletes go in DeleteObjects batches of 1,000; copies run `copyConcurrency` at a time.
 */

export interface S3PrefixAdapterOptions {
  /** Objects larger than this are copied by multipart copy. Default and maximum: 5 GiB (CopyObject's limit). */
  multipartThresholdBytes?: number;
  /** Part size of a multipart copy. Default 512 MiB (grown for objects that would need more than 10,000 parts). */
  partSizeBytes?: number;
  /** Copies in flight at once. Default 16. */
  copyConcurrency?: number;
  /** The adapter's own retries (see s3/retry.ts). */
  retry?: Partial<RetryPolicy>;
  /**
   * Keys a version-manifest shard holds; a prefix with more keys is captured as a sharded manifest. Default: env
   * `ETL_ROLLBACK_S3_SHARD_SIZE`, else 10,000.
   */
  shardSize?: number;
  /**
   * Above this many captured objects, a restore of a sharded restore point is handed to the state machine shard by
   * shard (`Outcome.shards`: the Distributed Map "Restore shards" runs `restoreShards` for batches of them). Default:
   * env `ETL_ROLLBACK_S3_DISTRIBUTED_THRESHOLD`, else 50,000.
   */
  distributedThreshold?: number;
}

/** Restores of more objects than this go shard by shard through the Distributed Map (default). */
export const DEFAULT_DISTRIBUTED_THRESHOLD = 50_000;

function positiveEnv(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new InputError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** The largest object a single CopyObject can copy. */
export const MAX_SINGLE_COPY_BYTES = 5 * 1024 ** 3;
/** Copies in flight at once during a restore (default). */
export const COPY_CONCURRENCY = 16;
export const DEFAULT_PART_SIZE_BYTES = 512 * 1024 ** 2;

/** A versioned-mode manifest as stored: one file, or the index of its shards. */
type VersionedStored = Exclude<StoredManifest, { format: typeof COPY_MANIFEST_FORMAT }>;

/** The keys a plan writes (copies, marker removals, deletions), each once. */
function keysWritten(plan: RestorePlan): string[] {
  return [...new Set([...plan.copies.map((c) => c.entry.key), ...plan.markerRemovals.map((m) => m.key), ...plan.deletions])].sort(compareKeys);
}

function withoutUnchanged(changes: Changes): Changes {
  const { objectsUnchanged: _unchanged, ...rest } = changes;
  return rest;
}

function describeLog(fast: ChangeLogPlan): string {
  const { log } = fast;
  const dupes = log.duplicates > 0 ? `, ${log.duplicates} duplicate deliveries dropped` : '';
  return `${log.byKey.size} changed key(s) from ${log.delivered} logged change(s) in ${log.batches} batch(es)${dupes}, ${fast.shardsRead} manifest shard(s) read`;
}

/**
 * A restore that wrote what it could (`written`: the plan without the held-back copies) and waits for archive
 * retrievals: `pending`, with the wait and the poll budget of the slowest retrieval (s3/archive.ts). The next call plans
 * again from the live state, so what was written now is found done then.
 */
function pendingOutcome(unit: S3PrefixUnit, written: RestorePlan, waiting: readonly WaitingVersion[], requested: number, ctx: AdapterContext): Outcome {
  const at = `s3://${unit.bucket}/${unit.prefix}`;
  const pending = archivePending(unit, waiting, requested);
  ctx.log.info('s3-prefix restore waits for archive retrievals', { unit: unit.id, at, runId: ctx.runId, waiting: waiting.length, requested, ...planChanges(written), waitSeconds: pending.waitSeconds });
  const { objectsUnchanged: _unchanged, ...changes } = planChanges(written);
  return {
    changes: { ...changes, archiveRetrievalsRequested: requested },
    writes: planWrites(written),
    notes: archiveNotes(unit, waiting),
    pending,
    ...(written.copies.length + written.deletions.length > 0 ? { keptAt: `noncurrent versions of ${at}` } : {}),
  };
}

/** The s3-prefix adapter: never pending, so its capture answers the restore point itself. */
export type S3PrefixAdapter = Omit<UnitAdapter<S3PrefixUnit, S3PrefixDetails>, 'capture' | 'asOf'> & {
  capture(unit: S3PrefixUnit, ctx: AdapterContext): Promise<RestorePoint<S3PrefixDetails>>;
  /**
   * The prefix as of `at`, from the bucket's version history (s3/as-of.ts), written as the version manifest a capture
   * writes (sharded above the shard size) under the derived deployment's folder. Idempotent: a manifest already written
   * for this deployment and unit is the point (the history at a past time does not change).
   */
  asOf(unit: S3PrefixUnit, at: Date, ctx: AdapterContext): Promise<{ point: RestorePoint<S3PrefixDetails>; shows: string[] }>;
  /**
   * Restores only the keys the given shards of a sharded restore point answer for (see SHARDED_MANIFEST_FORMAT): per
   * shard, lists the live versions within its key range, plans and writes exactly as `restore` does. Idempotent.
   */
  restoreShards(unit: S3PrefixUnit, point: RestorePoint<S3PrefixDetails>, shards: readonly number[], ctx: AdapterContext): Promise<Outcome>;
};

export function createS3PrefixAdapter(options: S3PrefixAdapterOptions = {}): S3PrefixAdapter {
  const opts: IoOptions = {
    multipartThresholdBytes: Math.min(options.multipartThresholdBytes ?? MAX_SINGLE_COPY_BYTES, MAX_SINGLE_COPY_BYTES),
    partSizeBytes: options.partSizeBytes ?? DEFAULT_PART_SIZE_BYTES,
    copyConcurrency: Math.max(1, options.copyConcurrency ?? COPY_CONCURRENCY),
    retry: { ...DEFAULT_RETRY_POLICY, ...options.retry },
  };
  if (opts.partSizeBytes <= 0 || opts.multipartThresholdBytes <= 0) throw new InputError('s3-prefix adapter: part size and multipart threshold must be positive');

  const isCopy = (m: AnyManifest) => m.format !== MANIFEST_FORMAT;
  const shardSize = () => options.shardSize ?? positiveEnv('ETL_ROLLBACK_S3_SHARD_SIZE') ?? DEFAULT_SHARD_SIZE;
  const distributedThreshold = () => options.distributedThreshold ?? positiveEnv('ETL_ROLLBACK_S3_DISTRIBUTED_THRESHOLD') ?? DEFAULT_DISTRIBUTED_THRESHOLD;

  /**
   * Before a sharded restore is handed to the Distributed Map: the captured versions it must copy that sit in an archive
   * tier are found, and their retrievals requested, here, in the unit step, which answers `pending` until none is
   * waiting; only then are the shards handed out. A shard (a Map iteration) cannot wait: the state machine's Wait + poll
   * loop is around the unit step. Cost: one listing of the prefix per call; the manifest's shards are read, and heads
   * fetched, only for keys that have a version in a class that may be archived (none, usually).
   */
  async function archivedBeforeShards(unit: S3PrefixUnit, stored: VersionedStored, manifestKey: string, ctx: AdapterContext): Promise<Outcome | undefined> {
    const listing = await listPrefix(ctx.s3, unit.bucket, unit.prefix, opts.retry);
    const keys = new Set([...listing.values()].filter((h) => h.versions.some((v) => MAYBE_ARCHIVED_CLASSES.has(v.storageClass))).map((h) => h.key));
    if (keys.size === 0) return undefined;
    const manifest = isShardIndex(stored) ? await expandShards(ctx.s3, opts.retry, ctx.stateBucket, stored, manifestKey) : stored;
    const entries = manifest.entries.filter((e) => keys.has(e.key));
    const sub: Listing = new Map([...listing].filter(([key]) => keys.has(key)));
    const plan = planRestore(entries, sub, await resolveHeads(ctx.s3, opts, unit.bucket, entries, sub));
    const waiting = plan.archived.length > 0 ? await findWaiting(ctx.s3, opts, unit.bucket, plan.archived) : [];
    if (waiting.length === 0) return undefined;
    const nothing: RestorePlan = { copies: [], markerRemovals: [], deletions: [], unchanged: 0, missing: [], archived: [], bytes: 0 };
    return pendingOutcome(unit, nothing, waiting, await requestRetrievals(ctx.s3, opts, unit, waiting, ctx), ctx);
  }

  /**
   * A restore from the change log (s3/change-log-restore.ts), then the full listing check that repairs whatever the
   * log missed: inline, or, for a point above the distributed threshold, shard by shard through the Distributed Map
   * (each shard then counts what it repairs as `changeLogMissed`).
   */
  async function restoreFromChangeLog(
    unit: S3PrefixUnit,
    point: RestorePoint<S3PrefixDetails>,
    stored: VersionedStored,
    folder: string,
    ctx: AdapterContext,
  ): Promise<Outcome> {
    const at = `s3://${unit.bucket}/${unit.prefix}`;
    const started = performance.now();
    const fast = await planChangeLogRestore(unit, stored, folder, ctx, opts);
    if (fast.waiting.length > 0) {
      // Archived versions among the logged keys: write the rest now, and come back for them; the listing check runs
      // once nothing waits (a listing now would only find the held-back keys again).
      const now = holdBack(fast.plan, fast.waiting);
      await executeVersioned(unit, now, fast.heads, ctx, opts);
      return pendingOutcome(unit, now, fast.waiting, await requestRetrievals(ctx.s3, opts, unit, fast.waiting, ctx), ctx);
    }
    await executeVersioned(unit, fast.plan, fast.heads, ctx, opts);
    const fastSeconds = (performance.now() - started) / 1000;
    const fromLog = `restored from the change log in ${fastSeconds.toFixed(2)} s without listing the prefix: ${describeLog(fast)}`;
    ctx.log.info('s3-prefix restored from its change log', { unit: unit.id, at, runId: ctx.runId, keys: fast.log.byKey.size, ...planChanges(fast.plan), seconds: fastSeconds });
    const changes: Changes = { ...withoutUnchanged(planChanges(fast.plan)), changeLogKeys: fast.log.byKey.size };
    const kept = planWrites(fast.plan) > 0 ? { keptAt: `noncurrent versions of ${at}` } : {};
    if (isShardIndex(stored) && stored.count > distributedThreshold()) {
      const waits = await archivedBeforeShards(unit, stored, point.details.manifestKey, ctx);
      if (waits) return { ...waits, changes: { ...changes, ...waits.changes }, writes: planWrites(fast.plan), notes: [fromLog, ...waits.notes], ...kept };
      return {
        changes,
        writes: planWrites(fast.plan),
        notes: [fromLog, `full listing check: ${stored.count} objects checked shard by shard (${stored.shards.length} shards, Distributed Map)`],
        shards: stored.shards.map((_, n) => n),
        ...kept,
      };
    }
    const manifest = isShardIndex(stored) ? await expandShards(ctx.s3, opts.retry, ctx.stateBucket, stored, point.details.manifestKey) : stored;
    const checkStarted = performance.now();
    const { plan, heads, waiting } = await planVersioned(unit, manifest, ctx, opts);
    if (waiting.length > 0) {
      // The log missed an archived key: the listing check holds it back like any restore.
      const now = holdBack(plan, waiting);
      await executeVersioned(unit, now, heads, ctx, opts);
      return pendingOutcome(unit, now, waiting, await requestRetrievals(ctx.s3, opts, unit, waiting, ctx), ctx);
    }
    await executeVersioned(unit, plan, heads, ctx, opts);
    const missed = keysWritten(plan);
    const checkSeconds = (performance.now() - checkStarted) / 1000;
    if (missed.length > 0) ctx.log.warn('change log missed changes: repaired by the listing check', { unit: unit.id, at, runId: ctx.runId, keys: missed.length, first: missed.slice(0, 5) });
    for (const [k, v] of Object.entries(withoutUnchanged(planChanges(plan)))) changes[k] = (changes[k] ?? 0) + v;
    changes.objectsUnchanged = plan.unchanged;
    changes.changeLogMissed = missed.length;
    const writes = planWrites(fast.plan) + planWrites(plan);
    return {
      changes,
      writes,
      notes: [
        fromLog,
        missed.length === 0
          ? `full listing check (${checkSeconds.toFixed(2)} s): the log missed nothing`
          : `full listing check (${checkSeconds.toFixed(2)} s): the log missed ${missed.length} key(s), repaired: ${nameSome(missed)}`,
      ],
      ...(writes > 0 ? { keptAt: `noncurrent versions of ${at}` } : {}),
    };
  }

  return {
    type: 's3-prefix',

    async capture(unit, ctx): Promise<RestorePoint<S3PrefixDetails>> {
      const folder = restorePointFolder(ctx.pipeline, ctx.deploymentId, unit.id);
      const manifestKey = manifestKeyFor(ctx.pipeline, ctx.deploymentId, unit.id);
      if (unit.bucket === ctx.stateBucket && (prefixesOverlap(unit.prefix, 'restore-points/') || prefixesOverlap(unit.prefix, 'quarantine/'))) {
        throw new PreflightError(
          `unit "${unit.id}": prefix s3://${unit.bucket}/${unit.prefix} covers the restore-point manifests of the state bucket: ` +
            'a restore would delete them. Narrow the prefix or use another state bucket.',
        );
      }
      // A change-log unit's point names its log's folder; the window that fills it was opened before this listing.
      const withLog = (point: RestorePoint<S3PrefixDetails>): RestorePoint<S3PrefixDetails> =>
        unit.capture === 'change-log' && point.details.mode === 'versioned' ? { ...point, details: { ...point.details, changeLog: changeLogFolder(folder) } } : point;
      const existing = await readStoredManifest(ctx.s3, opts.retry, ctx.stateBucket, manifestKey);
      if (existing) {
        assertSameTarget(unit, existing.bucket, existing.prefix, `the restore point at ${s3Url(ctx.stateBucket, manifestKey)}`);
        return withLog(pointFrom(existing, manifestKey));
      }
      const kept =
        unit.mode === 'copy'
          ? await writeManifestOnce(ctx.s3, opts.retry, ctx.stateBucket, manifestKey, await captureCopy(unit, ctx, opts, folder))
          : await writeShardedManifestOnce(ctx.s3, opts.retry, ctx.stateBucket, manifestKey, folder, await captureVersioned(unit, ctx, opts), shardSize());
      ctx.log.info('s3-prefix restore point captured', {
        unit: unit.id,
        mode: unit.mode,
        at: `s3://${unit.bucket}/${unit.prefix}`,
        objects: kept.count,
        bytes: kept.totalBytes,
        manifest: s3Url(ctx.stateBucket, manifestKey),
      });
      return withLog(pointFrom(kept, manifestKey));
    },

    async asOf(unit, at, ctx) {
      const folder = restorePointFolder(ctx.pipeline, ctx.deploymentId, unit.id);
      const manifestKey = manifestKeyFor(ctx.pipeline, ctx.deploymentId, unit.id);
      const where = `s3://${unit.bucket}/${unit.prefix}`;
      const resolved = await resolveVersionedAt(unit, at, ctx, opts);
      const existing = await readStoredManifest(ctx.s3, opts.retry, ctx.stateBucket, manifestKey);
      if (existing) assertSameTarget(unit, existing.bucket, existing.prefix, `the restore point at ${s3Url(ctx.stateBucket, manifestKey)}`);
      const kept = existing
        ? isShardIndex(existing)
          ? await expandShards(ctx.s3, opts.retry, ctx.stateBucket, existing, manifestKey)
          : existing
        : await writeShardedManifestOnce(ctx.s3, opts.retry, ctx.stateBucket, manifestKey, folder, resolved.manifest, shardSize());
      const shows = [describeAsOf(where, at, kept.count, differencesFromNow(kept.entries as typeof resolved.manifest.entries, resolved.listing))];
      shows.push(`restorable window of ${where}: [${resolved.window.earliest?.toISOString() ?? 'since versioning was enabled'}, ${resolved.window.latest.toISOString()}]`);
      shows.push(...resolved.window.notes);
      if (resolved.ambiguous.length > 0) {
        shows.push(`${resolved.ambiguous.length} key(s) have a version and a delete marker in the same second at or before the time: resolved to the one listed latest, else the version: ${nameSome(resolved.ambiguous)}`);
      }
      ctx.log.info('s3-prefix resolved as of a time', { unit: unit.id, at: where, asOf: at.toISOString(), objects: kept.count, manifest: s3Url(ctx.stateBucket, manifestKey), reused: existing !== undefined });
      return { point: pointFrom(kept, manifestKey), shows };
    },

    async diff(unit, point, ctx): Promise<Diff> {
      const manifest = await loadPointManifest(unit, point, ctx, opts.retry);
      if (isCopy(manifest)) {
        const plan = await planCopy(unit, manifest as Extract<AnyManifest, { format: 'etl-rollback/s3-prefix-copies@1' }>, ctx, opts);
        return { changes: copyPlanChanges(plan), writes: copyPlanWrites(plan), notes: copyPlanNotes(plan) };
      }
      const { plan, waiting } = await planVersioned(unit, manifest as Extract<AnyManifest, { format: typeof MANIFEST_FORMAT }>, ctx, opts);
      const pricing = waiting.length > 0 ? archiveRetrievalPricesFor(await ctx.s3.config.region()) : undefined;
      const notes = [...archiveNotes(unit, waiting, pricing), ...planNotes(plan, opts)];
      if (point.details.changeLog) {
        // The dry run lists the prefix (exact figures) and says how the restore will go: from the log, then the check.
        const stored = await loadPointStored(unit, point, ctx, opts.retry);
        const fast = await planChangeLogRestore(unit, stored as VersionedStored, point.details.changeLog, ctx, opts);
        const missed = keysWritten(plan).filter((k) => !fast.log.byKey.has(k));
        notes.unshift(
          `path: change log (capture: change-log): ${describeLog(fast)}; the restore writes these keys without listing the prefix, then lists it once to check ` +
            (missed.length === 0 ? '(the log names every key that differs now)' : `(the log misses ${missed.length} key(s) that differ now: ${nameSome(missed)}; the check would repair them)`),
        );
      } else {
        notes.unshift(`path: listing (capture: ${unit.capture}): every version under the prefix is listed and compared with the restore point`);
      }
      return { changes: planChanges(plan), writes: planWrites(plan), notes };
    },

    async restore(unit, point, ctx): Promise<Outcome> {
      const at = `s3://${unit.bucket}/${unit.prefix}`;
      const stored = await loadPointStored(unit, point, ctx, opts.retry);
      if (point.details.changeLog && stored.format !== COPY_MANIFEST_FORMAT) return restoreFromChangeLog(unit, point, stored as VersionedStored, point.details.changeLog, ctx);
      if (isShardIndex(stored) && stored.count > distributedThreshold()) {
        // Nothing written here: the state machine restores the shards (Distributed Map "Restore shards"), then verifies;
        // first, archived versions are retrieved (this step pends until they are readable).
        const waits = await archivedBeforeShards(unit, stored, point.details.manifestKey, ctx);
        if (waits) return waits;
        ctx.log.info('s3-prefix restore goes shard by shard', { unit: unit.id, at, runId: ctx.runId, objects: stored.count, shards: stored.shards.length });
        return {
          changes: {},
          writes: 0,
          notes: [`${stored.count} objects restored shard by shard (${stored.shards.length} shards of up to ${stored.shardSize} keys, Distributed Map)`],
          shards: stored.shards.map((_, n) => n),
        };
      }
      const manifest = isShardIndex(stored) ? await expandShards(ctx.s3, opts.retry, ctx.stateBucket, stored, point.details.manifestKey) : stored;
      if (isCopy(manifest)) {
        const plan = await planCopy(unit, manifest as Extract<AnyManifest, { format: 'etl-rollback/s3-prefix-copies@1' }>, ctx, opts);
        await executeCopy(unit, plan, ctx, opts);
        const writes = copyPlanWrites(plan);
        const changes = copyPlanChanges(plan);
        ctx.log.info('s3-prefix restored', { unit: unit.id, mode: 'copy', at, runId: ctx.runId, ...changes, writes });
        const quarantined = changes.objectsQuarantined! > 0;
        return { changes, writes, notes: copyPlanNotes(plan), ...(quarantined ? { keptAt: s3Url(ctx.stateBucket, quarantineFolder(ctx, unit)) } : {}) };
      }
      const { plan: full, heads, waiting } = await planVersioned(unit, manifest as Extract<AnyManifest, { format: typeof MANIFEST_FORMAT }>, ctx, opts);
      const plan = holdBack(full, waiting);
      await executeVersioned(unit, plan, heads, ctx, opts);
      if (waiting.length > 0) return pendingOutcome(unit, plan, waiting, await requestRetrievals(ctx.s3, opts, unit, waiting, ctx), ctx);
      const writes = planWrites(plan);
      ctx.log.info('s3-prefix restored', { unit: unit.id, mode: 'versioned', at, runId: ctx.runId, ...planChanges(plan), writes });
      return {
        changes: planChanges(plan),
        writes,
        notes: planNotes(plan, opts),
        ...(plan.copies.length + plan.deletions.length > 0 ? { keptAt: `noncurrent versions of ${at}` } : {}),
      };
    },

    async restoreShards(unit, point, shards, ctx): Promise<Outcome> {
      const index = await loadPointStored(unit, point, ctx, opts.retry);
      if (!isShardIndex(index)) throw new InputError(`unit "${unit.id}": its restore point ${point.details.manifestKey} is not sharded; restore it as a whole`);
      const at = `s3://${unit.bucket}/${unit.prefix}`;
      const total: Changes = {};
      let writes = 0;
      let keep = false;
      for (const n of [...new Set(shards)].sort((a, b) => a - b)) {
        const entries = await readShard(ctx.s3, opts.retry, ctx.stateBucket, index, n);
        const last = n === index.shards.length - 1;
        const range = { after: n > 0 ? index.shards[n - 1]!.lastKey : undefined, through: last ? undefined : index.shards[n]!.lastKey };
        const { plan, heads, waiting } = await planVersioned(unit, { entries }, ctx, opts, range);
        if (waiting.length > 0) {
          // The unit step had them all readable before handing out the shards; a temporary copy expired since (or a key
          // changed meanwhile). A shard cannot wait: ask again, write nothing of this shard, and say how to go on.
          const requested = await requestRetrievals(ctx.s3, opts, unit, waiting, ctx);
          throw new PreflightError(
            `unit "${unit.id}" (${at}), shard ${n}: the captured version of ${waiting.length} key(s) is in an archive tier and not readable: ` +
              `${nameSome(waiting.map((w) => w.entry.key))}. Nothing of this shard was written; ${requested} retrieval(s) requested now ` +
              `(${archivePending(unit, waiting, requested).status}). Resume the run once they are readable: the unit step waits for them.`,
          );
        }
        await executeVersioned(unit, plan, heads, ctx, opts);
        for (const [k, v] of Object.entries(planChanges(plan))) total[k] = (total[k] ?? 0) + v;
        // After a change-log restore the shards are its full listing check: whatever they write, the log missed.
        if (point.details.changeLog) total.changeLogMissed = (total.changeLogMissed ?? 0) + keysWritten(plan).length;
        writes += planWrites(plan);
        keep ||= plan.copies.length + plan.deletions.length > 0;
        ctx.log.info('s3-prefix shard restored', { unit: unit.id, at, runId: ctx.runId, shard: n, ...planChanges(plan), writes: planWrites(plan) });
      }
      const notes = writes === 0 ? [`shard(s) ${shards.join(', ')} already equal their restore point`] : [];
      return { changes: total, writes, notes, ...(keep ? { keptAt: `noncurrent versions of ${at}` } : {}) };
    },

    async verify(unit, point, ctx) {
      const manifest = await loadPointManifest(unit, point, ctx, opts.retry);
      return isCopy(manifest)
        ? verifyCopy(unit, manifest as Extract<AnyManifest, { format: 'etl-rollback/s3-prefix-copies@1' }>, point.details.contentChecksum, ctx, opts)
        : verifyVersioned(unit, manifest as Extract<AnyManifest, { format: typeof MANIFEST_FORMAT }>, point.details.contentChecksum, ctx, opts);
    },

    async release(unit, point, ctx: AdapterContext) {
      const expected = manifestKeyFor(ctx.pipeline, ctx.deploymentId, unit.id);
      if (point.details.manifestKey !== expected) {
        throw new InputError(
          `unit "${unit.id}": restore point names manifest ${point.details.manifestKey}, expected ${expected} for ` +
            `pipeline "${ctx.pipeline}" deployment "${ctx.deploymentId}": refusing to delete another object`,
        );
      }
      // Everything under the point's folder: the manifest, and in copy mode the copies; every version of each (the state
      // bucket may be versioned). Never data of the unit's bucket. A second release finds nothing.
      const folder = restorePointFolder(ctx.pipeline, ctx.deploymentId, unit.id);
      const listing = await listPrefix(ctx.s3, ctx.stateBucket, folder, opts.retry);
      const targets = [...listing.values()].flatMap((h) => [...h.versions, ...h.markers].map((v) => ({ key: h.key, versionId: v.versionId })));
      await deleteInBatches(ctx.s3, opts.retry, ctx.stateBucket, folder, targets, 'releasing the restore point');
      ctx.log.info('s3-prefix restore point released', { unit: unit.id, manifest: s3Url(ctx.stateBucket, expected), objects: targets.length });
    },
  };
}

/** The production adapter: 5 GiB multipart threshold, 512 MiB parts, 16 copies at once, the default retry policy. */
export const s3PrefixAdapter: S3PrefixAdapter = createS3PrefixAdapter();

export type { RestorePoint };
export { compareKeys, contentChecksum, copySourceOf, manifestChecksum, manifestKeyFor, mapLimit, nameSome, normalizeEtag, restorePointFolder } from './s3/keys.ts';
export { DELETE_BATCH_SIZE, SOURCE_VERSION_META, listPrefix, listCurrent, type KeyHistory, type ListedMarker, type ListedVersion, type Listing } from './s3/io.ts';
export {
  COPY_MANIFEST_FORMAT,
  DEFAULT_SHARD_SIZE,
  MANIFEST_FORMAT,
  SHARDED_MANIFEST_FORMAT,
  shardIndexSchema,
  type ShardIndex,
  type ShardRef,
  copyManifestSchema,
  versionManifestSchema,
  type CopyManifest,
  type ManifestEntry,
  type S3PrefixDetails,
  type VersionManifest,
} from './s3/manifest.ts';
export { latestEntries, planRestore, planChanges, planWrites, headKey, type RestorePlan } from './s3/versioned.ts';
export { DEFAULT_RETRY_POLICY, RETRYABLE_KEY_CODES, backoffDelay, isRetryableError, type RetryPolicy } from './s3/retry.ts';
export { lifecycleHazards, prefixesOverlap, rulePrefix } from './s3/preflight.ts';
