import { describe, expect, it } from 'vitest';
import type { Run, Step } from '../../core/ledger/ledger.ts';
import { estimateRollback } from '../../core/plan/estimate.ts';
import { pricesFor } from '../../core/plan/prices.ts';
import { throughputFrom } from '../../core/plan/throughput.ts';
import { measureRun, recoverySeconds } from '../../core/report/measure-run.ts';
import { buildReport, renderMarkdown, renderReport, reportEstimateVsActual } from '../../core/report/report.ts';

const T = (s: number) => new Date(Date.parse('2026-11-29T03:00:00.000Z') + s * 1000).toISOString();

const run = (over: Partial<Run> = {}): Run => ({
  runId: 'rollback-orders-d-42-1',
  pipeline: 'orders',
  deploymentId: 'd-42',
  status: 'SUCCEEDED',
  dryRun: false,
  requested: ['raw'],
  scope: ['mart', 'staging', 'raw'],
  stages: [
    { index: 0, units: ['mart', 'other'] },
    { index: 1, units: ['raw'] },
  ],
  reasons: {},
  requestedBy: 'jane',
  reason: '',
  startedAt: T(-30),
  endedAt: T(10),
  ...over,
});

const step = (stage: number, unitId: string, type: string, times: [number, number, number], changes: Record<string, number>, over: Partial<Step> = {}): Step => ({
  runId: 'rollback-orders-d-42-1',
  stage,
  unitId,
  type,
  status: 'VERIFIED',
  changes,
  writes: Object.values(changes).reduce((a, b) => a + b, 0),
  notes: [],
  startedAt: T(times[0]),
  restoredAt: T(times[1]),
  verifiedAt: T(times[2]),
  ...over,
});

// Stage 1: mart restores 0→2 s, other 0→3 s; the gate verifies mart by 4 s, other by 4.5 s. Stage 2: raw 5→6 s, verified 7 s.
const steps: Step[] = [
  step(0, 'mart', 'postgres-table', [0, 2, 4], { rowsUpdated: 5 }),
  step(0, 'other', 'postgres-table', [0, 3, 4.5], { rowsInserted: 0 }),
  step(1, 'raw', 's3-prefix', [5, 6, 7], { objectsCopied: 2, objectsDeleted: 1, objectsUnchanged: 3, bytesCopied: 40 }),
];

describe('what a finished run measured', () => {
  it('recovery time runs from the first stage start to the run end, not from the run start', () => {
    expect(recoverySeconds(run(), steps)).toBe(10);
  });

  it('a successful run measures each unit: restore time, its share of the gate, what it moved; and the overhead', () => {
    expect(measureRun(run(), steps, T(11))).toEqual({
      pipeline: 'orders',
      runId: 'rollback-orders-d-42-1',
      runStartedAt: T(-30),
      recordedAt: T(11),
      stages: 2,
      // 10 s of recovery, 4.5 s + 2 s of stages.
      overheadSeconds: 3.5,
      units: [
        { unitId: 'mart', unitType: 'postgres-table', restoreSeconds: 2, verifySeconds: 1, objects: 0, bytes: 0, rows: 5 },
        { unitId: 'other', unitType: 'postgres-table', restoreSeconds: 3, verifySeconds: 0.5, objects: 0, bytes: 0, rows: 0 },
        { unitId: 'raw', unitType: 's3-prefix', restoreSeconds: 1, verifySeconds: 1, objects: 3, bytes: 40, rows: 0 },
      ],
    });
  });

  const nothing: [string, Run, Step[]][] = [
    ['a dry run', run({ dryRun: true, status: 'DRY_RUN' }), steps],
    ['a failed run', run({ status: 'FAILED' }), steps],
    ['a run with a stage without times', run(), steps.slice(0, 2)],
    ['a run that has not ended', run({ endedAt: undefined }), steps],
  ];
  it.each(nothing)('measures nothing for %s', (_, r, s) => {
    expect(measureRun(r, s, T(11))).toBeUndefined();
  });

  it('leaves out units a resumed run skipped (they restored nothing), keeping their stage time', () => {
    const skipped = steps.map((s) => (s.unitId === 'other' ? { ...s, skippedFrom: 'rollback-earlier' } : s));
    expect(measureRun(run(), skipped, T(11))!.units.map((u) => u.unitId)).toEqual(['mart', 'raw']);
  });
});

describe('report with an estimate', () => {
  const estimate = estimateRollback({
    stages: [
      { index: 0, units: [{ unitId: 'mart', type: 'postgres-table', changes: { rowsUpdated: 5 } }, { unitId: 'other', type: 'postgres-table', changes: {} }] },
      { index: 1, units: [{ unitId: 'raw', type: 's3-prefix', changes: { objectsCopied: 2, objectsDeleted: 1, objectsUnchanged: 3, bytesCopied: 40 } }] },
    ],
    throughput: throughputFrom([measureRun(run(), steps, T(11))!]),
    prices: pricesFor('eu-west-1'),
    madeAt: T(-60),
    dryRunId: 'dryrun-orders-d-42-1',
  });
  const types = { mart: 'postgres-table', other: 'postgres-table', raw: 's3-prefix' };

  it('sets estimate against actual per stage and in total', () => {
    const report = buildReport(run({ estimate }), steps, types);
    expect(report.recoverySeconds).toBe(10);
    const rows = reportEstimateVsActual(report)!;
    expect(rows.map((r) => [r.what, r.actualSeconds, r.estimatedWrites, r.actualWrites])).toEqual([
      ['stage 1', 4.5, 5, 5],
      ['stage 2', 2, 3, 3],
      ['total (recovery time)', 10, 8, 8],
    ]);
    // Learnt from this very run, the estimate reproduces it (to the millisecond a rate is never learnt below).
    for (const r of rows) expect(r.estimatedSeconds).toBeCloseTo(r.actualSeconds!, 2);
  });

  it('a stage that did not run has no actual', () => {
    const report = buildReport(run({ estimate, status: 'FAILED' }), steps.slice(0, 2), types);
    expect(reportEstimateVsActual(report)![1]).toMatchObject({ what: 'stage 2', estimatedWrites: 3 });
    expect(reportEstimateVsActual(report)![1]!.actualSeconds).toBeUndefined();
  });

  it('the terminal report of a dry run prints the estimate: per unit and stage what moves, how long, the cost and the requests by kind', () => {
    const text = renderReport(buildReport(run({ estimate, dryRun: true, status: 'DRY_RUN' }), steps, types));
    const lines = text.split('\n');
    const after = (title: string) => lines.slice(lines.findIndex((l) => l.trim().startsWith(title.trim())) + 1);
    expect(text).toContain('estimate of the rollback (durations from 1 earlier run; prices: AWS list prices for eu-west-1 as of');
    expect(after('throughput:').slice(0, 3).map((l) => l.trim())).toEqual([
      'postgres-table: 3.0 s per unit + 5,000 rows/s, 750 ms to verify (2 units measured)',
      's3-prefix: 500 ms per unit + 6.0 objects/s, 100.0 MiB/s, 1.0 s to verify (1 unit measured)',
      'between stages: 1.8 s per stage',
    ]);
    const work = lines.slice(lines.findIndex((l) => /^stage\s+unit\s+type\b/.test(l.trim())));
    expect(work[0]!.trim().split(/\s{2,}/)).toEqual(['stage', 'unit', 'type', 'objects', 'bytes', 'rows', 'restore', 'verify', 'duration']);
    expect(work[4]!.trim().split(/\s{2,}/)).toEqual(['2', 'raw', 's3-prefix', '3', '40 B', '0', '1.0 s', '1.0 s']);
    expect(work[7]!.trim().split(/\s{2,}/)).toEqual(['total', '3', '40 B', '5', '10.0 s']);
    const cost = after('cost in USD:');
    expect(cost[0]!.trim().split(/\s{2,}/)).toEqual(['stage', 'unit', 'S3', 'Lambda', 'Step Functions', 'DynamoDB', 'total']);
    const total = cost[7]!.trim().split(/\s{2,}/);
    expect(total[0]).toBe('total');
    expect(Number(total[5])).toBeCloseTo(estimate.totals.costUsd.total, 7);
    const requests = after('requests by kind:');
    expect(requests[0]!.trim().split(/\s{2,}/)).toEqual(['stage', 'unit', 'S3 List', 'S3 Get', 'S3 Head', 'S3 Copy', 'S3 DelObjs', 'S3 Put', 'DDB writes', 'Lambda', 'SFN trans']);
    expect(requests[4]!.trim().split(/\s+/)).toEqual(['2', 'raw', '3', '5', '6', '2', '1', '0', '2', '1', '3']);
    expect(text).toMatch(/total \$[\d.]+, recovery time 10\.0 s \(2 stages one after the other/);
  });

  it('the Markdown report carries the gantt and the estimate-against-actual table', () => {
    const md = renderMarkdown(buildReport(run({ estimate }), steps, types));
    expect(md).toContain('```mermaid\ngantt');
    expect(md).toContain(`  stage 1 (VERIFIED) :stage1, ${T(0)}, ${T(4.5)}`);
    expect(md).toContain(`  stage 2 (VERIFIED) :stage2, ${T(5)}, ${T(7)}`);
    expect(md).toContain('## Estimate against actual');
    expect(md).toContain('| total (recovery time) | 10.0 s | 10.0 s | 1.00× | 8 | 8 |');
  });

  it('a rollback without estimate says why in its Markdown, and still gives its recovery time', () => {
    const md = renderMarkdown(buildReport(run(), steps, types));
    expect(md).toContain('| recovery time (first stage start to end) | 10.0 s |');
    expect(md).toContain('No estimate: a rollback carries the estimate of the latest dry run of its deployment with the same stages');
  });

  it('a dry run\'s Markdown carries its estimate, and no gantt (nothing ran)', () => {
    const md = renderMarkdown(buildReport(run({ estimate, dryRun: true, status: 'DRY_RUN' }), steps.map((s) => ({ ...s, startedAt: undefined, restoredAt: undefined, verifiedAt: undefined })), types));
    expect(md).toContain('## Estimate');
    expect(md).not.toContain('gantt');
  });
});
