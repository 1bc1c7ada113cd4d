import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectVersionsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import {
  MANIFEST_FORMAT,
  SHARDED_MANIFEST_FORMAT,
  contentChecksum,
  createS3PrefixAdapter,
  manifestChecksum,
  manifestKeyFor,
  shardIndexSchema,
  type ManifestEntry,
} from '../../../core/adapters/s3-prefix.ts';
import { bytes, contextFor, del, newBucket, put, s3, unitFor, versionFingerprint } from './helpers.ts';
import { liveEtags } from '../../support/aws.ts';

/** Objects through moto, which the other test files share: slow on a loaded 2-core machine. */
const SHARDED_TIMEOUT_MS = 180_000;


async function putMany(bucket: string, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => put(bucket, k, `v1 of ${k}`, { ContentType: 'text/csv' })));
}

async function body(bucket: string, key: string): Promise<Buffer> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

const keyOf = (i: number) => `p/part-${String(i).padStart(4, '0')}.csv`;

describe('s3-prefix sharded version manifests (moto)', () => {
  it('captures 250 objects as 3 gzip JSON-lines shards + an index, and restores shard by shard above the threshold', async () => {
    const adapter = createS3PrefixAdapter({ shardSize: 100, distributedThreshold: 200 });
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    await putMany(bucket, Array.from({ length: 250 }, (_, i) => keyOf(i)));
    await put(bucket, 'p-archive/keep.csv', 'neighbour');
    const unit = unitFor(bucket, 'p/');
    const ctx = contextFor(state);
    const point = await adapter.capture(unit, ctx);
    expect(point.count).toBe(250);
    const captured = await liveEtags(s3, bucket, 'p/');

    // The index, read back from the state bucket; each shard is gzip JSON lines matching its index entry.
    const index = shardIndexSchema.parse(JSON.parse((await body(state, manifestKeyFor('orders', ctx.deploymentId, 'raw'))).toString('utf8')));
    expect(index.format).toBe(SHARDED_MANIFEST_FORMAT);
    expect(index.shards.map((sh) => [sh.firstKey, sh.lastKey, sh.count])).toEqual([
      [keyOf(0), keyOf(99), 100],
      [keyOf(100), keyOf(199), 100],
      [keyOf(200), keyOf(249), 50],
    ]);
    const all: ManifestEntry[] = [];
    for (const sh of index.shards) {
      expect(sh.key.startsWith(`restore-points/orders/${ctx.deploymentId}/raw/versions/`)).toBe(true);
      const entries = gunzipSync(await body(state, sh.key)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as ManifestEntry);
      expect(entries).toHaveLength(sh.count);
      expect(manifestChecksum(entries)).toBe(sh.checksum);
      all.push(...entries);
    }
    expect(manifestChecksum(all)).toBe(point.checksum);
    expect(contentChecksum(all)).toBe(point.details.contentChecksum);

    // Damage in every shard, and additions before, between and after the shards' key ranges.
    await put(bucket, keyOf(5), 'bad', { ContentType: 'application/json' });
    await del(bucket, keyOf(150));
    await put(bucket, keyOf(240), 'bad too');
    for (const k of ['p/0-early.csv', 'p/part-0099x.csv', 'p/zz-late.csv']) await put(bucket, k, 'added');
    const before = await versionFingerprint(bucket, '');

    // A second capture of the same deployment answers the same point (the index is written once).
    expect((await adapter.capture(unit, ctx)).checksum).toBe(point.checksum);

    // Above the threshold, restore writes nothing and hands over the shards.
    const handed = await adapter.restore(unit, point, ctx);
    expect(handed).toMatchObject({ writes: 0, shards: [0, 1, 2] });
    expect(await versionFingerprint(bucket, '')).toEqual(before);

    const first = await adapter.restoreShards(unit, point, [0], ctx);
    // Shard i answers for the keys after shard i-1's lastKey up to its own: p/part-0099x.csv is shard 1's.
    expect(first.changes).toMatchObject({ objectsCopied: 1, objectsDeleted: 1, deleteMarkersRemoved: 0, objectsUnchanged: 99 });
    const rest = await adapter.restoreShards(unit, point, [2, 1], ctx);
    expect(rest.changes).toMatchObject({ objectsCopied: 1, objectsDeleted: 2, deleteMarkersRemoved: 1, objectsUnchanged: 148 });
    expect(first.writes + rest.writes).toBe(6);

    expect(await liveEtags(s3, bucket, 'p/')).toEqual(captured);
    expect((await bytes(bucket, keyOf(5))).toString()).toBe(`v1 of ${keyOf(5)}`);
    const checks = await adapter.verify(unit, point, ctx);
    expect(checks.every((c) => c.ok), JSON.stringify(checks)).toBe(true);
    // Writes only where changed: 2 copies, 3 delete markers added, 1 marker removed; the neighbour untouched.
    const after = await versionFingerprint(bucket, '');
    expect(after.filter((v) => !before.includes(v))).toHaveLength(5);
    expect(before.filter((v) => !after.includes(v))).toHaveLength(1);
    expect(after.filter((v) => v.startsWith('p-archive/'))).toEqual(before.filter((v) => v.startsWith('p-archive/')));

    // Idempotent: a rerun of every shard writes nothing.
    const again = await adapter.restoreShards(unit, point, [0, 1, 2], ctx);
    expect(again.writes).toBe(0);
    expect(await versionFingerprint(bucket, '')).toEqual(after);
  }, SHARDED_TIMEOUT_MS);

  it('below the threshold a sharded point restores inline; a prefix that fits in one shard stays a single-file manifest', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    await putMany(bucket, Array.from({ length: 30 }, (_, i) => keyOf(i)));
    const sharded = createS3PrefixAdapter({ shardSize: 10, distributedThreshold: 1000 });
    const unit = unitFor(bucket, 'p/');
    const ctx = contextFor(state);
    const point = await sharded.capture(unit, ctx);
    expect(JSON.parse((await body(state, point.details.manifestKey)).toString()).shards).toHaveLength(3);
    await put(bucket, keyOf(25), 'bad');
    const outcome = await sharded.restore(unit, point, ctx);
    expect(outcome.shards).toBeUndefined();
    expect(outcome.changes).toMatchObject({ objectsCopied: 1, objectsUnchanged: 29 });
    expect((await sharded.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);

    const single = await createS3PrefixAdapter({ shardSize: 100 }).capture(unit, contextFor(state));
    expect(JSON.parse((await body(state, single.details.manifestKey)).toString()).format).toBe(MANIFEST_FORMAT);
  });

  it('an old single-file manifest (restore points sealed before sharding) still restores, even above the threshold', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    const v1 = await put(bucket, 'p/a.csv', 'a1', { ContentType: 'text/csv' });
    const v2 = await put(bucket, 'p/b.csv', 'b1', { ContentType: 'text/csv' });
    const ctx = contextFor(state);
    const unit = unitFor(bucket, 'p/');
    const list = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'p/' }));
    const entries: ManifestEntry[] = [
      { key: 'p/a.csv', versionId: v1!, etag: list.Versions!.find((v) => v.Key === 'p/a.csv')!.ETag!.replace(/"/g, ''), size: 2 },
      { key: 'p/b.csv', versionId: v2!, etag: list.Versions!.find((v) => v.Key === 'p/b.csv')!.ETag!.replace(/"/g, ''), size: 2 },
    ];
    // Written the way earlier versions wrote it: one JSON object with every entry.
    const manifestKey = manifestKeyFor('orders', ctx.deploymentId, 'raw');
    const old = {
      format: MANIFEST_FORMAT,
      pipeline: 'orders',
      deploymentId: ctx.deploymentId,
      unitId: 'raw',
      bucket,
      prefix: 'p/',
      capturedAt: new Date().toISOString(),
      count: 2,
      totalBytes: 4,
      checksum: manifestChecksum(entries),
      contentChecksum: contentChecksum(entries),
      entries,
    };
    await s3.send(new PutObjectCommand({ Bucket: state, Key: manifestKey, Body: JSON.stringify(old), ContentType: 'application/json' }));
    const point = {
      unitId: 'raw',
      type: 's3-prefix' as const,
      capturedAt: old.capturedAt,
      count: 2,
      checksum: old.checksum,
      details: { bucket, prefix: 'p/', manifestKey, totalBytes: 4, contentChecksum: old.contentChecksum },
    };
    await put(bucket, 'p/a.csv', 'bad');
    await del(bucket, 'p/b.csv');
    await put(bucket, 'p/c.csv', 'added');
    const adapter = createS3PrefixAdapter({ shardSize: 1, distributedThreshold: 1 });
    const outcome = await adapter.restore(unit, point, ctx);
    expect(outcome.shards).toBeUndefined();
    expect(outcome.changes).toMatchObject({ objectsCopied: 1, deleteMarkersRemoved: 1, objectsDeleted: 1 });
    expect((await bytes(bucket, 'p/a.csv')).toString()).toBe('a1');
    expect((await bytes(bucket, 'p/b.csv')).toString()).toBe('b1');
    expect((await adapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);
    // The same capture again answers the old point as it is (it is not rewritten as shards).
    expect((await adapter.capture(unit, ctx)).checksum).toBe(old.checksum);
  });
});
