import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PutBucketLifecycleConfigurationCommand } from '@aws-sdk/client-s3';
import { DEFAULT_RETRY_POLICY, SHARDED_MANIFEST_FORMAT, createS3PrefixAdapter, s3PrefixAdapter } from '../../../core/adapters/s3-prefix.ts';
import { isShardIndex, loadPointManifest, loadPointStored } from '../../../core/adapters/s3/manifest.ts';
import { entriesAt, windowFromRules } from '../../../core/adapters/s3/as-of.ts';
import type { Listing } from '../../../core/adapters/s3/io.ts';
import { OutsideRestorableWindowError, PreflightError } from '../../../core/errors.ts';
import { bytes, contextFor, del, expectRejects, liveContent, newBucket, put, s3, unitFor, versionFingerprint } from './helpers.ts';

/**
 * s3-prefix `asOf`: the prefix's state at a time T, from its version history. First the rule itself over random
 * histories (no I/O: many cases), then the same on moto, where LastModified is stamped by the server's clock.
 */

const KEYS = ['p/a.csv', 'p/b.csv', 'p/c/d.csv', 'p/e.csv'];

/** A history: generations of writes, each in its own second, a key written at most once a generation (a put writes a new version, a delete a marker). */
const history = fc.array(fc.uniqueArray(fc.record({ key: fc.nat({ max: KEYS.length - 1 }), kind: fc.constantFrom<'put' | 'delete'>('put', 'put', 'delete') }), { minLength: 1, maxLength: 4, selector: (o) => o.key }), {
  minLength: 1,
  maxLength: 8,
});

describe('s3-prefix as of a time: the rule (pure)', () => {
  it('for every history and every time, the entries are exactly the keys live at that time, each with the version it then held', () => {
    fc.assert(
      fc.property(history, fc.nat({ max: 9 }), (generations, pick) => {
        const t0 = Date.UTC(2026, 10, 1);
        const listing: Listing = new Map();
        const model: Map<string, string>[] = [];
        const state = new Map<string, string>();
        let n = 0;
        generations.forEach((ops, g) => {
          const at = t0 + g * 1000;
          for (const op of ops) {
            const key = KEYS[op.key]!;
            let h = listing.get(key);
            if (!h) listing.set(key, (h = { key, versions: [], markers: [], latest: undefined }));
            const versionId = `v${++n}`;
            if (op.kind === 'put') {
              const entry = { versionId, etag: `e${n}`, size: n, lastModified: at, storageClass: 'STANDARD' };
              h.versions.unshift(entry);
              h.latest = { kind: 'version', entry };
              state.set(key, versionId);
            } else {
              const entry = { versionId, lastModified: at };
              h.markers.unshift(entry);
              h.latest = { kind: 'marker', entry };
              state.delete(key);
            }
          }
          model.push(new Map(state));
        });
        const g = pick % (generations.length + 1);
        const at = g === 0 ? t0 - 500 : t0 + (g - 1) * 1000 + 400;
        const expected = g === 0 ? new Map<string, string>() : model[g - 1]!;
        const { entries, ambiguous } = entriesAt(listing, at);
        expect(ambiguous).toEqual([]);
        expect(new Map(entries.map((e) => [e.key, e.versionId]))).toEqual(expected);
        expect(entries.map((e) => e.key)).toEqual([...entries.map((e) => e.key)].sort());
      }),
      { numRuns: 300 },
    );
  });

  it('a version and a delete marker in the same second: the one listed latest wins, else the version (and the key is named)', () => {
    const entry = { versionId: 'v1', etag: 'e', size: 1, lastModified: 5000, storageClass: 'STANDARD' };
    const marker = { versionId: 'm1', lastModified: 5000 };
    const deleted: Listing = new Map([['p/x', { key: 'p/x', versions: [entry], markers: [marker], latest: { kind: 'marker', entry: marker } }]]);
    expect(entriesAt(deleted, 5000)).toEqual({ entries: [], ambiguous: ['p/x'] });
    const older = { ...marker, lastModified: 5000 };
    const later = { versionId: 'm2', lastModified: 9000 };
    const buried: Listing = new Map([['p/x', { key: 'p/x', versions: [entry], markers: [later, older], latest: { kind: 'marker', entry: later } }]]);
    expect(entriesAt(buried, 5000)).toEqual({ entries: [{ key: 'p/x', versionId: 'v1', etag: 'e', size: 1 }], ambiguous: ['p/x'] });
  });

  it('the window: the shortest noncurrent expiry of the rules on the prefix, rules elsewhere or disabled ignored', () => {
    const now = new Date('2026-11-29T12:00:00Z');
    expect(windowFromRules([], 'p/', now)).toEqual({ latest: now, notes: [] });
    const w = windowFromRules(
      [
        { ID: 'long', Status: 'Enabled', Filter: { Prefix: 'p/' }, NoncurrentVersionExpiration: { NoncurrentDays: 30 } },
        { ID: 'short', Status: 'Enabled', Filter: {}, NoncurrentVersionExpiration: { NoncurrentDays: 7, NewerNoncurrentVersions: 3 } },
        { ID: 'off', Status: 'Disabled', Filter: { Prefix: 'p/' }, NoncurrentVersionExpiration: { NoncurrentDays: 1 } },
        { ID: 'other', Status: 'Enabled', Filter: { Prefix: 'q/' }, NoncurrentVersionExpiration: { NoncurrentDays: 1 } },
      ],
      'p/',
      now,
    );
    expect(w.earliest?.toISOString()).toBe('2026-11-22T12:00:00.000Z');
    expect(w.notes[0]).toContain('lifecycle rule "short" expires noncurrent versions after 7 day(s)');
    expect(w.notes[1]).toContain('keeps only 3 newer noncurrent version(s)');
  });
});

/** Waits until the clock is in a later second than `t` (moto stamps LastModified to the second). */
async function nextSecond(t: number): Promise<void> {
  await new Promise((r) => setTimeout(r, 1000 - (t % 1000) + 30));
}

describe('s3-prefix as of a time (moto)', () => {
  it('over random histories, the as-of manifest names exactly the versions live at each time, and a restore from it brings the bytes back', async () => {
    await fc.assert(
      // A key is written at most once a generation: a version and a delete marker of one key in the same second cannot
      // be ordered from a listing (see entriesAt), so such histories are not ones the rule can be held to.
      fc.asyncProperty(fc.array(fc.uniqueArray(fc.record({ key: fc.nat({ max: 2 }), kind: fc.constantFrom<'put' | 'delete'>('put', 'put', 'delete') }), { minLength: 1, maxLength: 3, selector: (o) => o.key }), { minLength: 2, maxLength: 2 }), async (generations) => {
        const bucket = await newBucket('asof', true);
        const state = await newBucket('state', false);
        const times: { at: Date; live: Record<string, string> }[] = [];
        let n = 0;
        for (const ops of generations) {
          if (times.length > 0) await nextSecond(times[times.length - 1]!.at.getTime());
          for (const op of ops) {
            const key = KEYS[op.key]!;
            if (op.kind === 'put') await put(bucket, key, `${key} #${++n}`);
            else await del(bucket, key);
          }
          const at = Date.now();
          times.push({ at: new Date(at), live: await liveContent(bucket, 'p/') });
        }
        // Resolve each recorded time; then restore the first one and read the bytes back.
        for (const [i, t] of times.entries()) {
          const { point } = await s3PrefixAdapter.asOf(unitFor(bucket, 'p/'), t.at, contextFor(state, `at-${i}`));
          expect(point.count).toBe(Object.keys(t.live).length);
          const manifest = await loadPointManifest(unitFor(bucket, 'p/'), point, contextFor(state, `at-${i}`), DEFAULT_RETRY_POLICY);
          const listed = await Promise.all(manifest.entries.map(async (e) => [e.key, (await bytes(bucket, e.key, (e as { versionId: string }).versionId)).toString('utf8')] as const));
          expect(Object.fromEntries(listed)).toEqual(t.live);
        }
        const ctx = contextFor(state, 'at-0');
        const unit = unitFor(bucket, 'p/');
        const { point } = await s3PrefixAdapter.asOf(unit, times[0]!.at, ctx);
        const versionsBefore = await versionFingerprint(bucket, 'p/');
        await s3PrefixAdapter.restore(unit, point, ctx);
        expect(await liveContent(bucket, 'p/')).toEqual(times[0]!.live);
        expect((await s3PrefixAdapter.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);
        // Nothing lost: every data version there before the restore is still there (a delete marker holds no data: the
        // restore removes the one over a key deleted since, uncovering its version).
        const after = new Set(await versionFingerprint(bucket, 'p/'));
        expect(versionsBefore.filter((v) => v.includes(' v ') && !after.has(v))).toEqual([]);
      }),
      // One random history, and always the one that found a wrong check once: a key put, then deleted (its restore
      // removes the marker).
      { numRuns: 1, examples: [[[[{ key: 0, kind: 'put' }], [{ key: 0, kind: 'delete' }]]]] },
    );
  });

  it('is idempotent: resolving the same time again for the same deployment gives the same point, even after later writes', async () => {
    const bucket = await newBucket('asof', true);
    const state = await newBucket('state', false);
    await put(bucket, 'p/a.csv', 'one');
    const at = new Date();
    await nextSecond(at.getTime());
    const unit = unitFor(bucket, 'p/');
    const first = await s3PrefixAdapter.asOf(unit, at, contextFor(state, 'at-x'));
    await put(bucket, 'p/a.csv', 'two');
    await put(bucket, 'p/b.csv', 'new');
    const second = await s3PrefixAdapter.asOf(unit, at, contextFor(state, 'at-x'));
    expect(second.point).toEqual(first.point);
    expect(first.shows[0]).toMatch(new RegExp(`^s3://${bucket}/p/ as of ${at.toISOString().slice(0, 19)}\\.\\d{3}Z: 1 keys, 0 differ from now$`));
    expect(second.shows[0]).toContain('1 keys, 2 differ from now (1 back to an older version, 0 deleted since, 1 added since)');
  });

  it('above the shard size, writes the sharded manifest a capture writes: the Distributed Map path restores it shard by shard', async () => {
    const sharded = createS3PrefixAdapter({ shardSize: 2, distributedThreshold: 1 });
    const bucket = await newBucket('asof', true);
    const state = await newBucket('state', false);
    for (const k of ['a', 'b', 'c', 'd', 'e']) await put(bucket, `p/${k}.csv`, `good ${k}`);
    const at = new Date();
    const good = await liveContent(bucket, 'p/');
    await nextSecond(at.getTime());
    await put(bucket, 'p/b.csv', 'bad');
    await del(bucket, 'p/d.csv');
    await put(bucket, 'p/f.csv', 'new');
    const unit = unitFor(bucket, 'p/');
    const ctx = contextFor(state, 'at-s');
    const { point } = await sharded.asOf(unit, at, ctx);
    const stored = await loadPointStored(unit, point, ctx, DEFAULT_RETRY_POLICY);
    expect(stored.format).toBe(SHARDED_MANIFEST_FORMAT);
    expect(isShardIndex(stored) && stored.shards.map((sh) => sh.count)).toEqual([2, 2, 1]);
    const outcome = await sharded.restore(unit, point, ctx);
    expect(outcome.shards).toEqual([0, 1, 2]);
    await sharded.restoreShards(unit, point, outcome.shards!, ctx);
    expect(await liveContent(bucket, 'p/')).toEqual(good);
    expect((await sharded.verify(unit, point, ctx)).every((c) => c.ok)).toBe(true);
  });

  it('refuses an unversioned bucket (naming it), a time before the lifecycle window (naming the window) and a time after now', async () => {
    const plain = await newBucket('plain', false);
    const state = await newBucket('state', false);
    await put(plain, 'p/a.csv', 'a');
    const unversioned = await expectRejects(s3PrefixAdapter.asOf(unitFor(plain, 'p/'), new Date(Date.now() - 60_000), contextFor(state, 'at-y')));
    expect(unversioned).toBeInstanceOf(PreflightError);
    expect(unversioned.message).toContain(`bucket ${plain} has never had versioning enabled`);

    const bucket = await newBucket('asof', true);
    await put(bucket, 'p/a.csv', 'a');
    await s3.send(
      new PutBucketLifecycleConfigurationCommand({ Bucket: bucket, LifecycleConfiguration: { Rules: [{ ID: 'week', Status: 'Enabled', Filter: { Prefix: 'p/' }, NoncurrentVersionExpiration: { NoncurrentDays: 7 } }] } }),
    );
    const now = new Date();
    const ctx = { ...contextFor(state, 'at-z'), now: () => now };
    const early = new Date(now.getTime() - 8 * 86_400_000);
    const before = await expectRejects(s3PrefixAdapter.asOf(unitFor(bucket, 'p/'), early, ctx));
    expect(before).toBeInstanceOf(OutsideRestorableWindowError);
    expect(before.message).toContain(`cannot be rolled back to ${early.toISOString()}`);
    expect(before.message).toContain(`restorable window is [${new Date(now.getTime() - 7 * 86_400_000).toISOString()}, ${now.toISOString()}]`);
    expect(before.message).toContain('lifecycle rule "week"');
    const future = await expectRejects(s3PrefixAdapter.asOf(unitFor(bucket, 'p/'), new Date(now.getTime() + 60_000), ctx));
    expect(future).toBeInstanceOf(OutsideRestorableWindowError);
    // Refused before anything was written.
    expect(await versionFingerprint(state)).toEqual([]);
    // Inside the window: resolved, and the window and its bound are shown.
    const inside = await s3PrefixAdapter.asOf(unitFor(bucket, 'p/'), now, ctx);
    expect(inside.point.count).toBe(1);
    expect(inside.shows.join('\n')).toContain('expires noncurrent versions after 7 day(s)');
  });
});
