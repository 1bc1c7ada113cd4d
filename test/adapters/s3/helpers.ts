import { createHash } from 'node:crypto';
import { GlueClient } from '@aws-sdk/client-glue';
import { RDSClient } from '@aws-sdk/client-rds';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  RestoreObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { expect } from 'vitest';
import { destroyingS3, testS3, uniqueName } from '../../support/aws.ts';
import type { AdapterContext } from '../../../core/adapters/types.ts';
import { s3PrefixUnitSchema, type S3PrefixUnit } from '../../../core/manifest/schema.ts';

/** Shared helpers of the s3-prefix tests: everything asserted is read back from moto with this code, not the adapter's. */

export const s3: S3Client = testS3();
const destroying: S3Client = destroyingS3();

export async function newBucket(name: string, versioned: boolean): Promise<string> {
  const bucket = uniqueName(name);
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  if (versioned) await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  return bucket;
}

export interface PutExtra {
  ContentType?: string;
  StorageClass?: 'GLACIER' | 'DEEP_ARCHIVE' | 'INTELLIGENT_TIERING';
  Metadata?: Record<string, string>;
  Tagging?: string;
}

export async function put(bucket: string, key: string, content: string | Buffer, extra: PutExtra = {}): Promise<string | undefined> {
  const out = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: typeof content === 'string' ? Buffer.from(content, 'utf8') : content, ...extra }));
  return out.VersionId;
}

/** Uploads `content` in parts of `partSize` (its ETag ends in `-N`, which no CopyObject reproduces). */
export async function putMultipart(bucket: string, key: string, content: Buffer, partSize: number, extra: PutExtra = {}): Promise<string | undefined> {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...extra }));
  const parts = [];
  for (let i = 0, n = 1; i < content.length; i += partSize, n++) {
    const out = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: n, Body: content.subarray(i, i + partSize) }));
    parts.push({ PartNumber: n, ETag: out.ETag });
  }
  const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } }));
  return done.VersionId;
}

export async function del(bucket: string, key: string, versionId?: string): Promise<void> {
  // A version id given: the test destroys that version on purpose (the guard is told so).
  await (versionId ? destroying : s3).send(new DeleteObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }));
}

export async function bytes(bucket: string, key: string, versionId?: string): Promise<Buffer> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

export async function text(bucket: string, key: string): Promise<string> {
  return (await bytes(bucket, key)).toString('utf8');
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Content-Type, user metadata and tags of the current object. */
export async function headersOf(bucket: string, key: string): Promise<{ contentType?: string; metadata: Record<string, string>; tags: Record<string, string>; etag: string }> {
  const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  const tagging = await s3.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }));
  return {
    contentType: head.ContentType,
    metadata: head.Metadata ?? {},
    tags: Object.fromEntries((tagging.TagSet ?? []).map((t) => [t.Key!, t.Value!])),
    etag: head.ETag!,
  };
}

/** Every (key, version id, marker?) triple under a prefix: any write at all changes it. */
export async function versionFingerprint(bucket: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker, VersionIdMarker }));
    for (const v of page.Versions ?? []) out.push(`${v.Key} v ${v.VersionId}`);
    for (const m of page.DeleteMarkers ?? []) out.push(`${m.Key} m ${m.VersionId}`);
    if (!page.IsTruncated) return out.sort();
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
}

/** key → bytes (utf8) of every current object under a prefix. */
export async function liveContent(bucket: string, prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  const keys: string[] = [];
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker, VersionIdMarker }));
    for (const v of page.Versions ?? []) if (v.IsLatest) keys.push(v.Key!);
    if (!page.IsTruncated) break;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
  for (const k of keys) out[k] = await text(bucket, k);
  return out;
}

export function contextFor(stateBucket: string, deploymentId = uniqueName('d'), client: S3Client = s3, retentionDays = 14): AdapterContext {
  return {
    pipeline: 'orders',
    deploymentId,
    runId: uniqueName('run'),
    s3: client,
    rds: new RDSClient({}),
    glue: new GlueClient({}),
    stateBucket,
    postgres: { connect: () => Promise.reject(new Error('the s3-prefix adapter must not open database connections')) },
    mysql: { connect: () => Promise.reject(new Error('the s3-prefix adapter must not open MySQL connections')) },
    retentionDays,
    now: () => new Date(),
    log: { info: () => undefined, warn: () => undefined },
  };
}

export function unitFor(bucket: string, prefix: string, mode: 'versioned' | 'copy' = 'versioned'): S3PrefixUnit {
  return s3PrefixUnitSchema.parse({ id: 'raw', type: 's3-prefix', bucket, prefix, mode });
}

export const WRITE_COMMANDS = new Set([
  'CopyObjectCommand',
  'DeleteObjectsCommand',
  'DeleteObjectCommand',
  'PutObjectCommand',
  'CreateMultipartUploadCommand',
  'UploadPartCopyCommand',
  'CompleteMultipartUploadCommand',
]);

export interface Attempt {
  command: string;
  input: Record<string, unknown>;
  ok: boolean;
}

/**
 * An S3 client whose every HTTP attempt passes a middleware at the `finalizeRequest` step, below the SDK's retry
 * middleware: it sees each attempt the SDK makes, and a fault it throws is one the SDK's retry strategy judges.
 * `fault` may throw to fail an attempt before it is sent.
 */
export function instrumentedClient(
  fault: (a: { command: string; input: Record<string, unknown>; attempts: Attempt[] }) => void = () => undefined,
  config: { maxAttempts?: number } = {},
): { client: S3Client; attempts: Attempt[]; writes: () => Attempt[] } {
  const client = testS3();
  if (config.maxAttempts !== undefined) {
    const Ctor = client.constructor as new (c: object) => S3Client;
    return instrumentedOn(new Ctor({ forcePathStyle: true, maxAttempts: config.maxAttempts }), fault);
  }
  return instrumentedOn(client, fault);
}

function instrumentedOn(client: S3Client, fault: Parameters<typeof instrumentedClient>[0] & object) {
  const attempts: Attempt[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const command = String((context as { commandName?: string }).commandName);
      const input = args.input as Record<string, unknown>;
      const record: Attempt = { command, input, ok: false };
      try {
        fault({ command, input, attempts });
      } catch (error) {
        attempts.push(record);
        throw error;
      }
      attempts.push(record);
      const out = await next(args);
      record.ok = true;
      return out;
    },
    { step: 'finalizeRequest', name: 'testFaults' },
  );
  return { client, attempts, writes: () => attempts.filter((a) => WRITE_COMMANDS.has(a.command)) };
}

export function slowDown(): Error {
  return Object.assign(new Error('Please reduce your request rate.'), {
    name: 'SlowDown',
    $fault: 'server',
    $metadata: { httpStatusCode: 503 },
    $retryable: { throttling: true },
  });
}

export function connectionReset(): Error {
  return Object.assign(new Error('socket hang up'), { name: 'Error', code: 'ECONNRESET' });
}

export function accessDenied(): Error {
  return Object.assign(new Error('Access Denied (injected)'), { name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 } });
}

export async function expectRejects(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(Error);
  return error as Error;
}

/**
 * Stands in for S3 completing the retrieval of an archived, noncurrent version (hours later, in AWS). moto 5.2.5's
 * RestoreObject ignores VersionId and restores the current version only, so the versions above `versionId` are set aside
 * (read, then destroyed by id), the version is restored while it is current, and the set-aside versions are written back,
 * oldest first: the same bytes, Content-Type, user metadata and storage class, under new version ids. Answers the new
 * version ids, newest first. Afterwards HeadObject of `versionId` says `ongoing-request="false"` and a CopyObject from
 * it succeeds, as in AWS once a retrieval is done.
 */
export async function completeRetrievalInMoto(bucket: string, key: string, versionId: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key }));
  const versions = (listed.Versions ?? []).filter((v) => v.Key === key); // newest first, as S3 lists them
  const at = versions.findIndex((v) => v.VersionId === versionId);
  if (at < 0) throw new Error(`no version ${versionId} of ${key}`);
  if ((listed.DeleteMarkers ?? []).some((m) => m.Key === key)) throw new Error(`${key} has delete markers: this stand-in handles object versions only`);
  const above = [];
  for (const v of versions.slice(0, at)) {
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: v.VersionId }));
    above.push({ body: Buffer.from(await got.Body!.transformToByteArray()), contentType: got.ContentType, metadata: got.Metadata, storageClass: v.StorageClass });
    await del(bucket, key, v.VersionId);
  }
  await s3.send(new RestoreObjectCommand({ Bucket: bucket, Key: key, RestoreRequest: { Days: 1 } }));
  const again: string[] = [];
  for (const v of above.reverse()) {
    const out = await s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: key, Body: v.body, ContentType: v.contentType, Metadata: v.metadata, ...(v.storageClass && v.storageClass !== 'STANDARD' ? { StorageClass: v.storageClass as 'GLACIER' } : {}) }),
    );
    again.unshift(out.VersionId!);
  }
  return again;
}
