import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { createS3PrefixAdapter, s3PrefixAdapter } from '../../../core/adapters/s3-prefix.ts';
import { uniqueName } from '../../support/aws.ts';
import {
  accessDenied,
  bytes,
  connectionReset,
  contextFor,
  del,
  expectRejects,
  instrumentedClient,
  liveContent,
  newBucket,
  put,
  putMultipart,
  sha256,
  slowDown,
  unitFor,
  versionFingerprint,
} from './helpers.ts';

const fast = createS3PrefixAdapter({ retry: { baseDelayMs: 5, maxDelayMs: 50 } });

async function scenario(prefix: string, bucket: string) {
  const captured: Record<string, string> = {};
  for (let i = 0; i < 24; i++) captured[`${prefix}k${String(i).padStart(2, '0')}.csv`] = `v1 ${i}`;
  for (const [k, v] of Object.entries(captured)) await put(bucket, k, v, { ContentType: 'text/csv', Metadata: { batch: '1' } });
  return captured;
}

async function deploy(prefix: string, bucket: string) {
  for (let i = 0; i < 12; i++) await put(bucket, `${prefix}k${String(i).padStart(2, '0')}.csv`, `bad ${i}`, { ContentType: 'application/json' });
  for (let i = 12; i < 16; i++) await del(bucket, `${prefix}k${String(i).padStart(2, '0')}.csv`);
  for (let i = 0; i < 3; i++) await put(bucket, `${prefix}added-${i}.csv`, 'added');
}

describe('s3-prefix retries (moto, faults injected at the SDK middleware)', () => {
  it('throttled and reset copies are retried by the SDK, once per attempt it makes, never again by the adapter', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    const captured = await scenario('p/', bucket);
    const ctx = contextFor(state);
    const point = await s3PrefixAdapter.capture(unitFor(bucket, 'p/'), ctx);
    await deploy('p/', bucket);

    // First attempt of every copy fails (503 SlowDown or ECONNRESET); k00 always fails.
    const seen = new Map<string, number>();
    let faulty = true;
    const { client, attempts } = instrumentedClient(({ command, input }) => {
      if (command !== 'CopyObjectCommand' || !faulty) return;
      const key = String(input.Key);
      const n = (seen.get(key) ?? 0) + 1;
      seen.set(key, n);
      if (key === 'p/k00.csv' || n === 1) throw key.endsWith('1.csv') ? connectionReset() : slowDown();
    });
    const error = await expectRejects(fast.restore(unitFor(bucket, 'p/'), point, { ...ctx, s3: client }));
    expect(error.name).toBe('SlowDown');
    // The SDK (3 attempts by default) retried it; the adapter did not add a second loop around the SDK's.
    expect(attempts.filter((a) => a.command === 'CopyObjectCommand' && a.input.Key === 'p/k00.csv')).toHaveLength(3);
    for (const [key, n] of seen) if (key !== 'p/k00.csv') expect(n, key).toBeLessThanOrEqual(2);

    // The fault gone, the rerun converges.
    faulty = false;
    const rerun = await fast.restore(unitFor(bucket, 'p/'), point, { ...ctx, s3: client });
    expect(rerun.changes.objectsCopied).toBeGreaterThanOrEqual(1);
    expect(await liveContent(bucket, 'p/')).toEqual(captured);
    expect((await fast.verify(unitFor(bucket, 'p/'), point, ctx)).every((c) => c.ok)).toBe(true);
  }, 60_000);

  it('a client without retries (maxAttempts 1): the adapter retries throttled requests itself, with backoff', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    const captured = await scenario('p/', bucket);
    const ctx = contextFor(state);
    const point = await s3PrefixAdapter.capture(unitFor(bucket, 'p/'), ctx);
    await deploy('p/', bucket);
    const seen = new Map<string, number>();
    const { client, attempts } = instrumentedClient(
      ({ command, input }) => {
        if (command !== 'CopyObjectCommand' && command !== 'HeadObjectCommand' && command !== 'DeleteObjectsCommand') return;
        const id = `${command} ${String(input.Key ?? 'batch')}`;
        const n = (seen.get(id) ?? 0) + 1;
        seen.set(id, n);
        if (n <= 2) throw n === 1 ? slowDown() : connectionReset();
      },
      { maxAttempts: 1 },
    );
    const outcome = await fast.restore(unitFor(bucket, 'p/'), point, { ...ctx, s3: client });
    expect(outcome.changes).toMatchObject({ objectsCopied: 12, deleteMarkersRemoved: 4, objectsDeleted: 3 });
    expect(await liveContent(bucket, 'p/')).toEqual(captured);
    // Every request the adapter sent went through 3 attempts: 2 failures then success.
    const copies = attempts.filter((a) => a.command === 'CopyObjectCommand');
    expect(copies.filter((a) => a.ok)).toHaveLength(12);
    expect(copies).toHaveLength(36);
  }, 60_000);

  it('DeleteObjects: per-key SlowDown/InternalError/ServiceUnavailable are resent (only those keys); AccessDenied fails naming the key', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    await put(bucket, 'p/keep.csv', 'keep');
    const ctx = contextFor(state);
    const point = await s3PrefixAdapter.capture(unitFor(bucket, 'p/'), ctx);
    const added = [...Array(6).keys()].map((i) => `p/new-${i}.csv`);
    for (const k of added) await put(bucket, k, 'new');

    // Per-key errors live inside a 200 response: the SDK cannot see them. Rewrite the response at the initialize step.
    const failures: Record<string, string[]> = {
      'p/new-1.csv': ['SlowDown', 'SlowDown'],
      'p/new-2.csv': ['InternalError'],
      'p/new-3.csv': ['ServiceUnavailable'],
    };
    const sent: string[][] = [];
    const { client } = instrumentedClient();
    const install = (codes: Record<string, string[]>) =>
      client.middlewareStack.add(
        (next) => async (args) => {
          const input = args.input as { Delete?: { Objects?: { Key: string }[] } };
          if (!input.Delete?.Objects) return next(args);
          sent.push(input.Delete.Objects.map((o) => o.Key!));
          const failing = input.Delete.Objects.filter((o) => (codes[o.Key!]?.length ?? 0) > 0);
          const rest = input.Delete.Objects.filter((o) => !failing.includes(o));
          const errors = failing.map((o) => ({ Key: o.Key, Code: codes[o.Key!]!.shift(), Message: 'injected' }));
          const result =
            rest.length > 0
              ? await next({ ...args, input: { ...input, Delete: { ...input.Delete, Objects: rest } } as typeof args.input })
              : { output: { $metadata: { httpStatusCode: 200 } }, response: {} };
          const output = result.output as { Errors?: unknown[] };
          output.Errors = [...(output.Errors ?? []), ...errors];
          return result;
        },
        { step: 'initialize', name: 'perKeyErrors', override: true },
      );
    install(failures);
    const outcome = await fast.restore(unitFor(bucket, 'p/'), point, { ...ctx, s3: client });
    expect(outcome.changes).toMatchObject({ objectsDeleted: 6 });
    expect(sent).toEqual([added, ['p/new-1.csv', 'p/new-2.csv', 'p/new-3.csv'], ['p/new-1.csv']]);
    expect(await liveContent(bucket, 'p/')).toEqual({ 'p/keep.csv': 'keep' });

    // Non-retryable: the restore fails naming the key; the others are done; nothing lost; the rerun converges.
    for (const k of added) await put(bucket, k, 'again');
    const denied: Record<string, string[]> = { 'p/new-4.csv': ['AccessDenied'] };
    install(denied);
    sent.length = 0;
    const error = await expectRejects(fast.restore(unitFor(bucket, 'p/'), point, { ...ctx, s3: client }));
    expect(error.message).toMatch(/"p\/new-4\.csv": AccessDenied/);
    expect(sent).toHaveLength(1);
    expect(await liveContent(bucket, 'p/')).toEqual({ 'p/keep.csv': 'keep', 'p/new-4.csv': 'again' });
    const rerun = await fast.restore(unitFor(bucket, 'p/'), point, { ...ctx, s3: client });
    expect(rerun.changes).toMatchObject({ objectsDeleted: 1 });
    expect(await liveContent(bucket, 'p/')).toEqual({ 'p/keep.csv': 'keep' });
  });
});

describe('s3-prefix: a restore killed midway resumes without rewriting (moto)', () => {
  it('after a non-retryable failure at write 7, the rerun finishes: writes over both runs ≤ a clean run + 1', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    const big = randomBytes(5 * 1024 ** 2 + 1234);

    async function prepare(prefix: string) {
      const captured = await scenario(prefix, bucket);
      await putMultipart(bucket, `${prefix}multipart.bin`, big, 5 * 1024 ** 2, { ContentType: 'application/octet-stream', Metadata: { parts: '2' } });
      const ctx = contextFor(state);
      const point = await s3PrefixAdapter.capture(unitFor(bucket, prefix), ctx);
      await deploy(prefix, bucket);
      await put(bucket, `${prefix}multipart.bin`, 'overwritten');
      return { captured, ctx, point };
    }

    // A clean run, counted.
    const clean = await prepare('clean/');
    const counted = instrumentedClient();
    await s3PrefixAdapter.restore(unitFor(bucket, 'clean/'), clean.point, { ...clean.ctx, s3: counted.client });
    const cleanWrites = counted.writes().length;
    expect(cleanWrites).toBeGreaterThan(10);

    // The same history, killed after 7 successful writes.
    const run = await prepare('killed/');
    let successful = 0;
    let killed = false;
    const faulty = instrumentedClient(({ command }) => {
      if (!['CopyObjectCommand', 'DeleteObjectsCommand', 'DeleteObjectCommand', 'UploadPartCopyCommand'].includes(command)) return;
      if (!killed && successful >= 7) {
        killed = true;
        throw accessDenied();
      }
      successful++;
    });
    const unit = unitFor(bucket, 'killed/');
    const error = await expectRejects(s3PrefixAdapter.restore(unit, run.point, { ...run.ctx, s3: faulty.client }));
    expect(error.name).toBe('AccessDenied');
    expect((await s3PrefixAdapter.verify(unit, run.point, run.ctx)).every((c) => c.ok)).toBe(false);
    await s3PrefixAdapter.restore(unit, run.point, { ...run.ctx, s3: faulty.client });

    expect(faulty.writes().length).toBeLessThanOrEqual(cleanWrites + 1);
    expect(faulty.writes().filter((w) => w.ok).length).toBe(cleanWrites);
    const { ['killed/multipart.bin']: _mp, ...rest } = await liveContent(bucket, 'killed/');
    expect(rest).toEqual(Object.fromEntries(Object.entries(run.captured).map(([k, v]) => [k, v])));
    expect(sha256(await bytes(bucket, 'killed/multipart.bin'))).toBe(sha256(big));
    expect((await s3PrefixAdapter.verify(unit, run.point, run.ctx)).every((c) => c.ok)).toBe(true);
  }, 120_000);

  it('a restored multipart-uploaded object (ETag "-N" not reproduced by a copy) is recognised: a second restore writes 0', async () => {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    const big = randomBytes(5 * 1024 ** 2 + 99);
    await putMultipart(bucket, 'p/mp.bin', big, 5 * 1024 ** 2, { ContentType: 'application/x-parquet', Metadata: { owner: 'etl' } });
    const ctx = contextFor(state, uniqueName('d'));
    const unit = unitFor(bucket, 'p/');
    const point = await s3PrefixAdapter.capture(unit, ctx);
    await put(bucket, 'p/mp.bin', 'bad');
    const first = await s3PrefixAdapter.restore(unit, point, ctx);
    expect(first.changes).toMatchObject({ objectsCopied: 1, bytesCopied: big.length });
    expect(sha256(await bytes(bucket, 'p/mp.bin'))).toBe(sha256(big));
    expect((await s3PrefixAdapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);

    const before = await versionFingerprint(bucket, 'p/');
    const counted = instrumentedClient();
    const second = await s3PrefixAdapter.restore(unit, point, { ...ctx, s3: counted.client });
    expect(second).toMatchObject({ writes: 0, changes: { objectsCopied: 0, objectsUnchanged: 1 } });
    expect(counted.writes()).toEqual([]);
    expect(await versionFingerprint(bucket, 'p/')).toEqual(before);
  }, 60_000);
});
