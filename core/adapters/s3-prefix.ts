import { createHash } from 'node:crypto';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  type S3Client,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { z } from 'zod';
import { InputError, PreflightError, RestorePointMissingError } from '../errors.ts';
import type { S3PrefixUnit } from '../manifest/schema.ts';
import type { AdapterContext, Changes, Check, Diff, Outcome, RestorePoint, UnitAdapter } from './types.ts';

/**
 * s3-prefix adapter, versioned buckets.
 *
 * capture  – ListObjectVersions over the prefix → a version manifest {key, versionId, etag, size} (one entry per key
 *            whose latest entry is an object, not a delete marker), written once to the state bucket. No data copied.
 * restore  – list the live versions, then write only what differs from the manifest:
 *              unchanged (latest is the captured version, or has its ETag and size)   → nothing
 *              only delete markers stand above the captured version (or a copy of it) → remove those markers (no copy)
 *              otherwise changed or deleted                                          → CopyObject from the captured version
 *              key not in the manifest whose latest is an object                     → DeleteObjects (delete markers)
 *            Everything replaced stays as noncurrent versions. Every source version is checked before the first write.
 * verify   – live latest state vs manifest: key count, per-key ETag+size, and a content checksum over (key, etag, size).
 * release  – delete the manifest from the state bucket (never data).
 *
 * Two checksums, on purpose: `checksum` (the point's) covers key, versionId, etag and size and identifies the capture
 * exactly; a restore copies data into *new* versions, so it can never match the live state again. `contentChecksum`
 * covers key, etag and size only: that is what verify compares.
 *
 * Known limits of this first cut: objects over 5 GiB (multipart copy) are refused before any write; an object that was
 * uploaded in parts has a multipart ETag (`…-N`) that a CopyObject does not reproduce, so after its restore verify
 * reports it as changed (content equal, ETag differs) and a rerun copies it again.
 */

export interface S3PrefixDetails {
  bucket: string;
  prefix: string;
  /** Key of the version manifest in the state bucket (ctx.stateBucket). */
  manifestKey: string;
  /** Sum of the captured objects' sizes. */
  totalBytes: number;
  /** sha256 hex over the sorted lines `key\tetag\tsize`: what verify compares with the live state. */
  contentChecksum: string;
}

/** One captured object: the version that was latest at capture. ETag without quotes. */
export interface ManifestEntry {
  key: string;
  versionId: string;
  etag: string;
  size: number;
}

export const MANIFEST_FORMAT = 'etl-rollback/s3-prefix-versions@1';

const manifestEntrySchema = z.strictObject({
  key: z.string().min(1),
  versionId: z.string().min(1),
  etag: z.string(),
  size: z.number().int().nonnegative(),
});

export const versionManifestSchema = z.strictObject({
  format: z.literal(MANIFEST_FORMAT),
  pipeline: z.string(),
  deploymentId: z.string(),
  unitId: z.string(),
  bucket: z.string(),
  prefix: z.string(),
  capturedAt: z.string(),
  count: z.number().int().nonnegative(),
  totalBytes: z.number().int().nonnegative(),
  checksum: z.string(),
  contentChecksum: z.string(),
  entries: z.array(manifestEntrySchema),
});

export type VersionManifest = z.infer<typeof versionManifestSchema>;

/** The largest object a single CopyObject can copy. */
export const MAX_SINGLE_COPY_BYTES = 5 * 1024 ** 3;
/** DeleteObjects takes at most this many keys per request. */
export const DELETE_BATCH_SIZE = 1000;
/** Copies in flight at once during a restore. */
export const COPY_CONCURRENCY = 16;
/** Storage classes whose versions must be restored from the archive before they can be copied. */
const ARCHIVE_CLASSES = new Set<string>(['GLACIER', 'DEEP_ARCHIVE']);

// ---------------------------------------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------------------------------------

/** `restore-points/<pipeline>/<deploymentId>/<unitId>/versions.json`, each segment URL-encoded (a no-op for plain ids). */
export function manifestKeyFor(pipeline: string, deploymentId: string, unitId: string): string {
  return `restore-points/${[pipeline, deploymentId, unitId].map(encodeURIComponent).join('/')}/versions.json`;
}

/**
 * Orders keys the way S3 lists them: by Unicode code point (= UTF-8 byte order). JavaScript's default string order
 * compares UTF-16 code units, which differs for characters above U+FFFF against U+E000–U+FFFF.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Move surrogates (U+D800–U+DFFF) above U+E000–U+FFFF, keeping everything else in place.
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    return x - y;
  }
  return a.length - b.length;
}

/** ETags are listed in quotes (`"d41d8…"`); the manifest keeps them bare. */
export function normalizeEtag(etag: string | undefined): string {
  return (etag ?? '').replace(/^"+|"+$/g, '');
}

/** Escapes `\`, tab, newline and carriage return so that a key can never forge a field or a line of a checksum input. */
function checksumField(value: string): string {
  return value.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
}

function sha256OfLines(lines: string[]): string {
  const hash = createHash('sha256');
  for (const line of lines) hash.update(`${line}\n`);
  return hash.digest('hex');
}

/** The point's checksum: sha256 hex over `key\tversionId\tetag\tsize\n` lines in key order. */
export function manifestChecksum(entries: readonly ManifestEntry[]): string {
  return sha256OfLines(
    [...entries]
      .sort((a, b) => compareKeys(a.key, b.key))
      .map((e) => `${checksumField(e.key)}\t${e.versionId}\t${e.etag}\t${e.size}`),
  );
}

/** The content checksum: sha256 hex over `key\tetag\tsize\n` lines in key order (version ids left out). */
export function contentChecksum(entries: readonly Pick<ManifestEntry, 'key' | 'etag' | 'size'>[]): string {
  return sha256OfLines(
    [...entries].sort((a, b) => compareKeys(a.key, b.key)).map((e) => `${checksumField(e.key)}\t${e.etag}\t${e.size}`),
  );
}

/** One object version as listed. */
export interface ListedVersion {
  versionId: string;
  etag: string;
  size: number;
  lastModified: number;
  storageClass: string;
}

export interface ListedMarker {
  versionId: string;
  lastModified: number;
}

/** Everything the listing says about one key: its versions newest first, its delete markers, and what is latest. */
export interface KeyHistory {
  key: string;
  versions: ListedVersion[];
  markers: ListedMarker[];
  latest: { kind: 'version'; entry: ListedVersion } | { kind: 'marker'; entry: ListedMarker } | undefined;
}

/** The live state of a prefix: per key, its history. */
export type Listing = Map<string, KeyHistory>;

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

/** The captured version itself, or a copy of it (a previous restore's): same ETag and size. */
function holdsCaptured(version: ListedVersion, entry: ManifestEntry): boolean {
  return version.versionId === entry.versionId || (version.etag === entry.etag && version.size === entry.size);
}

/** What a restore has to do, computed from the manifest and the live listing alone. */
export interface RestorePlan {
  /** Copy the captured version back onto its key. */
  copies: { entry: ManifestEntry; storageClass: string }[];
  /** Remove these delete markers (by version id) so the captured version is latest again. */
  markerRemovals: { key: string; versionId: string }[];
  /** Keys added since capture, to hide behind a delete marker. */
  deletions: string[];
  /** Manifest keys whose live latest object already equals the captured one. */
  unchanged: number;
  /** Manifest keys whose captured version no longer exists (permanently deleted, expired). */
  missing: string[];
  /** Copies whose source sits in an archive tier (may need RestoreObject first). */
  archived: { entry: ManifestEntry; storageClass: string }[];
  /** Copies too large for a single CopyObject. */
  tooLarge: ManifestEntry[];
}

/**
 * Compares the manifest with the live listing. Pure: no I/O, so that diff and restore cannot disagree.
 *
 * A key hidden only by delete markers (its newest object version is the captured one, or a previous restore's copy of
 * it) gets those markers removed instead of a copy: the latest marker, and every other marker not older than that
 * version. Listing times have one-second resolution, so a marker written in the same second as the version counts as
 * newer: removing a marker that was in fact older leaves the live state the same (the version stays above it).
 */
export function planRestore(entries: readonly ManifestEntry[], listing: Listing): RestorePlan {
  const plan: RestorePlan = { copies: [], markerRemovals: [], deletions: [], unchanged: 0, missing: [], archived: [], tooLarge: [] };
  const captured = new Set<string>();
  for (const entry of entries) {
    captured.add(entry.key);
    const history = listing.get(entry.key);
    const latest = history?.latest;
    if (latest?.kind === 'version' && holdsCaptured(latest.entry, entry)) {
      plan.unchanged++;
      continue;
    }
    const newest = history?.versions[0];
    if (latest?.kind === 'marker' && newest && holdsCaptured(newest, entry)) {
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
    if (ARCHIVE_CLASSES.has(source.storageClass)) plan.archived.push(copy);
    if (entry.size > MAX_SINGLE_COPY_BYTES) plan.tooLarge.push(entry);
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
  };
}

export function planWrites(plan: RestorePlan): number {
  return plan.copies.length + plan.markerRemovals.length + plan.deletions.length;
}

/**
 * CopySource for a version: `bucket/key?versionId=…`, the key URL-encoded segment by segment (slashes kept), so keys
 * with spaces, `+`, `%`, `#`, `?` or any Unicode arrive intact.
 */
export function copySourceOf(bucket: string, key: string, versionId: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}?versionId=${encodeURIComponent(versionId)}`;
}

/** Names the first `limit` items and how many there are in all: `a, b, c (and 17 more)`. */
export function nameSome(items: readonly string[], limit = 20): string {
  const shown = items.slice(0, limit).map((k) => JSON.stringify(k)).join(', ');
  return items.length > limit ? `${shown} (and ${items.length - limit} more)` : shown;
}

/** Runs `fn` over `items`, at most `limit` at a time. Stops starting new work after the first failure and rethrows it. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  let firstError: unknown;
  async function worker(): Promise<void> {
    while (!failed && next < items.length) {
      const index = next++;
      try {
        results[index] = await fn(items[index] as T);
      } catch (error) {
        if (!failed) firstError = error;
        failed = true;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  if (failed) throw firstError;
  return results;
}

// ---------------------------------------------------------------------------------------------------------------------
// S3 I/O
// ---------------------------------------------------------------------------------------------------------------------

function s3Url(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}

function errorName(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === 'string' ? name : undefined;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

/** Lists every version and delete marker under `prefix`, page by page. Refuses any key outside the prefix. */
export async function listPrefix(s3: S3Client, bucket: string, prefix: string): Promise<Listing> {
  const listing: Listing = new Map();
  const historyOf = (key: string): KeyHistory => {
    if (!key.startsWith(prefix)) {
      throw new Error(`ListObjectVersions on s3://${bucket}/${prefix} returned ${JSON.stringify(key)}, which is outside the prefix: refusing to go on`);
    }
    let history = listing.get(key);
    if (!history) {
      history = { key, versions: [], markers: [], latest: undefined };
      listing.set(key, history);
    }
    return history;
  };
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (;;) {
    const page = await s3.send(
      new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker }),
    );
    for (const v of page.Versions ?? []) {
      if (v.Key === undefined || v.VersionId === undefined) continue;
      const history = historyOf(v.Key);
      const entry: ListedVersion = {
        versionId: v.VersionId,
        etag: normalizeEtag(v.ETag),
        size: v.Size ?? 0,
        lastModified: v.LastModified?.getTime() ?? 0,
        storageClass: v.StorageClass ?? 'STANDARD',
      };
      history.versions.push(entry);
      if (v.IsLatest) history.latest = { kind: 'version', entry };
    }
    for (const m of page.DeleteMarkers ?? []) {
      if (m.Key === undefined || m.VersionId === undefined) continue;
      const history = historyOf(m.Key);
      const entry: ListedMarker = { versionId: m.VersionId, lastModified: m.LastModified?.getTime() ?? 0 };
      history.markers.push(entry);
      if (m.IsLatest) history.latest = { kind: 'marker', entry };
    }
    if (!page.IsTruncated) break;
    if (!page.NextKeyMarker) {
      throw new Error(`ListObjectVersions on s3://${bucket}/${prefix} is truncated but gave no NextKeyMarker: cannot page on`);
    }
    keyMarker = page.NextKeyMarker;
    versionIdMarker = page.NextVersionIdMarker;
  }
  return listing;
}

async function assertVersioned(s3: S3Client, bucket: string): Promise<void> {
  let out;
  try {
    out = await s3.send(new GetBucketVersioningCommand({ Bucket: bucket }));
  } catch (error) {
    if (errorName(error) === 'NoSuchBucket') {
      throw new PreflightError(`bucket ${bucket} does not exist (or not in this account/region): fix the unit's "bucket" in the manifest`, { cause: error });
    }
    throw error;
  }
  if (out.Status !== 'Enabled') {
    throw new PreflightError(
      `bucket ${bucket} has versioning ${out.Status ? `"${out.Status}"` : 'never enabled'}: an s3-prefix restore point needs it on. ` +
        `Enable it with: aws s3api put-bucket-versioning --bucket ${bucket} --versioning-configuration Status=Enabled`,
    );
  }
}

/** Reads and validates a version manifest; undefined if the object does not exist. */
async function readManifest(s3: S3Client, stateBucket: string, key: string): Promise<VersionManifest | undefined> {
  let body: string;
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: stateBucket, Key: key }));
    body = (await out.Body?.transformToString('utf-8')) ?? '';
  } catch (error) {
    if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return undefined;
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (error) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} is not valid JSON: it cannot be used`, { cause: error });
  }
  const parsed = versionManifestSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} is not a ${MANIFEST_FORMAT} manifest (${issues})`);
  }
  const manifest = parsed.data;
  const outside = manifest.entries.filter((e) => !e.key.startsWith(manifest.prefix)).map((e) => e.key);
  if (outside.length > 0) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} lists keys outside ${manifest.prefix}: ${nameSome(outside)}`);
  }
  if (manifestChecksum(manifest.entries) !== manifest.checksum || manifest.entries.length !== manifest.count) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} does not match its own count/checksum: it was altered`);
  }
  return manifest;
}

function pointFrom(manifest: VersionManifest, manifestKey: string): RestorePoint<S3PrefixDetails> {
  return {
    unitId: manifest.unitId,
    type: 's3-prefix',
    capturedAt: manifest.capturedAt,
    count: manifest.count,
    checksum: manifest.checksum,
    details: {
      bucket: manifest.bucket,
      prefix: manifest.prefix,
      manifestKey,
      totalBytes: manifest.totalBytes,
      contentChecksum: manifest.contentChecksum,
    },
  };
}

function assertSameTarget(unit: S3PrefixUnit, bucket: string, prefix: string, where: string): void {
  if (unit.bucket !== bucket || unit.prefix !== prefix) {
    throw new InputError(
      `unit "${unit.id}" names s3://${unit.bucket}/${unit.prefix}, but ${where} was captured for s3://${bucket}/${prefix}: ` +
        'the manifest changed after the capture; roll back with the manifest the deployment was made with',
    );
  }
}

/** Loads the manifest a point refers to and checks it is the one the point was sealed with. */
async function loadPointManifest(unit: S3PrefixUnit, point: RestorePoint<S3PrefixDetails>, ctx: AdapterContext): Promise<VersionManifest> {
  const { details } = point;
  assertSameTarget(unit, details.bucket, details.prefix, 'its restore point');
  const manifest = await readManifest(ctx.s3, ctx.stateBucket, details.manifestKey);
  const where = s3Url(ctx.stateBucket, details.manifestKey);
  if (!manifest) {
    throw new RestorePointMissingError(
      `restore point of unit "${unit.id}" is gone: its manifest ${where} does not exist (released, or a different state bucket?)`,
    );
  }
  if (manifest.checksum !== point.checksum || manifest.count !== point.count) {
    throw new RestorePointMissingError(
      `restore point of unit "${unit.id}" does not match its manifest ${where} (checksum ${point.checksum} vs ${manifest.checksum}): it was replaced`,
    );
  }
  assertSameTarget(unit, manifest.bucket, manifest.prefix, `manifest ${where}`);
  return manifest;
}

/** Refuses, before any write, a plan that cannot be carried out completely. */
async function assertExecutable(unit: S3PrefixUnit, plan: RestorePlan, s3: S3Client): Promise<void> {
  const at = `s3://${unit.bucket}/${unit.prefix}`;
  if (plan.missing.length > 0) {
    throw new RestorePointMissingError(
      `cannot restore unit "${unit.id}" (${at}): the captured version of ${plan.missing.length} key(s) no longer exists ` +
        `(permanently deleted or expired by a lifecycle rule): ${nameSome(plan.missing)}. Nothing was written. ` +
        'Check the bucket lifecycle for NoncurrentVersionExpiration; these keys cannot be put back from this restore point.',
    );
  }
  if (plan.tooLarge.length > 0) {
    throw new PreflightError(
      `cannot restore unit "${unit.id}" (${at}): ${plan.tooLarge.length} object(s) exceed 5 GiB and need a multipart copy, ` +
        `which this adapter does not do yet: ${nameSome(plan.tooLarge.map((e) => e.key))}. Nothing was written.`,
    );
  }
  const notReady: string[] = [];
  await mapLimit(plan.archived, COPY_CONCURRENCY, async ({ entry }) => {
    const head = await s3.send(new HeadObjectCommand({ Bucket: unit.bucket, Key: entry.key, VersionId: entry.versionId }));
    if (!head.Restore?.includes('ongoing-request="false"')) notReady.push(entry.key);
  });
  if (notReady.length > 0) {
    const first = plan.archived.find((a) => a.entry.key === notReady[0])?.entry;
    throw new PreflightError(
      `cannot restore unit "${unit.id}" (${at}): the captured version of ${notReady.length} key(s) is in an archive tier and not restored: ` +
        `${nameSome(notReady)}. Nothing was written. Restore each version first, e.g. aws s3api restore-object --bucket ${unit.bucket} ` +
        `--key ${JSON.stringify(first?.key ?? '')} --version-id ${first?.versionId ?? ''} --restore-request Days=7, wait until it is done, then rerun.`,
    );
  }
}

async function deleteInBatches(
  s3: S3Client,
  bucket: string,
  prefix: string,
  objects: { key: string; versionId?: string }[],
  what: string,
): Promise<void> {
  for (let start = 0; start < objects.length; start += DELETE_BATCH_SIZE) {
    const batch = objects.slice(start, start + DELETE_BATCH_SIZE);
    for (const o of batch) {
      if (!o.key.startsWith(prefix)) throw new Error(`refusing to delete ${JSON.stringify(o.key)}: outside s3://${bucket}/${prefix}`);
    }
    const out = await s3.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Quiet: true, Objects: batch.map((o) => (o.versionId ? { Key: o.key, VersionId: o.versionId } : { Key: o.key })) },
      }),
    );
    const errors = out.Errors ?? [];
    if (errors.length > 0) {
      const named = errors.slice(0, 20).map((e) => `${JSON.stringify(e.Key)}${e.VersionId ? ` (version ${e.VersionId})` : ''}: ${e.Code ?? 'error'} ${e.Message ?? ''}`.trim());
      throw new Error(
        `${what} in s3://${bucket}/${prefix} failed for ${errors.length} of ${batch.length} object(s) in a DeleteObjects batch: ` +
          `${named.join('; ')}${errors.length > 20 ? ` (and ${errors.length - 20} more)` : ''}. Fix the cause (permissions, object lock) and rerun: a restore resumes.`,
      );
    }
  }
}

async function planFor(unit: S3PrefixUnit, point: RestorePoint<S3PrefixDetails>, ctx: AdapterContext): Promise<RestorePlan> {
  const manifest = await loadPointManifest(unit, point, ctx);
  const listing = await listPrefix(ctx.s3, unit.bucket, unit.prefix);
  const plan = planRestore(manifest.entries, listing);
  await assertExecutable(unit, plan, ctx.s3);
  return plan;
}

function planNotes(plan: RestorePlan): string[] {
  const notes: string[] = [];
  if (plan.markerRemovals.length > 0) notes.push(`${plan.markerRemovals.length} delete marker(s) removed to uncover captured versions (no data copied)`);
  if (plan.deletions.length > 0) notes.push(`${plan.deletions.length} object(s) added since capture hidden behind delete markers (reversible)`);
  if (planWrites(plan) === 0) notes.push('prefix already equals its restore point');
  return notes;
}

// ---------------------------------------------------------------------------------------------------------------------
// The adapter
// ---------------------------------------------------------------------------------------------------------------------

export const s3PrefixAdapter: UnitAdapter<S3PrefixUnit, S3PrefixDetails> = {
  type: 's3-prefix',

  async capture(unit, ctx) {
    if (unit.mode !== 'versioned') {
      throw new PreflightError(`unit "${unit.id}": mode "${unit.mode}" (unversioned buckets) is not supported yet; enable versioning on s3://${unit.bucket} and use the default mode`);
    }
    const manifestKey = manifestKeyFor(ctx.pipeline, ctx.deploymentId, unit.id);
    if (unit.bucket === ctx.stateBucket && manifestKey.startsWith(unit.prefix)) {
      throw new PreflightError(
        `unit "${unit.id}": prefix s3://${unit.bucket}/${unit.prefix} covers the restore-point manifests of the state bucket: ` +
          'a restore would delete them. Narrow the prefix or use another state bucket.',
      );
    }
    const existing = await readManifest(ctx.s3, ctx.stateBucket, manifestKey);
    if (existing) {
      assertSameTarget(unit, existing.bucket, existing.prefix, `the restore point at ${s3Url(ctx.stateBucket, manifestKey)}`);
      return pointFrom(existing, manifestKey);
    }

    await assertVersioned(ctx.s3, unit.bucket);
    const entries = latestEntries(await listPrefix(ctx.s3, unit.bucket, unit.prefix));
    const manifest: VersionManifest = {
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
    try {
      await ctx.s3.send(
        new PutObjectCommand({
          Bucket: ctx.stateBucket,
          Key: manifestKey,
          Body: JSON.stringify(manifest),
          ContentType: 'application/json',
          IfNoneMatch: '*',
        }),
      );
    } catch (error) {
      // A concurrent capture of the same deployment won the race: its point is the point.
      if (errorName(error) !== 'PreconditionFailed' && httpStatus(error) !== 412) throw error;
      const winner = await readManifest(ctx.s3, ctx.stateBucket, manifestKey);
      if (!winner) throw error;
      return pointFrom(winner, manifestKey);
    }
    ctx.log.info('s3-prefix restore point captured', {
      unit: unit.id,
      at: `s3://${unit.bucket}/${unit.prefix}`,
      objects: manifest.count,
      bytes: manifest.totalBytes,
      manifest: s3Url(ctx.stateBucket, manifestKey),
    });
    return pointFrom(manifest, manifestKey);
  },

  async diff(unit, point, ctx): Promise<Diff> {
    const plan = await planFor(unit, point, ctx);
    return { changes: planChanges(plan), writes: planWrites(plan), notes: planNotes(plan) };
  },

  async restore(unit, point, ctx): Promise<Outcome> {
    const plan = await planFor(unit, point, ctx);
    const { s3 } = ctx;
    const { bucket, prefix } = unit;

    await mapLimit(plan.copies, COPY_CONCURRENCY, async ({ entry, storageClass }) => {
      if (!entry.key.startsWith(prefix)) throw new Error(`refusing to write ${JSON.stringify(entry.key)}: outside s3://${bucket}/${prefix}`);
      await s3.send(
        new CopyObjectCommand({
          Bucket: bucket,
          Key: entry.key,
          CopySource: copySourceOf(bucket, entry.key, entry.versionId),
          MetadataDirective: 'COPY',
          TaggingDirective: 'COPY',
          // Keep the captured version's storage class (a copy defaults to STANDARD).
          ...(storageClass !== 'STANDARD' ? { StorageClass: storageClass as StorageClass } : {}),
        }),
      );
    });
    await deleteInBatches(s3, bucket, prefix, plan.markerRemovals, 'removing delete markers');
    await deleteInBatches(s3, bucket, prefix, plan.deletions.map((key) => ({ key })), 'deleting objects added since capture');

    const writes = planWrites(plan);
    ctx.log.info('s3-prefix restored', { unit: unit.id, at: `s3://${bucket}/${prefix}`, runId: ctx.runId, ...planChanges(plan), writes });
    return {
      changes: planChanges(plan),
      writes,
      notes: planNotes(plan),
      ...(writes > 0 ? { keptAt: `noncurrent versions of s3://${bucket}/${prefix}` } : {}),
    };
  },

  async verify(unit, point, ctx): Promise<Check[]> {
    const manifest = await loadPointManifest(unit, point, ctx);
    const live = latestEntries(await listPrefix(ctx.s3, unit.bucket, unit.prefix));
    const liveByKey = new Map(live.map((e) => [e.key, e]));
    const capturedKeys = new Set(manifest.entries.map((e) => e.key));
    const missing: string[] = [];
    const changed: string[] = [];
    for (const e of manifest.entries) {
      const l = liveByKey.get(e.key);
      if (!l) missing.push(e.key);
      else if (l.etag !== e.etag || l.size !== e.size) changed.push(e.key);
    }
    const extra = live.filter((e) => !capturedKeys.has(e.key)).map((e) => e.key);

    const checks: Check[] = [];
    if (unit.checks.count) {
      checks.push({ name: 'objectCount', ok: live.length === point.count, expected: point.count, actual: live.length });
    }
    const contentOk = missing.length + extra.length + changed.length === 0;
    const detail = [
      missing.length > 0 ? `missing: ${nameSome(missing, 5)}` : '',
      extra.length > 0 ? `extra: ${nameSome(extra, 5)}` : '',
      changed.length > 0 ? `changed (etag or size): ${nameSome(changed, 5)}` : '',
    ].filter(Boolean);
    checks.push({
      name: 'content',
      ok: contentOk,
      expected: `${manifest.count} keys as captured`,
      actual: contentOk ? `${live.length} keys as captured` : `${missing.length} missing, ${extra.length} extra, ${changed.length} changed`,
      ...(detail.length > 0 ? { detail: `s3://${unit.bucket}/${unit.prefix}: ${detail.join('; ')}` } : {}),
    });
    if (unit.checks.checksum) {
      const actual = contentChecksum(live);
      checks.push({
        name: 'checksum',
        ok: actual === point.details.contentChecksum,
        expected: point.details.contentChecksum,
        actual,
        detail: 'sha256 over sorted key\\tetag\\tsize lines (version ids excluded: a restore writes new versions)',
      });
    }
    return checks;
  },

  async release(unit, point, ctx) {
    const expected = manifestKeyFor(ctx.pipeline, ctx.deploymentId, unit.id);
    if (point.details.manifestKey !== expected) {
      throw new InputError(
        `unit "${unit.id}": restore point names manifest ${point.details.manifestKey}, expected ${expected} for ` +
          `pipeline "${ctx.pipeline}" deployment "${ctx.deploymentId}": refusing to delete another object`,
      );
    }
    // Every version of the manifest object (the state bucket may be versioned); a second release finds none.
    const out = await ctx.s3.send(new ListObjectVersionsCommand({ Bucket: ctx.stateBucket, Prefix: expected }));
    const versions = [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])].filter((v) => v.Key === expected && v.VersionId);
    if (versions.length === 0) {
      await ctx.s3.send(new DeleteObjectCommand({ Bucket: ctx.stateBucket, Key: expected }));
    }
    for (const v of versions) {
      await ctx.s3.send(new DeleteObjectCommand({ Bucket: ctx.stateBucket, Key: expected, VersionId: v.VersionId }));
    }
    ctx.log.info('s3-prefix restore point released', { unit: unit.id, manifest: s3Url(ctx.stateBucket, expected) });
  },
};
