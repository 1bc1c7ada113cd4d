import { describe, expect, it } from 'vitest';
import { copyManifestSchema, createS3PrefixAdapter, s3PrefixAdapter } from '../../../core/adapters/s3-prefix.ts';
import {
  contextFor,
  del,
  headersOf,
  instrumentedClient,
  liveContent,
  newBucket,
  put,
  text,
  unitFor,
  versionFingerprint,
} from './helpers.ts';

const keys = ['p/a.csv', 'p/with space+plus%#?.csv', 'p/ü/日本/😀.csv', 'p/deep/1/2/3/x.csv', 'p/empty.bin'];

async function setUp(versioned: boolean) {
  const bucket = await newBucket('flat', versioned);
  const state = await newBucket('state', false);
  const captured: Record<string, string> = {};
  for (const k of keys) {
    captured[k] = k.endsWith('empty.bin') ? '' : `captured ${k}`;
    await put(bucket, k, captured[k]!, { ContentType: 'text/csv', Metadata: { origin: 'etl' } });
  }
  await put(bucket, 'p-archive/z.csv', 'neighbour');
  await put(bucket, 'p', 'exact key');
  const ctx = contextFor(state);
  const unit = unitFor(bucket, 'p/', 'copy');
  return { bucket, state, captured, ctx, unit };
}

async function badDeploy(bucket: string) {
  await put(bucket, 'p/a.csv', 'bad a', { ContentType: 'application/json' });
  await del(bucket, 'p/deep/1/2/3/x.csv');
  await put(bucket, 'p/ü/日本/😀.csv', 'captured p/ü/日本/😀.csv', { ContentType: 'application/json', Metadata: { origin: 'etl' } }); // same bytes, other type
  await put(bucket, 'p/added.csv', 'added');
  await put(bucket, 'p-archive/z.csv', 'neighbour v2');
}

describe('s3-prefix mode copy (moto)', () => {
  it('an unversioned bucket: capture copies the prefix into the state bucket; restore quarantines, writes only what differs, reruns write 0', async () => {
    const { bucket, state, captured, ctx, unit } = await setUp(false);
    const point = await s3PrefixAdapter.capture(unit, ctx);
    expect(point).toMatchObject({ count: keys.length, details: { mode: 'copy' } });
    const folder = `restore-points/orders/${ctx.deploymentId}/raw/`;
    for (const k of keys) {
      expect(await text(state, `${folder}objects/${k}`)).toBe(captured[k]);
      expect((await headersOf(state, `${folder}objects/${k}`)).contentType).toBe('text/csv');
    }
    const manifest = copyManifestSchema.parse(JSON.parse(await text(state, point.details.manifestKey)));
    expect(manifest.entries.map((e) => [e.key, e.size, e.contentType])).toContainEqual(['p/a.csv', captured['p/a.csv']!.length, 'text/csv']);

    await badDeploy(bucket);
    expect((await s3PrefixAdapter.verify(unit, point, ctx)).find((c) => c.name === 'content')).toMatchObject({ ok: false, actual: '1 missing, 1 extra, 1 changed, 1 metadata differs' });

    // Dry run: counts, bytes, and not one write request.
    const counted = instrumentedClient();
    const diff = await s3PrefixAdapter.diff(unit, point, { ...ctx, s3: counted.client });
    const expected = { objectsCopied: 3, objectsDeleted: 1, objectsQuarantined: 3, objectsUnchanged: 2, deleteMarkersRemoved: 0 };
    expect(diff.changes).toMatchObject(expected);
    expect(counted.writes()).toEqual([]);

    const outcome = await s3PrefixAdapter.restore(unit, point, ctx);
    expect(outcome).toMatchObject({ changes: expected, writes: 7, keptAt: `s3://${state}/quarantine/${ctx.runId}/raw/` });
    expect(await liveContent(bucket, 'p/')).toEqual(captured);
    for (const k of keys) expect((await headersOf(bucket, k)).contentType, k).toBe('text/csv');
    expect((await headersOf(bucket, 'p/a.csv')).metadata).toEqual({ origin: 'etl' });
    // What it overwrote or deleted is in the quarantine, byte for byte.
    const q = `quarantine/${ctx.runId}/raw/`;
    expect(await text(state, `${q}p/a.csv`)).toBe('bad a');
    expect(await text(state, `${q}p/added.csv`)).toBe('added');
    expect((await headersOf(state, `${q}p/ü/日本/😀.csv`)).contentType).toBe('application/json');
    // Neighbours untouched.
    expect(await text(bucket, 'p-archive/z.csv')).toBe('neighbour v2');
    expect(await text(bucket, 'p')).toBe('exact key');
    expect((await s3PrefixAdapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);

    const rerunCount = instrumentedClient();
    const rerun = await s3PrefixAdapter.restore(unit, point, { ...ctx, s3: rerunCount.client });
    expect(rerun).toMatchObject({ writes: 0, changes: { objectsUnchanged: keys.length } });
    expect(rerunCount.writes()).toEqual([]);

    // Release deletes the copies and the manifest, never the quarantine nor data.
    const data = await liveContent(bucket, '');
    await s3PrefixAdapter.release(unit, point, ctx);
    expect(await versionFingerprint(state, 'restore-points/')).toEqual([]);
    expect(await text(state, `${q}p/a.csv`)).toBe('bad a');
    expect(await liveContent(bucket, '')).toEqual(data);
  }, 60_000);

  it('is allowed on a versioned bucket, and copies objects over the threshold part by part', async () => {
    const adapter = createS3PrefixAdapter({ multipartThresholdBytes: 5 * 1024 ** 2, partSizeBytes: 5 * 1024 ** 2 });
    const { bucket, captured, ctx, unit } = await setUp(true);
    const big = Buffer.alloc(11 * 1024 ** 2, 7);
    await put(bucket, 'p/big.bin', big, { ContentType: 'application/x-big' });
    const point = await adapter.capture(unit, ctx);
    expect(point.details.mode).toBe('copy');
    await badDeploy(bucket);
    await put(bucket, 'p/big.bin', 'small now');
    await adapter.restore(unit, point, ctx);
    expect(await liveContent(bucket, 'p/')).toEqual({ ...captured, 'p/big.bin': big.toString('utf8') });
    expect((await headersOf(bucket, 'p/big.bin')).contentType).toBe('application/x-big');
    expect((await adapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);
    expect((await adapter.restore(unit, point, ctx)).writes).toBe(0);
  }, 60_000);
});
