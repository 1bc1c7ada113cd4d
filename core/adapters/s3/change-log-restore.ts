import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { RestorePointMissingError } from '../../errors.ts';
import type { S3PrefixUnit } from '../../manifest/schema.ts';
import type { AdapterContext } from '../types.ts';
import { readChangeLog, type ChangeLog, type LoggedChange } from './change-log.ts';
import { SOURCE_VERSION_META, headObject, headerDifferences, objectHeadOf, type IoOptions, type ObjectHead } from './io.ts';
import { compareKeys, mapLimit, nameSome } from './keys.ts';
import { isShardIndex, readShard, type ManifestEntry, type StoredManifest } from './manifest.ts';
import { MAYBE_ARCHIVED_CLASSES, waitingFrom, type WaitingVersion } from './archive.ts';
import { errorName, httpStatus, sendOnce, type RetryPolicy } from './retry.ts';
import { headKey, type Heads, type RestorePlan } from './versioned.ts';

/**
 * The fast path of a restore with a change log (`capture: change-log`): only the keys the log names are looked at.
 *
 * For each logged key: its captured entry (from the one manifest shard whose key range holds it), and what the key is
 * now (one HeadObject, no listing). Then, as the listing path would decide it:
 * - not captured, live now → hidden behind a delete marker (added by the deploy);
 * - captured, and live now as the captured version, our marked copy of it, or the same bytes and headers → unchanged;
 * - captured, hidden now by a delete marker the log saw created, and the log shows no version created since capture →
 *   the logged delete markers are removed (no data copied);
 * - otherwise → the captured version is copied back.
 * The log decides only which keys to look at; the HeadObject decides what each is. An event lost by the log leaves its
 * key unexamined here: the full listing check after this path repairs it and reports it.
 */

/** Index of the shard responsible for `key`: shard i answers for the keys after shard i-1's lastKey up to its own. */
export function shardFor(lastKeys: readonly string[], key: string): number {
  let lo = 0;
  let hi = lastKeys.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareKeys(key, lastKeys[mid]!) <= 0) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The captured entries of `keys` (absent: not captured), reading only the shards that hold them. */
export async function capturedEntries(
  s3: S3Client,
  policy: RetryPolicy,
  stateBucket: string,
  stored: Exclude<StoredManifest, { format: 'etl-rollback/s3-prefix-copies@1' }>,
  keys: readonly string[],
): Promise<{ entries: Map<string, ManifestEntry>; shardsRead: number }> {
  const wanted = new Set(keys);
  if (!isShardIndex(stored)) return { entries: new Map(stored.entries.filter((e) => wanted.has(e.key)).map((e) => [e.key, e])), shardsRead: 0 };
  const lastKeys = stored.shards.map((s) => s.lastKey);
  const shards = [...new Set(keys.map((k) => shardFor(lastKeys, k)))].sort((a, b) => a - b);
  const parts = await mapLimit(shards, 8, (n) => readShard(s3, policy, stateBucket, stored, n));
  const entries = new Map<string, ManifestEntry>();
  for (const e of parts.flat()) if (wanted.has(e.key)) entries.set(e.key, e);
  return { entries, shardsRead: shards.length };
}

/** What a key is now: its live object, the delete marker on top of it (by version id), or nothing at all. */
export type CurrentState = ObjectHead | { deleteMarker: string } | undefined;

const isLive = (now: CurrentState): now is ObjectHead => now !== undefined && !('deleteMarker' in now);

/**
 * HeadObject of a key's current version. A hidden key answers 404 with `x-amz-delete-marker: true` and the marker's
 * `x-amz-version-id` (S3 and moto alike): that marker is what a restore by marker removal must remove.
 */
export async function headCurrent(s3: S3Client, policy: RetryPolicy, bucket: string, key: string): Promise<CurrentState> {
  try {
    return objectHeadOf(await sendOnce(policy, () => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))));
  } catch (error) {
    if (httpStatus(error) !== 404 && errorName(error) !== 'NotFound') throw error;
    const headers = ((error as { $response?: { headers?: Record<string, string> } }).$response?.headers ?? {}) as Record<string, string>;
    return headers['x-amz-delete-marker'] === 'true' && headers['x-amz-version-id'] ? { deleteMarker: headers['x-amz-version-id'] } : undefined;
  }
}

/** Does the live head hold the captured entry: the version itself, our marked copy of it, or the same bytes and headers? */
function holdsCapturedNow(current: ObjectHead, entry: ManifestEntry, capturedHead: ObjectHead | undefined): boolean {
  if (current.versionId === entry.versionId) return true;
  if (current.metadata[SOURCE_VERSION_META] === entry.versionId) return true;
  return current.etag === entry.etag && current.size === entry.size && capturedHead !== undefined && headerDifferences(current, capturedHead).length === 0;
}

/**
 * The plan for the logged keys, from the log, their captured entries, their current heads and the captured versions'
 * heads. Pure.
 */
export function planFromLog(
  log: Pick<ChangeLog, 'byKey'>,
  captured: ReadonlyMap<string, ManifestEntry>,
  current: ReadonlyMap<string, CurrentState>,
  heads: Heads,
): RestorePlan {
  const plan: RestorePlan = { copies: [], markerRemovals: [], deletions: [], unchanged: 0, missing: [], archived: [], bytes: 0 };
  for (const [key, changes] of log.byKey) {
    const entry = captured.get(key);
    const now = current.get(key);
    if (!entry) {
      if (isLive(now)) plan.deletions.push(key);
      continue;
    }
    const capturedHead = heads.get(headKey(key, entry.versionId));
    if (isLive(now) && holdsCapturedNow(now, entry, capturedHead)) {
      plan.unchanged++;
      continue;
    }
    if (!capturedHead) {
      plan.missing.push(key);
      continue;
    }
    if (now && !isLive(now)) {
      const markers = uncoverableMarkers(changes, entry);
      // Only when the log explains the key's top: the marker S3 shows on top is one the log saw created.
      if (markers.includes(now.deleteMarker)) {
        for (const versionId of markers) plan.markerRemovals.push({ key, versionId });
        continue;
      }
    }
    const copy = { entry, storageClass: capturedHead.storageClass ?? 'STANDARD' };
    plan.copies.push(copy);
    plan.bytes += entry.size;
    if (MAYBE_ARCHIVED_CLASSES.has(copy.storageClass)) plan.archived.push(copy);
  }
  plan.deletions.sort(compareKeys);
  return plan;
}

/**
 * The delete markers whose removal uncovers the captured version of a key that is hidden now: those the log shows
 * created (and not removed since), provided it shows no other version created since capture. Otherwise none (copy).
 */
function uncoverableMarkers(changes: readonly LoggedChange[], entry: ManifestEntry): string[] {
  const removed = new Set(changes.filter((c) => c.kind === 'deleted').map((c) => c.versionId));
  if (removed.has(entry.versionId)) return [];
  if (changes.some((c) => c.kind === 'created' && c.versionId !== entry.versionId && !removed.has(c.versionId))) return [];
  return changes.filter((c) => c.kind === 'marker' && !removed.has(c.versionId)).map((c) => c.versionId);
}

export interface ChangeLogPlan {
  plan: RestorePlan;
  heads: Map<string, ObjectHead>;
  log: ChangeLog;
  /** Manifest shards read (0: a single-file manifest). */
  shardsRead: number;
  /** Captured versions the plan copies that sit in an archive tier, not readable yet (from the heads above: no request). */
  waiting: WaitingVersion[];
}

/**
 * Reads the log, looks up the logged keys, and plans; refuses before any write what the listing path would refuse, and
 * names (`waiting`) what it would hold back for an archive retrieval.
 */
export async function planChangeLogRestore(
  unit: S3PrefixUnit,
  stored: Exclude<StoredManifest, { format: 'etl-rollback/s3-prefix-copies@1' }>,
  folder: string,
  ctx: AdapterContext,
  opts: IoOptions,
): Promise<ChangeLogPlan> {
  const log = await readChangeLog(ctx.s3, opts.retry, ctx.stateBucket, folder, unit.prefix);
  const keys = [...log.byKey.keys()];
  const { entries, shardsRead } = await capturedEntries(ctx.s3, opts.retry, ctx.stateBucket, stored, keys);
  const current = new Map<string, CurrentState>();
  await mapLimit(keys, opts.copyConcurrency, async (key) => void current.set(key, await headCurrent(ctx.s3, opts.retry, unit.bucket, key)));
  const heads = new Map<string, ObjectHead>();
  const needed = [...entries.values()].filter((e) => {
    const now = current.get(e.key);
    return !isLive(now) || (now.versionId !== e.versionId && now.metadata[SOURCE_VERSION_META] !== e.versionId);
  });
  await mapLimit(needed, opts.copyConcurrency, async (e) => {
    const h = await headObject(ctx.s3, opts.retry, unit.bucket, e.key, e.versionId);
    if (h) heads.set(headKey(e.key, e.versionId), h);
  });
  // Keys whose live version is the captured one (or our copy of it) need no head of the captured version.
  for (const e of entries.values()) {
    const now = current.get(e.key);
    if (isLive(now) && !heads.has(headKey(e.key, e.versionId)) && (now.versionId === e.versionId || now.metadata[SOURCE_VERSION_META] === e.versionId)) heads.set(headKey(e.key, e.versionId), now);
  }
  const plan = planFromLog(log, entries, current, heads);
  const at = `s3://${unit.bucket}/${unit.prefix}`;
  if (plan.missing.length > 0) {
    throw new RestorePointMissingError(
      `cannot restore unit "${unit.id}" (${at}): the captured version of ${plan.missing.length} key(s) no longer exists ` +
        `(permanently deleted or expired by a lifecycle rule): ${nameSome(plan.missing)}. Nothing was written.`,
    );
  }
  return { plan, heads, log, shardsRead, waiting: waitingFrom(plan.archived, heads) };
}
