import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  type HeadObjectCommandOutput,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  UploadPartCopyCommand,
  type S3Client,
  type ServerSideEncryption,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { compareKeys, copySourceOf, mapLimit, normalizeEtag } from './keys.ts';
import { RETRYABLE_KEY_CODES, backoffDelay, errorName, httpStatus, sendOnce, sleep, type RetryPolicy } from './retry.ts';

/** What the adapter needs from its options at the I/O layer. */
export interface IoOptions {
  /** Objects larger than this are copied part by part (UploadPartCopy); at most 5 GiB (CopyObject's limit). */
  multipartThresholdBytes: number;
  /** Part size of a multipart copy (grown if the object would need more than 10,000 parts); at least 5 MiB on AWS. */
  partSizeBytes: number;
  /** Copies (objects) in flight at once; each multipart copy also runs up to this many parts at once. */
  copyConcurrency: number;
  retry: RetryPolicy;
}

/** User-metadata key our versioned-mode copies carry: the version id of the captured version they reproduce. */
export const SOURCE_VERSION_META = 'etl-rollback-source-version';

// ---------------------------------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------------------------------

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

function outsidePrefix(bucket: string, prefix: string, key: string): Error {
  return new Error(`listing s3://${bucket}/${prefix} returned ${JSON.stringify(key)}, which is outside the prefix: refusing to go on`);
}

/**
 * A key range within a prefix: keys after `after` (exclusive) up to `through` (inclusive); either end open when absent.
 * ListObjectVersions starts right after `after` (KeyMarker without VersionIdMarker) and the listing stops past `through`.
 */
export interface KeyRange {
  after?: string;
  through?: string;
}

/**
 * Lists every version and delete marker under `prefix` (or only within `range`), page by page. Refuses any key outside
 * the prefix.
 */
export async function listPrefix(s3: S3Client, bucket: string, prefix: string, policy?: RetryPolicy, range: KeyRange = {}): Promise<Listing> {
  const listing: Listing = new Map();
  const historyOf = (key: string): KeyHistory => {
    if (!key.startsWith(prefix)) throw outsidePrefix(bucket, prefix, key);
    let history = listing.get(key);
    if (!history) {
      history = { key, versions: [], markers: [], latest: undefined };
      listing.set(key, history);
    }
    return history;
  };
  let keyMarker: string | undefined = range.after;
  let versionIdMarker: string | undefined;
  const beyond = (key: string) => range.through !== undefined && compareKeys(key, range.through) > 0;
  for (;;) {
    let past = false;
    const request = new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker });
    const page = policy ? await sendOnce(policy, () => s3.send(request)) : await s3.send(request);
    for (const v of page.Versions ?? []) {
      if (v.Key === undefined || v.VersionId === undefined) continue;
      if (beyond(v.Key)) {
        past = true;
        continue;
      }
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
      if (beyond(m.Key)) {
        past = true;
        continue;
      }
      const history = historyOf(m.Key);
      const entry: ListedMarker = { versionId: m.VersionId, lastModified: m.LastModified?.getTime() ?? 0 };
      history.markers.push(entry);
      if (m.IsLatest) history.latest = { kind: 'marker', entry };
    }
    if (!page.IsTruncated || past) break;
    if (!page.NextKeyMarker) {
      throw new Error(`ListObjectVersions on s3://${bucket}/${prefix} is truncated but gave no NextKeyMarker: cannot page on`);
    }
    keyMarker = page.NextKeyMarker;
    versionIdMarker = page.NextVersionIdMarker;
  }
  return listing;
}

/** One current object as ListObjectsV2 lists it. */
export interface ListedObject {
  key: string;
  etag: string;
  size: number;
  storageClass: string;
  lastModified: number;
}

/** Lists the current objects under `prefix` (copy mode: works on versioned and unversioned buckets alike). */
export async function listCurrent(s3: S3Client, bucket: string, prefix: string, policy: RetryPolicy): Promise<Map<string, ListedObject>> {
  const out = new Map<string, ListedObject>();
  let token: string | undefined;
  for (;;) {
    const page = await sendOnce(policy, () => s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token })));
    for (const o of page.Contents ?? []) {
      if (o.Key === undefined) continue;
      if (!o.Key.startsWith(prefix)) throw outsidePrefix(bucket, prefix, o.Key);
      out.set(o.Key, { key: o.Key, etag: normalizeEtag(o.ETag), size: o.Size ?? 0, storageClass: o.StorageClass ?? 'STANDARD', lastModified: o.LastModified?.getTime() ?? 0 });
    }
    if (!page.IsTruncated) return out;
    if (!page.NextContinuationToken) throw new Error(`ListObjectsV2 on s3://${bucket}/${prefix} is truncated but gave no continuation token`);
    token = page.NextContinuationToken;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Heads: the metadata that matters
// ---------------------------------------------------------------------------------------------------------------------

/** The headers of one object (version) that a restore must reproduce, plus what identifies its content. */
export interface ObjectHead {
  /** The version this head describes (absent for an unversioned bucket's object). */
  versionId?: string;
  etag: string;
  size: number;
  contentType?: string;
  contentEncoding?: string;
  contentDisposition?: string;
  contentLanguage?: string;
  cacheControl?: string;
  expires?: Date;
  websiteRedirectLocation?: string;
  /** User metadata (x-amz-meta-*), keys lower-cased as S3 returns them. */
  metadata: Record<string, string>;
  serverSideEncryption?: string;
  kmsKeyId?: string;
  storageClass?: string;
  /** `x-amz-restore`: `ongoing-request="true"` while a RestoreObject runs, `ongoing-request="false", …` once the copy is readable. */
  restore?: string;
  /** Intelligent-Tiering only: `ARCHIVE_ACCESS` or `DEEP_ARCHIVE_ACCESS` while the object sits in an archive tier. */
  archiveStatus?: string;
}

/** HeadObject of a key (or one version of it); undefined if it does not exist. */
export async function headObject(s3: S3Client, policy: RetryPolicy, bucket: string, key: string, versionId?: string): Promise<ObjectHead | undefined> {
  let out;
  try {
    out = await sendOnce(policy, () => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId })));
  } catch (error) {
    if (httpStatus(error) === 404 || errorName(error) === 'NotFound' || errorName(error) === 'NoSuchVersion') return undefined;
    throw error;
  }
  return objectHeadOf(out);
}

/** The head of a HeadObject answer. */
export function objectHeadOf(out: HeadObjectCommandOutput): ObjectHead {
  return {
    ...(out.VersionId !== undefined ? { versionId: out.VersionId } : {}),
    etag: normalizeEtag(out.ETag),
    size: out.ContentLength ?? 0,
    contentType: out.ContentType,
    contentEncoding: out.ContentEncoding,
    contentDisposition: out.ContentDisposition,
    contentLanguage: out.ContentLanguage,
    cacheControl: out.CacheControl,
    expires: out.Expires,
    websiteRedirectLocation: out.WebsiteRedirectLocation,
    metadata: { ...(out.Metadata ?? {}) },
    serverSideEncryption: out.ServerSideEncryption,
    kmsKeyId: out.SSEKMSKeyId,
    storageClass: out.StorageClass,
    restore: out.Restore,
    ...(out.ArchiveStatus !== undefined ? { archiveStatus: out.ArchiveStatus } : {}),
  };
}

/** User metadata without our own marker. */
export function userMetadata(head: ObjectHead): Record<string, string> {
  const { [SOURCE_VERSION_META]: _marker, ...rest } = head.metadata;
  return rest;
}

const sortedJson = (o: Record<string, string>): string => JSON.stringify(Object.keys(o).sort().map((k) => [k, o[k]]));

/** Names the headers in which two objects differ (our marker ignored): [] when they carry the same metadata. */
export function headerDifferences(a: ObjectHead, b: ObjectHead): string[] {
  const diffs: string[] = [];
  const fields = ['contentType', 'contentEncoding', 'contentDisposition', 'contentLanguage', 'cacheControl', 'websiteRedirectLocation'] as const;
  for (const f of fields) if ((a[f] ?? '') !== (b[f] ?? '')) diffs.push(`${f} ${JSON.stringify(a[f] ?? '')} vs ${JSON.stringify(b[f] ?? '')}`);
  if (sortedJson(userMetadata(a)) !== sortedJson(userMetadata(b))) diffs.push('user metadata');
  return diffs;
}

// ---------------------------------------------------------------------------------------------------------------------
// Copies
// ---------------------------------------------------------------------------------------------------------------------

export interface CopyRequest {
  from: { bucket: string; key: string; versionId?: string; ifMatch?: string };
  to: { bucket: string; key: string };
  size: number;
  storageClass?: string;
  /**
   * Rewrite the metadata (MetadataDirective REPLACE) as `head`'s plus `extraMetadata`. Without it the metadata is copied
   * as is (COPY). Tags are always copied.
   */
  replace?: { head: ObjectHead; extraMetadata: Record<string, string> };
}

const MIN_PART = 5 * 1024 ** 2;
const MAX_PARTS = 10_000;

function headerParams(head: ObjectHead, extra: Record<string, string>) {
  return {
    ContentType: head.contentType,
    ContentEncoding: head.contentEncoding,
    ContentDisposition: head.contentDisposition,
    ContentLanguage: head.contentLanguage,
    CacheControl: head.cacheControl,
    Expires: head.expires,
    WebsiteRedirectLocation: head.websiteRedirectLocation,
    Metadata: { ...userMetadata(head), ...extra },
    ...(head.serverSideEncryption === 'aws:kms'
      ? { ServerSideEncryption: head.serverSideEncryption as ServerSideEncryption, SSEKMSKeyId: head.kmsKeyId }
      : {}),
  };
}

function storageClassParam(storageClass: string | undefined) {
  // Keep the source's storage class (a copy defaults to STANDARD).
  return storageClass && storageClass !== 'STANDARD' ? { StorageClass: storageClass as StorageClass } : {};
}

/** The part size for an object: the configured one, grown so that the object fits in 10,000 parts. */
export function partSizeFor(size: number, partSizeBytes: number): number {
  return Math.max(partSizeBytes, Math.ceil(size / MAX_PARTS), Math.min(MIN_PART, partSizeBytes));
}

/**
 * Server-side copy of one object: CopyObject up to the threshold, else CreateMultipartUpload + UploadPartCopy (by
 * CopySourceRange, from the exact version) + CompleteMultipartUpload, with the source's headers, user metadata and tags.
 * A failed multipart copy is aborted (no orphan parts billed). Returns the new object's ETag and version id.
 */
export async function copyObject(s3: S3Client, opts: IoOptions, req: CopyRequest): Promise<{ etag: string; versionId?: string }> {
  const source = copySourceOf(req.from.bucket, req.from.key, req.from.versionId);
  const ifMatch = req.from.ifMatch ? { CopySourceIfMatch: `"${req.from.ifMatch}"` } : {};
  if (req.size <= opts.multipartThresholdBytes) {
    const out = await sendOnce(opts.retry, () =>
      s3.send(
        new CopyObjectCommand({
          Bucket: req.to.bucket,
          Key: req.to.key,
          CopySource: source,
          ...ifMatch,
          TaggingDirective: 'COPY',
          ...(req.replace ? { MetadataDirective: 'REPLACE', ...headerParams(req.replace.head, req.replace.extraMetadata) } : { MetadataDirective: 'COPY' }),
          ...storageClassParam(req.storageClass),
        }),
      ),
    );
    return { etag: normalizeEtag(out.CopyObjectResult?.ETag), versionId: out.VersionId };
  }

  const head = req.replace?.head ?? (await headObject(s3, opts.retry, req.from.bucket, req.from.key, req.from.versionId));
  if (!head) throw new Error(`cannot copy s3://${req.from.bucket}/${req.from.key}: it no longer exists`);
  const tagging = await sendOnce(opts.retry, () =>
    s3.send(new GetObjectTaggingCommand({ Bucket: req.from.bucket, Key: req.from.key, VersionId: req.from.versionId })),
  );
  const tags = (tagging.TagSet ?? []).map((t) => `${encodeURIComponent(t.Key ?? '')}=${encodeURIComponent(t.Value ?? '')}`).join('&');
  const created = await sendOnce(opts.retry, () =>
    s3.send(
      new CreateMultipartUploadCommand({
        Bucket: req.to.bucket,
        Key: req.to.key,
        ...headerParams(head, req.replace?.extraMetadata ?? {}),
        ...(tags ? { Tagging: tags } : {}),
        ...storageClassParam(req.storageClass),
      }),
    ),
  );
  const uploadId = created.UploadId;
  if (!uploadId) throw new Error(`CreateMultipartUpload for s3://${req.to.bucket}/${req.to.key} returned no UploadId`);
  try {
    const partSize = partSizeFor(req.size, opts.partSizeBytes);
    const ranges: { part: number; first: number; last: number }[] = [];
    for (let first = 0, part = 1; first < req.size; first += partSize, part++) ranges.push({ part, first, last: Math.min(req.size, first + partSize) - 1 });
    const parts = await mapLimit(ranges, Math.max(1, Math.min(opts.copyConcurrency, 8)), async ({ part, first, last }) => {
      const out = await sendOnce(opts.retry, () =>
        s3.send(
          new UploadPartCopyCommand({
            Bucket: req.to.bucket,
            Key: req.to.key,
            UploadId: uploadId,
            PartNumber: part,
            CopySource: source,
            CopySourceRange: `bytes=${first}-${last}`,
            ...ifMatch,
          }),
        ),
      );
      return { PartNumber: part, ETag: out.CopyPartResult?.ETag };
    });
    const done = await sendOnce(opts.retry, () =>
      s3.send(new CompleteMultipartUploadCommand({ Bucket: req.to.bucket, Key: req.to.key, UploadId: uploadId, MultipartUpload: { Parts: parts } })),
    );
    return { etag: normalizeEtag(done.ETag), versionId: done.VersionId };
  } catch (error) {
    await s3.send(new AbortMultipartUploadCommand({ Bucket: req.to.bucket, Key: req.to.key, UploadId: uploadId })).catch(() => undefined);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Batched deletes
// ---------------------------------------------------------------------------------------------------------------------

/** DeleteObjects takes at most this many keys per request. */
export const DELETE_BATCH_SIZE = 1000;

export interface DeleteTarget {
  key: string;
  versionId?: string;
}

/**
 * Deletes (or, with a version id, removes that version or marker) in DeleteObjects batches of 1,000. Per-key errors with
 * a retryable code are resent (only those keys) with backoff; any other per-key error fails the call naming every such
 * key, once the batch's retryable ones are settled. `beforeBatch` runs before each batch is sent (copy mode quarantines
 * the batch there). Every key must lie under `prefix`.
 */
export async function deleteInBatches(
  s3: S3Client,
  policy: RetryPolicy,
  bucket: string,
  prefix: string,
  objects: readonly DeleteTarget[],
  what: string,
  beforeBatch?: (batch: readonly DeleteTarget[]) => Promise<void>,
): Promise<void> {
  for (let start = 0; start < objects.length; start += DELETE_BATCH_SIZE) {
    const batch = objects.slice(start, start + DELETE_BATCH_SIZE);
    for (const o of batch) {
      if (!o.key.startsWith(prefix)) throw new Error(`refusing to delete ${JSON.stringify(o.key)}: outside s3://${bucket}/${prefix}`);
    }
    if (beforeBatch) await beforeBatch(batch);
    let pending: readonly DeleteTarget[] = batch;
    const failed: string[] = [];
    for (let attempt = 1; pending.length > 0; attempt++) {
      const sent = pending;
      const out = await sendOnce(policy, () =>
        s3.send(
          new DeleteObjectsCommand({
            Bucket: bucket,
            Delete: { Quiet: true, Objects: sent.map((o) => (o.versionId ? { Key: o.key, VersionId: o.versionId } : { Key: o.key })) },
          }),
        ),
      );
      const retry: DeleteTarget[] = [];
      for (const e of out.Errors ?? []) {
        const target = sent.find((o) => o.key === e.Key && (o.versionId ?? undefined) === (e.VersionId || undefined)) ?? { key: e.Key ?? '?', versionId: e.VersionId };
        const label = `${JSON.stringify(target.key)}${target.versionId ? ` (version ${target.versionId})` : ''}: ${e.Code ?? 'error'} ${e.Message ?? ''}`.trim();
        if (RETRYABLE_KEY_CODES.has(e.Code ?? '') && attempt < policy.maxAttempts) retry.push(target);
        else failed.push(RETRYABLE_KEY_CODES.has(e.Code ?? '') ? `${label} (still failing after ${attempt} attempts)` : label);
      }
      pending = retry;
      if (retry.length > 0) await sleep(backoffDelay(attempt, policy));
    }
    if (failed.length > 0) {
      throw new Error(
        `${what} in s3://${bucket}/${prefix} failed for ${failed.length} of ${batch.length} object(s) in a DeleteObjects batch: ` +
          `${failed.slice(0, 20).join('; ')}${failed.length > 20 ? ` (and ${failed.length - 20} more)` : ''}. ` +
          'Fix the cause (permissions, object lock) and rerun: a restore resumes.',
      );
    }
  }
}

