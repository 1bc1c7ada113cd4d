import type { S3PrefixUnit } from '../manifest/schema.ts';
import { InputError, PreflightError } from '../errors.ts';
import type { AdapterContext, Changes, Diff, Outcome, RestorePoint, UnitAdapter } from './types.ts';
import { captureCopy, copyPlanChanges, copyPlanNotes, copyPlanWrites, executeCopy, planCopy, quarantineFolder, verifyCopy } from './s3/copy-mode.ts';
import { deleteInBatches, listPrefix, type IoOptions } from './s3/io.ts';
import { manifestKeyFor, restorePointFolder, s3Url } from './s3/keys.ts';
import {
  DEFAULT_SHARD_SIZE,
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
} from './s3/manifest.ts';
import { prefixesOverlap } from './s3/preflight.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from './s3/retry.ts';
import { captureVersioned, executeVersioned, planChanges, planNotes, planVersioned, planWrites, verifyVersioned } from './s3/versioned.ts';

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

/** The s3-prefix adapter: never pending, so its capture answers the restore point itself. */
export type S3PrefixAdapter = Omit<UnitAdapter<S3PrefixUnit, S3PrefixDetails>, 'capture'> & {
  capture(unit: S3PrefixUnit, ctx: AdapterContext): Promise<RestorePoint<S3PrefixDetails>>;
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
      const existing = await readStoredManifest(ctx.s3, opts.retry, ctx.stateBucket, manifestKey);
      if (existing) {
        assertSameTarget(unit, existing.bucket, existing.prefix, `the restore point at ${s3Url(ctx.stateBucket, manifestKey)}`);
        return pointFrom(existing, manifestKey);
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
      return pointFrom(kept, manifestKey);
    },

    async diff(unit, point, ctx): Promise<Diff> {
      const manifest = await loadPointManifest(unit, point, ctx, opts.retry);
      if (isCopy(manifest)) {
        const plan = await planCopy(unit, manifest as Extract<AnyManifest, { format: 'etl-rollback/s3-prefix-copies@1' }>, ctx, opts);
        return { changes: copyPlanChanges(plan), writes: copyPlanWrites(plan), notes: copyPlanNotes(plan) };
      }
      const { plan } = await planVersioned(unit, manifest as Extract<AnyManifest, { format: typeof MANIFEST_FORMAT }>, ctx, opts);
      return { changes: planChanges(plan), writes: planWrites(plan), notes: planNotes(plan, opts) };
    },

    async restore(unit, point, ctx): Promise<Outcome> {
      const at = `s3://${unit.bucket}/${unit.prefix}`;
      const stored = await loadPointStored(unit, point, ctx, opts.retry);
      if (isShardIndex(stored) && stored.count > distributedThreshold()) {
        // Nothing written here: the state machine restores the shards (Distributed Map "Restore shards"), then verifies.
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
      const { plan, heads } = await planVersioned(unit, manifest as Extract<AnyManifest, { format: typeof MANIFEST_FORMAT }>, ctx, opts);
      await executeVersioned(unit, plan, heads, ctx, opts);
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
        const { plan, heads } = await planVersioned(unit, { entries }, ctx, opts, range);
        await executeVersioned(unit, plan, heads, ctx, opts);
        for (const [k, v] of Object.entries(planChanges(plan))) total[k] = (total[k] ?? 0) + v;
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
