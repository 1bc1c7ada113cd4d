import { gunzipSync, gzipSync } from 'node:zlib';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { InputError, RestorePointMissingError } from '../../errors.ts';
import type { S3PrefixUnit } from '../../manifest/schema.ts';
import type { AdapterContext, RestorePoint } from '../types.ts';
import { compareKeys, contentChecksum, manifestChecksum, mapLimit, nameSome, s3Url } from './keys.ts';
import { errorName, httpStatus, sendOnce, type RetryPolicy } from './retry.ts';

/** What a restore point of an s3-prefix unit holds (JSON in the ledger). */
export interface S3PrefixDetails {
  bucket: string;
  prefix: string;
  /** Key of the manifest in the state bucket (ctx.stateBucket). */
  manifestKey: string;
  /** Sum of the captured objects' sizes. */
  totalBytes: number;
  /** sha256 hex over the sorted lines `key\tetag\tsize`: what verify compares with the live state. */
  contentChecksum: string;
  /** `versioned` (absent in points sealed before copy mode existed) or `copy`. */
  mode?: 'versioned' | 'copy';
  /**
   * Folder of the deploy's change log in the state bucket (`capture: change-log`, see s3/change-log.ts): a restore reads
   * it instead of listing the prefix, then checks the whole prefix. Absent: the restore lists the prefix.
   */
  changeLog?: string;
}

/** One captured object (versioned mode): the version that was latest at capture. ETag without quotes. */
export interface ManifestEntry {
  key: string;
  versionId: string;
  etag: string;
  size: number;
}

export const MANIFEST_FORMAT = 'etl-rollback/s3-prefix-versions@1';
export const COPY_MANIFEST_FORMAT = 'etl-rollback/s3-prefix-copies@1';

const manifestEntrySchema = z.strictObject({
  key: z.string().min(1),
  versionId: z.string().min(1),
  etag: z.string(),
  size: z.number().int().nonnegative(),
});

const header = {
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
};

export const versionManifestSchema = z.strictObject({ format: z.literal(MANIFEST_FORMAT), ...header, entries: z.array(manifestEntrySchema) });
export type VersionManifest = z.infer<typeof versionManifestSchema>;

/** One object copied by a copy-mode capture: the original's ETag, and the ETag of our copy of it (they differ for multipart uploads). */
const copyEntrySchema = z.strictObject({
  key: z.string().min(1),
  etag: z.string(),
  size: z.number().int().nonnegative(),
  contentType: z.string().optional(),
  metadata: z.record(z.string(), z.string()),
  backupKey: z.string().min(1),
  backupEtag: z.string(),
});
export type CopyEntry = z.infer<typeof copyEntrySchema>;

export const copyManifestSchema = z.strictObject({ format: z.literal(COPY_MANIFEST_FORMAT), ...header, entries: z.array(copyEntrySchema) });
export type CopyManifest = z.infer<typeof copyManifestSchema>;

export type AnyManifest = VersionManifest | CopyManifest;

/**
 * Sharded version manifest (versioned mode, more keys than one shard holds). The index object sits where a single-file
 * manifest would (`…/versions.json`) and carries the same header (count and checksums over all entries); the entries
 * are in shards `…/versions/<checksum prefix>/<n>.jsonl.gz` (gzip, one JSON entry a line, key order), each named with
 * its key range [firstKey, lastKey], count and checksum (manifestChecksum of its entries). Shard i is responsible for
 * the live keys after shard i-1's lastKey up to its own lastKey (the first from the prefix's start, the last to its
 * end), so the shards together cover every key a restore must look at, added ones included. Single-file manifests
 * (`MANIFEST_FORMAT`) are still written for prefixes that fit in one shard, and read whatever their age.
 */
export const SHARDED_MANIFEST_FORMAT = 'etl-rollback/s3-prefix-versions-sharded@1';
/** Keys a shard holds (default). */
export const DEFAULT_SHARD_SIZE = 10_000;

const shardRefSchema = z.strictObject({
  key: z.string().min(1),
  firstKey: z.string().min(1),
  lastKey: z.string().min(1),
  count: z.number().int().positive(),
  checksum: z.string(),
});
export type ShardRef = z.infer<typeof shardRefSchema>;

export const shardIndexSchema = z.strictObject({
  format: z.literal(SHARDED_MANIFEST_FORMAT),
  ...header,
  shardSize: z.number().int().positive(),
  shards: z.array(shardRefSchema).min(1),
});
export type ShardIndex = z.infer<typeof shardIndexSchema>;

/** What `versions.json` holds: a whole manifest, or the index of a sharded one. */
export type StoredManifest = AnyManifest | ShardIndex;
const storedManifestSchema = z.discriminatedUnion('format', [versionManifestSchema, copyManifestSchema, shardIndexSchema]);

export const isShardIndex = (m: StoredManifest): m is ShardIndex => m.format === SHARDED_MANIFEST_FORMAT;

/** The checksum a manifest must carry for its entries. */
export function checksumOf(manifest: Pick<AnyManifest, 'format' | 'entries'>): string {
  return manifest.format === MANIFEST_FORMAT ? manifestChecksum(manifest.entries as ManifestEntry[]) : contentChecksum(manifest.entries);
}

async function getBytes(s3: S3Client, policy: RetryPolicy, bucket: string, key: string): Promise<Uint8Array | undefined> {
  try {
    const out = await sendOnce(policy, () => s3.send(new GetObjectCommand({ Bucket: bucket, Key: key })));
    return (await out.Body?.transformToByteArray()) ?? new Uint8Array();
  } catch (error) {
    if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return undefined;
    throw error;
  }
}

/** Reads and validates `versions.json` as stored (a sharded manifest's index is not expanded); undefined if absent. */
export async function readStoredManifest(s3: S3Client, policy: RetryPolicy, stateBucket: string, key: string): Promise<StoredManifest | undefined> {
  const raw = await getBytes(s3, policy, stateBucket, key);
  if (raw === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(raw).toString('utf8'));
  } catch (error) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} is not valid JSON: it cannot be used`, { cause: error });
  }
  const parsed = storedManifestSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new RestorePointMissingError(
      `restore point manifest ${s3Url(stateBucket, key)} is not a ${MANIFEST_FORMAT}, ${SHARDED_MANIFEST_FORMAT} or ${COPY_MANIFEST_FORMAT} manifest (${issues})`,
    );
  }
  const manifest = parsed.data;
  if (isShardIndex(manifest)) {
    const total = manifest.shards.reduce((n, sh) => n + sh.count, 0);
    const unordered = manifest.shards.some((sh, i) => compareKeys(sh.firstKey, sh.lastKey) > 0 || (i > 0 && compareKeys(manifest.shards[i - 1]!.lastKey, sh.firstKey) >= 0));
    const outside = manifest.shards.flatMap((sh) => [sh.firstKey, sh.lastKey]).filter((k) => !k.startsWith(manifest.prefix));
    if (total !== manifest.count || unordered || outside.length > 0) {
      throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)}: its shard list does not match its count, key order or prefix: it was altered`);
    }
    return manifest;
  }
  const outside = manifest.entries.filter((e) => !e.key.startsWith(manifest.prefix)).map((e) => e.key);
  if (outside.length > 0) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} lists keys outside ${manifest.prefix}: ${nameSome(outside)}`);
  }
  if (checksumOf(manifest) !== manifest.checksum || manifest.entries.length !== manifest.count) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} does not match its own count/checksum: it was altered`);
  }
  return manifest;
}

/** The entries of shard `n` of a sharded manifest, checked against the index (count, checksum, key range). */
export async function readShard(s3: S3Client, policy: RetryPolicy, stateBucket: string, index: ShardIndex, n: number): Promise<ManifestEntry[]> {
  const ref = index.shards[n];
  if (!ref) throw new InputError(`restore point of unit "${index.unitId}" has ${index.shards.length} shard(s): there is no shard ${n}`);
  const where = s3Url(stateBucket, ref.key);
  const raw = await getBytes(s3, policy, stateBucket, ref.key);
  if (raw === undefined) throw new RestorePointMissingError(`restore point shard ${where} of unit "${index.unitId}" does not exist (released?)`);
  let entries: ManifestEntry[];
  try {
    entries = gunzipSync(raw)
      .toString('utf8')
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => manifestEntrySchema.parse(JSON.parse(line)));
  } catch (error) {
    throw new RestorePointMissingError(`restore point shard ${where} is not gzip JSON lines of manifest entries: it cannot be used`, { cause: error });
  }
  const inRange = entries.every((e, i) => compareKeys(e.key, ref.firstKey) >= 0 && compareKeys(e.key, ref.lastKey) <= 0 && (i === 0 || compareKeys(entries[i - 1]!.key, e.key) < 0));
  if (entries.length !== ref.count || manifestChecksum(entries) !== ref.checksum || !inRange || entries[0]?.key !== ref.firstKey) {
    throw new RestorePointMissingError(`restore point shard ${where} does not match its index entry (count, checksum or key range): it was altered`);
  }
  return entries;
}

/** Every entry of a sharded manifest, as one manifest (checked against the index's overall count and checksum). */
export async function expandShards(s3: S3Client, policy: RetryPolicy, stateBucket: string, index: ShardIndex, indexKey: string): Promise<VersionManifest> {
  const parts = await mapLimit(index.shards.map((_, n) => n), 8, (n) => readShard(s3, policy, stateBucket, index, n));
  const entries = parts.flat();
  if (entries.length !== index.count || manifestChecksum(entries) !== index.checksum) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, indexKey)}: its shards do not add up to its count/checksum: it was altered`);
  }
  const { shards: _shards, shardSize: _size, format: _format, ...head } = index;
  return { format: MANIFEST_FORMAT, ...head, entries };
}

/** Reads and validates a manifest, shards expanded; undefined if the object does not exist. */
export async function readManifest(s3: S3Client, policy: RetryPolicy, stateBucket: string, key: string): Promise<AnyManifest | undefined> {
  const stored = await readStoredManifest(s3, policy, stateBucket, key);
  return stored && isShardIndex(stored) ? expandShards(s3, policy, stateBucket, stored, key) : stored;
}

/**
 * Writes a manifest once (If-None-Match: *). If a concurrent capture of the same deployment won the race, its manifest
 * is returned instead: its point is the point.
 */
export async function writeManifestOnce(s3: S3Client, policy: RetryPolicy, stateBucket: string, key: string, manifest: AnyManifest | ShardIndex): Promise<AnyManifest> {
  try {
    await sendOnce(policy, () =>
      s3.send(new PutObjectCommand({ Bucket: stateBucket, Key: key, Body: JSON.stringify(manifest), ContentType: 'application/json', IfNoneMatch: '*' })),
    );
    return isShardIndex(manifest) ? expandShards(s3, policy, stateBucket, manifest, key) : manifest;
  } catch (error) {
    if (errorName(error) !== 'PreconditionFailed' && httpStatus(error) !== 412) throw error;
    const winner = await readManifest(s3, policy, stateBucket, key);
    if (!winner) throw error;
    return winner;
  }
}

/** Where shard `n` of a manifest with checksum `checksum` goes (content-addressed folder: racing captures never mix). */
export function shardKeyFor(folder: string, checksum: string, n: number): string {
  return `${folder}versions/${checksum.slice(0, 16)}/${String(n).padStart(5, '0')}.jsonl.gz`;
}

/**
 * Writes a versioned-mode manifest: as one file when it fits in one shard, else its shards first, then the index (once,
 * If-None-Match). Shards are written before the index, so an index never names a shard that is not there.
 */
export async function writeShardedManifestOnce(
  s3: S3Client,
  policy: RetryPolicy,
  stateBucket: string,
  key: string,
  folder: string,
  manifest: VersionManifest,
  shardSize: number,
): Promise<AnyManifest> {
  if (manifest.entries.length <= shardSize) return writeManifestOnce(s3, policy, stateBucket, key, manifest);
  const { entries, format: _format, ...head } = manifest;
  const chunks: ManifestEntry[][] = [];
  for (let i = 0; i < entries.length; i += shardSize) chunks.push(entries.slice(i, i + shardSize));
  const shards = await mapLimit(chunks.map((chunk, n) => ({ chunk, n })), 8, async ({ chunk, n }) => {
    const shardKey = shardKeyFor(folder, manifest.checksum, n);
    const body = gzipSync(Buffer.from(chunk.map((e) => JSON.stringify(e)).join('\n') + '\n', 'utf8'));
    await sendOnce(policy, () => s3.send(new PutObjectCommand({ Bucket: stateBucket, Key: shardKey, Body: body, ContentType: 'application/x-ndjson', ContentEncoding: 'gzip' })));
    return { key: shardKey, firstKey: chunk[0]!.key, lastKey: chunk[chunk.length - 1]!.key, count: chunk.length, checksum: manifestChecksum(chunk) };
  });
  return writeManifestOnce(s3, policy, stateBucket, key, { format: SHARDED_MANIFEST_FORMAT, ...head, shardSize, shards });
}

export function pointFrom(manifest: StoredManifest, manifestKey: string): RestorePoint<S3PrefixDetails> {
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
      mode: manifest.format === COPY_MANIFEST_FORMAT ? 'copy' : 'versioned',
    },
  };
}

export function assertSameTarget(unit: S3PrefixUnit, bucket: string, prefix: string, where: string): void {
  if (unit.bucket !== bucket || unit.prefix !== prefix) {
    throw new InputError(
      `unit "${unit.id}" names s3://${unit.bucket}/${unit.prefix}, but ${where} was captured for s3://${bucket}/${prefix}: ` +
        'the manifest changed after the capture; roll back with the manifest the deployment was made with',
    );
  }
}

/** Loads `versions.json` as stored (a sharded manifest's index) and checks it is the one the point was sealed with. */
export async function loadPointStored(
  unit: S3PrefixUnit,
  point: RestorePoint<S3PrefixDetails>,
  ctx: AdapterContext,
  policy: RetryPolicy,
): Promise<StoredManifest> {
  const { details } = point;
  assertSameTarget(unit, details.bucket, details.prefix, 'its restore point');
  const manifest = await readStoredManifest(ctx.s3, policy, ctx.stateBucket, details.manifestKey);
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

/** Loads the manifest a point refers to (shards expanded) and checks it is the one the point was sealed with. */
export async function loadPointManifest(
  unit: S3PrefixUnit,
  point: RestorePoint<S3PrefixDetails>,
  ctx: AdapterContext,
  policy: RetryPolicy,
): Promise<AnyManifest> {
  const stored = await loadPointStored(unit, point, ctx, policy);
  return isShardIndex(stored) ? expandShards(ctx.s3, policy, ctx.stateBucket, stored, point.details.manifestKey) : stored;
}
