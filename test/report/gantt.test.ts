import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ganttText, stagesGantt, type TimedStage } from '../../core/report/gantt.ts';

/** The bars of a gantt, read back: name, tag, start and end. */
function bars(text: string) {
  return text
    .split('\n')
    .filter((l) => /^\s+stage \d+ /.test(l))
    .map((l) => {
      const m = /^\s+stage (\d+) \(([^)]*)\) :(?:(active|crit), )?stage\d+, (\S+), (\S+)$/.exec(l);
      if (!m) throw new Error(`not a bar: ${l}`);
      return { stage: Number(m[1]), status: m[2]!, tag: m[3], start: m[4]!, end: m[5]! };
    });
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

describe('gantt of the stages as they ran', () => {
  it('draws one bar per stage that ran, from its first restore to its last verification', () => {
    const text = stagesGantt('orders / d-42: rollback-1', [
      { index: 0, status: 'VERIFIED', startedAt: '2026-11-29T03:00:00.000Z', endedAt: '2026-11-29T03:00:04.500Z' },
      { index: 1, status: 'VERIFY_FAILED', startedAt: '2026-11-29T03:00:05.000Z', endedAt: '2026-11-29T03:00:09.000Z' },
      { index: 2, status: 'NOT_STARTED' },
    ])!;
    expect(text.split('\n').slice(0, 5)).toEqual(['gantt', '  title orders / d-42 rollback-1 (UTC)', '  dateFormat YYYY-MM-DD[T]HH:mm:ss.SSS[Z]', '  axisFormat %H:%M:%S', '  section stages']);
    expect(bars(text)).toEqual([
      { stage: 1, status: 'VERIFIED', tag: undefined, start: '2026-11-29T03:00:00.000Z', end: '2026-11-29T03:00:04.500Z' },
      { stage: 2, status: 'VERIFY_FAILED', tag: 'crit', start: '2026-11-29T03:00:05.000Z', end: '2026-11-29T03:00:09.000Z' },
    ]);
  });

  it('a stage restored but not verified is drawn active', () => {
    expect(bars(stagesGantt('t', [{ index: 0, status: 'RESTORED_UNVERIFIED', startedAt: '2026-11-29T03:00:00.000Z', endedAt: '2026-11-29T03:00:01.000Z' }])!)[0]!.tag).toBe('active');
  });

  it('a stage that took no measurable time still gets a bar (one millisecond)', () => {
    const [bar] = bars(stagesGantt('t', [{ index: 0, status: 'VERIFIED', startedAt: '2026-11-29T03:00:00.000Z', endedAt: '2026-11-29T03:00:00.000Z' }])!);
    expect(bar!.end).toBe('2026-11-29T03:00:00.001Z');
  });

  it('no stage with times (a dry run, a refused run): no gantt', () => {
    expect(stagesGantt('t', [{ index: 0, status: 'WOULD_CHANGE' }])).toBeUndefined();
    expect(stagesGantt('t', [])).toBeUndefined();
  });

  const titles: [string, string][] = [
    ['a colon would end the title', 'orders: d-1'],
    ['a hash would start an entity', 'orders #1'],
    ['a semicolon would end the statement', 'a;b'],
    ['a newline would end the line', 'a\nb'],
  ];
  it.each(titles)('title text is made safe: %s', (_, title) => {
    expect(ganttText(title)).not.toMatch(/[:#;\n]/);
  });

  it('for any stages: every stage with times is listed once, in order, with valid ISO dates, end after start', () => {
    const stageArb = fc.record({
      status: fc.constantFrom('VERIFIED', 'VERIFY_FAILED', 'FAILED', 'RESTORED_UNVERIFIED', 'NOT_STARTED'),
      start: fc.integer({ min: Date.parse('2020-01-01T00:00:00Z'), max: Date.parse('2030-01-01T00:00:00Z') }),
      ms: fc.nat(86_400_000),
      ran: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(stageArb, { maxLength: 12 }), (raw) => {
        const stages: TimedStage[] = raw.map((s, index) =>
          s.ran ? { index, status: s.status, startedAt: new Date(s.start).toISOString(), endedAt: new Date(s.start + s.ms).toISOString() } : { index, status: s.status },
        );
        const text = stagesGantt('run', stages);
        const ran = stages.filter((s) => s.startedAt);
        if (ran.length === 0) {
          expect(text).toBeUndefined();
          return;
        }
        const drawn = bars(text!);
        expect(drawn.map((b) => b.stage)).toEqual(ran.map((s) => s.index + 1));
        for (const b of drawn) {
          expect(b.start).toMatch(ISO);
          expect(b.end).toMatch(ISO);
          expect(Date.parse(b.end)).toBeGreaterThan(Date.parse(b.start));
        }
      }),
    );
  });
});
