/**
 * S3 section (issue 3): one prefix of N objects, a bad deploy changing k of them, then three restores side by side on
 * the same damaged bucket history: etl-rollback (s3PrefixAdapter.restore after its capture), the open-source
 * s3-pit-restore (PyPI, in .venv) restoring in place to the snapshot's time, and a naive restore copying every
 * captured version back. Between tools the bench undoes what the previous one wrote (the versions and delete markers it
 * created are deleted by version id; delete markers it removed are put back), so each tool starts from the same
 * live state and the same number of versions: ListObjectVersions, which every tool needs, costs the same for each.
 */
import { execFile, spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutBucketNotificationConfigurationCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EventBridgeClient, PutRuleCommand, PutTargetsCommand } from '@aws-sdk/client-eventbridge';
import { CreateQueueCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { planChangeLogRestore } from '../core/adapters/s3/change-log-restore.ts';
import { changeLogFolder } from '../core/adapters/s3/change-log.ts';
import type { IoOptions } from '../core/adapters/s3/io.ts';
import { COPY_MANIFEST_FORMAT, loadPointStored, readManifest } from '../core/adapters/s3/manifest.ts';
import { executeVersioned } from '../core/adapters/s3/versioned.ts';
import { ensureLedgerTable, Ledger } from '../core/ledger/ledger.ts';
import { recordChanges } from '../core/workflow/change-capture.ts';
import { changeCapturePattern, triggerInputTemplate } from '../infra/constructs/trigger-patterns.ts';
import { asDelivered, deleteMarkerEvent } from '../test/support/s3-events.ts';
import {
  COPY_CONCURRENCY,
  DEFAULT_PART_SIZE_BYTES,
  DEFAULT_RETRY_POLICY,
  MAX_SINGLE_COPY_BYTES,
  planChanges,
  restorePointFolder,
  DELETE_BATCH_SIZE,
  contentChecksum,
  copySourceOf,
  mapLimit,
  normalizeEtag,
  s3PrefixAdapter,
  versionManifestSchema,
  type S3PrefixDetails,
} from '../core/adapters/s3-prefix.ts';
import type { AdapterContext, Check, RestorePoint } from '../core/adapters/types.ts';
import { s3PrefixUnitSchema, type S3PrefixUnit } from '../core/manifest/schema.ts';
import { changeMix, fmtBytes, fmtInt, fmtSec, onCleanup, printTable, progress, silentLog, sleep, times, unusedServices, withProgress, type Options } from './common.ts';
import { KINDS, type MotoRecorder, type RequestTally } from './moto-requests.ts';

export const S3_PIT_RESTORE_VERSION = '0.9';
const CAPTURED_CONTENT_TYPE = 'application/json';
const BAD_CONTENT_TYPE = 'text/plain';

/** Counts the requests our own S3 client sends (SDK middleware), to cross-check the server's count. */
export class SdkCounter {
  count = 0;
  install(client: S3Client): void {
    client.middlewareStack.add(
      (next) => async (args) => {
        this.count++;
        return next(args);
      },
      { step: 'initialize', name: 'benchCountCommands' },
    );
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Listing, state, undo
// ---------------------------------------------------------------------------------------------------------------------

interface Listed {
  key: string;
  versionId: string;
  marker: boolean;
  latest: boolean;
  etag: string;
  size: number;
}

interface PrefixState {
  entries: Listed[];
  pages: number;
  /** `key\0versionId` of every version and marker. */
  ids: Set<string>;
  versions: number;
  markers: number;
  /** contentChecksum over the live objects (key, etag, size): what the restore point's contentChecksum is over. */
  checksum: string;
  liveCount: number;
}

const idOf = (e: { key: string; versionId: string }) => `${e.key}\u0000${e.versionId}`;

/**
 * Every version and marker under the prefix. `onePage`: the bench's own bookkeeping asks moto for everything in one page
 * (moto does not cap MaxKeys, AWS caps it at 1,000; each moto page copies and sorts every version of the bucket, so
 * 1,000 a page costs N/1,000 times that). The bare listing timed as the floor pages by 1,000, as the tools do.
 */
async function listState(s3: S3Client, bucket: string, prefix: string, onePage = true): Promise<PrefixState> {
  const entries: Listed[] = [];
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  let pages = 0;
  const MaxKeys = onePage ? 10_000_000 : undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker, VersionIdMarker, MaxKeys }));
    pages++;
    for (const v of page.Versions ?? []) {
      entries.push({ key: v.Key ?? '', versionId: v.VersionId ?? 'null', marker: false, latest: v.IsLatest === true, etag: normalizeEtag(v.ETag), size: Number(v.Size ?? 0) });
    }
    for (const m of page.DeleteMarkers ?? []) {
      entries.push({ key: m.Key ?? '', versionId: m.VersionId ?? 'null', marker: true, latest: m.IsLatest === true, etag: '', size: 0 });
    }
    if (!page.IsTruncated) break;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
  const live = entries.filter((e) => e.latest && !e.marker);
  return {
    entries,
    pages,
    ids: new Set(entries.map(idOf)),
    versions: entries.filter((e) => !e.marker).length,
    markers: entries.filter((e) => e.marker).length,
    checksum: contentChecksum(live),
    liveCount: live.length,
  };
}

interface Delta {
  versionsWritten: number;
  markersWritten: number;
  markersRemoved: number;
  versionsRemoved: number;
  created: Listed[];
  removedMarkers: Listed[];
}

function delta(before: PrefixState, after: PrefixState): Delta {
  const created = after.entries.filter((e) => !before.ids.has(idOf(e)));
  const removed = before.entries.filter((e) => !after.ids.has(idOf(e)));
  return {
    versionsWritten: created.filter((e) => !e.marker).length,
    markersWritten: created.filter((e) => e.marker).length,
    markersRemoved: removed.filter((e) => e.marker).length,
    versionsRemoved: removed.filter((e) => !e.marker).length,
    created,
    removedMarkers: removed.filter((e) => e.marker),
  };
}

/**
 * Puts the prefix back to the damaged state a tool started from: deletes, by version id, every version and marker the
 * tool created, and puts a delete marker back on each key whose marker the tool removed (a new marker: another id and
 * time, the same state). A version the tool removed could not be put back: refused.
 */
async function undo(s3: S3Client, bucket: string, d: Delta, workers: number): Promise<void> {
  if (d.versionsRemoved > 0) throw new Error(`cannot reset the bucket: the tool permanently deleted ${d.versionsRemoved} object version(s)`);
  const targets = d.created.map((e) => ({ Key: e.key, VersionId: e.versionId }));
  for (let i = 0; i < targets.length; i += DELETE_BATCH_SIZE) {
    const out = await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Quiet: true, Objects: targets.slice(i, i + DELETE_BATCH_SIZE) } }));
    if ((out.Errors ?? []).length > 0) throw new Error(`reset: DeleteObjects failed for ${out.Errors?.length} version(s): ${out.Errors?.[0]?.Code}`);
  }
  await mapLimit(d.removedMarkers, workers, (m) => s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: m.key })));
}

// ---------------------------------------------------------------------------------------------------------------------
// The tools
// ---------------------------------------------------------------------------------------------------------------------

async function pitRestoreVersion(): Promise<string | undefined> {
  try {
    const { stdout } = await promisify(execFile)('.venv/bin/python', ['-c', "import importlib.metadata as m; print(m.version('s3-pit-restore'))"]);
    return stdout.trim();
  } catch {
    return undefined;
  }
}

/** s3-pit-restore in place (`-b B -B B -p P -t T`); 0.9 has no --endpoint-url flag: boto3 takes AWS_ENDPOINT_URL. */
async function runPitRestore(endpoint: string, bucket: string, prefix: string, at: Date, workers: number, onLine: () => void): Promise<{ code: number; errors: string[]; printed: number }> {
  const args = ['-b', bucket, '-B', bucket, '-p', prefix, '-t', at.toISOString(), '--max-workers', String(workers)];
  const child = spawn('.venv/bin/s3-pit-restore', args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_DEFAULT_REGION: 'us-east-1',
      AWS_CONFIG_FILE: '/dev/null',
      AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
      AWS_EC2_METADATA_DISABLED: 'true',
    },
  });
  let printed = 0;
  let tail = '';
  const errors: string[] = [];
  const scan = (chunk: Buffer, isErr: boolean) => {
    const text = tail + chunk.toString();
    const lines = text.split('\n');
    tail = lines.pop() ?? '';
    for (const l of lines) {
      if (/ERROR|Traceback|Error:/.test(l) || (isErr && l.trim() !== '')) errors.push(l.trim());
      else if (!isErr) {
        printed++;
        onLine();
      }
    }
  };
  onCleanup('stop s3-pit-restore', async () => void (child.exitCode === null && child.kill('SIGTERM')));
  child.stdout.on('data', (c: Buffer) => scan(c, false));
  let errTail = '';
  child.stderr.on('data', (c: Buffer) => {
    const text = errTail + c.toString();
    const lines = text.split('\n');
    errTail = lines.pop() ?? '';
    for (const l of lines) if (l.trim() !== '') errors.push(l.trim());
  });
  const code = await new Promise<number>((ok, fail) => {
    child.once('error', fail);
    child.once('exit', (c) => ok(c ?? -1));
  });
  return { code, errors, printed };
}

// ---------------------------------------------------------------------------------------------------------------------
// Section
// ---------------------------------------------------------------------------------------------------------------------

interface ToolRun {
  name: string;
  seconds: number;
  tally: RequestTally;
  sdkCount?: number;
  bytesCopied: number;
  delta: Delta;
  checks: Check[];
  sameStart: boolean;
  note?: string;
}

export interface S3Summary {
  lines: string[];
}

export async function s3Section(s3: S3Client, sdk: SdkCounter, recorder: MotoRecorder, endpoint: string, suffix: string, opts: Options): Promise<S3Summary> {
  const bucket = `bench-lake-${suffix}`;
  const stateBucket = `bench-state-${suffix}`;
  const prefix = 'events/';
  for (const b of [bucket, stateBucket]) await s3.send(new CreateBucketCommand({ Bucket: b }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));

  const N = opts.objects;
  const width = String(N).length + 1;
  const keys = Array.from({ length: N }, (_, i) => `${prefix}part-${String(i).padStart(width, '0')}.json`);
  const mix = changeMix(N, opts.changed);
  // Changed keys spread evenly over the prefix (so they fall on every listing page); modified and deleted never overlap.
  const touched = mix.modified + mix.deleted;
  const stride = N / touched;
  const spread = Array.from({ length: touched }, (_, i) => keys[Math.floor(i * stride)] as string);
  const modified = spread.filter((_, i) => i % 2 === 0).slice(0, mix.modified);
  const modifiedSet = new Set(modified);
  const others = spread.filter((k) => !modifiedSet.has(k));
  const deleted = others.slice(0, mix.deleted);
  modified.push(...others.slice(mix.deleted));
  const added = Array.from({ length: mix.added }, (_, i) => `${prefix}part-new-${String(i).padStart(width, '0')}.json`);

  const body = (key: string, generation: string) => {
    const head = `${generation} ${key} `;
    return head.length >= opts.objectBytes ? head.slice(0, opts.objectBytes) : head + 'x'.repeat(opts.objectBytes - head.length);
  };
  const put = (key: string, generation: string, contentType: string) =>
    s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body(key, generation), ContentType: contentType }));

  progress(`S3: seeding ${fmtInt(N)} objects of ${fmtBytes(opts.objectBytes)} in s3://${bucket}/${prefix}`);
  let seeded = 0;
  const seedStart = performance.now();
  await withProgress(
    'seeded',
    N,
    () => seeded,
    mapLimit(keys, COPY_CONCURRENCY, async (k) => {
      await put(k, 'v1', CAPTURED_CONTENT_TYPE);
      seeded++;
    }),
  );
  const seedRate = N / ((performance.now() - seedStart) / 1000);

  const unit = s3PrefixUnitSchema.parse({ id: 'events', type: 's3-prefix', bucket, prefix });
  const ctx: AdapterContext = {
    pipeline: 'bench',
    deploymentId: `d-${suffix}`,
    runId: `run-${suffix}`,
    s3,
    stateBucket,
    postgres: { connect: () => Promise.reject(new Error('the S3 section uses no database')) },
    ...unusedServices(),
    now: () => new Date(),
    log: silentLog,
  };

  progress('S3: etl-rollback capture (version manifest)');
  const captureStart = performance.now();
  const captured = await recorder.record(() => s3PrefixAdapter.capture(unit, ctx));
  const captureSeconds = (performance.now() - captureStart) / 1000;
  const point: RestorePoint<S3PrefixDetails> = captured.result;
  const manifestObject = await s3.send(new GetObjectCommand({ Bucket: stateBucket, Key: point.details.manifestKey }));
  // A prefix above one shard (10,000 keys) is captured as an index and gzip shards: read it expanded, as restores do.
  const stored = await readManifest(s3, DEFAULT_RETRY_POLICY, stateBucket, point.details.manifestKey);
  const manifest = versionManifestSchema.parse(stored);
  const manifestBytes = Number(manifestObject.ContentLength ?? 0);
  // Read the body to its end: a response left open is aborted when moto stops, and that error ends the process.
  await manifestObject.Body?.transformToByteArray();
  // The restore point's time for s3-pit-restore: after every seeded write, before every deploy write. Listings give
  // LastModified to the second, so the deploy starts more than a second later.
  const snapshotTime = new Date();
  await sleep(1200);

  // The change-log path records the same deploy as the stack would: S3 → EventBridge → SQS → "Record changes".
  const capture = await startChangeCapture(s3, endpoint, bucket, prefix, stateBucket, ctx, point);

  progress(`S3: bad deploy (${fmtInt(mix.modified)} modified, ${fmtInt(mix.deleted)} deleted, ${fmtInt(mix.added)} added)`);
  await mapLimit(modified, COPY_CONCURRENCY, (k) => put(k, 'v2-bad', BAD_CONTENT_TYPE));
  await mapLimit(added, COPY_CONCURRENCY, (k) => put(k, 'v2-new', BAD_CONTENT_TYPE));
  await mapLimit(deleted, COPY_CONCURRENCY, async (k) => {
    const out = await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: k }));
    await capture.announceDelete(k, out.VersionId ?? 'null');
  });
  const recorded = await capture.record();
  progress(`S3: change log recorded: ${fmtInt(recorded.recorded)} changes in ${fmtInt(recorded.batches)} log objects, ${fmtInt(recorded.failed)} deliveries failed`);

  progress('S3: bare listing of the prefix (ListObjectVersions, paged), the floor every tool shares');
  const floorStart = performance.now();
  const floor = await recorder.record(() => listState(s3, bucket, prefix, false));
  const floorSeconds = (performance.now() - floorStart) / 1000;
  const damaged = floor.result;

  // What the restore must reach, checked the same way for every tool: the live (key, ETag, size) set equals the restore
  // point's (its contentChecksum), and every key the deploy touched has the captured Content-Type again.
  const touchedKeys = [...modified, ...deleted];
  const verify = async (state: PrefixState): Promise<Check[]> => {
    const checks: Check[] = [
      { name: 'count', ok: state.liveCount === point.count, expected: point.count, actual: state.liveCount },
      { name: 'content', ok: state.checksum === point.details.contentChecksum, expected: point.details.contentChecksum.slice(0, 12), actual: state.checksum.slice(0, 12) },
    ];
    const wrongType: string[] = [];
    await mapLimit(touchedKeys, COPY_CONCURRENCY, async (k) => {
      const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: k })).catch(() => undefined);
      if (head?.ContentType !== CAPTURED_CONTENT_TYPE) wrongType.push(k);
    });
    checks.push({ name: 'content-type', ok: wrongType.length === 0, expected: `${touchedKeys.length} touched keys ${CAPTURED_CONTENT_TYPE}`, actual: `${wrongType.length} differ` });
    return checks;
  };

  const sizes = new Map(damaged.entries.filter((e) => !e.marker).map((e) => [idOf(e), e.size]));
  const liveSize = new Map(damaged.entries.filter((e) => e.latest && !e.marker).map((e) => [e.key, e.size]));
  const bytesCopied = (t: RequestTally) =>
    t.requests.reduce((sum, r) => {
      if (r.kind !== 'COPY' || !r.copySource) return sum;
      const s = r.copySource.versionId ? sizes.get(idOf({ key: r.copySource.key, versionId: r.copySource.versionId })) : liveSize.get(r.copySource.key);
      return sum + (s ?? 0);
    }, 0);

  let asOfRun: { resolveSeconds: number; point: RestorePoint<S3PrefixDetails> } | undefined;
  const pitVersion = await pitRestoreVersion();
  const tools: { name: string; run?: () => Promise<string | undefined>; sdk: boolean; skip?: string }[] = [
    {
      name: 'etl-rollback (s3PrefixAdapter.restore)',
      sdk: true,
      run: async () => {
        const outcome = await s3PrefixAdapter.restore(unit, point, ctx);
        return `outcome ${JSON.stringify(outcome.changes)}`;
      },
    },
    {
      // No restore point taken: at rollback time the prefix's state at the snapshot time is resolved from the version
      // history (listing + resolution, manifest written), then restored by the same restore.
      name: 'etl-rollback --to the snapshot time (no capture: asOf resolution + restore)',
      sdk: true,
      run: async () => {
        const atCtx = { ...ctx, deploymentId: `at-${suffix}` };
        const t0 = performance.now();
        const { point: resolved, shows } = await s3PrefixAdapter.asOf(unit, snapshotTime, atCtx);
        const resolveSeconds = (performance.now() - t0) / 1000;
        const outcome = await s3PrefixAdapter.restore(unit, resolved, atCtx);
        asOfRun = { resolveSeconds, point: resolved };
        return `resolved in ${fmtSec(resolveSeconds)} s (${shows[0]}); outcome ${JSON.stringify(outcome.changes)}`;
      },
    },
    {
      name: 'etl-rollback change log, to restored data (log read, heads, writes; no listing)',
      sdk: true,
      run: async () => {
        const stored = await loadPointStored(capture.unit, capture.point, ctx, DEFAULT_RETRY_POLICY);
        const fast = await planChangeLogRestore(capture.unit, stored as Exclude<typeof stored, { format: typeof COPY_MANIFEST_FORMAT }>, capture.folder, ctx, BENCH_IO);
        await executeVersioned(capture.unit, fast.plan, fast.heads, ctx, BENCH_IO);
        return `${fmtInt(fast.log.byKey.size)} logged keys, plan ${JSON.stringify(planChanges(fast.plan))}`;
      },
    },
    {
      name: 'etl-rollback change log + full listing check (s3PrefixAdapter.restore)',
      sdk: true,
      run: async () => {
        const outcome = await s3PrefixAdapter.restore(capture.unit, capture.point, ctx);
        return `changeLogMissed ${outcome.changes.changeLogMissed ?? '-'}; ${outcome.notes.join('; ')}`;
      },
    },
    pitVersion === S3_PIT_RESTORE_VERSION
      ? {
          name: `s3-pit-restore ${pitVersion} (in place, -t snapshot time)`,
          sdk: false,
          run: async () => {
            let lines = 0;
            const out = await withProgress('s3-pit-restore objects done', N, () => lines, runPitRestore(endpoint, bucket, prefix, snapshotTime, opts.workers, () => lines++));
            const errs = out.errors.length > 0 ? `; ${out.errors.length} error line(s), first: ${out.errors[0]?.slice(0, 160)}` : '';
            return `exit ${out.code}, ${fmtInt(out.printed)} keys printed${errs}`;
          },
        }
      : {
          name: 's3-pit-restore',
          sdk: false,
          skip: pitVersion
            ? `skipped: .venv has s3-pit-restore ${pitVersion}, the bench pins ${S3_PIT_RESTORE_VERSION} (npm run setup)`
            : `skipped: s3-pit-restore is not installed in .venv (npm run setup installs ${S3_PIT_RESTORE_VERSION})`,
        },
    {
      name: 'naive (copy every captured version back)',
      sdk: true,
      run: async () => {
        const capturedKeys = new Set(manifest.entries.map((e) => e.key));
        let copied = 0;
        await withProgress(
          'naive copies',
          manifest.entries.length,
          () => copied,
          mapLimit(manifest.entries, opts.workers, async (e) => {
            await s3.send(new CopyObjectCommand({ Bucket: bucket, Key: e.key, CopySource: copySourceOf(bucket, e.key, e.versionId) }));
            copied++;
          }),
        );
        // Keys added since the capture: a listing against the captured key list, then DeleteObjects.
        const extra: string[] = [];
        let ContinuationToken: string | undefined;
        do {
          const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken }));
          for (const o of page.Contents ?? []) if (o.Key && !capturedKeys.has(o.Key)) extra.push(o.Key);
          ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
        } while (ContinuationToken);
        for (let i = 0; i < extra.length; i += DELETE_BATCH_SIZE) {
          await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Quiet: true, Objects: extra.slice(i, i + DELETE_BATCH_SIZE).map((Key) => ({ Key })) } }));
        }
        return `${fmtInt(copied)} copied, ${fmtInt(extra.length)} added keys deleted`;
      },
    },
  ];

  const runs: ToolRun[] = [];
  const skipped: string[] = [];
  let start = damaged;
  for (const [i, tool] of tools.entries()) {
    if (!tool.run) {
      skipped.push(`${tool.name}: ${tool.skip}`);
      continue;
    }
    const sameStart = start.checksum === damaged.checksum && start.versions === damaged.versions && start.markers === damaged.markers;
    progress(`S3: restore by ${tool.name}`);
    const sdkBefore = sdk.count;
    const t0 = performance.now();
    const { result: note, tally } = await recorder.record(tool.run);
    const seconds = (performance.now() - t0) / 1000;
    const sdkCount = tool.sdk ? sdk.count - sdkBefore : undefined;
    progress(`S3: ${tool.name} took ${fmtSec(seconds)} s; verifying`);
    const after = await listState(s3, bucket, prefix);
    const checks = await verify(after);
    const d = delta(start, after);
    runs.push({ name: tool.name, seconds, tally, sdkCount, bytesCopied: bytesCopied(tally), delta: d, checks, sameStart, note });
    if (tools.slice(i + 1).some((t) => t.run)) {
      progress(`S3: resetting the bucket to the damaged state (undoing ${fmtInt(d.created.length)} written, ${fmtInt(d.markersRemoved)} markers removed)`);
      await undo(s3, bucket, d, opts.workers);
      start = await listState(s3, bucket, prefix);
    }
  }

  // ---- Printing
  printTable(
    `S3 prefix, capture: ${fmtInt(N)} objects (requests counted at the server)`,
    ['approach', 'seconds', 'requests', 'what it keeps'],
    [
      [
        'etl-rollback capture (version manifest, no data copied)',
        fmtSec(captureSeconds),
        [...captured.tally.byOp.entries()].map(([op, n]) => `${op} ${fmtInt(n)}`).join(', '),
        `manifest of ${fmtInt(point.count)} versions, ${fmtBytes(manifestBytes)}`,
      ],
      ['etl-rollback --to <time>', '0', 'none at deploy time', 'nothing: resolves the time from the bucket\'s versions at rollback'],
      ['s3-pit-restore', '-', '-', 'nothing: restores to a timestamp from the bucket\'s versions'],
      ['naive', '-', '-', 'the captured version ids (the same manifest, read from memory)'],
    ],
    new Set([1]),
  );

  const ours = runs[0];
  const kinds = KINDS.filter((k) => runs.some((r) => (r.tally.byKind.get(k) ?? 0) > 0));
  const fmtOps = (t: RequestTally) => [...t.byOp.entries()].sort((a, b) => b[1] - a[1]).map(([op, n]) => `${op} ${fmtInt(n)}`).join(', ');
  printTable(
    `S3 prefix, restore: ${fmtInt(N)} objects, ${opts.changed}% changed (${fmtInt(mix.modified)} modified, ${fmtInt(mix.deleted)} deleted, ${fmtInt(mix.added)} added); ` +
      'requests counted at the server (moto request log)',
    ['tool', 'seconds', ...kinds, 'total', 'bytes copied', 'versions written', 'result'],
    [
      [
        'bare listing (ListObjectVersions over the prefix)',
        fmtSec(floorSeconds),
        ...kinds.map((k) => fmtInt(floor.tally.byKind.get(k) ?? 0)),
        fmtInt(floor.tally.total),
        '-',
        '-',
        `${fmtInt(damaged.versions)} versions + ${fmtInt(damaged.markers)} markers listed`,
      ],
      ...runs.map((r) => [
        r.name,
        fmtSec(r.seconds),
        ...kinds.map((k) => fmtInt(r.tally.byKind.get(k) ?? 0)),
        fmtInt(r.tally.total),
        fmtBytes(r.bytesCopied),
        `${fmtInt(r.delta.versionsWritten)} + ${fmtInt(r.delta.markersWritten)} markers${r.delta.markersRemoved ? `, ${fmtInt(r.delta.markersRemoved)} markers removed` : ''}`,
        r.checks.every((c) => c.ok) ? 'prefix = restore point' : 'NOT RESTORED',
      ]),
    ],
    new Set([1, ...kinds.map((_, i) => i + 2), kinds.length + 2, kinds.length + 3]),
  );
  for (const r of runs) {
    const failed = r.checks.filter((c) => !c.ok);
    console.log(`  ${r.name}:`);
    console.log(`    requests: ${fmtOps(r.tally)}`);
    console.log(
      `    check: ${failed.length === 0 ? `prefix equals the restore point (${r.checks.map((c) => `${c.name} ${c.actual}`).join('; ')})` : `DID NOT RESTORE: ${failed.map((c) => `${c.name}: expected ${c.expected}, got ${c.actual}`).join('; ')}`}`,
    );
    if (r.note) console.log(`    tool said: ${r.note}`);
    if (r.sdkCount !== undefined) console.log(`    cross-check: server counted ${fmtInt(r.tally.total)}, our SDK middleware ${fmtInt(r.sdkCount)} commands${r.sdkCount === r.tally.total ? ' (equal)' : ' (DIFFER: retries or a miscount)'}`);
    if (!r.sameStart) console.log('    WARNING: the bucket did not start from the same damaged state as the first tool');
  }
  for (const s of skipped) console.log(`  ${s}`);
  console.log(
    `  each tool started from the same damaged history (${fmtInt(damaged.versions)} versions, ${fmtInt(damaged.markers)} markers, same live content): ` +
      `${runs.every((r) => r.sameStart) ? 'yes' : 'NO'}; seeding ran at ${seedRate.toFixed(0)} PutObject/s`,
  );

  const lines: string[] = [];
  if (ours) {
    for (const r of runs.slice(1)) {
      lines.push(
        `  S3 restore, ${r.name.split(' (')[0]} vs etl-rollback: requests ${times(r.tally.total, ours.tally.total)}, ` +
          `COPY ${times(r.tally.byKind.get('COPY') ?? 0, ours.tally.byKind.get('COPY') ?? 0)}, seconds ${times(r.seconds, ours.seconds)}, ` +
          `bytes copied ${times(r.bytesCopied, ours.bytesCopied)}, versions written ${times(r.delta.versionsWritten + r.delta.markersWritten, ours.delta.versionsWritten + ours.delta.markersWritten)}`,
      );
    }
    const fast = runs.find((r) => r.name.startsWith('etl-rollback change log, to restored data'));
    const pit = runs.find((r) => r.name.startsWith('s3-pit-restore'));
    if (fast && pit) {
      const ratio = pit.seconds / fast.seconds;
      lines.push(
        `  S3 restore, time to restored data: change-log path ${fmtSec(fast.seconds)} s (${fmtInt(fast.tally.total)} requests, ` +
          `${fmtInt(fast.tally.byOp.get('ListObjectVersions') ?? 0)} ListObjectVersions) vs s3-pit-restore ${fmtSec(pit.seconds)} s (${fmtInt(pit.tally.total)} requests): ` +
          `${ratio.toFixed(1)}x faster, goal at least 5x: ${ratio >= 5 ? 'MET' : 'NOT MET'}`,
      );
    }
    const to = runs.find((r) => r.name.startsWith('etl-rollback --to'));
    if (to && asOfRun) {
      lines.push(
        `  S3 --to vs restore point taken up front: at deploy ${fmtSec(captureSeconds)} s, ${fmtInt(captured.tally.total)} requests, ${fmtBytes(manifestBytes)} manifest vs nothing; ` +
          `at rollback ${fmtSec(to.seconds)} s, ${fmtInt(to.tally.total)} requests (resolution ${fmtSec(asOfRun.resolveSeconds)} s, then the restore ${fmtSec(to.seconds - asOfRun.resolveSeconds)} s) vs ${fmtSec(ours.seconds)} s, ${fmtInt(ours.tally.total)} requests; ` +
          `same state reached: ${asOfRun.point.details.contentChecksum === point.details.contentChecksum && to.checks.every((c) => c.ok) ? 'yes' : 'NO'}`,
      );
    }
    lines.push(
      `  S3 restore, the bare listing floor: ${fmtSec(floorSeconds)} s, ${Math.round((100 * floorSeconds) / ours.seconds)}% of etl-rollback's ${fmtSec(ours.seconds)} s ` +
        `(${fmtInt(floor.tally.total)} of its ${fmtInt(ours.tally.total)} requests)`,
    );
  }
  return { lines };
}

// ---------------------------------------------------------------------------------------------------------------------
// Change capture for the change-log path: the same route as the stack (S3 → EventBridge → SQS → "Record changes")
// ---------------------------------------------------------------------------------------------------------------------

/** The adapter's production I/O settings, for running its change-log fast path on its own. */
const BENCH_IO: IoOptions = { multipartThresholdBytes: MAX_SINGLE_COPY_BYTES, partSizeBytes: DEFAULT_PART_SIZE_BYTES, copyConcurrency: COPY_CONCURRENCY, retry: DEFAULT_RETRY_POLICY };

interface ChangeCaptureRig {
  unit: S3PrefixUnit;
  point: RestorePoint<S3PrefixDetails>;
  folder: string;
  /** moto announces no delete on a versioned bucket: the event AWS would send goes to the same queue. */
  announceDelete(key: string, markerVersionId: string): Promise<void>;
  /** Drains the queue through recordChanges in SQS-sized batches, then turns the bucket's EventBridge notifications off. */
  record(): Promise<{ recorded: number; batches: number; failed: number }>;
}

async function startChangeCapture(
  s3: S3Client,
  endpoint: string,
  bucket: string,
  prefix: string,
  stateBucket: string,
  ctx: AdapterContext,
  captured: RestorePoint<S3PrefixDetails>,
): Promise<ChangeCaptureRig> {
  const unitId = captured.unitId;
  const config = { endpoint, region: 'us-east-1', credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } };
  const sqs = new SQSClient(config);
  const events = new EventBridgeClient(config);
  const dynamo = new DynamoDBClient(config);
  const table = `bench-ledger-${bucket}`;
  await ensureLedgerTable(dynamo, table);
  const ledger = new Ledger(dynamo, table);
  const folder = changeLogFolder(restorePointFolder(ctx.pipeline, ctx.deploymentId, unitId));
  await ledger.registerDeployment({ pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, manifestKey: 'bench', units: [unitId], requestedBy: 'bench', reason: 'bench' });
  await ledger.openChangeWindow({ pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, openedAt: new Date().toISOString(), units: [{ unitId, bucket, prefix, logFolder: folder }] });
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: `bench-changes-${bucket}` }))).QueueUrl!;
  const queueArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
  const rule = `bench-capture-${bucket}`;
  await events.send(new PutRuleCommand({ Name: rule, EventPattern: JSON.stringify(changeCapturePattern([{ bucket, prefixes: [prefix] }])) }));
  await events.send(new PutTargetsCommand({ Rule: rule, Targets: [{ Id: 'queue', Arn: queueArn, InputTransformer: { InputPathsMap: {}, InputTemplate: triggerInputTemplate(ctx.pipeline) } }] }));
  await s3.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: { EventBridgeConfiguration: {} } }));
  const pipelineOfBucket = new Map([[bucket, ctx.pipeline]]);
  const unit = s3PrefixUnitSchema.parse({ id: unitId, type: 's3-prefix', bucket, prefix, capture: 'change-log' });
  let sequence = 0;
  return {
    unit,
    folder,
    point: { ...captured, details: { ...captured.details, changeLog: folder } },
    async announceDelete(key, markerVersionId) {
      const event = deleteMarkerEvent(bucket, key, markerVersionId, `00${(++sequence).toString(16).padStart(14, '0')}`);
      await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify({ pipeline: ctx.pipeline, event }) }));
    },
    async record() {
      let recorded = 0;
      let batches = 0;
      let failed = 0;
      const deps = { ledger, s3, stateBucket, log: silentLog };
      for (;;) {
        const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }));
        const messages = out.Messages ?? [];
        if (messages.length === 0) break;
        const result = await recordChanges(deps, messages.map((m) => ({ id: m.MessageId!, body: asDelivered(m.Body!, pipelineOfBucket) })));
        recorded += result.recorded;
        batches += result.batches;
        failed += result.failed.length;
        await sqs.send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }));
      }
      // The tools' own writes are not part of the deploy: no more events (and no per-request rule matching at moto).
      await s3.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: {} }));
      return { recorded, batches, failed };
    },
  };
}
