import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteObjectCommand, ListObjectsV2Command, PutBucketNotificationConfigurationCommand, PutBucketVersioningCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { EventBridgeClient, PutRuleCommand, PutTargetsCommand } from '@aws-sdk/client-eventbridge';
import { CreateQueueCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Context } from 'aws-lambda';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { mapLimit } from '../../core/adapters/s3-prefix.ts';
import { Ledger } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { changeCapturePattern, triggerInputTemplate } from '../../infra/constructs/trigger-patterns.ts';
import { startMoto } from '../../scripts/local-services.ts';
import { testDynamo, testS3, uniqueName } from '../support/aws.ts';
import { asDelivered, deleteMarkerEvent } from '../support/s3-events.ts';
import { startVersionGuard } from '../support/version-guard.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');
// And its own moto server, behind its own version guard: a listing of 20,000 versions keeps moto busy for about a
// minute (it copies and sorts every version of the bucket per page), which would stall every other test file on the
// shared server. Every client below, and the handlers' (imported later), take this endpoint from AWS_ENDPOINT_URL.
const sharedEndpoint = process.env.AWS_ENDPOINT_URL;
const moto = await startMoto();
const guard = await startVersionGuard(moto.endpoint);
process.env.AWS_ENDPOINT_URL = guard.endpoint;
afterAll(async () => {
  process.env.AWS_ENDPOINT_URL = sharedEndpoint;
  const { violations } = guard.stats();
  await guard.stop();
  await moto.stop();
  expect(violations, 'data versions destroyed').toEqual([]);
});

const s3 = testS3();
async function newBucket(name: string): Promise<string> {
  const bucket = uniqueName(name);
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  return bucket;
}
const put = (bucket: string, key: string, body: string, extra: { ContentType: string }) => s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...extra }));

/**
 * Objects in the big prefix: 2,500 in `npm test` (CI's time budget; moto's listing of a versioned prefix is quadratic-ish,
 * so 20,000 take minutes), 20,000 with ETL_ROLLBACK_CHANGE_CAPTURE_OBJECTS=20000. The claims are the same at any size:
 * no listing before the final check, heads in proportion to the changed keys, the prefix equal to its restore point.
 */
const OBJECTS = Number(process.env.ETL_ROLLBACK_CHANGE_CAPTURE_OBJECTS ?? 2_500);
const PREFIX = 'events/';
const keyOf = (i: number) => `${PREFIX}part-${String(i).padStart(5, '0')}.json`;

const sqs = new SQSClient({});
const events = new EventBridgeClient({});

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

/**
 * Every S3 operation the handlers send, in order (SDK middleware on the handlers' own client): which calls came before
 * the final listing check is then a question of position in this list.
 */
function recordOperations(client: S3Client): { ops: string[] } {
  const recorder = { ops: [] as string[] };
  client.middlewareStack.add(
    (next, context) => async (args) => {
      recorder.ops.push(String(context.commandName).replace(/Command$/, ''));
      return next(args);
    },
    { step: 'initialize', name: 'changeCaptureTestRecorder' },
  );
  return recorder;
}

/** Bucket → the pipeline whose capture rule matches it (what the rule target's input transformer names in AWS). */
const pipelineOfBucket = new Map<string, string>();

/**
 * key → ETag of every current object under the prefix, read back with ListObjectsV2: moto's ListObjectVersions copies
 * and sorts every version of the bucket for each page (about a minute for 20,000 objects), its ListObjectsV2 does not.
 */
async function currentEtags(bucket: string, prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let ContinuationToken: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken }));
    for (const o of page.Contents ?? []) out[o.Key!] = o.ETag!;
    ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (ContinuationToken);
  return out;
}

const WRITES = new Set(['CopyObject', 'UploadPartCopy', 'DeleteObject', 'DeleteObjects', 'PutObject']);

/** A captured pipeline: one versioned bucket with `objects` objects under PREFIX, its capture rule, its manifest. */
interface Captured {
  pipeline: string;
  bucket: string;
  objects: number;
  manifestPath: string;
}

describe('change capture: a deploy recorded through S3 → EventBridge → SQS → "Record changes", rolled back from its log', () => {
  let queueUrl: string;
  let queueArn: string;
  const ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
  // The handlers read their configuration when first imported: after this file has set it (imports are hoisted).
  let recordChangesHandler: (typeof import('../../lambdas/record-changes.ts'))['handler'];
  let recorder: { ops: string[] };
  let big: Captured;
  let small: Captured;

  /** Feeds the queue to the real handler in SQS batches of 10, as the Lambda event source would; `drop` loses messages. */
  async function drain(drop: (body: string) => boolean = () => false): Promise<{ delivered: number; dropped: number; failed: number }> {
    let delivered = 0;
    let dropped = 0;
    let failed = 0;
    for (let empty = 0; empty < 2; ) {
      const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }));
      const messages = out.Messages ?? [];
      if (messages.length === 0) {
        empty++;
        continue;
      }
      const kept = messages.filter((m) => !drop(m.Body!));
      dropped += messages.length - kept.length;
      const answer = (await recordChangesHandler(
        { Records: kept.map((m) => ({ messageId: m.MessageId!, body: asDelivered(m.Body!, pipelineOfBucket) })) },
        { functionName: 'record-changes', awsRequestId: uniqueName('req') } as Context,
      )) as { batchItemFailures: { itemIdentifier: string }[] };
      failed += answer.batchItemFailures.length;
      const ok = messages.filter((m) => !answer.batchItemFailures.some((f) => f.itemIdentifier === m.MessageId));
      if (ok.length > 0) await sqs.send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: ok.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }));
      delivered += kept.length;
    }
    return { delivered, dropped, failed };
  }

  /** A bad deploy of `n` keys spread over the prefix: a third overwritten, a third deleted, a third added. */
  async function deploy(p: Captured, tag: string, n: number): Promise<{ overwritten: string[]; deleted: string[]; added: string[] }> {
    const stride = Math.floor(p.objects / n);
    const touched = Array.from({ length: Math.ceil((2 * n) / 3) }, (_, i) => keyOf(i * stride + 7));
    const overwritten = touched.filter((_, i) => i % 2 === 0);
    const deleted = touched.filter((_, i) => i % 2 === 1);
    const added = Array.from({ length: n - touched.length }, (_, i) => `${PREFIX}new-${tag}-${String(i).padStart(4, '0')}.json`);
    await mapLimit([...overwritten, ...added], 16, (k) => put(p.bucket, k, `bad ${tag} ${k}`, { ContentType: 'text/plain' }));
    await mapLimit(deleted, 16, async (k) => {
      const out = await s3.send(new DeleteObjectCommand({ Bucket: p.bucket, Key: k }));
      // moto announces no delete on a versioned bucket: send the event AWS would send, to the same queue, in the
      // shape the capture rule's target delivers it ({pipeline, event}).
      const event = deleteMarkerEvent(p.bucket, k, out.VersionId!, `0065A1B2C3D4E5F6${k.length.toString(16)}`);
      await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify({ pipeline: p.pipeline, event }) }));
    });
    return { overwritten, deleted, added };
  }

  /**
   * What the stack sets up in AWS (infra/constructs/change-capture.ts), here on moto: EventBridge notifications on the
   * bucket, and the pipeline's capture rule with the stack's pattern and input template, targeting the queue.
   */
  async function capturedPipeline(name: string, objects: number): Promise<Captured> {
    const pipeline = uniqueName(name);
    const bucket = await newBucket(name);
    await mapLimit(
      Array.from({ length: objects }, (_, i) => keyOf(i)),
      32,
      (k) => put(bucket, k, `{"v":1,"key":"${k}"}`, { ContentType: 'application/json' }),
    );
    await put(bucket, 'events-archive/keep.json', 'neighbour', { ContentType: 'application/json' });
    await s3.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: { EventBridgeConfiguration: {} } }));
    const rule = uniqueName('capture');
    await events.send(new PutRuleCommand({ Name: rule, EventPattern: JSON.stringify(changeCapturePattern([{ bucket, prefixes: [PREFIX] }])) }));
    await events.send(new PutTargetsCommand({ Rule: rule, Targets: [{ Id: 'queue', Arn: queueArn, InputTransformer: { InputPathsMap: {}, InputTemplate: triggerInputTemplate(pipeline) } }] }));
    pipelineOfBucket.set(bucket, pipeline);
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-capture-'));
    const manifestPath = join(dir, `${name}.yaml`);
    writeFileSync(manifestPath, stringify({ pipeline, units: [{ id: 'clicks', type: 's3-prefix', bucket, prefix: PREFIX, capture: 'change-log' }] }));
    return { pipeline, bucket, objects, manifestPath };
  }

  beforeAll(async () => {
    recordChangesHandler = (await import('../../lambdas/record-changes.ts')).handler;
    recorder = recordOperations((await import('../../lambdas/task.ts')).deps.s3);
    queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: uniqueName('changes') }))).QueueUrl!;
    queueArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
    big = await capturedPipeline('clicks', OBJECTS);
    small = await capturedPipeline('views', 1_000);
  }, 600_000);

  it(`restores a 1% deploy of ${OBJECTS.toLocaleString('en-US')} objects from the log with no ListObjectVersions before the final check, equal to the restore point`, async () => {
    const snap = await cli('snapshot', big.manifestPath, '--deployment', 'd-1', '--local', '--json');
    expect(snap.code, snap.stderr + snap.stdout).toBe(0);
    const window = await ledger.getChangeWindow(big.pipeline, 'd-1');
    expect(window?.units.map((u) => u.unitId)).toEqual(['clicks']);
    expect(window?.closedAt).toBeUndefined();
    const captured = await currentEtags(big.bucket, PREFIX);
    expect(Object.keys(captured)).toHaveLength(OBJECTS);

    const damage = await deploy(big, 'd1', OBJECTS / 100);
    const done = await cli('complete', big.manifestPath, '--deployment', 'd-1', '--local');
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).toContain('change capture closed at');
    // After the close: not part of the deploy, not logged (the final check still restores it).
    const fed = await drain();
    expect(fed.failed).toBe(0);
    expect(fed.delivered).toBeGreaterThanOrEqual(OBJECTS / 100);

    recorder.ops.length = 0;
    const run = await cli('rollback', big.manifestPath, '--deployment', 'd-1', '--local', '--json', '--reason', 'bad clicks');
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const report = (JSON.parse(run.stdout) as { report: RunReport }).report;
    const unit = report.stages[0]!.units[0]!;
    expect(unit.status).toBe('VERIFIED');
    expect(unit.changes).toMatchObject({
      changeLogKeys: OBJECTS / 100,
      changeLogMissed: 0,
      objectsCopied: damage.overwritten.length,
      deleteMarkersRemoved: damage.deleted.length,
      objectsDeleted: damage.added.length,
    });
    expect(unit.notes.join('\n')).toMatch(/restored from the change log in [\d.]+ s without listing the prefix/);
    expect(unit.notes.join('\n')).toContain('the log missed nothing');

    // Every write of the restore came before the first ListObjectVersions (the final check's listing).
    const firstListing = recorder.ops.indexOf('ListObjectVersions');
    const lastWrite = recorder.ops.map((op, i) => (WRITES.has(op) && op !== 'PutObject' ? i : -1)).reduce((a, b) => Math.max(a, b), -1);
    expect(firstListing).toBeGreaterThan(-1);
    expect(lastWrite).toBeGreaterThan(-1);
    expect(lastWrite).toBeLessThan(firstListing);
    // Heads follow the changed keys (the fast path, then the check and the gate for the rewritten ones), not all the objects.
    expect(recorder.ops.filter((op) => op === 'HeadObject').length).toBeLessThan(OBJECTS / 10);

    expect(await currentEtags(big.bucket, PREFIX)).toEqual(captured);
  }, 600_000);

  it('a log that lost an event: the final listing check repairs the key and the report says the log missed it', async () => {
    const snap = await cli('snapshot', small.manifestPath, '--deployment', 'd-2', '--local', '--json');
    expect(snap.code, snap.stderr + snap.stdout).toBe(0);
    const captured = await currentEtags(small.bucket, PREFIX);
    const damage = await deploy(small, 'd2', 30);
    const lost = damage.overwritten[3]!;
    const fed = await drain((body) => body.includes(`"key":"${lost}"`) || body.includes(`"key": "${lost}"`));
    expect(fed.dropped).toBe(1);

    const dry = await cli('rollback', small.manifestPath, '--deployment', 'd-2', '--dry-run', '--local', '--json');
    expect(dry.code, dry.stderr + dry.stdout).toBe(0);
    expect(dry.stdout).toContain('path: change log (capture: change-log)');
    expect(dry.stdout).toContain('the log misses 1 key(s) that differ now');

    const run = await cli('rollback', small.manifestPath, '--deployment', 'd-2', '--local', '--json', '--reason', 'lost event');
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const lostReport = (JSON.parse(run.stdout) as { report: RunReport }).report;
    expect(lostReport.stages, run.stdout).toHaveLength(1);
    const unit = lostReport.stages[0]!.units[0]!;
    expect(unit.status).toBe('VERIFIED');
    expect(unit.changes.changeLogMissed).toBe(1);
    expect(unit.changes.changeLogKeys).toBe(29);
    expect(unit.notes.join('\n')).toContain(`the log missed 1 key(s), repaired: "${lost}"`);
    expect(await currentEtags(small.bucket, PREFIX)).toEqual(captured);
  }, 600_000);
});
