/**
 * Benchmark: etl-rollback's restore against the restore a team would script without it, on real local services
 * (moto for S3, PostgreSQL), in one run, on identical data. Prints figures; asserts no timings.
 *
 *   npm run bench -- [--objects 2000] [--rows 200000] [--percent 1] [--object-bytes 1024]
 *
 * Request counts come from the AWS SDK itself (a middleware on the S3Client, step "initialize": one per command
 * sent; a second one at step "deserialize" counts HTTP attempts, retries included). Row counts are read back from the
 * server's pg_stat_user_tables, not taken from the adapter's outcome alone.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs, promisify } from 'node:util';
import pg from 'pg';
import { RDSClient } from '@aws-sdk/client-rds';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import {
  COPY_CONCURRENCY,
  DELETE_BATCH_SIZE,
  contentChecksum,
  copySourceOf,
  latestEntries,
  listPrefix,
  mapLimit,
  versionManifestSchema,
  s3PrefixAdapter,
  type S3PrefixDetails,
} from '../core/adapters/s3-prefix.ts';
import { postgresTableAdapter, type PostgresTableDetails } from '../core/adapters/postgres-table.ts';
import { isPendingCapture, type AdapterContext, type CaptureResult, type Check, type Outcome, type RestorePoint } from '../core/adapters/types.ts';
import { postgresTableUnitSchema, s3PrefixUnitSchema } from '../core/manifest/schema.ts';
import { postgresConnector, type PostgresConnector } from '../core/runtime/connections.ts';
import { startMoto, startPostgres, type MotoServer, type PostgresServer } from '../scripts/local-services.ts';

// ---------------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------------

const DEFAULTS = { objects: 2000, rows: 200_000, percent: 1, objectBytes: 1024, pgTimeout: 30 };

interface Options {
  objects: number;
  rows: number;
  percent: number;
  objectBytes: number;
  pgTimeout: number;
}

const USAGE = `usage: npm run bench -- [--objects N] [--rows N] [--percent P] [--object-bytes B] [--pg-timeout S]

  --objects N       objects under the S3 prefix (default ${DEFAULTS.objects})
  --rows N          rows in the PostgreSQL table (default ${DEFAULTS.rows})
  --percent P       share changed by the bad deploy, in percent, 0-100 (default ${DEFAULTS.percent}):
                    about 40% of the changes modify, 30% add, 30% delete
  --object-bytes B  size of each S3 object (default ${DEFAULTS.objectBytes})
  --pg-timeout S    cancel the etl-rollback table restore after S seconds and report it as cancelled
                    (default ${DEFAULTS.pgTimeout}; keeps the run bounded)`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      objects: { type: 'string' },
      rows: { type: 'string' },
      percent: { type: 'string' },
      'object-bytes': { type: 'string' },
      'pg-timeout': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, fallback: number, min: number): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw.replace(/_/g, ''));
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}\n${USAGE}`);
    return n;
  };
  const percent = values.percent === undefined ? DEFAULTS.percent : Number(values.percent);
  if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
    throw new Error(`--percent must be a number from 0 to 100, got ${JSON.stringify(values.percent)}\n${USAGE}`);
  }
  return {
    objects: int('objects', values.objects, DEFAULTS.objects, 1),
    rows: int('rows', values.rows, DEFAULTS.rows, 1),
    percent,
    objectBytes: int('object-bytes', values['object-bytes'], DEFAULTS.objectBytes, 1),
    pgTimeout: int('pg-timeout', values['pg-timeout'], DEFAULTS.pgTimeout, 1),
  };
}

/** How many items a deploy changing `percent` of `total` touches, split into modified / added / deleted. */
function changeMix(total: number, percent: number): { modified: number; added: number; deleted: number } {
  const changed = Math.min(total, Math.round((total * percent) / 100));
  const added = Math.floor(changed * 0.3);
  const deleted = Math.floor(changed * 0.3);
  return { modified: changed - added - deleted, added, deleted };
}

// ---------------------------------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------------------------------

type Counts = Map<string, number>;

/** Counts what the SDK sends, by command name (the source of truth for "requests"), and HTTP attempts. */
class RequestCounter {
  private readonly commands: Counts = new Map();
  private attempts = 0;

  install(client: S3Client): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const name = context.commandName ?? 'unknown';
        this.commands.set(name, (this.commands.get(name) ?? 0) + 1);
        return next(args);
      },
      { step: 'initialize', name: 'benchCountCommands' },
    );
    client.middlewareStack.add(
      (next) => async (args) => {
        this.attempts++;
        return next(args);
      },
      { step: 'deserialize', name: 'benchCountHttpAttempts' },
    );
  }

  snapshot(): { commands: Counts; attempts: number } {
    return { commands: new Map(this.commands), attempts: this.attempts };
  }
}

interface Measured<T> {
  result: T;
  seconds: number;
  requests: Counts;
  totalRequests: number;
  httpAttempts: number;
}

async function measure<T>(counter: RequestCounter, fn: () => Promise<T>): Promise<Measured<T>> {
  const before = counter.snapshot();
  const start = performance.now();
  const result = await fn();
  const seconds = (performance.now() - start) / 1000;
  const after = counter.snapshot();
  const requests: Counts = new Map();
  for (const [name, n] of after.commands) {
    const d = n - (before.commands.get(name) ?? 0);
    if (d > 0) requests.set(name, d);
  }
  const totalRequests = [...requests.values()].reduce((a, b) => a + b, 0);
  return { result, seconds, requests, totalRequests, httpAttempts: after.attempts - before.attempts };
}

// ---------------------------------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------------------------------

const fmtInt = (n: number): string => n.toLocaleString('en-US');
const fmtSec = (s: number): string => s.toFixed(s < 10 ? 3 : 2);
const fmtBytes = (b: number): string =>
  b < 1024 ? `${b} B` : b < 1024 ** 2 ? `${(b / 1024).toFixed(1)} KiB` : b < 1024 ** 3 ? `${(b / 1024 ** 2).toFixed(1)} MiB` : `${(b / 1024 ** 3).toFixed(2)} GiB`;

function fmtRequests(requests: Counts): string {
  if (requests.size === 0) return '-';
  return [...requests.entries()]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([name, n]) => `${name.replace(/Command$/, '')} ${fmtInt(n)}`)
    .join(', ');
}

function printTable(title: string, headers: string[], rows: string[][], rightAligned: Set<number>): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(' | ')} |`;
  console.log(`\n${title}`);
  console.log(line(headers));
  console.log(`|${widths.map((w, i) => (rightAligned.has(i) ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`);
  for (const r of rows) console.log(line(r));
}

/** "ours/naive = 0.0123 (81.3x less)". */
function ratio(ours: number, naive: number): string {
  if (naive === 0) return ours === 0 ? '1 (both 0)' : 'n/a (naive 0)';
  const r = ours / naive;
  const shown = r === 0 ? '0' : r >= 0.1 ? r.toFixed(2) : r.toPrecision(2);
  if (ours === 0) return `${shown} (none vs ${fmtInt(naive)})`;
  return r <= 1 ? `${shown} (${(naive / ours).toFixed(1)}x less)` : `${shown} (${r.toFixed(1)}x more)`;
}

function checksLine(checks: Check[]): string {
  const failed = checks.filter((c) => !c.ok);
  return failed.length === 0 ? 'verified (count, content, checksum)' : `NOT VERIFIED: ${failed.map((c) => `${c.name} expected ${c.expected} got ${c.actual}`).join('; ')}`;
}

const silentLog = { info: () => undefined, warn: () => undefined };

/** The parts of an adapter context neither scenario uses: an RDS client that is never called, no MySQL. */
function unusedServices(): Pick<AdapterContext, 'rds' | 'mysql' | 'retentionDays'> {
  return {
    rds: new RDSClient({ region: 'us-east-1', credentials: { accessKeyId: 'unused', secretAccessKey: 'unused' } }),
    mysql: { connect: () => Promise.reject(new Error('the bench uses no MySQL')) },
    retentionDays: 7,
  };
}

/** S3 and PostgreSQL captures never pend; a pending answer here would mean the adapter changed under the bench. */
function pointOf<D>(result: CaptureResult<D>): RestorePoint<D> {
  if (isPendingCapture(result)) throw new Error(`capture answered pending (${result.pending.status}); the bench expects a point`);
  return result;
}

// ---------------------------------------------------------------------------------------------------------------------
// Cleanup: everything started or created is undone once, also on Ctrl-C
// ---------------------------------------------------------------------------------------------------------------------

const cleanups: { what: string; fn: () => Promise<void> }[] = [];
let cleaned = false;

async function cleanUp(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const { what, fn } of cleanups.reverse()) {
    try {
      await fn();
    } catch (error) {
      console.error(`cleanup: ${what} failed: ${(error as Error).message}`);
    }
  }
}

process.once('SIGINT', () => {
  console.error('\ninterrupted: cleaning up');
  void cleanUp().finally(() => process.exit(130));
});

// ---------------------------------------------------------------------------------------------------------------------
// S3 helpers
// ---------------------------------------------------------------------------------------------------------------------

const suffix = randomBytes(4).toString('hex');

function body(key: string, generation: string, bytes: number): string {
  const head = `${generation} ${key} `;
  return head.length >= bytes ? head.slice(0, bytes) : head + 'x'.repeat(bytes - head.length);
}

/** Every version and delete marker under the prefix, as `key\0versionId`, split by kind. */
async function versionIds(s3: S3Client, bucket: string, prefix: string): Promise<{ versions: Set<string>; markers: Set<string> }> {
  const versions = new Set<string>();
  const markers = new Set<string>();
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker, VersionIdMarker }));
    for (const v of page.Versions ?? []) versions.add(`${v.Key}\u0000${v.VersionId}`);
    for (const m of page.DeleteMarkers ?? []) markers.add(`${m.Key}\u0000${m.VersionId}`);
    if (!page.IsTruncated) return { versions, markers };
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
}

interface VersionDelta {
  versionsWritten: number;
  markersWritten: number;
  removed: number;
}

function versionDelta(before: { versions: Set<string>; markers: Set<string> }, after: { versions: Set<string>; markers: Set<string> }): VersionDelta {
  let versionsWritten = 0;
  let markersWritten = 0;
  let removed = 0;
  for (const v of after.versions) if (!before.versions.has(v)) versionsWritten++;
  for (const m of after.markers) if (!before.markers.has(m)) markersWritten++;
  for (const v of before.versions) if (!after.versions.has(v)) removed++;
  for (const m of before.markers) if (!after.markers.has(m)) removed++;
  return { versionsWritten, markersWritten, removed };
}

async function emptyAndDeleteBucket(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, MaxKeys: DELETE_BATCH_SIZE }));
    const objects = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].map((v) => ({ Key: v.Key, VersionId: v.VersionId }));
    if (objects.length === 0) break;
    for (let i = 0; i < objects.length; i += DELETE_BATCH_SIZE) {
      await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Quiet: true, Objects: objects.slice(i, i + DELETE_BATCH_SIZE) } }));
    }
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}

// ---------------------------------------------------------------------------------------------------------------------
// Scenario 1: S3 prefix
// ---------------------------------------------------------------------------------------------------------------------

interface S3Figures {
  captureRequestsOurs: number;
  captureRequestsNaive: number;
  captureSecondsOurs: number;
  captureSecondsNaive: number;
  restoreRequestsOurs: number;
  restoreRequestsNaive: number;
  restoreSecondsOurs: number;
  restoreSecondsNaive: number;
  writtenOurs: number;
  writtenNaive: number;
  bytesOurs: number;
  bytesNaive: number;
}

async function s3Scenario(s3: S3Client, counter: RequestCounter, opts: Options): Promise<S3Figures> {
  const bucket = `bench-lake-${suffix}`;
  const stateBucket = `bench-state-${suffix}`;
  const prefix = 'events/';
  const backupPrefix = `backup/${prefix}`;
  for (const b of [bucket, stateBucket]) {
    await s3.send(new CreateBucketCommand({ Bucket: b }));
    cleanups.push({ what: `delete bucket ${b}`, fn: () => emptyAndDeleteBucket(s3, b) });
  }
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));

  const width = String(opts.objects).length + 1;
  const keys = Array.from({ length: opts.objects }, (_, i) => `${prefix}part-${String(i).padStart(width, '0')}.json`);
  const mix = changeMix(opts.objects, opts.percent);
  // Changed keys spread evenly over the prefix; modified and deleted never overlap.
  const touched = mix.modified + mix.deleted;
  const stride = touched === 0 ? 1 : opts.objects / touched;
  const spread = Array.from({ length: touched }, (_, i) => keys[Math.floor(i * stride)] as string);
  const modifiedKeys = spread.filter((_, i) => i % 2 === 0).slice(0, mix.modified);
  const rest = spread.filter((k) => !modifiedKeys.includes(k));
  const modified = [...modifiedKeys, ...rest.slice(mix.deleted)];
  const deleted = rest.slice(0, mix.deleted);
  const added = Array.from({ length: mix.added }, (_, i) => `${prefix}part-new-${String(i).padStart(width, '0')}.json`);

  const put = (key: string, generation: string) =>
    s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body(key, generation, opts.objectBytes), ContentType: 'application/json' }));

  process.stderr.write(`› S3: seeding ${fmtInt(opts.objects)} objects of ${fmtBytes(opts.objectBytes)} in s3://${bucket}/${prefix}\n`);
  const seed = await measure(counter, () => mapLimit(keys, COPY_CONCURRENCY, (k) => put(k, 'v1')));

  const deploy = async (): Promise<string> => {
    await mapLimit(modified, COPY_CONCURRENCY, (k) => put(k, 'v2-bad'));
    await mapLimit(added, COPY_CONCURRENCY, (k) => put(k, 'v2-new'));
    await mapLimit(deleted, COPY_CONCURRENCY, (k) => s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: k })));
    return contentChecksum(latestEntries(await listPrefix(s3, bucket, prefix)));
  };

  const unit = s3PrefixUnitSchema.parse({ id: 'events', type: 's3-prefix', bucket, prefix });
  const ctx: AdapterContext = {
    pipeline: 'bench',
    deploymentId: `d-${suffix}`,
    runId: `run-${suffix}`,
    s3,
    stateBucket,
    postgres: { connect: () => Promise.reject(new Error('the S3 scenario uses no database')) },
    ...unusedServices(),
    now: () => new Date(),
    log: silentLog,
  };

  // Capture: the naive full backup (list + CopyObject of every object to a backup prefix) vs our zero-copy manifest.
  process.stderr.write('› S3: naive backup (copy of every object)\n');
  const naiveBackup = await measure(counter, async () => {
    const listed: string[] = [];
    let ContinuationToken: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken }));
      for (const o of page.Contents ?? []) if (o.Key) listed.push(o.Key);
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    await mapLimit(listed, COPY_CONCURRENCY, (key) =>
      s3.send(new CopyObjectCommand({ Bucket: bucket, Key: `backup/${key}`, CopySource: `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}` })),
    );
    return listed.length;
  });
  process.stderr.write('› S3: etl-rollback capture (version manifest)\n');
  const ourCapture = await measure(counter, () => s3PrefixAdapter.capture(unit, ctx));
  const point: RestorePoint<S3PrefixDetails> = pointOf(ourCapture.result);
  const manifestHead = await s3.send(new GetObjectCommand({ Bucket: stateBucket, Key: point.details.manifestKey }));
  const manifest = versionManifestSchema.parse(JSON.parse((await manifestHead.Body?.transformToString('utf-8')) ?? '{}'));
  const manifestBytes = Number(manifestHead.ContentLength ?? 0);

  // Restore, ours: after the bad deploy.
  process.stderr.write(`› S3: bad deploy (${mix.modified} modified, ${mix.added} added, ${mix.deleted} deleted), etl-rollback restore\n`);
  const deployed1 = await deploy();
  const before1 = await versionIds(s3, bucket, prefix);
  const ours = await measure(counter, () => s3PrefixAdapter.restore(unit, point, ctx));
  const oursDelta = versionDelta(before1, await versionIds(s3, bucket, prefix));
  const oursChecks = await s3PrefixAdapter.verify(unit, point, ctx);

  // Restore, naive: the same deploy again, then copy every captured version back and delete the added keys.
  process.stderr.write('› S3: the same bad deploy again, naive restore (copy every captured version back)\n');
  const deployed2 = await deploy();
  const before2 = await versionIds(s3, bucket, prefix);
  const naive = await measure(counter, async () => {
    const captured = new Set(manifest.entries.map((e) => e.key));
    await mapLimit(manifest.entries, COPY_CONCURRENCY, (e) =>
      s3.send(new CopyObjectCommand({ Bucket: bucket, Key: e.key, CopySource: copySourceOf(bucket, e.key, e.versionId) })),
    );
    // Added keys are found by listing the prefix against the captured key list.
    const extra: string[] = [];
    let ContinuationToken: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken }));
      for (const o of page.Contents ?? []) if (o.Key && !captured.has(o.Key)) extra.push(o.Key);
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    for (let i = 0; i < extra.length; i += DELETE_BATCH_SIZE) {
      await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Quiet: true, Objects: extra.slice(i, i + DELETE_BATCH_SIZE).map((Key) => ({ Key })) } }));
    }
    return { copied: manifest.entries.length, deleted: extra.length };
  });
  const naiveDelta = versionDelta(before2, await versionIds(s3, bucket, prefix));
  const naiveChecks = await s3PrefixAdapter.verify(unit, point, ctx);

  const outcome: Outcome = ours.result;
  const ourCopies = outcome.changes.objectsCopied ?? 0;
  const bytesOurs = ourCopies * opts.objectBytes;
  const bytesNaive = naive.result.copied * opts.objectBytes;
  const backupBytes = naiveBackup.result * opts.objectBytes;
  const headers = ['approach', 'seconds', 'requests by kind (SDK)', 'total', 'object versions written', 'data copied'];
  const right = new Set([1, 3]);
  printTable(
    `S3 prefix, capture: ${fmtInt(opts.objects)} objects`,
    headers,
    [
      [
        'etl-rollback capture (version manifest)',
        fmtSec(ourCapture.seconds),
        fmtRequests(ourCapture.requests),
        fmtInt(ourCapture.totalRequests),
        '0 in the prefix (1 manifest object in the state bucket)',
        `0 B (manifest ${fmtBytes(manifestBytes)})`,
      ],
      [
        'naive backup (CopyObject of every object)',
        fmtSec(naiveBackup.seconds),
        fmtRequests(naiveBackup.requests),
        fmtInt(naiveBackup.totalRequests),
        `${fmtInt(naiveBackup.result)} under ${backupPrefix}`,
        fmtBytes(backupBytes),
      ],
    ],
    right,
  );
  printTable(
    `S3 prefix, restore after a deploy changing ${opts.percent}% (${mix.modified} modified, ${mix.added} added, ${mix.deleted} deleted)`,
    headers,
    [
      [
        'etl-rollback restore (diff, write what differs)',
        fmtSec(ours.seconds),
        fmtRequests(ours.requests),
        fmtInt(ours.totalRequests),
        `${fmtInt(oursDelta.versionsWritten + oursDelta.markersWritten)} (${oursDelta.versionsWritten} copies + ${oursDelta.markersWritten} delete markers; ${oursDelta.removed} markers removed)`,
        fmtBytes(bytesOurs),
      ],
      [
        'naive restore (copy every captured version back)',
        fmtSec(naive.seconds),
        fmtRequests(naive.requests),
        fmtInt(naive.totalRequests),
        `${fmtInt(naiveDelta.versionsWritten + naiveDelta.markersWritten)} (${fmtInt(naiveDelta.versionsWritten)} copies + ${naiveDelta.markersWritten} delete markers; ${naiveDelta.removed} removed)`,
        fmtBytes(bytesNaive),
      ],
    ],
    right,
  );
  const retries = [ourCapture, naiveBackup, ours, naive].reduce((n, m) => n + (m.httpAttempts - m.totalRequests), 0);
  console.log(`  etl-rollback: ${checksLine(oursChecks)}; outcome ${JSON.stringify(outcome.changes)}`);
  console.log(`  naive:        ${checksLine(naiveChecks)}`);
  console.log(`  same live state before both restores: ${deployed1 === deployed2 ? 'yes' : 'NO'} (content checksum after each deploy)`);
  console.log(`  HTTP retries during the measured steps: ${retries}; seeding ran at ${(seed.totalRequests / seed.seconds).toFixed(0)} requests/s`);

  return {
    captureRequestsOurs: ourCapture.totalRequests,
    captureRequestsNaive: naiveBackup.totalRequests,
    captureSecondsOurs: ourCapture.seconds,
    captureSecondsNaive: naiveBackup.seconds,
    restoreRequestsOurs: ours.totalRequests,
    restoreRequestsNaive: naive.totalRequests,
    restoreSecondsOurs: ours.seconds,
    restoreSecondsNaive: naive.seconds,
    writtenOurs: oursDelta.versionsWritten + oursDelta.markersWritten,
    writtenNaive: naiveDelta.versionsWritten + naiveDelta.markersWritten,
    bytesOurs,
    bytesNaive,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Scenario 2: PostgreSQL table
// ---------------------------------------------------------------------------------------------------------------------

interface TupleStats {
  ins: number;
  upd: number;
  del: number;
}

const tupleTotal = (s: TupleStats): number => s.ins + s.upd + s.del;

async function readTupleStats(client: pg.Client, relid: number): Promise<TupleStats> {
  // Each statement outside a transaction block reads a fresh snapshot once the cached one is cleared.
  await client.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await client.query<{ ins: string; upd: string; del: string }>(
    'SELECT n_tup_ins::text AS ins, n_tup_upd::text AS upd, n_tup_del::text AS del FROM pg_stat_user_tables WHERE relid = $1',
    [relid],
  );
  const r = rows[0];
  return { ins: Number(r?.ins ?? 0), upd: Number(r?.upd ?? 0), del: Number(r?.del ?? 0) };
}

/**
 * The server's tuple counters after a write, minus `before`. Statistics reach the shared counters asynchronously
 * (PostgreSQL 15+: when the writing backend goes idle or exits, at most once a second unless
 * pg_stat_force_next_flush() was called in it; before 15: through the stats collector, every 500 ms). So: poll until
 * the delta reaches `expected`, or stays the same for 1.5 s, or 15 s have passed.
 */
async function settledDelta(client: pg.Client, relid: number, before: TupleStats, expected: number): Promise<{ delta: TupleStats; settled: boolean }> {
  const start = Date.now();
  let last: TupleStats | undefined;
  let stableSince = start;
  for (;;) {
    const now = await readTupleStats(client, relid);
    const delta = { ins: now.ins - before.ins, upd: now.upd - before.upd, del: now.del - before.del };
    if (tupleTotal(delta) === expected) return { delta, settled: true };
    if (!last || tupleTotal(delta) !== tupleTotal(last)) stableSince = Date.now();
    if (Date.now() - stableSince >= 1500 && Date.now() - start >= 2000) return { delta, settled: true };
    if (Date.now() - start > 15_000) return { delta, settled: false };
    last = delta;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Called when the etl-rollback restore outlives --pg-timeout: names the statement it is running and how the server
 * plans it (EXPLAIN of its SELECT part, which reads only committed tables), then cancels it. Returns lines to print.
 */
async function cancelSlowRestore(stats: pg.Client, sql: pg.Client, timeout: number): Promise<string[]> {
  const { rows } = await stats.query<{ pid: number; query: string; seconds: string }>(
    `SELECT pid, query, extract(epoch FROM now() - query_start)::int::text AS seconds FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'etl-rollback' AND state = 'active'`,
  );
  const lines: string[] = [];
  for (const r of rows) {
    const oneLine = r.query.replace(/\s+/g, ' ').trim();
    lines.push(`  still running after ${timeout} s (this statement for ${r.seconds} s): ${oneLine.length > 220 ? `${oneLine.slice(0, 220)}…` : oneLine}`);
    const select = /\)\s*(SELECT\b[\s\S]*)$/.exec(r.query)?.[1] ?? (/^\s*SELECT\b/i.test(r.query) ? r.query : undefined);
    if (select) {
      try {
        const plan = await sql.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${select}`);
        lines.push('  its plan (EXPLAIN):');
        for (const p of plan.rows) {
          const text = p['QUERY PLAN'];
          if (/^\s*(JIT|Functions|Options):/.test(text)) continue;
          lines.push(`    ${text.length > 200 ? `${text.slice(0, 200)}…` : text}`);
        }
      } catch (error) {
        lines.push(`  (EXPLAIN failed: ${(error as Error).message})`);
      }
    }
    await stats.query('SELECT pg_cancel_backend($1)', [r.pid]);
  }
  return lines;
}

/** The counters once they stop moving (the previous writes have reached them): unchanged over 600 ms, at most 10 s. */
async function stableStats(client: pg.Client, relid: number): Promise<TupleStats> {
  const start = Date.now();
  let last = await readTupleStats(client, relid);
  for (;;) {
    await new Promise((r) => setTimeout(r, 600));
    const now = await readTupleStats(client, relid);
    if (tupleTotal(now) === tupleTotal(last) || Date.now() - start > 10_000) return now;
    last = now;
  }
}

/**
 * The adapter's sessions, with an 'error' listener: a session ended by the server (the cleanup's DROP DATABASE …
 * WITH (FORCE) after Ctrl-C) must fail its query, not crash the process before moto is stopped.
 */
function quietConnector(inner: PostgresConnector): PostgresConnector {
  return {
    async connect(name) {
      const client = await inner.connect(name);
      client.on('error', () => undefined);
      return client;
    },
  };
}

interface PgFigures {
  oursCompleted: boolean;
  restoreSecondsOurs: number;
  restoreSecondsNaive: number;
  rowsOurs: number;
  rowsNaive: number;
  captureSecondsOurs: number;
  captureSecondsNaive: number;
}

async function pgScenario(server: PostgresServer, s3: S3Client, opts: Options): Promise<PgFigures & { version: string }> {
  const dbName = `bench_${suffix}`;
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${dbName}`);
  } finally {
    await admin.end();
  }
  cleanups.push({
    what: `drop database ${dbName}`,
    fn: async () => {
      const a = new pg.Client({ connectionString: server.adminUrl });
      await a.connect();
      try {
        // Cancel running statements first (a clean error in their callers), then force the sessions out.
        await a.query('SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [dbName]);
        await a.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  });
  const url = new URL(server.adminUrl);
  url.pathname = `/${dbName}`;
  const dbUrl = url.toString();

  const sql = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench' });
  sql.on('error', () => undefined);
  await sql.connect();
  const stats = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench-stats' });
  stats.on('error', () => undefined);
  await stats.connect();
  cleanups.push({ what: 'close database sessions', fn: async () => void (await Promise.allSettled([sql.end(), stats.end()])) });

  const { rows: v } = await sql.query<{ version: string; num: string; force: boolean }>(
    "SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num, " +
      "to_regproc('pg_catalog.pg_stat_force_next_flush') IS NOT NULL AS force",
  );
  const version = v[0]?.version ?? '?';
  const canForceFlush = v[0]?.force === true;
  const forceFlush = async (c: pg.Client) => {
    if (canForceFlush) await c.query('SELECT pg_stat_force_next_flush()');
  };

  const R = opts.rows;
  const mix = changeMix(R, opts.percent);
  process.stderr.write(`› PostgreSQL ${version}: seeding ${fmtInt(R)} rows in ${dbName}.public.orders\n`);
  await sql.query(`CREATE TABLE public.orders (
      id bigint PRIMARY KEY,
      customer_id integer NOT NULL,
      status text NOT NULL,
      amount numeric(12,2) NOT NULL,
      ordered_at timestamptz NOT NULL,
      note text
    )`);
  await sql.query(
    `INSERT INTO public.orders
     SELECT g, (g * 7919) % 50000, (ARRAY['new','paid','shipped','delivered'])[1 + g % 4], ((g * 37) % 100000) / 100.0,
            timestamptz '2024-01-01 00:00:00+00' + g * interval '13 seconds', 'order ' || g || ' ' || md5(g::text)
       FROM generate_series(1, $1::bigint) g`,
    [R],
  );
  await sql.query('ANALYZE public.orders');
  // The deploy's victims, fixed once so both deploys touch the same rows: spread by a hash, never overlapping.
  await sql.query(
    `CREATE TABLE public.bench_deploy AS
     SELECT id, CASE WHEN rn <= $1 THEN 'update' ELSE 'delete' END AS action
       FROM (SELECT id, row_number() OVER (ORDER BY md5(id::text)) AS rn FROM public.orders) x
      WHERE rn <= $1 + $2`,
    [mix.modified, mix.deleted],
  );
  const { rows: rel } = await sql.query<{ relid: number }>("SELECT 'public.orders'::regclass::oid::int AS relid");
  const relid = rel[0]?.relid ?? 0;

  const liveChecksum = async (): Promise<string> => {
    const { rows } = await sql.query<{ c: string }>(
      "SELECT count(*) || ':' || coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0) AS c FROM public.orders t",
    );
    return rows[0]?.c ?? '';
  };
  const deploy = async (): Promise<string> => {
    await sql.query('BEGIN');
    await sql.query(
      `UPDATE public.orders o SET status = 'void', amount = 999999.99, note = 'bad deploy'
         FROM public.bench_deploy d WHERE d.id = o.id AND d.action = 'update'`,
    );
    await sql.query("DELETE FROM public.orders o USING public.bench_deploy d WHERE d.id = o.id AND d.action = 'delete'");
    await sql.query(
      `INSERT INTO public.orders SELECT $1::bigint + g, 0, 'bad', 0, timestamptz '2030-01-01 00:00:00+00', 'added by bad deploy'
         FROM generate_series(1, $2::bigint) g`,
      [R, mix.added],
    );
    await sql.query('COMMIT');
    return liveChecksum();
  };

  const unit = postgresTableUnitSchema.parse({ id: 'orders', type: 'postgres-table', connection: 'warehouse', table: 'public.orders' });
  const ctx: AdapterContext = {
    pipeline: 'bench',
    deploymentId: `d-${suffix}`,
    runId: `run-${suffix}`,
    s3,
    stateBucket: 'unused-by-postgres-table',
    postgres: quietConnector(postgresConnector({ warehouse: { engine: 'postgres', url: dbUrl } })),
    ...unusedServices(),
    now: () => new Date(),
    log: silentLog,
  };

  // Capture: naive CREATE TABLE AS vs our shadow copy (plus count and checksum, sealed).
  process.stderr.write('› PostgreSQL: naive backup (CREATE TABLE AS), etl-rollback capture (shadow copy + checksum)\n');
  const t0 = performance.now();
  await sql.query('CREATE TABLE public.orders_backup AS SELECT * FROM public.orders');
  const captureSecondsNaive = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const point: RestorePoint<PostgresTableDetails> = pointOf(await postgresTableAdapter.capture(unit, ctx));
  const captureSecondsOurs = (performance.now() - t1) / 1000;

  // Restore, ours.
  process.stderr.write(`› PostgreSQL: bad deploy (${fmtInt(mix.modified)} updated, ${fmtInt(mix.added)} inserted, ${fmtInt(mix.deleted)} deleted), etl-rollback restore\n`);
  const deployed1 = await deploy();
  await forceFlush(sql);
  const base1 = await stableStats(stats, relid);
  const t2 = performance.now();
  const restoring = postgresTableAdapter.restore(unit, point, ctx);
  let timer: NodeJS.Timeout | undefined;
  const first = await Promise.race([
    restoring,
    new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), opts.pgTimeout * 1000);
    }),
  ]);
  clearTimeout(timer);
  let outcome: Outcome | undefined;
  let cancelNote: string[] = [];
  if (first === 'timeout') {
    cancelNote = await cancelSlowRestore(stats, sql, opts.pgTimeout);
    const error = await restoring.then(() => undefined, (e: unknown) => e);
    cancelNote.push(`  restore after cancel: ${error instanceof Error ? error.message.split('. ')[0] : 'finished anyway'}`);
  } else {
    outcome = first;
  }
  const restoreSecondsOurs = (performance.now() - t2) / 1000;
  const oursStats = await settledDelta(stats, relid, base1, outcome?.writes ?? 0);
  const oursChecks = await postgresTableAdapter.verify(unit, point, ctx);
  let quarantined = 0;
  if (outcome?.keptAt) {
    const { rows } = await sql.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${outcome.keptAt}`);
    quarantined = Number(rows[0]?.n ?? 0);
  }

  // Restore, naive: the same deploy again, then TRUNCATE + INSERT … SELECT from the shadow copy.
  process.stderr.write('› PostgreSQL: the same bad deploy again, naive restore (TRUNCATE + INSERT SELECT)\n');
  // A cancelled restore rolled back: the table still holds the first deploy's state, which is what the naive restore gets.
  const deployed2 = outcome ? await deploy() : await liveChecksum();
  await forceFlush(sql);
  const base2 = await stableStats(stats, relid);
  const t3 = performance.now();
  await sql.query('BEGIN');
  await sql.query('TRUNCATE public.orders');
  const inserted = (await sql.query(`INSERT INTO public.orders SELECT * FROM ${point.details.shadowTable}`)).rowCount ?? 0;
  await sql.query('COMMIT');
  const restoreSecondsNaive = (performance.now() - t3) / 1000;
  await forceFlush(sql);
  const naiveStats = await settledDelta(stats, relid, base2, inserted);
  const naiveChecks = await postgresTableAdapter.verify(unit, point, ctx);

  const fmtStats = (s: TupleStats, settled: boolean) =>
    `${fmtInt(tupleTotal(s))} (ins ${fmtInt(s.ins)} / upd ${fmtInt(s.upd)} / del ${fmtInt(s.del)})${settled ? '' : ' (stats not settled)'}`;
  printTable(
    `PostgreSQL table, capture: ${fmtInt(R)} rows`,
    ['approach', 'seconds', 'rows copied'],
    [
      ['etl-rollback capture (shadow copy + count + checksum, sealed)', fmtSec(captureSecondsOurs), fmtInt(point.count)],
      ['naive backup (CREATE TABLE AS SELECT)', fmtSec(captureSecondsNaive), fmtInt(R)],
    ],
    new Set([1, 2]),
  );
  printTable(
    `PostgreSQL table, restore after a deploy changing ${opts.percent}% (${fmtInt(mix.modified)} updated, ${fmtInt(mix.added)} inserted, ${fmtInt(mix.deleted)} deleted)`,
    ['approach', 'seconds', 'rows written, server pg_stat_user_tables', 'rows written, reported', 'rows kept'],
    [
      [
        'etl-rollback restore (diff by primary key)',
        outcome ? fmtSec(restoreSecondsOurs) : `> ${opts.pgTimeout} (cancelled)`,
        fmtStats(oursStats.delta, oursStats.settled),
        outcome ? fmtInt(outcome.writes) : 'none (rolled back)',
        `${fmtInt(quarantined)} in quarantine`,
      ],
      [
        'naive restore (TRUNCATE + INSERT SELECT)',
        fmtSec(restoreSecondsNaive),
        `${fmtStats(naiveStats.delta, naiveStats.settled)} + TRUNCATE of ${fmtInt(R + mix.added - mix.deleted)}`,
        fmtInt(inserted),
        'none',
      ],
    ],
    new Set([1, 3]),
  );
  console.log(
    outcome
      ? `  etl-rollback: ${checksLine(oursChecks)}; outcome ${JSON.stringify(outcome.changes)}`
      : `  etl-rollback: DID NOT FINISH within --pg-timeout ${opts.pgTimeout} s; cancelled, its transaction rolled back`,
  );
  for (const line of cancelNote) console.log(line);
  console.log(`  naive:        ${checksLine(naiveChecks)}; needs an ACCESS EXCLUSIVE lock (readers blocked) and fails if a foreign key references the table`);
  console.log(`  same live state before both restores: ${deployed1 === deployed2 ? 'yes' : 'NO'} (count and checksum after each deploy)`);
  console.log(
    `  stats read with ${canForceFlush ? 'pg_stat_force_next_flush() + pg_stat_clear_snapshot()' : 'pg_stat_clear_snapshot() and polling (no pg_stat_force_next_flush() on this server)'}`,
  );

  return {
    version,
    oursCompleted: outcome !== undefined,
    restoreSecondsOurs,
    restoreSecondsNaive,
    rowsOurs: tupleTotal(oursStats.delta),
    rowsNaive: tupleTotal(naiveStats.delta),
    captureSecondsOurs,
    captureSecondsNaive,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------------------

async function motoVersion(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('.venv/bin/python', ['-c', 'import moto; print(moto.__version__)']);
    return stdout.trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const started = performance.now();

  process.stderr.write('› starting moto and PostgreSQL\n');
  const moto: MotoServer = await startMoto();
  cleanups.push({ what: 'stop moto', fn: () => moto.stop() });
  const server: PostgresServer = await startPostgres();
  cleanups.push({ what: 'stop PostgreSQL', fn: () => server.stop() });

  const s3 = new S3Client({
    endpoint: moto.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
  });
  cleanups.push({ what: 'destroy S3 client', fn: async () => s3.destroy() });
  const counter = new RequestCounter();
  counter.install(s3);

  const s3Figures = await s3Scenario(s3, counter, opts);
  const pgFigures = await pgScenario(server, s3, opts);

  const cpu = os.cpus();
  console.log('\nEnvironment');
  console.log(`  node ${process.version} on ${os.platform()} ${os.arch()}, ${cpu.length} CPU(s) ${cpu[0]?.model.trim() ?? ''}`);
  console.log(`  moto ${await motoVersion()} (${moto.endpoint}); PostgreSQL ${pgFigures.version} (${server.embedded ? 'embedded' : 'this machine\'s'})`);
  console.log(
    `  S3: N=${fmtInt(opts.objects)} objects of ${fmtBytes(opts.objectBytes)}, p=${opts.percent}%, ${COPY_CONCURRENCY} requests in flight for both approaches` +
      (opts.objects === DEFAULTS.objects ? ' (default N, sized for about 200 moto requests/s; raise with --objects)' : ''),
  );
  console.log(`  PostgreSQL: R=${fmtInt(opts.rows)} rows, p=${opts.percent}%`);
  console.log('  requests = commands counted by an SDK middleware (step "initialize"); timings are wall-clock, one run each, not asserted');

  console.log('\nRatios, etl-rollback / naive');
  console.log(`  S3 capture:  requests ${ratio(s3Figures.captureRequestsOurs, s3Figures.captureRequestsNaive)}; seconds ${ratio(s3Figures.captureSecondsOurs, s3Figures.captureSecondsNaive)}`);
  console.log(
    `  S3 restore:  requests ${ratio(s3Figures.restoreRequestsOurs, s3Figures.restoreRequestsNaive)}; seconds ${ratio(s3Figures.restoreSecondsOurs, s3Figures.restoreSecondsNaive)}; ` +
      `versions written ${ratio(s3Figures.writtenOurs, s3Figures.writtenNaive)}; bytes copied ${ratio(s3Figures.bytesOurs, s3Figures.bytesNaive)}`,
  );
  console.log(`  PG capture:  seconds ${ratio(pgFigures.captureSecondsOurs, pgFigures.captureSecondsNaive)}`);
  console.log(
    pgFigures.oursCompleted
      ? `  PG restore:  seconds ${ratio(pgFigures.restoreSecondsOurs, pgFigures.restoreSecondsNaive)}; rows written ${ratio(pgFigures.rowsOurs, pgFigures.rowsNaive)}`
      : `  PG restore:  seconds > ${(opts.pgTimeout / pgFigures.restoreSecondsNaive).toFixed(0)}x the naive reload (etl-rollback cancelled after ${opts.pgTimeout} s); rows written: n/a`,
  );
  console.log(`\ntotal wall time ${fmtSec((performance.now() - started) / 1000)} s (setup included; cleanup follows)`);
}

try {
  await main();
} catch (error) {
  process.exitCode = 1;
  console.error(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
} finally {
  process.stderr.write('› cleaning up\n');
  await cleanUp();
}
