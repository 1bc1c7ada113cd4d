import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeOf } from '../../core/errors.ts';
import { formatUtc, isUtcTime, parseUtcTime } from '../../core/manifest/time.ts';
import { nonUtcTimes } from '../support/times.ts';

const instant = fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true });

/** Issue 10, part 5: every time the CLI reads is ISO-8601 UTC with Z; anything else is refused (exit 2), never guessed. */
describe('ISO-8601 UTC times', () => {
  it('every instant printed (to the second or the millisecond) reads back as the same instant', () => {
    fc.assert(
      fc.property(instant, (at) => {
        expect(parseUtcTime(at.toISOString(), '--x').getTime()).toBe(at.getTime());
        const second = Math.floor(at.getTime() / 1000) * 1000;
        expect(parseUtcTime(formatUtc(at), '--x').getTime()).toBe(second);
        expect(isUtcTime(formatUtc(at)) && isUtcTime(at.toISOString())).toBe(true);
        expect(nonUtcTimes(`at ${formatUtc(at)} and ${at.toISOString()}`)).toEqual([]);
      }),
    );
  });

  it('another offset, no offset, or another form is refused as bad input, naming the flag and the expected form', () => {
    fc.assert(
      fc.property(
        instant,
        fc.integer({ min: -14, max: 14 }).filter((h) => h !== 0),
        (at, hours) => {
          const local = at.toISOString().slice(0, 19);
          const offset = `${hours < 0 ? '-' : '+'}${String(Math.abs(hours)).padStart(2, '0')}:00`;
          for (const text of [local, `${local}${offset}`, at.toUTCString(), String(at.getTime()), at.toISOString().slice(0, 10)]) {
            let error: unknown;
            try {
              parseUtcTime(text, '--now');
            } catch (e) {
              error = e;
            }
            expect(exitCodeOf(error)).toBe(EXIT.badInput);
            expect((error as Error).message).toContain('--now:');
            expect((error as Error).message).toContain('e.g. 2026-11-29T09:30:00Z');
          }
        },
      ),
    );
  });

  it('a date that does not exist is refused; minutes-only input is read to the minute', () => {
    expect(() => parseUtcTime('2026-02-30T00:00:00Z', '--to')).toThrow(/--to: "2026-02-30T00:00:00Z" is not a real date and time/);
    expect(() => parseUtcTime('2026-11-29T24:00:00Z', '--to')).toThrow(/not a real date/);
    expect(() => parseUtcTime('2026-11-29T09:30:00+01:00', '--to')).toThrow(/has a UTC offset other than Z/);
    expect(parseUtcTime('2026-11-29T09:30Z', '--to').toISOString()).toBe('2026-11-29T09:30:00.000Z');
  });

  it('the output scan finds every time not in the form', () => {
    const bad = 'Sun Nov 29 2026 10:30:00 GMT+0100 | 11/29/2026 | 9:30 AM | 2026-11-29T09:30:00 | 2026-11-29T10:30:00+01:00 | 1764408600000 | 1764408600';
    expect(nonUtcTimes(bad)).toEqual(expect.arrayContaining(['2026-11-29T09:30:00', '2026-11-29T10:30:00+01:00', 'GMT+0100', '11/29/2026', '9:30 AM', '1764408600000', '1764408600']));
    expect(nonUtcTimes('run rollback-orders-d-1-20261129T093000123Z-ab12 at 2026-11-29T09:30:00.123Z: 42 writes, 1500 ms')).toEqual([]);
  });
});
