import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HeadObjectCommand, PutObjectCommand, RestoreObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3PrefixAdapter, s3PrefixAdapter } from '../../../core/adapters/s3-prefix.ts';
import { planFromLog } from '../../../core/adapters/s3/change-log-restore.ts';
import type { LoggedChange } from '../../../core/adapters/s3/change-log.ts';
import type { ObjectHead } from '../../../core/adapters/s3/io.ts';
import { headKey } from '../../../core/adapters/s3/keys.ts';
import {
  archiveStateOf,
  effectiveTier,
  waitingFrom,
  pollBudget,
  retrievalCostUsd,
  retrievalDelay,
  type ArchiveKind,
  type RetrievalTier,
} from '../../../core/adapters/s3/archive.ts';
import { s3PrefixUnitSchema, type S3PrefixUnit } from '../../../core/manifest/schema.ts';
import { PRICES, archiveRetrievalPricesFor } from '../../../core/plan/prices.ts';
import { testS3, uniqueName } from '../../support/aws.ts';
import { bytes, completeRetrievalInMoto, contextFor, newBucket, put, s3, versionFingerprint } from './helpers.ts';

/**
 * Archived restore-point versions: the plan's lines, RestoreObject for the versions a restore must copy, the `pending`
 * answer while they are retrieved, and the copy once they are readable (moto: GLACIER and DEEP_ARCHIVE versions list with
 * their class, and a CopyObject from one fails with ObjectNotInActiveTierError until it is restored).
 */

const KINDS: ArchiveKind[] = ['GLACIER', 'DEEP_ARCHIVE', 'ARCHIVE_ACCESS', 'DEEP_ARCHIVE_ACCESS'];
const TIERS: RetrievalTier[] = ['Standard', 'Bulk', 'Expedited'];

function unitOf(bucket: string, archiveRetrieval?: { tier?: RetrievalTier; days?: number }): S3PrefixUnit {
  return s3PrefixUnitSchema.parse({ id: 'raw', type: 's3-prefix', bucket, prefix: 'orders/', ...(archiveRetrieval ? { archiveRetrieval } : {}) });
}

/** RestoreObject requests, answered at the SDK boundary instead of sent (see the test that uses it for why). */
interface RestoreStub {
  client: S3Client;
  requests: Record<string, unknown>[];
}

/**
 * A client whose RestoreObject calls never reach moto: an `initialize`-step middleware records the request and answers
 * as S3 does (202 Accepted, empty body; or the error `answer` names). moto 5.2.5 ignores VersionId and would restore the
 * current version, or refuse with InvalidObjectState when that one is not archived: the request for a noncurrent
 * version can only be checked here. Every other command goes to moto.
 */
function restoreStub(answer: (input: Record<string, unknown>) => Error | undefined = () => undefined, ongoing: ReadonlySet<string> = new Set()): RestoreStub {
  const client = testS3();
  const requests: Record<string, unknown>[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const command = (context as { commandName?: string }).commandName;
      if (command === 'HeadObjectCommand' && ongoing.has(String((args.input as { VersionId?: string }).VersionId))) {
        // moto never shows a retrieval under way (its restores complete at once): the header S3 sends meanwhile.
        const out = await next(args);
        return { ...out, output: { ...out.output, Restore: 'ongoing-request="true"' } } as never;
      }
      if (command !== 'RestoreObjectCommand') return next(args);
      const input = args.input as Record<string, unknown>;
      requests.push(input);
      const error = answer(input);
      if (error) throw error;
      return { output: { $metadata: { httpStatusCode: 202 } }, response: {} } as never;
    },
    { step: 'initialize', name: 'restoreObjectStub' },
  );
  return { client, requests };
}

describe('archive tiers: delays, budgets and states (pure)', () => {
  it('every tier asked for is either available for the archive kind or replaced by Standard, never Expedited on a deep tier', () => {
    fc.assert(
      fc.property(fc.constantFrom(...KINDS), fc.constantFrom(...TIERS), (kind, tier) => {
        const used = effectiveTier(kind, tier);
        const deep = kind === 'DEEP_ARCHIVE' || kind === 'DEEP_ARCHIVE_ACCESS';
        expect(used).toBe(deep && tier === 'Expedited' ? 'Standard' : tier);
      }),
    );
  });

  it('the poll budget covers the documented delay with room to spare, and polls are a small fraction of it', () => {
    fc.assert(
      fc.property(fc.constantFrom(...KINDS), fc.constantFrom(...TIERS), (kind, tier) => {
        const d = retrievalDelay(kind, tier);
        expect(pollBudget(d) * d.pollSeconds).toBeGreaterThanOrEqual(d.maxSeconds * 1.5);
        expect(d.pollSeconds).toBeLessThanOrEqual(d.maxSeconds / 4);
      }),
    );
    expect(retrievalDelay('GLACIER', 'Standard')).toMatchObject({ text: '3–5 hours', tier: 'Standard' });
    expect(retrievalDelay('DEEP_ARCHIVE', 'Bulk')).toMatchObject({ text: 'within 48 hours', maxSeconds: 48 * 3600 });
    expect(retrievalDelay('ARCHIVE_ACCESS', 'Expedited')).toMatchObject({ text: '1–5 minutes' });
  });

  it('prices a retrieval per GB and per request of the tier used; Intelligent-Tiering Standard and Bulk are free', () => {
    const prices = archiveRetrievalPricesFor('us-east-1')!.prices;
    const GiB = 1024 ** 3;
    expect(retrievalCostUsd('GLACIER', 'Standard', 1000, 1000 * GiB, prices)).toBeCloseTo(1000 * 0.01 + 0.05, 10);
    expect(retrievalCostUsd('GLACIER', 'Bulk', 1000, 1000 * GiB, prices)).toBe(0);
    // Expedited asked, Deep Archive has none: priced as the Standard retrieval it gets.
    expect(retrievalCostUsd('DEEP_ARCHIVE', 'Expedited', 2000, 10 * GiB, prices)).toBeCloseTo(10 * 0.02 + 2 * 0.1, 10);
    expect(retrievalCostUsd('DEEP_ARCHIVE_ACCESS', 'Bulk', 5, GiB, prices)).toBe(0);
    expect(retrievalCostUsd('ARCHIVE_ACCESS', 'Expedited', 5, GiB, prices)).toBeUndefined();
    // A region without retrieval prices in the table is priced with the fallback region's.
    expect(archiveRetrievalPricesFor('eu-west-1')).toMatchObject({ pricedRegion: 'us-east-1' });
  });

  it('reads the state from the listing class and HeadObject: Restore header, Intelligent-Tiering ArchiveStatus', () => {
    const head = (extra: object) => ({ etag: 'e', size: 1, metadata: {}, ...extra });
    expect(archiveStateOf('GLACIER', head({}))).toEqual({ kind: 'GLACIER', state: 'archived' });
    expect(archiveStateOf('DEEP_ARCHIVE', head({ restore: 'ongoing-request="true"' }))).toEqual({ kind: 'DEEP_ARCHIVE', state: 'restoring' });
    expect(archiveStateOf('GLACIER', head({ restore: 'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"' }))).toEqual({ state: 'readable' });
    expect(archiveStateOf('INTELLIGENT_TIERING', head({}))).toEqual({ state: 'readable' });
    expect(archiveStateOf('INTELLIGENT_TIERING', head({ archiveStatus: 'DEEP_ARCHIVE_ACCESS' }))).toEqual({ kind: 'DEEP_ARCHIVE_ACCESS', state: 'archived' });
    expect(archiveStateOf('INTELLIGENT_TIERING', head({ archiveStatus: 'ARCHIVE_ACCESS', restore: 'ongoing-request="true"' }))).toEqual({ kind: 'ARCHIVE_ACCESS', state: 'restoring' });
    expect(archiveStateOf('STANDARD', undefined)).toEqual({ state: 'readable' });
  });

  it('a change-log restore finds archived versions from the heads it already has (no extra request)', () => {
    const entry = (key: string) => ({ key, versionId: `${key}-v1`, etag: 'e1', size: 10 });
    const captured = new Map(['p/flex', 'p/ready', 'p/it', 'p/warm'].map((k) => [k, entry(k)]));
    const now: ObjectHead = { versionId: 'v2', etag: 'e2', size: 12, metadata: {} };
    const head = (key: string, extra: Partial<ObjectHead>): [string, ObjectHead] => [headKey(key, `${key}-v1`), { versionId: `${key}-v1`, etag: 'e1', size: 10, metadata: {}, ...extra }];
    const heads = new Map([
      head('p/flex', { storageClass: 'GLACIER' }),
      head('p/ready', { storageClass: 'GLACIER', restore: 'ongoing-request="false", expiry-date="Sun, 29 Nov 2026 00:00:00 GMT"' }),
      head('p/it', { storageClass: 'INTELLIGENT_TIERING', archiveStatus: 'DEEP_ARCHIVE_ACCESS' }),
      head('p/warm', {}),
    ]);
    const logged = (key: string): LoggedChange[] => [{ key, kind: 'created', versionId: 'v2', sequencer: '01', time: 't' }];
    const plan = planFromLog({ byKey: new Map([...captured.keys()].map((k) => [k, logged(k)])) }, captured, new Map([...captured.keys()].map((k) => [k, now])), heads);
    expect(plan.copies.map((c) => c.entry.key).sort()).toEqual(['p/flex', 'p/it', 'p/ready', 'p/warm']);
    expect(waitingFrom(plan.archived, heads).map((w) => [w.entry.key, w.kind, w.state])).toEqual([
      ['p/flex', 'GLACIER', 'archived'],
      ['p/it', 'DEEP_ARCHIVE_ACCESS', 'archived'],
    ]);
  });

  it('the manifest option: defaults, and bad values refused with the field named', () => {
    const bucket = 'orders-bucket';
    expect(unitOf(bucket).archiveRetrieval).toBeUndefined();
    expect(unitOf(bucket, { tier: 'Bulk' }).archiveRetrieval).toEqual({ tier: 'Bulk', days: 1 });
    const bad = s3PrefixUnitSchema.safeParse({ id: 'raw', type: 's3-prefix', bucket, prefix: 'orders/', archiveRetrieval: { tier: 'Fast', days: 0 } });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues.map((i) => i.path.join('.')).sort()).toEqual(['archiveRetrieval.days', 'archiveRetrieval.tier']);
  });
});

describe('archived restore-point versions against moto', () => {
  it('the dry run names the archived versions to retrieve: count, bytes, tier used, delay; and writes nothing', async () => {
    const bucket = await newBucket('data', true);
    const stateBucket = await newBucket('state', false);
    const ctx = contextFor(stateBucket);
    const unit = unitOf(bucket, { tier: 'Expedited', days: 2 });
    await put(bucket, 'orders/a.csv', 'a v1 (flexible)', { StorageClass: 'GLACIER' });
    await put(bucket, 'orders/b.csv', 'b v1 (flexible)', { StorageClass: 'GLACIER' });
    await put(bucket, 'orders/c.csv', 'c v1 (deep)', { StorageClass: 'DEEP_ARCHIVE' });
    await put(bucket, 'orders/d.csv', 'd v1 (untouched, archived)', { StorageClass: 'GLACIER' });
    await put(bucket, 'orders/e.csv', 'e v1');
    const point = await s3PrefixAdapter.capture(unit, ctx);
    for (const k of ['a', 'b', 'c', 'e']) await put(bucket, `orders/${k}.csv`, `${k} v2`);
    const before = await versionFingerprint(bucket);

    const diff = await s3PrefixAdapter.diff(unit, point, ctx);
    const archived = diff.notes.filter((n) => n.startsWith('archived: '));
    expect(archived).toEqual([
      `archived: 2 captured version(s), ${'a v1 (flexible)'.length * 2} bytes, in Glacier Flexible Retrieval: RestoreObject with the Expedited tier, ` +
        `temporary copy kept 2 day(s); expected delay 1–5 minutes; retrieval $0.02 (us-east-1 list prices of ${PRICES.asOf}); each is copied as soon as it is readable`,
      `archived: 1 captured version(s), ${'c v1 (deep)'.length} bytes, in Glacier Deep Archive: RestoreObject with the Standard tier ` +
        '(Expedited does not exist for Glacier Deep Archive), temporary copy kept 2 day(s); expected delay within 12 hours; ' +
        `retrieval $0.00010 (us-east-1 list prices of ${PRICES.asOf}); each is copied as soon as it is readable`,
    ]);
    // d.csv is archived but unchanged: the restore does not copy it, so nothing to retrieve.
    expect(diff.changes).toMatchObject({ objectsCopied: 4 });
    expect(await versionFingerprint(bucket)).toEqual(before);
  });

  it('asks for the noncurrent captured version by VersionId with the manifest tier and days, and RestoreAlreadyInProgress on a rerun is fine', async () => {
    const bucket = await newBucket('data', true);
    const stateBucket = await newBucket('state', false);
    const deploymentId = uniqueName('d');
    const unit = unitOf(bucket, { tier: 'Bulk', days: 3 });
    const flexible = await put(bucket, 'orders/a.csv', 'a v1', { StorageClass: 'GLACIER' });
    const deep = await put(bucket, 'orders/b.csv', 'b v1', { StorageClass: 'DEEP_ARCHIVE' });
    const point = await s3PrefixAdapter.capture(unit, contextFor(stateBucket, deploymentId));
    await put(bucket, 'orders/a.csv', 'a v2');
    await put(bucket, 'orders/b.csv', 'b v2');

    const stub = restoreStub();
    const out = await s3PrefixAdapter.restore(unit, point, contextFor(stateBucket, deploymentId, stub.client));
    expect(stub.requests.sort((x, y) => String(x.Key).localeCompare(String(y.Key)))).toEqual([
      { Bucket: bucket, Key: 'orders/a.csv', VersionId: flexible, RestoreRequest: { Days: 3, GlacierJobParameters: { Tier: 'Bulk' } } },
      { Bucket: bucket, Key: 'orders/b.csv', VersionId: deep, RestoreRequest: { Days: 3, GlacierJobParameters: { Tier: 'Bulk' } } },
    ]);
    // Sized for the slowest retrieval (Deep Archive, Bulk: within 48 hours), polled hourly.
    expect(out.pending).toMatchObject({ waitSeconds: 3600, maxPolls: pollBudget(retrievalDelay('DEEP_ARCHIVE', 'Bulk')) });
    expect(out.pending!.status).toMatch(/^2 retrieval\(s\) requested now, waiting for 2 archived version\(s\)/);
    expect(out).toMatchObject({ writes: 0, changes: { objectsCopied: 0, archiveRetrievalsRequested: 2 } });

    // A retrieval already under way answers RestoreAlreadyInProgress (a request raced, or S3 had not shown it yet): fine.
    const busy = restoreStub(() => Object.assign(new Error('Object restore is already in progress'), { name: 'RestoreAlreadyInProgress', $metadata: { httpStatusCode: 409 } }));
    const again = await s3PrefixAdapter.restore(unit, point, contextFor(stateBucket, deploymentId, busy.client));
    expect(busy.requests).toHaveLength(2);
    expect(again.pending).toBeDefined();
    expect(again.changes.archiveRetrievalsRequested).toBe(0);
  });

  it('restores an archived version through RestoreObject: pending while it is retrieved, copied (readable, STANDARD) once it is, verified', async () => {
    const bucket = await newBucket('data', true);
    const stateBucket = await newBucket('state', false);
    const deploymentId = uniqueName('d');
    const unit = unitOf(bucket);
    const good = await put(bucket, 'orders/cold.csv', 'cold v1, good', { StorageClass: 'GLACIER', ContentType: 'text/csv', Metadata: { batch: '7' } });
    await put(bucket, 'orders/warm.csv', 'warm v1, good');
    const point = await s3PrefixAdapter.capture(unit, contextFor(stateBucket, deploymentId));
    await put(bucket, 'orders/cold.csv', 'cold v2, BAD', { ContentType: 'application/json' });
    await put(bucket, 'orders/warm.csv', 'warm v2, BAD');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'orders/added.csv', Body: 'added by the deploy' }));

    // First call: everything else is put back at once; the archived version's retrieval is asked for, its copy held back.
    const stub = restoreStub();
    const first = await s3PrefixAdapter.restore(unit, point, contextFor(stateBucket, deploymentId, stub.client));
    expect(stub.requests).toEqual([{ Bucket: bucket, Key: 'orders/cold.csv', VersionId: good, RestoreRequest: { Days: 1, GlacierJobParameters: { Tier: 'Standard' } } }]);
    expect(first.pending).toMatchObject({ waitSeconds: 900 });
    expect(first.changes).toMatchObject({ objectsCopied: 1, objectsDeleted: 1, archiveRetrievalsRequested: 1 });
    expect((await bytes(bucket, 'orders/warm.csv')).toString()).toBe('warm v1, good');
    expect((await bytes(bucket, 'orders/cold.csv')).toString()).toBe('cold v2, BAD');

    // S3 finishes the retrieval (the stand-in: moto restores current versions only, see completeRetrievalInMoto).
    const [bad] = await completeRetrievalInMoto(bucket, 'orders/cold.csv', good!);
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'orders/cold.csv', VersionId: good }));
    expect(head.Restore).toContain('ongoing-request="false"');

    // Next poll: readable, so copied; nothing else written again.
    const second = await s3PrefixAdapter.restore(unit, point, contextFor(stateBucket, deploymentId));
    expect(second.pending).toBeUndefined();
    expect(second).toMatchObject({ writes: 1, changes: { objectsCopied: 1, objectsDeleted: 0, objectsUnchanged: 1 } });
    const live = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'orders/cold.csv' }));
    expect((await bytes(bucket, 'orders/cold.csv')).toString()).toBe('cold v1, good');
    expect(live).toMatchObject({ ContentType: 'text/csv', Metadata: expect.objectContaining({ batch: '7' }) });
    expect(live.StorageClass ?? 'STANDARD').toBe('STANDARD');
    // Nothing lost: the bad object is a noncurrent version; the archived original is still there.
    expect((await bytes(bucket, 'orders/cold.csv', bad)).toString()).toBe('cold v2, BAD');
    expect((await bytes(bucket, 'orders/cold.csv', good)).toString()).toBe('cold v1, good');

    const checks = await s3PrefixAdapter.verify(unit, point, contextFor(stateBucket, deploymentId));
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    const rerun = await s3PrefixAdapter.restore(unit, point, contextFor(stateBucket, deploymentId));
    expect(rerun.writes).toBe(0);
    expect(rerun.pending).toBeUndefined();
  });

  it('a copy of a restored version is not retrieved again: no RestoreObject when nothing is archived and waiting', async () => {
    const bucket = await newBucket('data', true);
    const stateBucket = await newBucket('state', false);
    const deploymentId = uniqueName('d');
    const unit = unitOf(bucket);
    await put(bucket, 'orders/cold.csv', 'cold v1', { StorageClass: 'GLACIER' });
    const point = await s3PrefixAdapter.capture(unit, contextFor(stateBucket, deploymentId));
    // The version is retrieved before the deploy overwrites it (it is current then: moto can restore it directly).
    await s3.send(new RestoreObjectCommand({ Bucket: bucket, Key: 'orders/cold.csv', RestoreRequest: { Days: 1 } }));
    await put(bucket, 'orders/cold.csv', 'cold v2');
    const stub = restoreStub();
    const out = await s3PrefixAdapter.restore(unit, point, contextFor(stateBucket, deploymentId, stub.client));
    expect(stub.requests).toEqual([]);
    expect(out).toMatchObject({ writes: 1, changes: { objectsCopied: 1 } });
    expect(out.pending).toBeUndefined();
    expect((await bytes(bucket, 'orders/cold.csv')).toString()).toBe('cold v1');
  });

  it('a retrieval already under way (HeadObject: ongoing-request="true") is polled, not requested again', async () => {
    const bucket = await newBucket('data', true);
    const stateBucket = await newBucket('state', false);
    const deploymentId = uniqueName('d');
    const unit = unitOf(bucket);
    const cold = await put(bucket, 'orders/cold.csv', 'cold v1', { StorageClass: 'DEEP_ARCHIVE' });
    const point = await s3PrefixAdapter.capture(unit, contextFor(stateBucket, deploymentId));
    await put(bucket, 'orders/cold.csv', 'cold v2');
    const stub = restoreStub(undefined, new Set([cold!]));
    const out = await s3PrefixAdapter.restore(unit, point, contextFor(stateBucket, deploymentId, stub.client));
    expect(stub.requests).toEqual([]);
    expect(out.pending!.status).toMatch(/^waiting for 1 archived version\(s\) to be readable \(Standard retrieval, expected within 12 hours\)/);
    expect(out).toMatchObject({ writes: 0, changes: { archiveRetrievalsRequested: 0 } });
    expect((await bytes(bucket, 'orders/cold.csv')).toString()).toBe('cold v2');
  });

  it('a sharded restore pends in the unit step until no archived version waits, and only then hands out its shards', async () => {
    const bucket = await newBucket('data', true);
    const stateBucket = await newBucket('state', false);
    const deploymentId = uniqueName('d');
    const unit = unitOf(bucket);
    const adapter = createS3PrefixAdapter({ shardSize: 2, distributedThreshold: 3 });
    const keys = ['a', 'b', 'c', 'd', 'e'].map((k) => `orders/${k}.csv`);
    const versions: Record<string, string> = {};
    for (const k of keys) versions[k] = (await put(bucket, k, `${k} v1`, k === 'orders/d.csv' ? { StorageClass: 'GLACIER' } : {}))!;
    const point = await adapter.capture(unit, contextFor(stateBucket, deploymentId));
    for (const k of ['orders/a.csv', 'orders/d.csv']) await put(bucket, k, `${k} BAD`);

    const stub = restoreStub();
    const first = await adapter.restore(unit, point, contextFor(stateBucket, deploymentId, stub.client));
    expect(first.shards).toBeUndefined();
    expect(first).toMatchObject({ writes: 0, changes: { archiveRetrievalsRequested: 1 } });
    expect(first.pending!.status).toContain('"orders/d.csv"');
    expect(stub.requests).toEqual([{ Bucket: bucket, Key: 'orders/d.csv', VersionId: versions['orders/d.csv'], RestoreRequest: { Days: 1, GlacierJobParameters: { Tier: 'Standard' } } }]);
    expect((await bytes(bucket, 'orders/a.csv')).toString()).toBe('orders/a.csv BAD');

    await completeRetrievalInMoto(bucket, 'orders/d.csv', versions['orders/d.csv']!);
    const second = await adapter.restore(unit, point, contextFor(stateBucket, deploymentId));
    expect(second.pending).toBeUndefined();
    expect(second.shards).toEqual([0, 1, 2]);
    const shards = await adapter.restoreShards(unit, point, second.shards!, contextFor(stateBucket, deploymentId));
    expect(shards).toMatchObject({ writes: 2, changes: { objectsCopied: 2 } });
    for (const k of keys) expect((await bytes(bucket, k)).toString()).toBe(`${k} v1`);
    expect((await adapter.verify(unit, point, contextFor(stateBucket, deploymentId))).filter((c) => !c.ok)).toEqual([]);
  });
});
