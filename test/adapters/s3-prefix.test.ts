import { describe, expect, it, beforeAll } from 'vitest';
import fc from 'fast-check';
import {
  CreateBucketCommand,
  DeleteBucketPolicyCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketPolicyCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { GlueClient } from '@aws-sdk/client-glue';
import { RDSClient } from '@aws-sdk/client-rds';
import { destroyingS3, liveEtags, testS3, uniqueName } from '../support/aws.ts';
import {
  compareKeys,
  contentChecksum,
  copySourceOf,
  manifestChecksum,
  manifestKeyFor,
  mapLimit,
  nameSome,
  planRestore,
  s3PrefixAdapter,
  versionManifestSchema,
  type KeyHistory,
  type Listing,
  type ManifestEntry,
  type S3PrefixDetails,
  headKey,
  SOURCE_VERSION_META,
} from '../../core/adapters/s3-prefix.ts';
import type { ObjectHead as ObjectHeadLike } from '../../core/adapters/s3/io.ts';
import type { AdapterContext, RestorePoint } from '../../core/adapters/types.ts';
import { s3PrefixUnitSchema, type S3PrefixUnit } from '../../core/manifest/schema.ts';
import { PreflightError, RestorePointMissingError } from '../../core/errors.ts';

// ---------------------------------------------------------------------------------------------------------------------
// Helpers: everything asserted is read back from moto with our own listing code, not the adapter's.
// ---------------------------------------------------------------------------------------------------------------------

const s3: S3Client = testS3();
const destroying: S3Client = destroyingS3();

interface KeyState {
  /** Object version ids, newest first. */
  versions: string[];
  markers: string[];
  latestVersionId: string;
  latestIsMarker: boolean;
}

async function versionsOf(bucket: string, prefix = ''): Promise<Map<string, KeyState>> {
  const out = new Map<string, KeyState>();
  const get = (key: string) => {
    let s = out.get(key);
    if (!s) {
      s = { versions: [], markers: [], latestVersionId: '', latestIsMarker: false };
      out.set(key, s);
    }
    return s;
  };
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker, VersionIdMarker }));
    for (const v of page.Versions ?? []) {
      const s = get(v.Key!);
      s.versions.push(v.VersionId!);
      if (v.IsLatest) Object.assign(s, { latestVersionId: v.VersionId!, latestIsMarker: false });
    }
    for (const m of page.DeleteMarkers ?? []) {
      const s = get(m.Key!);
      s.markers.push(m.VersionId!);
      if (m.IsLatest) Object.assign(s, { latestVersionId: m.VersionId!, latestIsMarker: true });
    }
    if (!page.IsTruncated) return out;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
}

/** Every (key, version id, marker?) triple: any write at all changes it. */
async function versionFingerprint(bucket: string, prefix = ''): Promise<string[]> {
  const all = await versionsOf(bucket, prefix);
  return [...all.entries()].flatMap(([k, s]) => [...s.versions.map((v) => `${k} v ${v}`), ...s.markers.map((m) => `${k} m ${m}`)]).sort();
}


async function body(bucket: string, key: string, versionId?: string): Promise<string> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }));
  return (await out.Body!.transformToString('utf-8')) ?? '';
}

/** The live content of a prefix: key → bytes of its latest object (keys hidden by a delete marker are absent). */
async function liveContent(bucket: string, prefix: string): Promise<Record<string, string>> {
  const states = await versionsOf(bucket, prefix);
  const live = [...states.entries()].filter(([, s]) => !s.latestIsMarker).map(([k]) => k);
  const bodies = await mapLimit(live, 16, (k) => body(bucket, k));
  return Object.fromEntries(live.map((k, i) => [k, bodies[i]!]));
}

async function put(bucket: string, key: string, content: string, extra: { StorageClass?: 'GLACIER' } = {}): Promise<string> {
  const out = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Buffer.from(content, 'utf8'), ...extra }));
  return out.VersionId!;
}

async function del(bucket: string, key: string, versionId?: string): Promise<void> {
  // A version id given: the test destroys that version on purpose (the guard is told so).
  await (versionId ? destroying : s3).send(new DeleteObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }));
}

async function newBucket(name: string, versioned: boolean): Promise<string> {
  const bucket = uniqueName(name);
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  if (versioned) await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  return bucket;
}

interface Env {
  bucket: string;
  stateBucket: string;
  ctx: AdapterContext;
  unit: S3PrefixUnit;
  logs: string[];
}

function contextFor(stateBucket: string, deploymentId: string, now = new Date('2025-01-02T03:04:05.000Z')): { ctx: AdapterContext; logs: string[] } {
  const logs: string[] = [];
  const ctx: AdapterContext = {
    pipeline: 'orders',
    deploymentId,
    runId: 'run-1',
    s3,
    rds: new RDSClient({}),
    glue: new GlueClient({}),
    stateBucket,
    postgres: {
      connect: () => Promise.reject(new Error('the s3-prefix adapter must not open database connections')),
    },
    mysql: { connect: () => Promise.reject(new Error('this adapter must not open MySQL connections')) },
    retentionDays: 14,
    now: () => now,
    log: { info: (m) => logs.push(m), warn: (m) => logs.push(`WARN ${m}`) },
  };
  return { ctx, logs };
}

function unitFor(bucket: string, prefix: string, id = 'raw'): S3PrefixUnit {
  return s3PrefixUnitSchema.parse({ id, type: 's3-prefix', bucket, prefix });
}

async function env(prefix = 'orders/', opts: { versioned?: boolean } = {}): Promise<Env> {
  const bucket = await newBucket('data', opts.versioned ?? true);
  const stateBucket = await newBucket('state', false);
  const { ctx, logs } = contextFor(stateBucket, uniqueName('d'));
  return { bucket, stateBucket, ctx, unit: unitFor(bucket, prefix), logs };
}

async function expectRejects<E extends Error>(promise: Promise<unknown>, type: new (...args: never[]) => E): Promise<E> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(type);
  return error as E;
}

// ---------------------------------------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------------------------------------

describe('s3-prefix helpers', () => {
  it('compareKeys orders like S3 (UTF-8 bytes), unlike the default UTF-16 order', () => {
    // U+FF01 (fullwidth !) sorts before U+1F600 (😀) in UTF-8, after it in UTF-16 code units.
    expect(['😀', '！'].sort()).toEqual(['😀', '！']);
    expect(['😀', '！'].sort(compareKeys)).toEqual(['！', '😀']);
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (a, b) => {
        expect(Math.sign(compareKeys(a, b))).toBe(Math.sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))));
      }),
      { numRuns: 500 },
    );
  });

  it('copySourceOf encodes each key segment and the version id', () => {
    expect(copySourceOf('b', 'orders/a b+c%d#e?f/ü.csv', 'v+1/2=')).toBe('b/orders/a%20b%2Bc%25d%23e%3Ff/%C3%BC.csv?versionId=v%2B1%2F2%3D');
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1 }), (key) => {
        const source = copySourceOf('bucket', key, 'v');
        const path = source.slice('bucket/'.length, source.lastIndexOf('?versionId='));
        expect(path).not.toMatch(/[ #?+%](?![0-9A-F]{2})/);
        expect(path.split('/').map(decodeURIComponent).join('/')).toBe(key);
      }),
    );
  });

  it('checksums ignore entry order and cannot be forged by tabs or newlines in keys', () => {
    const a: ManifestEntry = { key: 'p/a', versionId: 'v1', etag: 'e1', size: 1 };
    const b: ManifestEntry = { key: 'p/b', versionId: 'v2', etag: 'e2', size: 2 };
    expect(manifestChecksum([a, b])).toBe(manifestChecksum([b, a]));
    expect(manifestChecksum([a, b])).toMatch(/^[0-9a-f]{64}$/);
    const renewed: ManifestEntry = { ...a, versionId: 'other' };
    expect(contentChecksum([a])).toBe(contentChecksum([renewed]));
    expect(manifestChecksum([a])).not.toBe(manifestChecksum([renewed]));
    // Without escaping, key "p/x\te1\t1\np/y" with etag e2 would produce the same lines as two entries.
    const forged: ManifestEntry = { key: 'p/x\te1\t1\np/y', versionId: 'v', etag: 'e2', size: 2 };
    const honest: ManifestEntry[] = [
      { key: 'p/x', versionId: 'v', etag: 'e1', size: 1 },
      { key: 'p/y', versionId: 'v', etag: 'e2', size: 2 },
    ];
    expect(contentChecksum([forged])).not.toBe(contentChecksum(honest));
  });

  it('manifestKeyFor follows restore-points/<pipeline>/<deployment>/<unit>/versions.json', () => {
    expect(manifestKeyFor('orders', 'd-42', 'raw')).toBe('restore-points/orders/d-42/raw/versions.json');
    expect(manifestKeyFor('orders', 'a/b', 'raw')).toBe('restore-points/orders/a%2Fb/raw/versions.json');
  });

  it('nameSome names the first items and counts the rest', () => {
    expect(nameSome(['a', 'b'])).toBe('"a", "b"');
    expect(nameSome(['a', 'b', 'c'], 2)).toBe('"a", "b" (and 1 more)');
  });

  it('mapLimit bounds concurrency, keeps order, and stops on the first failure', async () => {
    let running = 0;
    let peak = 0;
    const out = await mapLimit([...Array(40).keys()], 4, async (i) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 1));
      running--;
      return i * 2;
    });
    expect(out).toEqual([...Array(40).keys()].map((i) => i * 2));
    expect(peak).toBe(4);
    const started: number[] = [];
    await expect(
      mapLimit([...Array(100).keys()], 2, async (i) => {
        started.push(i);
        if (i === 3) throw new Error('boom at 3');
        await new Promise((r) => setTimeout(r, 1));
      }),
    ).rejects.toThrow('boom at 3');
    expect(started.length).toBeLessThan(10);
  });

  it('planRestore: marker removal only when nothing but delete markers stands above the captured version', () => {
    const t = 1_000_000;
    const v = (versionId: string, at: number, etag = versionId) => ({ versionId, etag, size: 1, lastModified: at, storageClass: 'STANDARD' });
    const history = (key: string, versions: ReturnType<typeof v>[], markers: { versionId: string; lastModified: number }[], latest: 'v' | 'm'): KeyHistory => ({
      key,
      versions,
      markers,
      latest: latest === 'v' ? { kind: 'version', entry: versions[0]! } : { kind: 'marker', entry: markers[0]! },
    });
    const listing: Listing = new Map(
      [
        // hidden: captured v1; a marker from before capture in the same second (tie) and one after.
        history('p/hidden', [v('v1', t), v('v0', t - 5000)], [{ versionId: 'm2', lastModified: t + 1000 }, { versionId: 'm1', lastModified: t - 5000 }], 'm'),
        // overwritten then deleted: v2 stands above v1, so copy.
        history('p/ow-del', [v('v2', t + 1000), v('v1', t)], [{ versionId: 'm1', lastModified: t + 2000 }], 'm'),
        // same bytes rewritten: unchanged.
        history('p/same', [v('v2', t + 1000, 'e'), v('v1', t, 'e')], [], 'v'),
        // captured version purged: missing.
        history('p/purged', [v('v9', t + 1000)], [], 'v'),
        // added after capture.
        history('p/new', [v('n1', t + 1000)], [], 'v'),
        // a previous restore's copy (same etag), then deleted; the captured version itself was purged: no copy needed.
        history('p/copy-del', [v('c2', t + 3000, 'v1')], [{ versionId: 'm3', lastModified: t + 4000 }], 'm'),
      ].map((h) => [h.key, h]),
    );
    const head = (etag: string, metadata: Record<string, string> = {}): ObjectHeadLike => ({ etag, size: 1, contentType: 'text/csv', metadata });
    // Heads as resolveHeads would fetch them: the rewritten same-bytes version and its captured one (same metadata), and
    // the previous restore's copy (our marker names the captured version it reproduces).
    const heads = new Map([
      [headKey('p/same', 'v2'), head('e')],
      [headKey('p/same', 'v1'), head('e')],
      [headKey('p/copy-del', 'c2'), head('v1', { [SOURCE_VERSION_META]: 'v1' })],
    ]);
    const entries = [
      { key: 'p/hidden', versionId: 'v1', etag: 'v1', size: 1 },
      { key: 'p/ow-del', versionId: 'v1', etag: 'v1', size: 1 },
      { key: 'p/same', versionId: 'v1', etag: 'e', size: 1 },
      { key: 'p/purged', versionId: 'v1', etag: 'v1', size: 1 },
      { key: 'p/copy-del', versionId: 'v1', etag: 'v1', size: 1 },
    ];
    // Without heads nothing but the captured version itself is trusted: same bytes and our copy are copied again.
    const blind = planRestore(entries, listing);
    expect(blind.copies.map((c) => c.entry.key)).toEqual(['p/ow-del', 'p/same']);
    expect(blind.missing).toEqual(['p/purged', 'p/copy-del']);
    // Same bytes but other metadata: copied.
    const otherType = planRestore(entries, listing, new Map([...heads, [headKey('p/same', 'v2'), { ...head('e'), contentType: 'application/json' }]]));
    expect(otherType.copies.map((c) => c.entry.key)).toEqual(['p/ow-del', 'p/same']);
    const plan = planRestore(entries, listing, heads);
    expect(plan.markerRemovals).toEqual([
      { key: 'p/hidden', versionId: 'm2' },
      { key: 'p/copy-del', versionId: 'm3' },
    ]);
    expect(plan.copies.map((c) => c.entry.key)).toEqual(['p/ow-del']);
    expect(plan.unchanged).toBe(1);
    expect(plan.missing).toEqual(['p/purged']);
    expect(plan.deletions).toEqual(['p/new']);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Against moto
// ---------------------------------------------------------------------------------------------------------------------

describe('s3-prefix adapter (moto)', () => {
  it('refuses to capture an unversioned bucket, naming the bucket and the fix', async () => {
    const e = await env('orders/', { versioned: false });
    await put(e.bucket, 'orders/a.csv', 'a');
    const error = await expectRejects(s3PrefixAdapter.capture(e.unit, e.ctx), PreflightError);
    expect(error.message).toContain(e.bucket);
    expect(error.message).toContain(`aws s3api put-bucket-versioning --bucket ${e.bucket} --versioning-configuration Status=Enabled`);
    expect(await versionsOf(e.stateBucket)).toEqual(new Map());

    const missing = await expectRejects(s3PrefixAdapter.capture(unitFor(uniqueName('no-such'), 'orders/'), e.ctx), PreflightError);
    expect(missing.message).toMatch(/bucket no-such-[0-9a-f]+ does not exist/);
  });

  it('captures a version manifest without copying data, and a second capture returns the same point', async () => {
    const e = await env();
    const va = await put(e.bucket, 'orders/a.csv', 'alpha');
    const vb = await put(e.bucket, 'orders/b/c.csv', 'bravo!');
    await put(e.bucket, 'orders/gone.csv', 'x');
    await del(e.bucket, 'orders/gone.csv');
    await put(e.bucket, 'orders-archive/z.csv', 'neighbour');
    const before = await versionFingerprint(e.bucket);

    const point = await s3PrefixAdapter.capture(e.unit, e.ctx);
    expect(point).toMatchObject({ unitId: 'raw', type: 's3-prefix', count: 2, capturedAt: '2025-01-02T03:04:05.000Z' });
    expect(point.details).toMatchObject({
      bucket: e.bucket,
      prefix: 'orders/',
      manifestKey: manifestKeyFor('orders', e.ctx.deploymentId, 'raw'),
      totalBytes: 11,
    });
    expect(await versionFingerprint(e.bucket)).toEqual(before); // nothing written to the data bucket

    const manifest = versionManifestSchema.parse(JSON.parse(await body(e.stateBucket, point.details.manifestKey)));
    expect(manifest.entries).toEqual([
      { key: 'orders/a.csv', versionId: va, etag: expect.stringMatching(/^[0-9a-f]{32}$/), size: 5 },
      { key: 'orders/b/c.csv', versionId: vb, etag: expect.stringMatching(/^[0-9a-f]{32}$/), size: 6 },
    ]);
    expect(point.checksum).toBe(manifestChecksum(manifest.entries));
    expect(point.details.contentChecksum).toBe(contentChecksum(manifest.entries));

    // Later writes do not change an existing point: the manifest is reused, not rewritten.
    await put(e.bucket, 'orders/a.csv', 'changed');
    const manifestVersionsBefore = await versionFingerprint(e.stateBucket);
    const later = contextFor(e.stateBucket, e.ctx.deploymentId, new Date('2030-01-01T00:00:00Z')).ctx;
    expect(await s3PrefixAdapter.capture(e.unit, later)).toEqual(point);
    expect(await versionFingerprint(e.stateBucket)).toEqual(manifestVersionsBefore);
  });

  it('two concurrent captures of one deployment agree on one point', async () => {
    const e = await env();
    await put(e.bucket, 'orders/a.csv', 'a');
    const other = contextFor(e.stateBucket, e.ctx.deploymentId, new Date('2031-01-01T00:00:00Z')).ctx;
    const [p1, p2] = await Promise.all([s3PrefixAdapter.capture(e.unit, e.ctx), s3PrefixAdapter.capture(e.unit, other)]);
    expect(p1).toEqual(p2);
    const manifest = versionManifestSchema.parse(JSON.parse(await body(e.stateBucket, p1.details.manifestKey)));
    expect(manifest.capturedAt).toBe(p1.capturedAt);
  });

  it('restores every kind of change, writes only what differs, and a second restore writes nothing', async () => {
    const e = await env();
    const B = e.bucket;
    const special = [
      'orders/with space.csv',
      'orders/plus+sign.csv',
      'orders/percent%20literal.csv',
      'orders/hash#frag.csv',
      'orders/question?mark=1&x.csv',
      'orders/ünïcødé/日本語/😀.csv',
      'orders/a/b/c/d/e/f/g/deep.csv',
    ];
    const specialHidden = 'orders/hidden ü+%#?.csv';

    // Before capture.
    const captured: Record<string, string> = {
      'orders/unchanged.csv': 'unchanged',
      'orders/same-bytes.csv': 'same bytes',
      'orders/modified.csv': 'modified v1',
      'orders/overwritten.csv': 'overwritten v1',
      'orders/deleted.csv': 'deleted v1',
      'orders/deleted-twice.csv': 'deleted twice v1',
      'orders/deleted-recreated.csv': 'recreated v1',
      'orders/overwritten-then-deleted.csv': 'otd v1',
      'orders/empty.bin': '',
      [specialHidden]: 'special hidden v1',
      ...Object.fromEntries(special.map((k) => [k, `captured ${k}`])),
    };
    await put(B, 'orders/deleted-recreated.csv', 'recreated v0');
    await del(B, 'orders/deleted-recreated.csv');
    const capturedVersion: Record<string, string> = {};
    for (const [k, v] of Object.entries(captured)) capturedVersion[k] = await put(B, k, v);
    await put(B, 'orders/gone-at-capture.csv', 'gone');
    await del(B, 'orders/gone-at-capture.csv');
    await put(B, 'orders/gone-at-capture-back.csv', 'gone');
    await del(B, 'orders/gone-at-capture-back.csv');
    await put(B, 'orders-archive/x.csv', 'archive v1');
    await put(B, 'orders', 'exact key v1');

    const point = await s3PrefixAdapter.capture(e.unit, e.ctx);
    expect(point.count).toBe(Object.keys(captured).length);

    // The deploy.
    await put(B, 'orders/same-bytes.csv', 'same bytes');
    await put(B, 'orders/modified.csv', 'modified v2');
    for (const n of [2, 3, 4]) await put(B, 'orders/overwritten.csv', `overwritten v${n}`);
    await del(B, 'orders/deleted.csv');
    await del(B, 'orders/deleted-twice.csv');
    await del(B, 'orders/deleted-twice.csv');
    await del(B, 'orders/deleted-recreated.csv');
    await put(B, 'orders/deleted-recreated.csv', 'recreated v2');
    await put(B, 'orders/overwritten-then-deleted.csv', 'otd v2');
    await del(B, 'orders/overwritten-then-deleted.csv');
    await put(B, 'orders/empty.bin', 'no longer empty');
    await del(B, specialHidden);
    for (const k of special) await put(B, k, `deployed ${k}`);
    await put(B, 'orders/added.csv', 'added');
    await put(B, 'orders/added-then-deleted.csv', 'temp');
    await del(B, 'orders/added-then-deleted.csv');
    await put(B, 'orders/gone-at-capture-back.csv', 'back');
    await put(B, 'orders-archive/x.csv', 'archive v2');
    await put(B, 'orders-archive/new.csv', 'archive new');
    await put(B, 'orders', 'exact key v2');

    // Verify sees the damage and names it.
    const bad = await s3PrefixAdapter.verify(e.unit, point, e.ctx);
    expect(bad.map((c) => [c.name, c.ok])).toEqual([
      ['objectCount', false],
      ['content', false],
      ['checksum', false],
    ]);
    const content = bad.find((c) => c.name === 'content')!;
    expect(content.actual).toBe('4 missing, 2 extra, 11 changed');
    expect(content.detail).toContain('"orders/added.csv"');
    expect(content.detail).toContain('"orders/deleted.csv"');

    const expectedChanges = { objectsCopied: 12, deleteMarkersRemoved: 4, objectsDeleted: 2, objectsUnchanged: 2 };
    const beforeDiff = await versionFingerprint(B);
    const diff = await s3PrefixAdapter.diff(e.unit, point, e.ctx);
    expect(diff).toMatchObject({ changes: expectedChanges, writes: 18 });
    expect(await versionFingerprint(B)).toEqual(beforeDiff); // a diff writes nothing
    const outsideBefore = await versionsOf(B, 'orders-archive/');
    const exactBefore = (await versionsOf(B, 'orders')).get('orders');

    const outcome = await s3PrefixAdapter.restore(e.unit, point, e.ctx);
    expect(outcome).toMatchObject({ changes: expectedChanges, writes: 18, keptAt: `noncurrent versions of s3://${B}/orders/` });

    // Content read back equals the capture, byte for byte, keys included.
    expect(await liveContent(B, 'orders/')).toEqual(captured);

    const after = await versionsOf(B, 'orders/');
    // Unchanged objects were never written.
    expect(after.get('orders/unchanged.csv')).toMatchObject({ versions: [capturedVersion['orders/unchanged.csv']], markers: [] });
    expect(after.get('orders/same-bytes.csv')!.versions).toHaveLength(2);
    // Hidden only by delete markers: markers removed, the captured version is current again, no new version.
    for (const k of ['orders/deleted.csv', 'orders/deleted-twice.csv', specialHidden]) {
      expect(after.get(k)).toMatchObject({ versions: [capturedVersion[k]], markers: [], latestVersionId: capturedVersion[k], latestIsMarker: false });
    }
    // Copied back: a new version on top, the bad ones kept as noncurrent versions.
    expect(after.get('orders/modified.csv')!.versions).toHaveLength(3);
    expect(after.get('orders/overwritten.csv')!.versions).toHaveLength(5);
    expect(after.get('orders/overwritten-then-deleted.csv')).toMatchObject({ markers: [expect.any(String)], latestIsMarker: false });
    expect(after.get('orders/overwritten-then-deleted.csv')!.versions).toHaveLength(3);
    expect(await body(B, 'orders/overwritten.csv', after.get('orders/overwritten.csv')!.versions[1])).toBe('overwritten v4');
    expect(after.get('orders/deleted-recreated.csv')!.latestVersionId).not.toBe(capturedVersion['orders/deleted-recreated.csv']);
    // Added since capture: hidden behind a delete marker, its data kept.
    expect(after.get('orders/added.csv')).toMatchObject({ latestIsMarker: true, versions: [expect.any(String)] });
    expect(after.get('orders/gone-at-capture-back.csv')!.latestIsMarker).toBe(true);
    // Added then deleted, and gone at capture: nothing done.
    expect(after.get('orders/added-then-deleted.csv')).toMatchObject({ versions: [expect.any(String)], markers: [expect.any(String)] });
    expect(after.get('orders/gone-at-capture.csv')).toMatchObject({ versions: [expect.any(String)], markers: [expect.any(String)] });
    // Neighbours untouched.
    expect(await versionsOf(B, 'orders-archive/')).toEqual(outsideBefore);
    expect(await body(B, 'orders-archive/x.csv')).toBe('archive v2');
    expect(await body(B, 'orders-archive/new.csv')).toBe('archive new');
    expect((await versionsOf(B, 'orders')).get('orders')).toEqual(exactBefore);
    expect(await body(B, 'orders')).toBe('exact key v2');

    const good = await s3PrefixAdapter.verify(e.unit, point, e.ctx);
    expect(good.every((c) => c.ok)).toBe(true);
    expect(good.find((c) => c.name === 'objectCount')).toMatchObject({ expected: point.count, actual: point.count });

    // Idempotent: a second restore plans nothing and writes nothing.
    const beforeRerun = await versionFingerprint(B);
    const again = await s3PrefixAdapter.restore(e.unit, point, e.ctx);
    expect(again).toMatchObject({
      writes: 0,
      changes: { objectsCopied: 0, deleteMarkersRemoved: 0, objectsDeleted: 0, objectsUnchanged: point.count },
    });
    expect(again.keptAt).toBeUndefined();
    expect(await versionFingerprint(B)).toEqual(beforeRerun);
  });

  it('refuses a restore before any write when a captured version was permanently deleted', async () => {
    const e = await env();
    const va = await put(e.bucket, 'orders/a.csv', 'a1');
    await put(e.bucket, 'orders/b.csv', 'b1');
    const point = await s3PrefixAdapter.capture(e.unit, e.ctx);
    await put(e.bucket, 'orders/a.csv', 'a2');
    await del(e.bucket, 'orders/a.csv', va); // purge the captured version (as a lifecycle rule would)
    await put(e.bucket, 'orders/b.csv', 'b2');
    await put(e.bucket, 'orders/c.csv', 'c');
    const before = await versionFingerprint(e.bucket);

    const error = await expectRejects(s3PrefixAdapter.restore(e.unit, point, e.ctx), RestorePointMissingError);
    expect(error.message).toContain('"orders/a.csv"');
    expect(error.message).not.toContain('orders/b.csv');
    expect(error.message).toContain('Nothing was written');
    await expectRejects(s3PrefixAdapter.diff(e.unit, point, e.ctx), RestorePointMissingError);
    expect(await versionFingerprint(e.bucket)).toEqual(before);
    expect(await liveContent(e.bucket, 'orders/')).toEqual({ 'orders/a.csv': 'a2', 'orders/b.csv': 'b2', 'orders/c.csv': 'c' });
  });

  it('holds back a captured version that sits in an archive tier (pending), and restores everything else at once', async () => {
    const e = await env();
    await put(e.bucket, 'orders/cold.csv', 'cold v1', { StorageClass: 'GLACIER' });
    await put(e.bucket, 'orders/warm.csv', 'warm v1');
    const point = await s3PrefixAdapter.capture(e.unit, e.ctx);
    await put(e.bucket, 'orders/cold.csv', 'cold v2');
    await put(e.bucket, 'orders/warm.csv', 'warm v2');
    const coldBefore = (await versionsOf(e.bucket, 'orders/cold.csv')).get('orders/cold.csv');

    const out = await s3PrefixAdapter.restore(e.unit, point, e.ctx);
    expect(out.pending?.status).toContain('"orders/cold.csv"');
    expect(out.pending?.waitSeconds).toBe(15 * 60);
    expect(out.changes).toMatchObject({ objectsCopied: 1, bytesCopied: 'warm v1'.length });
    expect(await liveContent(e.bucket, 'orders/')).toEqual({ 'orders/cold.csv': 'cold v2', 'orders/warm.csv': 'warm v1' });
    // Nothing written to the held-back key (its retrieval runs; see test/adapters/s3/archived.test.ts for the rest).
    expect((await versionsOf(e.bucket, 'orders/cold.csv')).get('orders/cold.csv')).toEqual(coldBefore);
  });

  it('throws on per-key DeleteObjects errors, and a rerun converges once the cause is fixed', async () => {
    const e = await env();
    await put(e.bucket, 'orders/a.csv', 'a1');
    const point = await s3PrefixAdapter.capture(e.unit, e.ctx);
    await put(e.bucket, 'orders/a.csv', 'a2');
    await put(e.bucket, 'orders/locked-new.csv', 'new');
    await put(e.bucket, 'orders/free-new.csv', 'new');
    await s3.send(
      new PutBucketPolicyCommand({
        Bucket: e.bucket,
        Policy: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Effect: 'Deny', Principal: '*', Action: 's3:DeleteObject', Resource: `arn:aws:s3:::${e.bucket}/orders/locked*` }],
        }),
      }),
    );
    await expect(s3PrefixAdapter.restore(e.unit, point, e.ctx)).rejects.toThrow(/"orders\/locked-new\.csv".*AccessDenied/);
    expect(await body(e.bucket, 'orders/locked-new.csv')).toBe('new');

    await s3.send(new DeleteBucketPolicyCommand({ Bucket: e.bucket }));
    const rerun = await s3PrefixAdapter.restore(e.unit, point, e.ctx);
    expect(rerun.changes).toMatchObject({ objectsCopied: 0, objectsDeleted: 1 });
    expect(await liveContent(e.bucket, 'orders/')).toEqual({ 'orders/a.csv': 'a1' });
  });

  it('pages through 2,500 objects (capture, restore, verify) and deletes in DeleteObjects batches of at most 1,000', async () => {
    const e = await env('big/');
    const { ctx: ctxEmpty } = contextFor(e.stateBucket, uniqueName('d-empty'));
    const empty = await s3PrefixAdapter.capture(e.unit, ctxEmpty);
    expect(empty.count).toBe(0);

    const keys = [...Array(2500).keys()].map((i) => `big/${String(i).padStart(4, '0')}.txt`);
    await mapLimit(keys, 32, (k) => put(e.bucket, k, `v1 ${k}`));
    const point = await s3PrefixAdapter.capture(e.unit, e.ctx);
    expect(point.count).toBe(2500);
    const captured = await liveEtags(s3, e.bucket, 'big/');
    expect(Object.keys(captured)).toEqual(keys);

    await put(e.bucket, 'big/0000.txt', 'v2');
    await put(e.bucket, 'big/2499.txt', 'v2');
    await del(e.bucket, 'big/0555.txt');
    const outcome = await s3PrefixAdapter.restore(e.unit, point, e.ctx);
    expect(outcome.changes).toEqual({ objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 0, objectsUnchanged: 2497, bytesCopied: 30 });
    expect(await liveEtags(s3, e.bucket, 'big/')).toEqual(captured);
    for (const k of ['big/0000.txt', 'big/0555.txt', 'big/2499.txt']) expect(await body(e.bucket, k)).toBe(`v1 ${k}`);

    // Back to the empty point: 2500 deletions, in three DeleteObjects batches (1000, 1000, 500), counted at the SDK.
    const batches: number[] = [];
    const counting = testS3();
    counting.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { Delete?: { Objects?: unknown[] } };
        if (input.Delete?.Objects) batches.push(input.Delete.Objects.length);
        return next(args);
      },
      { step: 'initialize', name: 'countDeleteBatches' },
    );
    const emptied = await s3PrefixAdapter.restore(e.unit, empty, { ...ctxEmpty, s3: counting });
    expect(emptied.changes).toEqual({ objectsCopied: 0, deleteMarkersRemoved: 0, objectsDeleted: 2500, objectsUnchanged: 0, bytesCopied: 0 });
    expect(batches).toEqual([1000, 1000, 500]);
    expect(await liveEtags(s3, e.bucket, 'big/')).toEqual({});

    // Forward again: every key is hidden only by a marker (above the captured version or a previous restore's copy).
    const versionsBefore = await versionsOf(e.bucket, 'big/');
    const back = await s3PrefixAdapter.restore(e.unit, point, e.ctx);
    expect(back.changes).toEqual({ objectsCopied: 0, deleteMarkersRemoved: 2500, objectsDeleted: 0, objectsUnchanged: 0, bytesCopied: 0 });
    expect(await liveEtags(s3, e.bucket, 'big/')).toEqual(captured);
    const versionsAfter = await versionsOf(e.bucket, 'big/');
    expect([...versionsAfter.values()].map((s) => s.versions)).toEqual([...versionsBefore.values()].map((s) => s.versions));
    expect((await s3PrefixAdapter.verify(e.unit, point, e.ctx)).every((c) => c.ok)).toBe(true);
    expect((await s3PrefixAdapter.restore(e.unit, point, e.ctx)).writes).toBe(0);
  }, 240_000); // ~5,000 requests of one-by-one moto work; slower when other test files share the server

  it('release deletes the manifest, never data; a later restore reports the point gone', async () => {
    const e = await env();
    await put(e.bucket, 'orders/a.csv', 'a1');
    const point: RestorePoint<S3PrefixDetails> = await s3PrefixAdapter.capture(e.unit, e.ctx);
    const dataBefore = await versionFingerprint(e.bucket);
    await s3PrefixAdapter.release(e.unit, point, e.ctx);
    await expect(s3.send(new HeadObjectCommand({ Bucket: e.stateBucket, Key: point.details.manifestKey }))).rejects.toMatchObject({
      $metadata: { httpStatusCode: 404 },
    });
    expect(await versionFingerprint(e.stateBucket)).toEqual([]);
    expect(await versionFingerprint(e.bucket)).toEqual(dataBefore);
    await s3PrefixAdapter.release(e.unit, point, e.ctx); // a second release is a no-op
    const error = await expectRejects(s3PrefixAdapter.restore(e.unit, point, e.ctx), RestorePointMissingError);
    expect(error.message).toContain(point.details.manifestKey);
  });

  describe('property: restore makes the live prefix equal to the captured one', () => {
    let bucket = '';
    let stateBucket = '';
    beforeAll(async () => {
      bucket = await newBucket('prop', true);
      stateBucket = await newBucket('prop-state', false);
    });

    const keyArb = fc.constantFrom('a.csv', 'b c.csv', 'd+%#?.csv', 'ü/日.csv');
    const opArb = fc.oneof(
      fc.record({ op: fc.constant('put' as const), key: keyArb, body: fc.constantFrom('', 'x', 'y', 'zz') }),
      fc.record({ op: fc.constant('delete' as const), key: keyArb }),
    );
    type Op = { op: 'put'; key: string; body: string } | { op: 'delete'; key: string };

    async function apply(prefix: string, ops: Op[]): Promise<void> {
      for (const o of ops) {
        if (o.op === 'put') await put(bucket, prefix + o.key, o.body);
        else await del(bucket, prefix + o.key);
      }
    }

    it('for random puts, overwrites and deletes after capture', async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { maxLength: 8 }), fc.array(opArb, { minLength: 1, maxLength: 10 }), async (before, after) => {
          const prefix = `${uniqueName('p')}/`;
          const unit = unitFor(bucket, prefix);
          const { ctx } = contextFor(stateBucket, uniqueName('d'));
          await apply(prefix, before);
          const captured = await liveContent(bucket, prefix);
          const point = await s3PrefixAdapter.capture(unit, ctx);
          await apply(prefix, after);

          const outcome = await s3PrefixAdapter.restore(unit, point, ctx);
          expect(await liveContent(bucket, prefix)).toEqual(captured);
          expect((await s3PrefixAdapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);
          expect(outcome.writes).toBe(outcome.changes.objectsCopied! + outcome.changes.deleteMarkersRemoved! + outcome.changes.objectsDeleted!);
          const fingerprint = await versionFingerprint(bucket, prefix);
          expect((await s3PrefixAdapter.restore(unit, point, ctx)).writes).toBe(0);
          expect(await versionFingerprint(bucket, prefix)).toEqual(fingerprint);
        }),
        { numRuns: 15 },
      );
    });
  });
});
