import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planFromLog, shardFor, type CurrentState } from '../../../core/adapters/s3/change-log-restore.ts';
import { changeOfEvent, compareSequencers, s3ObjectEventSchema, type LoggedChange } from '../../../core/adapters/s3/change-log.ts';
import { SOURCE_VERSION_META, type ObjectHead } from '../../../core/adapters/s3/io.ts';
import type { ManifestEntry } from '../../../core/adapters/s3/manifest.ts';
import { headKey } from '../../../core/adapters/s3/versioned.ts';

describe('S3 sequencers', () => {
  it.each([
    ['0055AED6DCD90281E5', '0055AED6DCD90281E6', -1],
    ['0055AED6DCD90281E5', '0055AED6DCD90281E5', 0],
    // Different lengths: the shorter is right-padded with zeros before comparing.
    ['0055AED6DCD9028', '0055AED6DCD90281E5', -1],
    ['0055AED6DCD90290', '0055AED6DCD902800000', 1],
    ['00ff', '00FF', 0],
  ])('%s vs %s → %i', (a, b, expected) => {
    expect(Math.sign(compareSequencers(a, b))).toBe(expected);
  });
});

describe('S3 events as EventBridge delivers them', () => {
  const base = { id: 'e1', source: 'aws.s3', time: '2026-11-29T08:00:00Z' };
  it('an object created: a new version with its ETag (either spelling) and size', () => {
    const created = s3ObjectEventSchema.parse({
      ...base,
      'detail-type': 'Object Created',
      detail: { bucket: { name: 'lake' }, object: { key: 'in/a.json', size: 5, eTag: '"abc"', 'version-id': 'v2', sequencer: '01' }, reason: 'PutObject' },
    });
    expect(changeOfEvent(created)).toEqual({ bucket: 'lake', change: { key: 'in/a.json', kind: 'created', versionId: 'v2', sequencer: '01', time: base.time, etag: 'abc', size: 5 } });
  });
  it('a delete on a versioned bucket: a delete marker; a delete by version id: that version permanently deleted', () => {
    const marker = s3ObjectEventSchema.parse({
      ...base,
      'detail-type': 'Object Deleted',
      detail: { bucket: { name: 'lake' }, object: { key: 'in/a.json', 'version-id': 'm1', sequencer: '02' }, 'deletion-type': 'Delete Marker Created' },
    });
    expect(changeOfEvent(marker).change).toMatchObject({ kind: 'marker', versionId: 'm1' });
    const permanent = s3ObjectEventSchema.parse({
      ...base,
      'detail-type': 'Object Deleted',
      detail: { bucket: { name: 'lake' }, object: { key: 'in/a.json', 'version-id': 'v1', sequencer: '03' }, 'deletion-type': 'Permanently Deleted' },
    });
    expect(changeOfEvent(permanent).change).toMatchObject({ kind: 'deleted', versionId: 'v1' });
  });
  it('refuses what is not an S3 object event', () => {
    expect(s3ObjectEventSchema.safeParse({ ...base, source: 'aws.states', 'detail-type': 'Object Created', detail: {} }).success).toBe(false);
  });
});

describe('the shard of a key', () => {
  const lastKeys = ['b', 'f', 'k'];
  it.each([
    ['a', 0],
    ['b', 0],
    ['c', 1],
    ['f', 1],
    ['g', 2],
    ['k', 2],
    // Keys after the last shard's range belong to the last shard (added keys included).
    ['z', 2],
  ])('%s → shard %i', (key, shard) => expect(shardFor(lastKeys, key)).toBe(shard));
});

/**
 * A model of one versioned prefix: per key, its stack of versions and delete markers, newest last. Copies we make carry
 * the source-version marker, as the adapter's copies do.
 */
interface Version {
  id: string;
  marker: boolean;
  content?: string;
  source?: string;
}
type Model = Map<string, Version[]>;

const live = (model: Model, key: string): Version | undefined => {
  const top = model.get(key)?.at(-1);
  return top && !top.marker ? top : undefined;
};
const contentOf = (model: Model, key: string, v: Version | undefined): string | undefined => {
  if (!v) return undefined;
  if (v.source) return model.get(key)!.find((x) => x.id === v.source)?.content;
  return v.content;
};
const headOf = (v: Version, content: string): ObjectHead => ({
  versionId: v.id,
  etag: `etag-${content}`,
  size: content.length,
  metadata: v.source ? { [SOURCE_VERSION_META]: v.source } : {},
});

describe('planFromLog (property: with a complete log, applying the plan puts every key back as captured)', () => {
  const key = fc.constantFrom('p/a', 'p/b', 'p/c', 'p/d', 'p/e');
  const op = fc.record({ kind: fc.constantFrom('put', 'delete', 'removeMarker'), key, content: fc.constantFrom('x', 'y', 'zz') });
  const setup = fc.record({ captured: fc.dictionary(key, fc.constantFrom('a', 'b', 'cc')), ops: fc.array(op, { maxLength: 25 }) });

  it('holds for every deploy of puts, deletes and marker removals on a handful of keys', () => {
    fc.assert(
      fc.property(setup, ({ captured, ops }) => {
        let n = 0;
        const model: Model = new Map();
        const entries = new Map<string, ManifestEntry>();
        for (const [k, content] of Object.entries(captured)) {
          const v: Version = { id: `v${n++}`, marker: false, content };
          model.set(k, [v]);
          entries.set(k, { key: k, versionId: v.id, etag: `etag-${content}`, size: content.length });
        }
        const log: LoggedChange[] = [];
        const seq = () => String(n++).padStart(6, '0');
        for (const o of ops) {
          const stack = model.get(o.key) ?? [];
          model.set(o.key, stack);
          if (o.kind === 'put') {
            const v: Version = { id: `v${n}`, marker: false, content: o.content };
            stack.push(v);
            log.push({ key: o.key, kind: 'created', versionId: v.id, sequencer: seq(), time: 't', etag: `etag-${o.content}`, size: o.content.length });
          } else if (o.kind === 'delete' && stack.length > 0 && !stack.at(-1)!.marker) {
            const m: Version = { id: `m${n}`, marker: true };
            stack.push(m);
            log.push({ key: o.key, kind: 'marker', versionId: m.id, sequencer: seq(), time: 't' });
          } else if (o.kind === 'removeMarker' && stack.at(-1)?.marker) {
            const m = stack.pop()!;
            log.push({ key: o.key, kind: 'deleted', versionId: m.id, sequencer: seq(), time: 't' });
          }
        }
        const byKey = new Map<string, LoggedChange[]>();
        for (const c of log) byKey.set(c.key, [...(byKey.get(c.key) ?? []), c]);
        const current = new Map<string, CurrentState>();
        for (const k of byKey.keys()) {
          const v = live(model, k);
          const top = model.get(k)?.at(-1);
          current.set(k, v ? headOf(v, contentOf(model, k, v)!) : top?.marker ? { deleteMarker: top.id } : undefined);
        }
        const heads = new Map<string, ObjectHead>();
        for (const e of entries.values()) {
          const v = model.get(e.key)!.find((x) => x.id === e.versionId)!;
          heads.set(headKey(e.key, e.versionId), headOf(v, v.content!));
        }

        const plan = planFromLog({ byKey }, entries, current, heads);
        expect(plan.missing).toEqual([]);
        for (const c of plan.copies) model.get(c.entry.key)!.push({ id: `c${n++}`, marker: false, source: c.entry.versionId });
        for (const r of plan.markerRemovals) {
          const stack = model.get(r.key)!;
          stack.splice(stack.findIndex((v) => v.id === r.versionId), 1);
        }
        for (const k of plan.deletions) model.get(k)!.push({ id: `m${n++}`, marker: true });

        for (const k of new Set([...model.keys(), ...entries.keys()])) {
          expect(contentOf(model, k, live(model, k)), k).toBe(captured[k]);
        }
        // Only logged keys are touched; each at most once.
        const written = [...plan.copies.map((c) => c.entry.key), ...plan.deletions, ...new Set(plan.markerRemovals.map((r) => r.key))];
        expect(new Set(written).size).toBe(written.length);
        for (const k of written) expect(byKey.has(k)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('planFromLog (named cases)', () => {
  const entry: ManifestEntry = { key: 'p/a', versionId: 'v1', etag: 'etag-a', size: 1 };
  const capturedHead: ObjectHead = { versionId: 'v1', etag: 'etag-a', size: 1, metadata: {} };
  const heads = new Map([[headKey('p/a', 'v1'), capturedHead]]);
  const markerLog: LoggedChange[] = [{ key: 'p/a', kind: 'marker', versionId: 'm1', sequencer: '01', time: 't' }];

  it('removes the logged delete marker when it is the one S3 shows on top (no data copied)', () => {
    const plan = planFromLog({ byKey: new Map([['p/a', markerLog]]) }, new Map([['p/a', entry]]), new Map([['p/a', { deleteMarker: 'm1' }]]), heads);
    expect(plan.markerRemovals).toEqual([{ key: 'p/a', versionId: 'm1' }]);
    expect(plan.copies).toEqual([]);
  });

  it('copies the captured version back when the marker on top is one the log never saw (a stale or incomplete log)', () => {
    const plan = planFromLog({ byKey: new Map([['p/a', markerLog]]) }, new Map([['p/a', entry]]), new Map([['p/a', { deleteMarker: 'm9' }]]), heads);
    expect(plan.markerRemovals).toEqual([]);
    expect(plan.copies.map((c) => c.entry.versionId)).toEqual(['v1']);
  });

  it('leaves alone a key whose live object is our earlier copy of the captured version (a rerun)', () => {
    const ours: ObjectHead = { versionId: 'c7', etag: 'etag-a', size: 1, metadata: { [SOURCE_VERSION_META]: 'v1' } };
    const log: LoggedChange[] = [{ key: 'p/a', kind: 'created', versionId: 'v2', sequencer: '01', time: 't' }, { key: 'p/a', kind: 'created', versionId: 'c7', sequencer: '02', time: 't' }];
    const plan = planFromLog({ byKey: new Map([['p/a', log]]) }, new Map([['p/a', entry]]), new Map([['p/a', ours]]), heads);
    expect(plan.unchanged).toBe(1);
    expect(plan.copies).toEqual([]);
  });

  it('a key the deploy added and then deleted again needs nothing; one still there is hidden', () => {
    const added: LoggedChange[] = [{ key: 'p/new', kind: 'created', versionId: 'n1', sequencer: '01', time: 't' }];
    const gone = planFromLog({ byKey: new Map([['p/new', added]]) }, new Map(), new Map([['p/new', { deleteMarker: 'm2' }]]), new Map());
    expect(gone.deletions).toEqual([]);
    const there = planFromLog({ byKey: new Map([['p/new', added]]) }, new Map(), new Map([['p/new', { versionId: 'n1', etag: 'e', size: 1, metadata: {} }]]), new Map());
    expect(there.deletions).toEqual(['p/new']);
  });
});
