import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { InputError, RestorePointMissingError } from '../../errors.ts';
import type { S3PrefixUnit } from '../../manifest/schema.ts';
import type { AdapterContext, RestorePoint } from '../types.ts';
import { contentChecksum, manifestChecksum, nameSome, s3Url } from './keys.ts';
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
const anyManifestSchema = z.discriminatedUnion('format', [versionManifestSchema, copyManifestSchema]);

/** The checksum a manifest must carry for its entries. */
export function checksumOf(manifest: Pick<AnyManifest, 'format' | 'entries'>): string {
  return manifest.format === MANIFEST_FORMAT ? manifestChecksum(manifest.entries as ManifestEntry[]) : contentChecksum(manifest.entries);
}

/** Reads and validates a manifest; undefined if the object does not exist. */
export async function readManifest(s3: S3Client, policy: RetryPolicy, stateBucket: string, key: string): Promise<AnyManifest | undefined> {
  let body: string;
  try {
    const out = await sendOnce(policy, () => s3.send(new GetObjectCommand({ Bucket: stateBucket, Key: key })));
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
  const parsed = anyManifestSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} is not a ${MANIFEST_FORMAT} or ${COPY_MANIFEST_FORMAT} manifest (${issues})`);
  }
  const manifest = parsed.data;
  const outside = manifest.entries.filter((e) => !e.key.startsWith(manifest.prefix)).map((e) => e.key);
  if (outside.length > 0) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} lists keys outside ${manifest.prefix}: ${nameSome(outside)}`);
  }
  if (checksumOf(manifest) !== manifest.checksum || manifest.entries.length !== manifest.count) {
    throw new RestorePointMissingError(`restore point manifest ${s3Url(stateBucket, key)} does not match its own count/checksum: it was altered`);
  }
  return manifest;
}

/**
 * Writes a manifest once (If-None-Match: *). If a concurrent capture of the same deployment won the race, its manifest
 * is returned instead: its point is the point.
 */
export async function writeManifestOnce(s3: S3Client, policy: RetryPolicy, stateBucket: string, key: string, manifest: AnyManifest): Promise<AnyManifest> {
  try {
    await sendOnce(policy, () =>
      s3.send(new PutObjectCommand({ Bucket: stateBucket, Key: key, Body: JSON.stringify(manifest), ContentType: 'application/json', IfNoneMatch: '*' })),
    );
    return manifest;
  } catch (error) {
    if (errorName(error) !== 'PreconditionFailed' && httpStatus(error) !== 412) throw error;
    const winner = await readManifest(s3, policy, stateBucket, key);
    if (!winner) throw error;
    return winner;
  }
}

export function pointFrom(manifest: AnyManifest, manifestKey: string): RestorePoint<S3PrefixDetails> {
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
      mode: manifest.format === MANIFEST_FORMAT ? 'versioned' : 'copy',
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

/** Loads the manifest a point refers to and checks it is the one the point was sealed with. */
export async function loadPointManifest(
  unit: S3PrefixUnit,
  point: RestorePoint<S3PrefixDetails>,
  ctx: AdapterContext,
  policy: RetryPolicy,
): Promise<AnyManifest> {
  const { details } = point;
  assertSameTarget(unit, details.bucket, details.prefix, 'its restore point');
  const manifest = await readManifest(ctx.s3, policy, ctx.stateBucket, details.manifestKey);
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
