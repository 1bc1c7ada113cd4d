import { describe, expect, it } from 'vitest';
import { renderMarkdown, renderReport, type RunReport } from '../../core/report/report.ts';

const report: RunReport = {
  runId: 'drill-orders-d-42-20261129T030000000Z-ab12',
  pipeline: 'orders',
  deploymentId: 'd-42',
  status: 'FAILED',
  dryRun: false,
  requestedBy: 'eventbridge-scheduler',
  reason: 'scheduled drill',
  startedAt: '2026-11-29T03:00:00.000Z',
  endedAt: '2026-11-29T03:20:00.000Z',
  partial: false,
  totals: { writes: 0, changes: { rowsCopied: 505, objectsCopied: 4 } },
  stages: [
    {
      index: 0,
      status: 'VERIFIED',
      startedAt: '2026-11-29T03:00:01.000Z',
      endedAt: '2026-11-29T03:17:01.000Z',
      durationMs: 1_020_000,
      units: [{ unitId: 'staging', type: 'postgres-table', status: 'VERIFIED', changes: { rowsCopied: 505 }, writes: 0, notes: ['rehearsed in postgres warehouse: "etl_rollback_drill_0a1b2c3d"."staging"'], checks: [{ name: 'checksum', ok: true, expected: '1', actual: '1' }] }],
    },
  ],
  error: { name: 'DrillOverRto', message: 'recovery took 1020.0 s, over the RTO of 15m (900 s)' },
  drill: {
    rto: '15m',
    rtoSeconds: 900,
    recoveryMs: 1_020_000,
    overRto: true,
    scratch: [{ unitId: 'staging', target: 'postgres warehouse: "etl_rollback_drill_0a1b2c3d"."staging"' }],
    cleanup: { removed: ['postgres warehouse: schema etl_rollback_drill_0a1b2c3d'], complete: false, error: 'PreflightError: scratch schema holds objects the drill did not make' },
  },
};

describe('a drill report, rendered by the run report module', () => {
  it('as text: a drill, its recovery time against the RTO, each stage timed, production writes apart from scratch copies', () => {
    const text = renderReport(report);
    expect(text.split('\n').slice(0, 4)).toEqual([
      'Drill drill-orders-d-42-20261129T030000000Z-ab12 of orders/d-42: FAILED',
      '  recovery 1020.0 s of RTO 15m (900 s): OVER; into scratch targets only, cleanup INCOMPLETE',
      '  stage 1: VERIFIED (1020.0 s)',
      '    staging (postgres-table): VERIFIED — rowsCopied 505; checks 1/1 ok',
    ]);
    expect(text).toContain('  total: 0 writes to production; into scratch targets: rowsCopied 505, objectsCopied 4');
    expect(text).toContain('  error: DrillOverRto: recovery took 1020.0 s, over the RTO of 15m (900 s)');
  });

  it('as Markdown: the same title and timings, with recovery, scratch targets and cleanup rows', () => {
    const md = renderMarkdown(report);
    expect(md).toMatch(/^# Drill of orders \/ d-42: FAILED\n/);
    expect(md).toContain('| writes to production | 0 |');
    expect(md).toContain('| recovery time | recovery 1020.0 s of RTO 15m (900 s): OVER |');
    expect(md).toContain('| cleanup | **INCOMPLETE**: postgres warehouse: schema etl\\_rollback\\_drill\\_0a1b2c3d<br>PreflightError: scratch schema holds objects the drill did not make |');
    expect(md).toContain('2026-11-29T03:00:01.000Z → 2026-11-29T03:17:01.000Z (1020.0 s)');
  });
});
