import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SOURCE_VERSION_META, type KeyHistory, type Listing, type ListedMarker, type ListedVersion, type ObjectHead } from '../../../core/adapters/s3/io.ts';
import type { ManifestEntry } from '../../../core/adapters/s3/manifest.ts';
import { headKey, latestEntries, planRestore, type RestorePlan } from '../../../core/adapters/s3/versioned.ts';

/**
 * The core of `undo` for s3-prefix units: before a run writes, its restore records the prefix as a version manifest
 * (`latestEntries` of the listing, what captureVersioned writes); the undo restores that manifest with the ordinary
 * planner. For every history of a prefix and every run (any puts and deletes, as a restore or anything else makes them):
 * restoring the record taken before the run gives back exactly the objects current before it; restoring the record taken
 * before the undo gives back exactly the objects current after the run (undo of the undo); and no data version is ever
 * deleted on the way (only delete markers are added or removed).
 *
 * The bucket is simulated in memory (versions, delete markers, "latest"): the property is about the plan, and runs a few
 * hundred cases in well under a second; the e2e test (test/e2e/undo.test.ts) drives the same path against moto.
 */
type Event = { kind: 'version'; v: ListedVersion; body: string; copyOf?: string } | { kind: 'marker'; m: ListedMarker };

class Bucket {
  private readonly keys = new Map<string, Event[]>();
  private clock = 0;
  private ids = 0;

  put(key: string, body: string, copyOf?: string): void {
    this.push(key, { kind: 'version', body, ...(copyOf ? { copyOf } : {}), v: { versionId: `v${++this.ids}`, etag: `e-${body}`, size: body.length, lastModified: ++this.clock, storageClass: 'STANDARD' } });
  }

  remove(key: string): void {
    if (this.keys.has(key)) this.push(key, { kind: 'marker', m: { versionId: `m${++this.ids}`, lastModified: ++this.clock } });
  }

  private push(key: string, e: Event): void {
    this.keys.set(key, [...(this.keys.get(key) ?? []), e]);
  }

  listing(): Listing {
    const out: Listing = new Map();
    for (const [key, events] of this.keys) {
      const last = events[events.length - 1];
      const history: KeyHistory = {
        key,
        versions: events.flatMap((e) => (e.kind === 'version' ? [e.v] : [])).reverse(),
        markers: events.flatMap((e) => (e.kind === 'marker' ? [e.m] : [])).reverse(),
        latest: last === undefined ? undefined : last.kind === 'version' ? { kind: 'version', entry: last.v } : { kind: 'marker', entry: last.m },
      };
      out.set(key, history);
    }
    return out;
  }

  /** Key → body of the current version (keys whose latest is a delete marker, or that have nothing, are absent). */
  current(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [key, events] of this.keys) {
      const last = events[events.length - 1];
      if (last?.kind === 'version') out.set(key, last.body);
    }
    return out;
  }

  dataVersions(): number {
    return [...this.keys.values()].reduce((n, events) => n + events.filter((e) => e.kind === 'version').length, 0);
  }

  /** What the restore writes for a plan: copies of the named versions, marker removals, delete markers. */
  execute(plan: RestorePlan): void {
    for (const { entry } of plan.copies) {
      const source = this.keys.get(entry.key)!.find((e) => e.kind === 'version' && e.v.versionId === entry.versionId) as Extract<Event, { kind: 'version' }>;
      this.put(entry.key, source.body, entry.versionId);
    }
    for (const { key, versionId } of plan.markerRemovals) {
      this.keys.set(key, this.keys.get(key)!.filter((e) => !(e.kind === 'marker' && e.m.versionId === versionId)));
    }
    for (const key of plan.deletions) this.remove(key);
  }

  /** What HeadObject answers for the restore's own copies: the version each reproduces (SOURCE_VERSION_META). */
  heads(): Map<string, ObjectHead> {
    const out = new Map<string, ObjectHead>();
    for (const [key, events] of this.keys) {
      for (const e of events) {
        if (e.kind === 'version' && e.copyOf) out.set(headKey(key, e.v.versionId), { versionId: e.v.versionId, etag: e.v.etag, size: e.v.size, metadata: { [SOURCE_VERSION_META]: e.copyOf } });
      }
    }
    return out;
  }

  record(): ManifestEntry[] {
    return latestEntries(this.listing());
  }
}

const op = fc.oneof(
  fc.record({ kind: fc.constant('put' as const), key: fc.constantFrom('a', 'b', 'c/d', 'c/e', 'f'), body: fc.constantFrom('x', 'y', 'zz', '') }),
  fc.record({ kind: fc.constant('delete' as const), key: fc.constantFrom('a', 'b', 'c/d', 'c/e', 'f') }),
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;
const apply = (b: Bucket, ops: readonly Op[]) => ops.forEach((o) => (o.kind === 'put' ? b.put(o.key, o.body) : b.remove(o.key)));

describe('undo record of an s3-prefix unit (property)', () => {
  it('restoring the record taken before a run gives back the state before it; the record taken before the undo gives back the state after it', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 12 }), fc.array(op, { minLength: 1, maxLength: 12 }), (history, run) => {
        const bucket = new Bucket();
        apply(bucket, history);
        const before = bucket.current();
        const recordBefore = bucket.record();
        apply(bucket, run);
        const after = bucket.current();
        let versions = bucket.dataVersions();

        // undo: the state before the run, from its record, and nothing lost
        const recordAfter = bucket.record();
        const undo = planRestore(recordBefore, bucket.listing());
        expect(undo.missing).toEqual([]);
        bucket.execute(undo);
        expect(bucket.current()).toEqual(before);
        expect(bucket.dataVersions()).toBeGreaterThanOrEqual(versions);
        versions = bucket.dataVersions();

        // undo of the undo: the state after the run
        const redo = planRestore(recordAfter, bucket.listing());
        expect(redo.missing).toEqual([]);
        bucket.execute(redo);
        expect(bucket.current()).toEqual(after);
        expect(bucket.dataVersions()).toBeGreaterThanOrEqual(versions);

        // and a second undo over an undone prefix writes nothing
        const again = planRestore(recordAfter, bucket.listing(), bucket.heads());
        expect(again.copies.length + again.markerRemovals.length + again.deletions.length).toBe(0);
      }),
      { numRuns: 300 },
    );
  });
});
