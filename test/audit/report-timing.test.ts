import { describe, expect, it } from 'vitest';
import type { Run, Step } from '../../core/ledger/ledger.ts';
import { buildReport, renderMarkdown, restoredCounts } from '../../core/report/report.ts';

const run: Run = {
  runId: 'r-1',
  pipeline: 'orders',
  deploymentId: 'd-1',
  status: 'SUCCEEDED',
  dryRun: false,
  requested: ['raw'],
  scope: ['mart', 'raw'],
  stages: [
    { index: 0, units: ['mart'] },
    { index: 1, units: ['raw'] },
  ],
  reasons: {},
  requestedBy: 'jane',
  reason: 'bad data',
  startedAt: '2026-11-29T00:00:00.000Z',
};

const step = (stage: number, unitId: string, extra: Partial<Step>): Step => ({
  runId: 'r-1',
  stage,
  unitId,
  type: unitId === 'raw' ? 's3-prefix' : 'postgres-table',
  status: 'VERIFIED',
  changes: {},
  writes: 0,
  notes: [],
  ...extra,
});

describe('report timings and restored counters', () => {
  it('a stage runs from its first unit restore start to its last verification; the Markdown shows it', () => {
    const report = buildReport(
      run,
      [
        step(0, 'mart', { startedAt: '2026-11-29T00:00:01.000Z', restoredAt: '2026-11-29T00:00:03.000Z', verifiedAt: '2026-11-29T00:00:04.500Z' }),
        step(1, 'raw', { restoredAt: '2026-11-29T00:00:06.000Z', verifiedAt: '2026-11-29T00:00:07.000Z' }),
      ],
      {},
    );
    expect(report.stages[0]).toMatchObject({ startedAt: '2026-11-29T00:00:01.000Z', endedAt: '2026-11-29T00:00:04.500Z', durationMs: 3500 });
    // A step written before steps had a start (older runs) starts at its restore.
    expect(report.stages[1]).toMatchObject({ startedAt: '2026-11-29T00:00:06.000Z', durationMs: 1000 });
    expect(renderMarkdown(report)).toContain('2026-11-29T00:00:01.000Z → 2026-11-29T00:00:04.500Z (3.5 s)');
  });

  it('a stage never started has no timing', () => {
    const report = buildReport({ ...run, status: 'FAILED' }, [step(0, 'mart', { startedAt: '2026-11-29T00:00:01.000Z', restoredAt: '2026-11-29T00:00:02.000Z', status: 'VERIFY_FAILED' })], {});
    expect(report.stages[1]!.durationMs).toBeUndefined();
    expect(report.partial).toBe(true);
  });

  it.each([
    [{ objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 1, objectsUnchanged: 9, bytesCopied: 35 }, { objects: 4, rows: 0 }],
    [{ rowsInserted: 2, rowsUpdated: 3, rowsDeleted: 2, rowsQuarantined: 5 }, { objects: 0, rows: 7 }],
    [{}, { objects: 0, rows: 0 }],
  ])('counts what was put back, not what was left alone or kept aside: %o', (changes, expected) => {
    const report = buildReport(run, [step(0, 'mart', { changes, writes: 1 })], {});
    expect(restoredCounts(report)).toEqual(expected);
  });
});
