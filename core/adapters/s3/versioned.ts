import type { S3Client } from '@aws-sdk/client-s3';
import { RestorePointMissingError } from '../../errors.ts';
import type { S3PrefixUnit } from '../../manifest/schema.ts';
import type { AdapterContext, Changes, Check } from '../types.ts';
import { compareKeys, contentChecksum, headKey, manifestChecksum, mapLimit, nameSome } from './keys.ts';
import {
  SOURCE_VERSION_META,
  copyObject,
  deleteInBatches,
  headObject,
  headerDifferences,
  listPrefix,
  type IoOptions,
  type KeyRange,
  type ListedVersion,
  type Listing,
  type ObjectHead,
} from './io.ts';
import { MANIFEST_FORMAT, type ManifestEntry, type VersionManifest } from './manifest.ts';
import { ARCHIVE_CLASSES, assertLifecycleKeepsVersions, assertVersioned } from './preflight.ts';
import { MAYBE_ARCHIVED_CLASSES, findWaiting, type WaitingVersion } from './archive.ts';

/**
 * Versioned mode: the restore point is a manifest of version ids; nothing is copied at capture.
 *
 * How a rerun recognises what an earlier (perhaps interrupted) restore already wrote: every copy we make carries the
 * user-metadata entry `x-amz-meta-etl-rollback-source-version: <captured version id>`, written with
 * MetadataDirective REPLACE and the captured version's own headers (Content-Type, Content-Encoding, Cache-Control,
 * Content-Disposition, Content-Language, Expires, website redirect, user metadata, SSE-KMS key; tags copied by
 * TaggingDirective COPY). We chose this marker over a journal of "version ids our copies created" kept in the state
 * bucket because the marker is written atomically with the copy itself: there is no window between "copied" and
 * "recorded" in which a crash (Lambda timeout, kill) loses the fact, so a rerun never copies an object twice, and there
 * is no second object to keep consistent. ETag+size, which the first version compared, cannot recognise a copy of a
 * multipart-uploaded object (its ETag `…-N` is not reproduced by CopyObject) nor of an SSE-KMS object.
 * Cost: one HeadObject of the source per copy (also needed for a multipart copy's headers), and, when planning or
 * verifying, one HeadObject per key whose current version is not the captured one but has the captured size (two if it
 * has the captured ETag and no marker: same bytes rewritten, then the metadata decides). Unchanged keys cost nothing.
 * The marker is the one visible trace of a restore on the object (it is ignored when metadata is compared); user
 * metadata is limited to 2 KB, so an object already at that limit cannot be restored by copy (S3 refuses the copy).
 */

/** The latest live object per key (keys whose latest is a delete marker are absent), sorted by key. */
export function latestEntries(listing: Listing): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  for (const history of listing.values()) {
    if (history.latest?.kind !== 'version') continue;
    const v = history.latest.entry;
    out.push({ key: history.key, versionId: v.versionId, etag: v.etag, size: v.size });
  }
  return out.sort((a, b) => compareKeys(a.key, b.key));
}

/** HeadObject results by (key, version id). */
export type Heads = ReadonlyMap<string, ObjectHead>;
export { headKey };

/**
 * Does version `v` of the entry's key hold the captured object: the captured version itself, our copy of it (marker),
 * or the same bytes rewritten with the same metadata? Without the needed heads the answer is no (a copy is planned).
 */
export function holdsCaptured(v: ListedVersion, entry: ManifestEntry, heads: Heads): boolean {
  if (v.versionId === entry.versionId) return true;
  if (v.size !== entry.size) return false;
  const h = heads.get(headKey(entry.key, v.versionId));
  if (!h) return false;
  if (h.metadata[SOURCE_VERSION_META] === entry.versionId) return true;
  const captured = heads.get(headKey(entry.key, entry.versionId));
  return v.etag === entry.etag && captured !== undefined && headerDifferences(h, captured).length === 0;
}

/** The version that decides a key: the latest one, or the newest under the delete markers on top. */
function topVersion(listing: Listing, key: string): ListedVersion | undefined {
  const history = listing.get(key);
  return history?.latest?.kind === 'version' ? history.latest.entry : history?.versions[0];
}

/** Heads `holdsCaptured` needs, fetched in two rounds (the captured version only when the marker does not answer). */
export async function resolveHeads(s3: S3Client, opts: IoOptions, bucket: string, entries: readonly ManifestEntry[], listing: Listing): Promise<Map<string, ObjectHead>> {
  const heads = new Map<string, ObjectHead>();
  const fetch = async (key: string, versionId: string) => {
    const h = await headObject(s3, opts.retry, bucket, key, versionId);
    if (h) heads.set(headKey(key, versionId), h);
  };
  const round1 = entries.filter((e) => {
    const top = topVersion(listing, e.key);
    return top !== undefined && top.versionId !== e.versionId && top.size === e.size;
  });
  await mapLimit(round1, opts.copyConcurrency, (e) => fetch(e.key, topVersion(listing, e.key)!.versionId));
  const round2 = round1.filter((e) => {
    const top = topVersion(listing, e.key)!;
    const h = heads.get(headKey(e.key, top.versionId));
    return h !== undefined && h.metadata[SOURCE_VERSION_META] !== e.versionId && top.etag === e.etag && listing.get(e.key)!.versions.some((v) => v.versionId === e.versionId);
  });
  await mapLimit(round2, opts.copyConcurrency, (e) => fetch(e.key, e.versionId));
  return heads;
}

/** What a restore has to do, computed from the manifest, the live listing and the heads alone. */
export interface RestorePlan {
  /** Copy the captured version back onto its key. */
  copies: { entry: ManifestEntry; storageClass: string }[];
  /** Remove these delete markers (by version id) so the captured version (or our copy of it) is latest again. */
  markerRemovals: { key: string; versionId: string }[];
  /** Keys added since capture, to hide behind a delete marker. */
  deletions: string[];
  /** Manifest keys whose live latest object already equals the captured one. */
  unchanged: number;
  /** Manifest keys whose captured version no longer exists (permanently deleted, expired). */
  missing: string[];
  /**
   * Copies whose source's storage class may be archived (Glacier Flexible Retrieval, Deep Archive, Intelligent-Tiering):
   * HeadObject of each tells whether it needs a RestoreObject first (s3/archive.ts).
   */
  archived: { entry: ManifestEntry; storageClass: string }[];
  /** Bytes the copies move (server-side). */
  bytes: number;
}

/**
 * Compares the manifest with the live listing. Pure: no I/O, so that diff and restore cannot disagree.
 *
 * A key hidden only by delete markers (its newest object version holds the captured object) gets those markers removed
 * instead of a copy: the latest marker, and every other marker not older than that version. Listing times have
 * one-second resolution, so a marker written in the same second as the version counts as newer: removing a marker that
 * was in fact older leaves the live state the same (the version stays above it).
 */
export function planRestore(entries: readonly ManifestEntry[], listing: Listing, heads: Heads = new Map()): RestorePlan {
  const plan: RestorePlan = { copies: [], markerRemovals: [], deletions: [], unchanged: 0, missing: [], archived: [], bytes: 0 };
  const captured = new Set<string>();
  for (const entry of entries) {
    captured.add(entry.key);
    const history = listing.get(entry.key);
    const latest = history?.latest;
    if (latest?.kind === 'version' && holdsCaptured(latest.entry, entry, heads)) {
      plan.unchanged++;
      continue;
    }
    const newest = history?.versions[0];
    if (latest?.kind === 'marker' && newest && holdsCaptured(newest, entry, heads)) {
      for (const marker of history.markers) {
        if (marker === latest.entry || marker.lastModified >= newest.lastModified) {
          plan.markerRemovals.push({ key: entry.key, versionId: marker.versionId });
        }
      }
      continue;
    }
    const source = history?.versions.find((v) => v.versionId === entry.versionId);
    if (!source) {
      plan.missing.push(entry.key);
      continue;
    }
    const copy = { entry, storageClass: source.storageClass };
    plan.copies.push(copy);
    plan.bytes += entry.size;
    if (MAYBE_ARCHIVED_CLASSES.has(source.storageClass)) plan.archived.push(copy);
  }
  for (const history of listing.values()) {
    if (!captured.has(history.key) && history.latest?.kind === 'version') plan.deletions.push(history.key);
  }
  plan.deletions.sort(compareKeys);
  return plan;
}

export function planChanges(plan: RestorePlan): Changes {
  return {
    objectsCopied: plan.copies.length,
    deleteMarkersRemoved: plan.markerRemovals.length,
    objectsDeleted: plan.deletions.length,
    objectsUnchanged: plan.unchanged,
    bytesCopied: plan.bytes,
  };
}

export function planWrites(plan: RestorePlan): number {
  return plan.copies.length + plan.markerRemovals.length + plan.deletions.length;
}

export function planNotes(plan: RestorePlan, opts: IoOptions): string[] {
  const notes: string[] = [];
  const multipart = plan.copies.filter((c) => c.entry.size > opts.multipartThresholdBytes).length;
  if (multipart > 0) notes.push(`${multipart} object(s) over ${opts.multipartThresholdBytes} bytes copied part by part (multipart copy)`);
  if (plan.markerRemovals.length > 0) notes.push(`${plan.markerRemovals.length} delete marker(s) removed to uncover captured versions (no data copied)`);
  if (plan.deletions.length > 0) notes.push(`${plan.deletions.length} object(s) added since capture hidden behind delete markers (reversible)`);
  if (planWrites(plan) === 0) notes.push('prefix already equals its restore point');
  return notes;
}

// ---------------------------------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------------------------------

export async function captureVersioned(unit: S3PrefixUnit, ctx: AdapterContext, opts: IoOptions): Promise<VersionManifest> {
  await assertVersioned(ctx.s3, opts.retry, unit.bucket);
  await assertLifecycleKeepsVersions(ctx.s3, opts.retry, unit.bucket, unit.prefix, ctx.retentionDays);
  const entries = latestEntries(await listPrefix(ctx.s3, unit.bucket, unit.prefix, opts.retry));
  return {
    format: MANIFEST_FORMAT,
    pipeline: ctx.pipeline,
    deploymentId: ctx.deploymentId,
    unitId: unit.id,
    bucket: unit.bucket,
    prefix: unit.prefix,
    capturedAt: ctx.now().toISOString(),
    count: entries.length,
    totalBytes: entries.reduce((sum, e) => sum + e.size, 0),
    checksum: manifestChecksum(entries),
    contentChecksum: contentChecksum(entries),
    entries,
  };
}

/**
 * The plan, refused before any write if it cannot be carried out completely (a captured version gone). Returns the heads
 * it fetched, for reuse, and the captured versions it must copy that sit in an archive tier, not readable yet
 * (`waiting`: the caller requests their retrieval and holds their copies back, see `holdBack`).
 * With `range` (one shard of a sharded manifest: its entries, and the key range it answers for) only the live keys in
 * that range are listed and compared.
 */
export async function planVersioned(
  unit: S3PrefixUnit,
  manifest: Pick<VersionManifest, 'entries'>,
  ctx: AdapterContext,
  opts: IoOptions,
  range?: KeyRange,
): Promise<{ plan: RestorePlan; heads: Heads; waiting: WaitingVersion[] }> {
  const listing = await listPrefix(ctx.s3, unit.bucket, unit.prefix, opts.retry, range);
  const heads = await resolveHeads(ctx.s3, opts, unit.bucket, manifest.entries, listing);
  const plan = planRestore(manifest.entries, listing, heads);
  const at = `s3://${unit.bucket}/${unit.prefix}`;
  if (plan.missing.length > 0) {
    throw new RestorePointMissingError(
      `cannot restore unit "${unit.id}" (${at}): the captured version of ${plan.missing.length} key(s) no longer exists ` +
        `(permanently deleted or expired by a lifecycle rule): ${nameSome(plan.missing)}. Nothing was written. ` +
        'Check the bucket lifecycle for NoncurrentVersionExpiration; these keys cannot be put back from this restore point.',
    );
  }
  const waiting = plan.archived.length > 0 ? await findWaiting(ctx.s3, opts, unit.bucket, plan.archived) : [];
  return { plan, heads, waiting };
}

/**
 * The plan without the copies of `waiting` versions: what can be written now, while their retrievals run. Everything
 * else in it (other copies, marker removals, deletions) is independent of them, key by key.
 */
export function holdBack(plan: RestorePlan, waiting: readonly WaitingVersion[]): RestorePlan {
  if (waiting.length === 0) return plan;
  const held = new Set(waiting.map((w) => w.entry.key));
  const copies = plan.copies.filter((c) => !held.has(c.entry.key));
  return { ...plan, copies, archived: plan.archived.filter((c) => !held.has(c.entry.key)), bytes: copies.reduce((n, c) => n + c.entry.size, 0) };
}

/**
 * The storage class a copy is written with: the source's, except for Glacier Flexible Retrieval and Deep Archive, whose
 * copy goes to STANDARD. A rollback puts data back for the pipeline to read now; a copy written to an archive class
 * would be archived again at once, unreadable for hours (and the captured version's class then was not necessarily
 * this: a lifecycle rule may have archived it since it became noncurrent). Intelligent-Tiering stays Intelligent-Tiering.
 */
export function copyStorageClass(sourceClass: string): string | undefined {
  return ARCHIVE_CLASSES.has(sourceClass) ? undefined : sourceClass;
}

export async function executeVersioned(unit: S3PrefixUnit, plan: RestorePlan, heads: Heads, ctx: AdapterContext, opts: IoOptions): Promise<void> {
  const { s3 } = ctx;
  const { bucket, prefix } = unit;
  await mapLimit(plan.copies, opts.copyConcurrency, async ({ entry, storageClass }) => {
    if (!entry.key.startsWith(prefix)) throw new Error(`refusing to write ${JSON.stringify(entry.key)}: outside s3://${bucket}/${prefix}`);
    const head = heads.get(headKey(entry.key, entry.versionId)) ?? (await headObject(s3, opts.retry, bucket, entry.key, entry.versionId));
    if (!head) throw new RestorePointMissingError(`cannot restore s3://${bucket}/${entry.key}: its captured version ${entry.versionId} vanished during the restore`);
    await copyObject(s3, opts, {
      from: { bucket, key: entry.key, versionId: entry.versionId },
      to: { bucket, key: entry.key },
      size: entry.size,
      storageClass: copyStorageClass(storageClass),
      replace: { head, extraMetadata: { [SOURCE_VERSION_META]: entry.versionId } },
    });
  });
  await deleteInBatches(s3, opts.retry, bucket, prefix, plan.markerRemovals, 'removing delete markers');
  await deleteInBatches(s3, opts.retry, bucket, prefix, plan.deletions.map((key) => ({ key })), 'deleting objects added since capture');
}

/**
 * Live state vs manifest: key count, per-key content (version id, or size plus our marker / the captured ETag) and the
 * metadata that matters (Content-Type, Content-Encoding, Content-Disposition, Content-Language, Cache-Control, user
 * metadata) of every key whose current version is not the captured one, and a checksum over (key, etag, size) in which
 * a verified copy counts with the captured ETag. Heads: two per such key only; an untouched key costs nothing.
 */
export async function verifyVersioned(unit: S3PrefixUnit, manifest: VersionManifest, contentSum: string, ctx: AdapterContext, opts: IoOptions): Promise<Check[]> {
  const live = latestEntries(await listPrefix(ctx.s3, unit.bucket, unit.prefix, opts.retry));
  const liveByKey = new Map(live.map((e) => [e.key, e]));
  const capturedKeys = new Set(manifest.entries.map((e) => e.key));
  const missing: string[] = [];
  const changed: string[] = [];
  const metadata: string[] = [];
  const effective = new Map<string, string>(); // key → the etag the checksum uses
  const toHead: { entry: ManifestEntry; live: ManifestEntry }[] = [];
  for (const e of manifest.entries) {
    const l = liveByKey.get(e.key);
    if (!l) missing.push(e.key);
    else if (l.versionId === e.versionId) effective.set(e.key, e.etag);
    else if (l.size !== e.size) changed.push(e.key);
    else toHead.push({ entry: e, live: l });
  }
  await mapLimit(toHead, opts.copyConcurrency, async ({ entry, live: l }) => {
    const [h, c] = await Promise.all([
      headObject(ctx.s3, opts.retry, unit.bucket, l.key, l.versionId),
      headObject(ctx.s3, opts.retry, unit.bucket, entry.key, entry.versionId),
    ]);
    const ours = h?.metadata[SOURCE_VERSION_META] === entry.versionId;
    if (!h || (!ours && h.etag !== entry.etag)) {
      changed.push(entry.key);
      return;
    }
    const diffs = c ? headerDifferences(h, c) : [];
    if (diffs.length > 0) {
      metadata.push(`${JSON.stringify(entry.key)} (${diffs.join(', ')})`);
      return;
    }
    effective.set(entry.key, entry.etag);
  });
  const extra = live.filter((e) => !capturedKeys.has(e.key)).map((e) => e.key);
  return buildChecks(unit, manifest.count, live.length, contentSum, {
    missing,
    extra,
    changed: changed.sort(compareKeys),
    metadata: metadata.sort(),
    checksumEntries: live.map((l) => ({ key: l.key, size: l.size, etag: effective.get(l.key) ?? l.etag })),
    headed: toHead.length,
  });
}

export interface VerifyFindings {
  missing: string[];
  extra: string[];
  changed: string[];
  /** `"key" (contentType "a" vs "b")` per key whose metadata differs. */
  metadata: string[];
  checksumEntries: { key: string; etag: string; size: number }[];
  /** Keys whose headers were read. */
  headed: number;
}

export function buildChecks(unit: S3PrefixUnit, expectedCount: number, liveCount: number, expectedChecksum: string, f: VerifyFindings): Check[] {
  const checks: Check[] = [];
  if (unit.checks.count) checks.push({ name: 'objectCount', ok: liveCount === expectedCount, expected: expectedCount, actual: liveCount });
  const bad = f.missing.length + f.extra.length + f.changed.length + f.metadata.length;
  const detail = [
    f.missing.length > 0 ? `missing: ${nameSome(f.missing, 5)}` : '',
    f.extra.length > 0 ? `extra: ${nameSome(f.extra, 5)}` : '',
    f.changed.length > 0 ? `changed (content): ${nameSome(f.changed, 5)}` : '',
    f.metadata.length > 0 ? `metadata differs: ${f.metadata.slice(0, 5).join('; ')}${f.metadata.length > 5 ? ` (and ${f.metadata.length - 5} more)` : ''}` : '',
  ].filter(Boolean);
  checks.push({
    name: 'content',
    ok: bad === 0,
    expected: `${expectedCount} keys as captured`,
    actual:
      bad === 0
        ? `${liveCount} keys as captured`
        : `${f.missing.length} missing, ${f.extra.length} extra, ${f.changed.length} changed${f.metadata.length > 0 ? `, ${f.metadata.length} metadata differs` : ''}`,
    detail: `s3://${unit.bucket}/${unit.prefix}: ${detail.length > 0 ? detail.join('; ') : 'all keys as captured'} (headers compared for ${f.headed} rewritten key(s))`,
  });
  if (unit.checks.checksum) {
    const actual = contentChecksum(f.checksumEntries);
    checks.push({
      name: 'checksum',
      ok: actual === expectedChecksum,
      expected: expectedChecksum,
      actual,
      detail: 'sha256 over sorted key\\tetag\\tsize lines (a verified copy of the captured object counts with its captured ETag)',
    });
  }
  return checks;
}
