import { describe, expect, it } from 'vitest';
import type { Run, Step } from '../../core/ledger/ledger.ts';
import { buildReport, renderMarkdown, renderReport } from '../../core/report/report.ts';

const run = (over: Partial<Run> = {}): Run => ({
  runId: 'rollback-orders-d-42-1',
  pipeline: 'orders',
  deploymentId: 'd-42',
  status: 'SUCCEEDED',
  dryRun: false,
  requested: ['staging'],
  scope: ['mart', 'staging', 'raw'],
  stages: [
    { index: 0, units: ['mart'] },
    { index: 1, units: ['staging'] },
    { index: 2, units: ['raw'] },
  ],
  reasons: {},
  requestedBy: 'jane',
  reason: 'mart | totals doubled',
  startedAt: '2026-11-29T03:00:00.000Z',
  ...over,
});

const step = (stage: number, unitId: string, status: Step['status'], writes: number, changes: Record<string, number> = {}): Step => ({
  runId: 'rollback-orders-d-42-1',
  stage,
  unitId,
  type: unitId === 'raw' ? 's3-prefix' : 'postgres-table',
  status,
  changes,
  writes,
  notes: [],
  checks: status === 'VERIFY_FAILED' ? [{ name: 'rowCount', ok: false, expected: 500, actual: 498 }] : [{ name: 'rowCount', ok: true, expected: 500, actual: 500 }],
});

const types = { mart: 'postgres-table', staging: 'postgres-table', raw: 's3-prefix' };

describe('run report', () => {
  const cases: { name: string; run: Run; steps: Step[]; stages: string[]; partial: boolean }[] = [
    {
      name: 'every stage verified: not partial',
      run: run(),
      steps: [step(0, 'mart', 'VERIFIED', 3), step(1, 'staging', 'VERIFIED', 7), step(2, 'raw', 'VERIFIED', 4)],
      stages: ['VERIFIED', 'VERIFIED', 'VERIFIED'],
      partial: false,
    },
    {
      name: 'a gate failed in stage 2: partial, stage 3 not started',
      run: run({ status: 'FAILED' }),
      steps: [step(0, 'mart', 'VERIFIED', 3), step(1, 'staging', 'VERIFY_FAILED', 0)],
      stages: ['VERIFIED', 'VERIFY_FAILED', 'NOT_STARTED'],
      partial: true,
    },
    {
      name: 'failed before anything was restored: not partial',
      run: run({ status: 'FAILED' }),
      steps: [],
      stages: ['NOT_STARTED', 'NOT_STARTED', 'NOT_STARTED'],
      partial: false,
    },
    {
      name: 'restored but not yet verified when it stopped: partial',
      run: run({ status: 'FAILED' }),
      steps: [step(0, 'mart', 'RESTORED', 3)],
      stages: ['RESTORED_UNVERIFIED', 'NOT_STARTED', 'NOT_STARTED'],
      partial: true,
    },
    {
      name: 'refused by the lock: nothing touched',
      run: run({ status: 'REFUSED' }),
      steps: [],
      stages: ['NOT_STARTED', 'NOT_STARTED', 'NOT_STARTED'],
      partial: false,
    },
    {
      name: 'dry run: would change / no change, never partial',
      run: run({ status: 'DRY_RUN', dryRun: true }),
      steps: [step(0, 'mart', 'RESTORED', 3), step(1, 'staging', 'RESTORED', 0), step(2, 'raw', 'RESTORED', 4)],
      stages: ['WOULD_CHANGE', 'NO_CHANGE', 'WOULD_CHANGE'],
      partial: false,
    },
  ];

  it.each(cases)('$name', ({ run: r, steps, stages, partial }) => {
    const report = buildReport(r, steps, types);
    expect(report.stages.map((s) => s.status)).toEqual(stages);
    expect(report.partial).toBe(partial);
    expect(report.totals.writes).toBe(steps.reduce((n, s) => n + s.writes, 0));
  });

  it('names the failed check with expected and actual in text and in Markdown', () => {
    const report = buildReport(run({ status: 'FAILED', error: { name: 'VerificationFailedError', message: 'stage 2 did not verify' } }), [step(0, 'mart', 'VERIFIED', 3), step(1, 'staging', 'VERIFY_FAILED', 0)], types);
    expect(renderReport(report)).toContain('✗ rowCount expected 500, got 498');
    const md = renderMarkdown(report);
    expect(md).toContain('# Rollback of orders / d-42: FAILED');
    expect(md).toContain('**Partial state.**');
    expect(md).toContain('## Stage 2: VERIFY_FAILED');
    expect(md).toContain('✗ rowCount (expected 500, got 498)');
    expect(md).toContain('| error | VerificationFailedError: stage 2 did not verify |');
    // A pipe in user text cannot break the table.
    expect(md).toContain('mart \\| totals doubled');
  });

  it('totals add up the changes of every unit, and a dry run says what a rollback would write', () => {
    const report = buildReport(run({ dryRun: true, status: 'DRY_RUN' }), [step(0, 'mart', 'RESTORED', 2, { rowsUpdated: 2 }), step(1, 'staging', 'RESTORED', 5, { rowsUpdated: 3, rowsDeleted: 2 })], types);
    expect(report.totals.changes).toEqual({ rowsUpdated: 5, rowsDeleted: 2 });
    expect(renderReport(report)).toContain('total: a rollback would make 7 writes');
    expect(renderMarkdown(report)).toContain('| writes a rollback would make | 7 |');
  });

  it('shows the trigger, in text and in Markdown; a run recorded without one shows none', () => {
    const trigger = { kind: 'eventbridge' as const, source: 'aws.cloudwatch', detailType: 'CloudWatch Alarm State Change', summary: 'CloudWatch alarm orders-dq entered ALARM' };
    const report = buildReport(run({ trigger }), [step(0, 'mart', 'VERIFIED', 3), step(1, 'staging', 'VERIFIED', 7), step(2, 'raw', 'VERIFIED', 4)], types);
    expect(report.trigger).toEqual(trigger);
    expect(renderReport(report)).toContain('  trigger: eventbridge aws.cloudwatch / CloudWatch Alarm State Change: CloudWatch alarm orders-dq entered ALARM');
    expect(renderMarkdown(report)).toContain('| trigger | eventbridge aws.cloudwatch / CloudWatch Alarm State Change: CloudWatch alarm orders-dq entered ALARM |');
    const manual = buildReport(run({ trigger: { kind: 'manual' } }), [], types);
    expect(renderReport(manual)).toContain('  trigger: manual');
    expect(renderMarkdown(manual)).toContain('| trigger | manual |');
    const old = buildReport(run(), [], types);
    expect(old.trigger).toBeUndefined();
    expect(renderReport(old)).not.toContain('trigger:');
  });

  it('a resumed run shows the run it resumed and the units it skipped (verified by that run, re-verified now)', () => {
    const skipped: Step = { ...step(0, 'mart', 'VERIFIED', 0), notes: ['verified by run r-0; skipped'], skippedFrom: 'r-0' };
    const report = buildReport(run({ resumedFrom: 'r-0', trigger: { kind: 'manual' } }), [skipped, step(1, 'staging', 'VERIFIED', 7), step(2, 'raw', 'VERIFIED', 4)], types);
    expect(report.resumedFrom).toBe('r-0');
    expect(report.skipped).toEqual([{ stage: 0, unitId: 'mart' }]);
    expect(report.stages[0]!.units[0]).toMatchObject({ status: 'VERIFIED', writes: 0, skippedFrom: 'r-0' });
    expect(report.totals.writes).toBe(11);
    const text = renderReport(report);
    expect(text).toContain('  resumed from run r-0; skipped (verified by it, re-verified now): mart (stage 1)');
    expect(text).toContain('· verified by run r-0; skipped');
    const md = renderMarkdown(report);
    expect(md).toContain('| resumed from | `r-0` |');
    expect(md).toContain('| skipped (verified by the resumed run, re-verified now) | mart (stage 1) |');
    // A run that is not a resume says nothing about it.
    expect(buildReport(run(), [], types).resumedFrom).toBeUndefined();
    expect(renderMarkdown(buildReport(run(), [], types))).not.toContain('resumed from');
  });
});
