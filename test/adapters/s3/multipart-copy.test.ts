import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { SOURCE_VERSION_META, createS3PrefixAdapter, s3PrefixAdapter } from '../../../core/adapters/s3-prefix.ts';
import { bytes, contextFor, headersOf, instrumentedClient, newBucket, put, sha256, unitFor } from './helpers.ts';

const MiB = 1024 ** 2;

describe('s3-prefix multipart copy over the threshold (moto)', () => {
  it('copies a 12 MiB captured version in 5 MiB UploadPartCopy ranges, keeping bytes, Content-Type, metadata and tags', async () => {
    const adapter = createS3PrefixAdapter({ multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    const original = randomBytes(12 * MiB);
    await put(bucket, 'p/big.parquet', original, { ContentType: 'application/x-parquet', Metadata: { owner: 'etl', run: '41' }, Tagging: 'tier=gold&pii=no' });
    await put(bucket, 'p/small.csv', 'small', { ContentType: 'text/csv' });
    const unit = unitFor(bucket, 'p/');
    const ctx = contextFor(state);
    const point = await adapter.capture(unit, ctx);
    await put(bucket, 'p/big.parquet', randomBytes(12 * MiB), { ContentType: 'application/json', Metadata: { owner: 'bad' } });
    await put(bucket, 'p/small.csv', 'bad', { ContentType: 'application/json' });

    const diff = await adapter.diff(unit, point, ctx);
    expect(diff.changes).toMatchObject({ objectsCopied: 2, bytesCopied: 12 * MiB + 5 });
    expect(diff.notes.join(' ')).toContain('multipart copy');

    const counted = instrumentedClient();
    const outcome = await adapter.restore(unit, point, { ...ctx, s3: counted.client });
    expect(outcome.changes).toMatchObject({ objectsCopied: 2, objectsUnchanged: 0, bytesCopied: 12 * MiB + 5 });
    const calls = counted.attempts.map((a) => a.command);
    expect(calls.filter((c) => c === 'UploadPartCopyCommand')).toHaveLength(3);
    expect(counted.attempts.filter((a) => a.command === 'UploadPartCopyCommand').map((a) => a.input.CopySourceRange).sort()).toEqual([
      `bytes=0-${5 * MiB - 1}`,
      `bytes=${10 * MiB}-${12 * MiB - 1}`,
      `bytes=${5 * MiB}-${10 * MiB - 1}`,
    ]);
    expect(counted.attempts.filter((a) => a.command === 'UploadPartCopyCommand').every((a) => String(a.input.CopySource).includes('?versionId='))).toBe(true);
    expect(calls.filter((c) => c === 'CreateMultipartUploadCommand')).toHaveLength(1);
    expect(calls.filter((c) => c === 'CompleteMultipartUploadCommand')).toHaveLength(1);
    expect(counted.attempts.filter((a) => a.command === 'CopyObjectCommand').map((a) => a.input.Key)).toEqual(['p/small.csv']);

    // Read back: bytes, Content-Type, user metadata (plus our marker), tags.
    expect(sha256(await bytes(bucket, 'p/big.parquet'))).toBe(sha256(original));
    const h = await headersOf(bucket, 'p/big.parquet');
    expect(h.contentType).toBe('application/x-parquet');
    expect(h.metadata).toEqual({ owner: 'etl', run: '41', [SOURCE_VERSION_META]: expect.any(String) });
    expect(h.tags).toEqual({ tier: 'gold', pii: 'no' });
    expect(h.etag).toMatch(/-3"$/);
    expect((await headersOf(bucket, 'p/small.csv')).contentType).toBe('text/csv');

    expect((await adapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);
    // The production adapter (5 GiB threshold) recognises the multipart copy too: nothing to write.
    expect((await s3PrefixAdapter.diff(unit, point, ctx)).writes).toBe(0);
    expect((await adapter.restore(unit, point, ctx)).writes).toBe(0);
  }, 120_000);
});
