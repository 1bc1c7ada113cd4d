/**
 * A compensating action for a `custom` unit: messages a deploy already published cannot be unpublished, so a rollback
 * publishes their corrections.
 *
 * The pipeline publishes each record to its consumers and keeps the latest payload it published per record in an
 * outbox: one JSON object per record, `s3://<bucket>/<prefix><recordId>.json`, in a versioned bucket. This handler:
 *
 * - capture (before the deploy): checks that the corrections queue is there, and records every record in the outbox
 *   with its version id and ETag. That list is its restore point, which etl-rollback keeps and hands back.
 * - restore: compares the outbox with the restore point. A record the deploy published anew gets a `retract` message;
 *   a record it republished with other content gets a `correct` message carrying the payload as it was before the
 *   deploy (read from the captured version). Each message is sent to the SQS queue once: a marker object
 *   `compensations/<pipeline>/<deployment>/<recordId>.json` beside the outbox records the compensation and the SQS
 *   message id, and a rerun skips what is marked (a FIFO queue also deduplicates by the compensation's id). With
 *   `dryRun` it only counts.
 * - verify: every record the deploy changed has its marker, that is, its compensation was sent.
 *
 * Configuration (the Lambda function's environment, or the CLI's for `--local` runs):
 *   REPUBLISH_QUEUE_URL   the SQS queue the consumers read compensations from
 *   REPUBLISH_OUTBOX      s3://<bucket>/<prefix>/ of the outbox
 *   ETL_ROLLBACK_S3_FORCE_PATH_STYLE=true for S3-compatible endpoints (moto, MinIO)
 *
 * In the manifest, the unit depends on the outbox's own `s3-prefix` unit if it has one: consumers are rolled back
 * first, so the corrections go out before the outbox is put back (after that, nothing differs and a rerun sends nothing).
 *
 * The restore point holds one entry per record (~100 bytes); etl-rollback keeps at most 256 KiB of it. For outboxes of
 * more than a couple of thousand records, write the listing to S3 at capture and answer its key instead.
 */
import { GetObjectCommand, HeadObjectCommand, ListObjectVersionsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { createHash } from 'node:crypto';
import { z } from 'zod';

const requestSchema = z.object({
  action: z.enum(['capture', 'restore', 'verify']),
  pipeline: z.string(),
  deploymentId: z.string(),
  unitId: z.string(),
  runId: z.string().optional(),
  restorePoint: z.unknown().optional(),
  dryRun: z.boolean(),
});
type Request = z.infer<typeof requestSchema>;

const pointSchema = z.object({
  queueUrl: z.string(),
  bucket: z.string(),
  prefix: z.string(),
  /** recordId → the outbox object's version and ETag before the deploy. */
  records: z.record(z.string(), z.object({ versionId: z.string(), etag: z.string() })),
});
type Point = z.infer<typeof pointSchema>;

export interface Answer {
  restorePoint?: Point;
  changed: Record<string, number>;
  verified?: boolean;
  message: string;
}

const markerSchema = z.object({ compensationId: z.string(), kind: z.enum(['retract', 'correct']), messageId: z.string(), sentAt: z.string() });

const s3 = new S3Client({ forcePathStyle: process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE === 'true' });
const sqs = new SQSClient({});

function config(): { queueUrl: string; bucket: string; prefix: string } {
  const queueUrl = process.env.REPUBLISH_QUEUE_URL;
  const outbox = /^s3:\/\/([^/]+)\/(.+\/)$/.exec(process.env.REPUBLISH_OUTBOX ?? '');
  if (!queueUrl) throw new Error('REPUBLISH_QUEUE_URL is not set: the SQS queue that gets the compensations');
  if (!outbox) throw new Error(`REPUBLISH_OUTBOX must be s3://<bucket>/<prefix>/ (got ${JSON.stringify(process.env.REPUBLISH_OUTBOX ?? '')})`);
  return { queueUrl, bucket: outbox[1]!, prefix: outbox[2]! };
}

/** The outbox's current records: recordId → version and ETag. */
async function outbox(bucket: string, prefix: string): Promise<Point['records']> {
  const records: Point['records'] = {};
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker, VersionIdMarker }));
    for (const v of page.Versions ?? []) {
      if (!v.IsLatest || !v.Key?.endsWith('.json')) continue;
      records[v.Key.slice(prefix.length, -'.json'.length)] = { versionId: v.VersionId ?? 'null', etag: v.ETag ?? '' };
    }
    if (!page.IsTruncated) return records;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
}

interface Compensation {
  recordId: string;
  kind: 'retract' | 'correct';
  /** Names this compensation: the deploy, the record and the version it published. */
  compensationId: string;
}

/** What the deploy changed in the outbox since the restore point: each record needs one compensation. */
async function compensations(point: Point, deploymentId: string): Promise<Compensation[]> {
  const now = await outbox(point.bucket, point.prefix);
  return Object.entries(now)
    .filter(([id, v]) => point.records[id]?.etag !== v.etag)
    .map(([recordId, v]) => ({ recordId, kind: point.records[recordId] ? 'correct' : 'retract', compensationId: `${deploymentId}/${recordId}/${v.versionId}` }) as const)
    .sort((a, b) => a.recordId.localeCompare(b.recordId));
}

const markerKey = (req: Request, recordId: string) => `compensations/${req.pipeline}/${req.deploymentId}/${encodeURIComponent(recordId)}.json`;

async function marker(bucket: string, key: string): Promise<z.infer<typeof markerSchema> | undefined> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  } catch (error) {
    if ((error as { name?: string }).name === 'NotFound') return undefined;
    throw error;
  }
  const body = await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToString();
  return markerSchema.parse(JSON.parse(body));
}

async function capture(): Promise<Answer> {
  const { queueUrl, bucket, prefix } = config();
  // Fail now, before the deploy, rather than at rollback time.
  await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }));
  const records = await outbox(bucket, prefix);
  const n = Object.keys(records).length;
  return { restorePoint: { queueUrl, bucket, prefix, records }, changed: { recordsRecorded: n }, message: `${n} record(s) in s3://${bucket}/${prefix} before the deploy` };
}

async function restore(req: Request, point: Point): Promise<Answer> {
  const todo: Compensation[] = [];
  for (const c of await compensations(point, req.deploymentId)) {
    if ((await marker(point.bucket, markerKey(req, c.recordId)))?.compensationId !== c.compensationId) todo.push(c);
  }
  const changed = { retractionsSent: todo.filter((c) => c.kind === 'retract').length, correctionsSent: todo.filter((c) => c.kind === 'correct').length };
  const what = `${changed.retractionsSent} retraction(s) and ${changed.correctionsSent} correction(s)`;
  if (req.dryRun || todo.length === 0) {
    return { changed, message: todo.length === 0 ? 'every record the deploy changed is compensated' : `would send ${what}: ${todo.map((c) => c.recordId).join(', ')}` };
  }
  const fifo = point.queueUrl.endsWith('.fifo');
  for (const c of todo) {
    const before = point.records[c.recordId];
    const record =
      c.kind === 'correct' && before
        ? JSON.parse(await (await s3.send(new GetObjectCommand({ Bucket: point.bucket, Key: `${point.prefix}${c.recordId}.json`, VersionId: before.versionId }))).Body!.transformToString())
        : undefined;
    const body = { type: c.kind, recordId: c.recordId, compensationId: c.compensationId, deploymentId: req.deploymentId, runId: req.runId, ...(record !== undefined ? { record } : {}) };
    const sent = await sqs.send(
      new SendMessageCommand({
        QueueUrl: point.queueUrl,
        MessageBody: JSON.stringify(body),
        MessageAttributes: { type: { DataType: 'String', StringValue: c.kind }, compensationId: { DataType: 'String', StringValue: c.compensationId } },
        ...(fifo ? { MessageGroupId: c.recordId, MessageDeduplicationId: createHash('sha256').update(c.compensationId).digest('hex') } : {}),
      }),
    );
    const mark = { compensationId: c.compensationId, kind: c.kind, messageId: sent.MessageId ?? '', sentAt: new Date().toISOString() };
    await s3.send(new PutObjectCommand({ Bucket: point.bucket, Key: markerKey(req, c.recordId), Body: JSON.stringify(mark), ContentType: 'application/json' }));
  }
  return { changed, message: `sent ${what} to ${point.queueUrl}` };
}

async function verify(req: Request, point: Point): Promise<Answer> {
  const missing: string[] = [];
  for (const c of await compensations(point, req.deploymentId)) {
    if ((await marker(point.bucket, markerKey(req, c.recordId)))?.compensationId !== c.compensationId) missing.push(c.recordId);
  }
  return missing.length === 0
    ? { changed: {}, verified: true, message: 'a compensation was sent for every record the deploy changed' }
    : { changed: {}, verified: false, message: `${missing.length} record(s) changed by the deploy without a compensation sent: ${missing.slice(0, 10).join(', ')}` };
}

/** The handler: the same function runs as a Lambda function (AWS) and in-process (`--local`). */
export async function handler(event: unknown): Promise<Answer> {
  const req = requestSchema.parse(event);
  if (req.action === 'capture') return capture();
  const point = pointSchema.parse(req.restorePoint);
  return req.action === 'restore' ? restore(req, point) : verify(req, point);
}
