import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { RestorePointMissingError } from '../../errors.ts';
import { compareKeys, mapLimit, s3Url } from './keys.ts';
import { sendOnce, type RetryPolicy } from './retry.ts';

/**
 * The change log of a captured prefix (`capture: change-log`): what S3 announced for its keys between the snapshot and
 * the end of the deploy, so that a rollback can restore the changed keys without listing the prefix.
 *
 * Where: beside the restore point it belongs to, `restore-points/<pipeline>/<deployment>/<unit>/changes/<batch>.jsonl.gz`,
 * one object per delivery batch of the "Record changes" function (gzip JSON lines of LoggedChange). Each batch is its own
 * object, so appending is a single PutObject that never reads or rewrites what is there, concurrent batches never
 * conflict, and a retried batch (same messages) writes the same key again. Releasing the restore point removes the log
 * with it. Reading lists the folder (ListObjectsV2 on the state bucket, one page per 1,000 batches) and gets each batch.
 *
 * Delivery is at least once and in no particular order: duplicates are dropped by (key, version id, kind), and a key's
 * changes are ordered by S3's sequencer. The log only says WHICH keys changed; what a key is now comes from a HeadObject
 * at restore time (s3/change-log-restore.ts). So a duplicated, reordered or late event cannot mislead a restore, and a
 * lost one leaves a key unrestored that the full listing check after the fast path finds and repairs (and counts).
 */

/** One change S3 announced for a key. */
export interface LoggedChange {
  key: string;
  /**
   * `created`: a new object version; `marker`: a delete marker was created (a delete on a versioned bucket);
   * `deleted`: the version `versionId` was permanently deleted (a delete by version id; also a delete marker's removal).
   */
  kind: 'created' | 'marker' | 'deleted';
  /** The version (or delete marker) created or deleted; "null" in a bucket that never had versioning. */
  versionId: string;
  /** S3's per-key order of events (hex; compare with compareSequencers). */
  sequencer: string;
  /** The event's time (ISO-8601 UTC, to the second). */
  time: string;
  etag?: string;
  size?: number;
}

const loggedChangeSchema = z.strictObject({
  key: z.string().min(1),
  kind: z.enum(['created', 'marker', 'deleted']),
  versionId: z.string().min(1),
  sequencer: z.string(),
  time: z.string(),
  etag: z.string().optional(),
  size: z.number().int().nonnegative().optional(),
});

/** `restore-points/<pipeline>/<deployment>/<unit>/changes/` for a restore point folder. */
export function changeLogFolder(restorePointFolder: string): string {
  return `${restorePointFolder}changes/`;
}

/**
 * S3's sequencer values order the events of one key. AWS: hexadecimal strings of varying length; to compare two,
 * right-pad the shorter with zeros, then compare as strings.
 */
export function compareSequencers(a: string, b: string): number {
  const n = Math.max(a.length, b.length);
  const x = a.toUpperCase().padEnd(n, '0');
  const y = b.toUpperCase().padEnd(n, '0');
  return x < y ? -1 : x > y ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------------------
// S3 events (EventBridge) → changes
// ---------------------------------------------------------------------------------------------------------------------

/**
 * The part of an S3 event delivered by EventBridge (`source: aws.s3`) that the log needs. AWS documents the ETag field
 * as `etag`; some emitters spell it `eTag`: both are read.
 */
export const s3ObjectEventSchema = z.object({
  id: z.string().min(1),
  source: z.literal('aws.s3'),
  'detail-type': z.enum(['Object Created', 'Object Deleted']),
  time: z.string().min(1),
  detail: z.object({
    bucket: z.object({ name: z.string().min(1) }),
    object: z.object({
      key: z.string().min(1),
      'version-id': z.string().min(1).optional(),
      sequencer: z.string().default(''),
      size: z.number().int().nonnegative().optional(),
      etag: z.string().optional(),
      eTag: z.string().optional(),
    }),
    'deletion-type': z.string().optional(),
  }),
});
export type S3ObjectEvent = z.infer<typeof s3ObjectEventSchema>;

/** The logged change an S3 event stands for, with its bucket. */
export function changeOfEvent(event: S3ObjectEvent): { bucket: string; change: LoggedChange } {
  const { object } = event.detail;
  const kind: LoggedChange['kind'] =
    event['detail-type'] === 'Object Created' ? 'created' : event.detail['deletion-type'] === 'Permanently Deleted' ? 'deleted' : 'marker';
  const etag = object.etag ?? object.eTag;
  const change: LoggedChange = {
    key: object.key,
    kind,
    versionId: object['version-id'] ?? 'null',
    sequencer: object.sequencer,
    time: event.time,
    ...(kind === 'created' && etag !== undefined ? { etag: etag.replace(/^"+|"+$/g, '') } : {}),
    ...(kind === 'created' && object.size !== undefined ? { size: object.size } : {}),
  };
  return { bucket: event.detail.bucket.name, change };
}

// ---------------------------------------------------------------------------------------------------------------------
// Writing and reading the log
// ---------------------------------------------------------------------------------------------------------------------

/** A batch's object name: the hash of its delivery ids, so a redelivered batch lands on the same key. */
export function batchKeyFor(folder: string, deliveryIds: readonly string[]): string {
  const hash = createHash('sha256');
  for (const id of [...deliveryIds].sort()) hash.update(`${id}\n`);
  return `${folder}${hash.digest('hex').slice(0, 32)}.jsonl.gz`;
}

/** Appends one batch of changes to a log: one new object. */
export async function appendChanges(
  s3: S3Client,
  policy: RetryPolicy,
  stateBucket: string,
  folder: string,
  deliveryIds: readonly string[],
  changes: readonly LoggedChange[],
): Promise<string> {
  const key = batchKeyFor(folder, deliveryIds);
  const body = gzipSync(Buffer.from(changes.map((c) => JSON.stringify(c)).join('\n') + '\n', 'utf8'));
  await sendOnce(policy, () => s3.send(new PutObjectCommand({ Bucket: stateBucket, Key: key, Body: body, ContentType: 'application/x-ndjson' })));
  return key;
}

/** A log as read back: the changes of each key in sequencer order, and how it was assembled. */
export interface ChangeLog {
  /** Changed keys (S3 key order) → their distinct changes, oldest first. */
  byKey: Map<string, LoggedChange[]>;
  /** Batch objects read. */
  batches: number;
  /** Changes read, duplicates included. */
  delivered: number;
  /** Changes dropped as duplicates of another delivery. */
  duplicates: number;
}

/** Orders one key's changes: by sequencer, then time, then kind (a creation before the marker hiding it), then version. */
function compareChanges(a: LoggedChange, b: LoggedChange): number {
  const rank = { created: 0, marker: 1, deleted: 2 } as const;
  return compareSequencers(a.sequencer, b.sequencer) || a.time.localeCompare(b.time) || rank[a.kind] - rank[b.kind] || a.versionId.localeCompare(b.versionId);
}

/** Reads every batch of a log (none: an empty log), deduplicated and ordered. Only keys under `prefix` are kept. */
export async function readChangeLog(s3: S3Client, policy: RetryPolicy, stateBucket: string, folder: string, prefix: string): Promise<ChangeLog> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await sendOnce(policy, () => s3.send(new ListObjectsV2Command({ Bucket: stateBucket, Prefix: folder, ContinuationToken: token })));
    for (const o of page.Contents ?? []) if (o.Key?.endsWith('.jsonl.gz')) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  const batches = await mapLimit(keys, 16, async (key) => {
    const out = await sendOnce(policy, () => s3.send(new GetObjectCommand({ Bucket: stateBucket, Key: key })));
    const raw = (await out.Body?.transformToByteArray()) ?? new Uint8Array();
    try {
      return gunzipSync(raw)
        .toString('utf8')
        .split('\n')
        .filter((line) => line.length > 0)
        .map((line) => loggedChangeSchema.parse(JSON.parse(line)));
    } catch (error) {
      throw new RestorePointMissingError(`change log batch ${s3Url(stateBucket, key)} is not gzip JSON lines of changes: it cannot be used`, { cause: error });
    }
  });
  const seen = new Set<string>();
  const byKey = new Map<string, LoggedChange[]>();
  let delivered = 0;
  let duplicates = 0;
  for (const change of batches.flat()) {
    delivered++;
    if (!change.key.startsWith(prefix)) continue;
    const id = `${change.key}\u0000${change.versionId}\u0000${change.kind}`;
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    byKey.set(change.key, [...(byKey.get(change.key) ?? []), change]);
  }
  const sorted = new Map([...byKey.entries()].sort(([a], [b]) => compareKeys(a, b)).map(([k, v]) => [k, v.sort(compareChanges)]));
  return { byKey: sorted, batches: keys.length, delivered, duplicates };
}
