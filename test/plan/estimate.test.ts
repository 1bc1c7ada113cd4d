import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../core/errors.ts';
import { costOf, estimateRollback, makespan, type EstimateInput, type PlannedUnitWork } from '../../core/plan/estimate.ts';
import { parsePriceTable, PRICES, pricesFor } from '../../core/plan/prices.ts';
import { noRequests, REQUEST_KINDS, type Requests } from '../../core/plan/requests.ts';
import { DEFAULT_OVERHEAD_SECONDS_PER_STAGE, throughputFrom, typeThroughputFrom, type ThroughputSample, type UnitSample } from '../../core/plan/throughput.ts';

const us = pricesFor('us-east-1');

describe('the price table', () => {
  it('is the one data file, dated, with a source page per service, and validates', () => {
    expect(PRICES.asOf).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(Object.values(PRICES.sources).every((u) => u.startsWith('https://aws.amazon.com/'))).toBe(true);
    expect(Object.keys(PRICES.regions)).toEqual(expect.arrayContaining(['us-east-1', 'eu-west-1']));
  });

  const cases: [string, string, string, boolean][] = [
    ['a region in the table is priced as itself', 'eu-west-1', 'eu-west-1', false],
    ['us-east-1 is priced as itself', 'us-east-1', 'us-east-1', false],
    ['a region not in the table falls back to us-east-1, and says so', 'ap-south-2', 'us-east-1', true],
    ['no region at all falls back too', '', 'us-east-1', true],
  ];
  it.each(cases)('%s', (_, region, priced, noted) => {
    const p = pricesFor(region);
    expect(p.pricedRegion).toBe(priced);
    expect(p.note !== undefined).toBe(noted);
    if (noted) expect(p.note).toContain('priced with us-east-1');
  });

  const bad: [string, (t: Record<string, unknown>) => void, string][] = [
    ['a negative price', (t) => ((t.regions as Record<string, { s3: { tier1PerThousand: number } }>)['us-east-1']!.s3.tier1PerThousand = -1), 'regions.us-east-1.s3.tier1PerThousand'],
    ['a fallback region without prices', (t) => (t.fallbackRegion = 'mars-1'), 'fallbackRegion'],
    ['no date', (t) => delete t.asOf, 'asOf'],
    ['a source that is not a URL', (t) => ((t.sources as Record<string, string>).s3 = 'the S3 page'), 'sources.s3'],
  ];
  it.each(bad)('refuses a table with %s, naming where', (_, spoil, where) => {
    const table = structuredClone(PRICES) as unknown as Record<string, unknown>;
    spoil(table);
    expect(() => parsePriceTable(table)).toThrow(InputError);
    expect(() => parsePriceTable(table)).toThrow(where);
  });
});

describe('cost of requests', () => {
  const r = (over: Partial<Requests>): Requests => ({ ...noRequests(), ...over });
  const cases: [string, Requests, number, keyof ReturnType<typeof costOf>, number][] = [
    ['1,000 copies are one tier-1 thousand', r({ 'S3 CopyObject': 1000 }), 0, 's3', 0.005],
    ['1,000 lists, copies, deletes and puts together: four tier-1 thousands', r({ 'S3 ListObjectVersions': 1000, 'S3 CopyObject': 1000, 'S3 DeleteObjects': 1000, 'S3 PutObject': 1000 }), 0, 's3', 0.02],
    ['1,000 heads are one tier-2 thousand', r({ 'S3 HeadObject': 1000 }), 0, 's3', 0.0004],
    ['a million Lambda calls', r({ 'Lambda invocations': 1e6 }), 0, 'lambda', 0.2],
    ['Lambda seconds at 512 MB', noRequests(), 1000, 'lambda', 1000 * 0.5 * 0.0000133334],
    ['1,000 state transitions', r({ 'Step Functions transitions': 1000 }), 0, 'stepFunctions', 0.025],
    ['a million ledger writes', r({ 'DynamoDB writes': 1e6 }), 0, 'dynamodb', 0.625],
    ['nothing costs nothing', noRequests(), 0, 'total', 0],
  ];
  it.each(cases)('%s', (_, requests, seconds, part, expected) => {
    expect(costOf(requests, seconds, us.prices)[part]).toBeCloseTo(expected, 10);
  });

  it('the total is the sum of its parts', () => {
    const c = costOf(r({ 'S3 CopyObject': 10, 'S3 HeadObject': 7, 'Lambda invocations': 3, 'Step Functions transitions': 20, 'DynamoDB writes': 12 }), 4, us.prices);
    expect(c.total).toBeCloseTo(c.s3 + c.lambda + c.stepFunctions + c.dynamodb, 15);
  });
});

describe('makespan of a stage', () => {
  const cases: [string, number[], number, number][] = [
    ['no units', [], 10, 0],
    ['one unit', [3], 10, 3],
    ['up to ten units side by side: the slowest', [1, 5, 2], 10, 5],
    ['eleven equal units: two rounds', Array.from({ length: 11 }, () => 1), 10, 2],
    ['one slot: one after the other', [1, 2, 3], 1, 6],
  ];
  it.each(cases)('%s', (_, durations, slots, expected) => {
    expect(makespan(durations, slots)).toBe(expected);
  });
});

const unitSample = (over: Partial<UnitSample>): UnitSample => ({ unitId: 'u', unitType: 'postgres-table', restoreSeconds: 1, verifySeconds: 0.5, objects: 0, bytes: 0, rows: 0, ...over });
const sample = (runId: string, runStartedAt: string, units: UnitSample[], overheadSeconds = 0.3, stages = 3): ThroughputSample => ({
  pipeline: 'orders',
  runId,
  runStartedAt,
  recordedAt: runStartedAt,
  stages,
  overheadSeconds,
  units,
});

describe('throughput from history', () => {
  const cases: { name: string; type: string; units: UnitSample[]; expected: Partial<ReturnType<typeof typeThroughputFrom>> }[] = [
    { name: 'no history: the defaults', type: 'postgres-table', units: [], expected: { fixedSeconds: 2, rowsPerSecond: 10_000, verifySeconds: 2, samples: 0 } },
    { name: 'an unknown type without history: the generic default', type: 'dynamo-table', units: [], expected: { fixedSeconds: 5, verifySeconds: 5 } },
    {
      name: 'a unit that wrote nothing measures the fixed cost',
      type: 'postgres-table',
      units: [unitSample({ restoreSeconds: 0.2 }), unitSample({ restoreSeconds: 1.2, rows: 1000 })],
      expected: { fixedSeconds: 0.2, rowsPerSecond: 1000, samples: 2 },
    },
    {
      name: 'without such a unit, the fixed cost is at most half the fastest restore',
      type: 'postgres-table',
      units: [unitSample({ restoreSeconds: 0.4, rows: 100 })],
      expected: { fixedSeconds: 0.2, rowsPerSecond: 500 },
    },
    {
      name: 'a slow unit keeps the default fixed cost, the rest is its rate',
      type: 'postgres-table',
      units: [unitSample({ restoreSeconds: 12, rows: 50_000 })],
      expected: { fixedSeconds: 2, rowsPerSecond: 5000 },
    },
    {
      name: 'an S3 prefix learns objects per second, bytes keep their rate',
      type: 's3-prefix',
      units: [unitSample({ unitType: 's3-prefix', restoreSeconds: 0.5, objects: 4, bytes: 0 })],
      expected: { fixedSeconds: 0.25, objectsPerSecond: 16, bytesPerSecond: 100 * 1024 ** 2 },
    },
    { name: 'verification: the mean of the measured', type: 'postgres-table', units: [unitSample({ verifySeconds: 1 }), unitSample({ verifySeconds: 3 })], expected: { verifySeconds: 2 } },
  ];
  it.each(cases)('$name', ({ type, units, expected }) => {
    const t = typeThroughputFrom(type, units);
    for (const [k, v] of Object.entries(expected)) expect(t[k as keyof typeof t], k).toBeCloseTo(v as number, 9);
  });

  it('learns from the most recent runs only, newest first, and the overhead per stage from them', () => {
    const samples = Array.from({ length: 12 }, (_, i) => sample(`r${i}`, `2026-11-${String(i + 1).padStart(2, '0')}T00:00:00.000Z`, [unitSample({})], i, 2));
    const t = throughputFrom(samples, 10);
    expect(t.runIds).toEqual(['r11', 'r10', 'r9', 'r8', 'r7', 'r6', 'r5', 'r4', 'r3', 'r2']);
    expect(t.overheadSecondsPerStage).toBeCloseTo((2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11) / 10 / 2, 9);
  });

  it('without history the overhead is the default', () => {
    expect(throughputFrom([]).overheadSecondsPerStage).toBe(DEFAULT_OVERHEAD_SECONDS_PER_STAGE);
  });
});

const demoStages: EstimateInput['stages'] = [
  { index: 0, units: [{ unitId: 'mart', type: 'postgres-table', changes: { rowsInserted: 0, rowsUpdated: 5, rowsDeleted: 0 } }] },
  { index: 1, units: [{ unitId: 'staging', type: 'postgres-table', changes: { rowsInserted: 2, rowsUpdated: 3, rowsDeleted: 2 } }] },
  { index: 2, units: [{ unitId: 'raw', type: 's3-prefix', changes: { objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 1, objectsUnchanged: 1, bytesCopied: 36 } }] },
];

describe('estimate of a rollback', () => {
  it('without history says "defaults, no history" and uses them', () => {
    const e = estimateRollback({ stages: demoStages, throughput: throughputFrom([]), prices: us, madeAt: '2026-11-29T00:00:00.000Z' });
    expect(e.basis).toMatchObject({ runIds: [], defaultsFor: ['postgres-table', 's3-prefix'], text: 'defaults, no history' });
    // mart: 2 s + 5 rows at 10,000/s, then 2 s to verify.
    expect(e.stages[0]!.seconds).toBeCloseTo(2 + 5 / 10_000 + 2, 9);
    expect(e.overhead.seconds).toBe(3 * DEFAULT_OVERHEAD_SECONDS_PER_STAGE);
  });

  it('with history names how many runs, and the types it had none for', () => {
    const history = [sample('r1', '2026-11-01T00:00:00.000Z', [unitSample({})]), sample('r2', '2026-11-02T00:00:00.000Z', [unitSample({})])];
    const e = estimateRollback({ stages: demoStages, throughput: throughputFrom(history), prices: us, madeAt: '2026-11-29T00:00:00.000Z' });
    expect(e.basis).toMatchObject({ runIds: ['r2', 'r1'], defaultsFor: ['s3-prefix'], text: 'from 2 earlier runs; defaults for s3-prefix (no history)' });
  });

  it('one earlier run: "from 1 earlier run"', () => {
    const history = [sample('r1', '2026-11-01T00:00:00.000Z', [unitSample({}), unitSample({ unitType: 's3-prefix' })])];
    expect(estimateRollback({ stages: demoStages, throughput: throughputFrom(history), prices: us, madeAt: 'now' }).basis.text).toBe('from 1 earlier run');
  });

  it('a region without prices is priced as us-east-1, and the estimate says so', () => {
    const e = estimateRollback({ stages: demoStages, throughput: throughputFrom([]), prices: pricesFor('ap-south-2'), madeAt: 'now' });
    expect(e.region).toEqual({ requested: 'ap-south-2', priced: 'us-east-1', note: 'no prices for ap-south-2 in the price table; priced with us-east-1' });
  });

  it('Frankfurt costs more than Virginia for the same requests', () => {
    const at = (region: string) => estimateRollback({ stages: demoStages, throughput: throughputFrom([]), prices: pricesFor(region), madeAt: 'now' }).totals.costUsd;
    expect(at('eu-central-1').s3).toBeGreaterThan(at('us-east-1').s3);
  });
});

// ── properties ─────────────────────────────────────────────────────────────────

const changesArb = fc.oneof(
  fc.record({ objectsCopied: fc.nat(3000), deleteMarkersRemoved: fc.nat(3000), objectsDeleted: fc.nat(3000), objectsUnchanged: fc.nat(3000), bytesCopied: fc.nat(1e12) }),
  fc.record({ rowsInserted: fc.nat(1e6), rowsUpdated: fc.nat(1e6), rowsDeleted: fc.nat(1e6) }),
);
const unitArb: fc.Arbitrary<PlannedUnitWork> = fc.record({
  unitId: fc.stringMatching(/^[a-z]{1,5}$/),
  type: fc.constantFrom('s3-prefix', 'postgres-table', 'mysql-table', 'rds-instance'),
  changes: changesArb,
});
const stagesArb = fc.array(fc.array(unitArb, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 5 }).map((stages) => stages.map((units, index) => ({ index, units })));
const unitSampleArb: fc.Arbitrary<UnitSample> = fc.record({
  unitId: fc.constant('u'),
  unitType: fc.constantFrom('s3-prefix', 'postgres-table', 'mysql-table', 'rds-instance'),
  restoreSeconds: fc.double({ min: 0, max: 5000, noNaN: true }),
  verifySeconds: fc.double({ min: 0, max: 100, noNaN: true }),
  objects: fc.nat(10_000),
  bytes: fc.nat(1e9),
  rows: fc.nat(1e6),
});
const historyArb = fc.array(
  fc.record({ runId: fc.uuid(), day: fc.integer({ min: 1, max: 28 }), units: fc.array(unitSampleArb, { maxLength: 6 }), overhead: fc.double({ min: 0, max: 60, noNaN: true }) }),
  { maxLength: 12 },
).map((runs) => runs.map((r) => sample(r.runId, `2026-11-${String(r.day).padStart(2, '0')}T00:00:00.000Z`, r.units, r.overhead)));
const regionArb = fc.constantFrom(...Object.keys(PRICES.regions), 'ap-south-2');

describe('estimate properties', () => {
  it('the total is the sum of the stages and the run overhead: seconds, cost, requests and what moves', () => {
    fc.assert(
      fc.property(stagesArb, historyArb, regionArb, (stages, history, region) => {
        const e = estimateRollback({ stages, throughput: throughputFrom(history), prices: pricesFor(region), madeAt: 'now' });
        const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(b)));
        close(e.totals.seconds, e.stages.reduce((n, s) => n + s.seconds, 0) + e.overhead.seconds);
        close(e.totals.costUsd.total, e.stages.reduce((n, s) => n + s.costUsd.total, 0) + e.overhead.costUsd.total);
        for (const k of REQUEST_KINDS) expect(e.totals.requests[k]).toBe(e.stages.reduce((n, s) => n + s.requests[k], 0) + e.overhead.requests[k]);
        for (const s of e.stages) {
          expect(s.objects).toBe(s.units.reduce((n, u) => n + u.objects, 0));
          expect(s.rows).toBe(s.units.reduce((n, u) => n + u.rows, 0));
          // A stage takes at least its slowest unit and its gate, at most every unit one after the other.
          const verify = s.units.reduce((n, u) => n + u.verifySeconds, 0);
          expect(s.seconds).toBeGreaterThanOrEqual(Math.max(...s.units.map((u) => u.restoreSeconds)) + verify - 1e-9);
          expect(s.seconds).toBeLessThanOrEqual(s.units.reduce((n, u) => n + u.restoreSeconds, 0) + verify + 1e-9);
        }
      }),
    );
  });

  it('more to write never costs less nor takes less time', () => {
    fc.assert(
      fc.property(stagesArb, historyArb, regionArb, fc.nat(), fc.nat(), fc.integer({ min: 1, max: 5000 }), (stages, history, region, s, u, extra) => {
        const input = { throughput: throughputFrom(history), prices: pricesFor(region), madeAt: 'now' };
        const stage = s % stages.length;
        const unit = u % stages[stage]!.units.length;
        const target = stages[stage]!.units[unit]!;
        // Any counter of writes (objects left unchanged are not writes).
        const keys = Object.keys(target.changes).filter((k) => k !== 'objectsUnchanged');
        const key = keys[(s + u) % keys.length]!;
        const more = stages.map((st, i) => ({
          ...st,
          units: st.units.map((x, j) => (i === stage && j === unit ? { ...x, changes: { ...x.changes, [key]: (x.changes[key] ?? 0) + extra } } : x)),
        }));
        const before = estimateRollback({ ...input, stages });
        const after = estimateRollback({ ...input, stages: more });
        expect(after.totals.costUsd.total).toBeGreaterThanOrEqual(before.totals.costUsd.total);
        expect(after.totals.seconds).toBeGreaterThanOrEqual(before.totals.seconds);
        for (const k of REQUEST_KINDS) expect(after.totals.requests[k]).toBeGreaterThanOrEqual(before.totals.requests[k]);
      }),
    );
  });

  it('cost is monotone in every request count', () => {
    fc.assert(
      fc.property(
        fc.record(Object.fromEntries(REQUEST_KINDS.map((k) => [k, fc.nat(1e7)])) as Record<(typeof REQUEST_KINDS)[number], fc.Arbitrary<number>>),
        fc.constantFrom(...REQUEST_KINDS),
        fc.integer({ min: 1, max: 1e6 }),
        fc.double({ min: 0, max: 1e5, noNaN: true }),
        regionArb,
        (requests, kind, extra, seconds, region) => {
          const prices = pricesFor(region).prices;
          const more = { ...requests, [kind]: requests[kind] + extra };
          expect(costOf(more, seconds, prices).total).toBeGreaterThanOrEqual(costOf(requests, seconds, prices).total);
          expect(costOf(requests, seconds + extra, prices).total).toBeGreaterThanOrEqual(costOf(requests, seconds, prices).total);
        },
      ),
    );
  });
});
