import { describe, expect, it } from 'vitest';
import { s3PrefixAdapter } from '../../../core/adapters/s3-prefix.ts';
import { contextFor, del, headersOf, instrumentedClient, liveContent, newBucket, put, unitFor, versionFingerprint } from './helpers.ts';

describe('s3-prefix metadata and dry run (moto)', () => {
  it('restores Content-Type and user metadata; a metadata-only change (same bytes) is found by verify and restored', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    await put(bucket, 'p/typed.csv', 'a,b', { ContentType: 'text/csv', Metadata: { owner: 'etl', schema: 'v3' } });
    await put(bucket, 'p/relabelled.csv', 'x,y', { ContentType: 'text/csv', Metadata: { owner: 'etl' } });
    await put(bucket, 'p/plain.txt', 'plain');
    const unit = unitFor(bucket, 'p/');
    const ctx = contextFor(state);
    const point = await s3PrefixAdapter.capture(unit, ctx);

    await put(bucket, 'p/typed.csv', '{"a":1}', { ContentType: 'application/json', Metadata: { owner: 'bad' } });
    await put(bucket, 'p/relabelled.csv', 'x,y', { ContentType: 'application/octet-stream', Metadata: { owner: 'etl' } });
    await put(bucket, 'p/plain.txt', 'plain'); // same bytes, same metadata: not a change

    const content = (await s3PrefixAdapter.verify(unit, point, ctx)).find((c) => c.name === 'content')!;
    expect(content).toMatchObject({ ok: false, actual: '0 missing, 0 extra, 1 changed, 1 metadata differs' });
    expect(content.detail).toContain('"p/relabelled.csv" (contentType "application/octet-stream" vs "text/csv")');

    const outcome = await s3PrefixAdapter.restore(unit, point, ctx);
    expect(outcome.changes).toMatchObject({ objectsCopied: 2, objectsUnchanged: 1 });
    expect(await headersOf(bucket, 'p/typed.csv')).toMatchObject({ contentType: 'text/csv', metadata: { owner: 'etl', schema: 'v3' } });
    expect((await headersOf(bucket, 'p/relabelled.csv')).contentType).toBe('text/csv');
    expect(await liveContent(bucket, 'p/')).toEqual({ 'p/typed.csv': 'a,b', 'p/relabelled.csv': 'x,y', 'p/plain.txt': 'plain' });
    expect((await s3PrefixAdapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);
    expect((await s3PrefixAdapter.restore(unit, point, ctx)).writes).toBe(0);
  });

  it('a delete marker current at capture: the key is not in the point; recreated later, it is hidden again', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    await put(bucket, 'p/was-deleted.csv', 'old');
    await del(bucket, 'p/was-deleted.csv');
    await put(bucket, 'p/kept.csv', 'kept');
    const unit = unitFor(bucket, 'p/');
    const ctx = contextFor(state);
    const point = await s3PrefixAdapter.capture(unit, ctx);
    expect(point.count).toBe(1);
    await put(bucket, 'p/was-deleted.csv', 'new');
    const outcome = await s3PrefixAdapter.restore(unit, point, ctx);
    expect(outcome.changes).toMatchObject({ objectsDeleted: 1, objectsCopied: 0, deleteMarkersRemoved: 0 });
    expect(await liveContent(bucket, 'p/')).toEqual({ 'p/kept.csv': 'kept' });
  });

  it('diff reports copies, un-deletes, deletes and bytes per prefix without sending a single write request', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    await put(bucket, 'p/changed.csv', '12345');
    await put(bucket, 'p/deleted.csv', 'abc');
    await put(bucket, 'p/same.csv', 'same');
    const unit = unitFor(bucket, 'p/');
    const ctx = contextFor(state);
    const point = await s3PrefixAdapter.capture(unit, ctx);
    await put(bucket, 'p/changed.csv', 'bad');
    await del(bucket, 'p/deleted.csv');
    await put(bucket, 'p/added.csv', 'x');
    const before = await versionFingerprint(bucket);

    const { client, attempts, writes } = instrumentedClient();
    const diff = await s3PrefixAdapter.diff(unit, point, { ...ctx, s3: client });
    expect(diff).toMatchObject({
      changes: { objectsCopied: 1, deleteMarkersRemoved: 1, objectsDeleted: 1, objectsUnchanged: 1, bytesCopied: 5 },
      writes: 3,
    });
    expect(attempts.length).toBeGreaterThan(0);
    expect(writes()).toEqual([]);
    expect(await versionFingerprint(bucket)).toEqual(before);
  });
});
