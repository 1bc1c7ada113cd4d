import { describe, expect, it } from 'vitest';
import { ManifestError } from '../../core/errors.ts';
import { parseManifest } from '../../core/manifest/load.ts';
import { parseWindow, parseWindows, windowStatus } from '../../core/manifest/policy.ts';

const at = (iso: string) => new Date(iso);

describe('maintenance windows', () => {
  it.each([
    ['Sat 00:00-06:00 UTC', { days: [6], start: 0, end: 360, timeZone: 'UTC' }],
    ['daily 02:00-04:00 UTC', { days: [0, 1, 2, 3, 4, 5, 6], start: 120, end: 240 }],
    ['Mon-Fri 22:00-02:00 Europe/Berlin', { days: [1, 2, 3, 4, 5], start: 1320, end: 120, timeZone: 'Europe/Berlin' }],
    ['Fri-Mon 00:00-24:00 UTC', { days: [0, 1, 5, 6], start: 0, end: 1440 }],
    ['Sat,Sun 10:00-12:00 UTC', { days: [0, 6] }],
  ])('parses %s', (text, expected) => {
    expect(parseWindow(text)).toMatchObject(expected);
  });

  it.each([
    ['Sat 00:00-06:00', /must be "<days> HH:MM-HH:MM <time zone>"/],
    ['Caturday 00:00-06:00 UTC', /unknown days "Caturday"/],
    ['Sat 25:00-06:00 UTC', /start 25:00 is not a time of day/],
    ['Sat 02:00-02:00 UTC', /start and end are equal/],
    ['Sat 00:00-06:00 Mars/Olympus', /unknown time zone "Mars\/Olympus"/],
  ])('refuses %s', (text, message) => {
    expect(parseWindow(text)).toMatch(message);
  });

  it.each([
    // [now, windows, open, next opening]
    ['2026-11-07T03:00:00Z', ['Sat 00:00-06:00 UTC'], true, undefined],
    ['2026-11-07T06:00:00Z', ['Sat 00:00-06:00 UTC'], false, '2026-11-14T00:00:00.000Z'], // the end is exclusive
    ['2026-11-06T20:00:00Z', ['Sat 00:00-06:00 UTC'], false, '2026-11-07T00:00:00.000Z'],
    ['2026-11-06T20:30:15Z', ['Sat 00:00-06:00 UTC', 'daily 21:00-21:30 UTC'], false, '2026-11-06T21:00:00.000Z'],
    // Crossing midnight: the window of Friday 22:00 runs into Saturday 02:00 (Berlin, UTC+1 in November).
    ['2026-11-07T00:30:00Z', ['Fri 22:00-02:00 Europe/Berlin'], true, undefined],
    ['2026-11-07T01:00:00Z', ['Fri 22:00-02:00 Europe/Berlin'], false, '2026-11-13T21:00:00.000Z'],
    // Daylight saving time: 02:00 Berlin is 00:00 UTC in summer, 01:00 UTC in winter (the switch is 2026-10-25).
    ['2026-10-24T12:00:00Z', ['daily 02:00-03:00 Europe/Berlin'], false, '2026-10-25T00:00:00.000Z'],
    ['2026-10-25T12:00:00Z', ['daily 02:00-03:00 Europe/Berlin'], false, '2026-10-26T01:00:00.000Z'],
    ['2026-11-04T12:00:00Z', [], true, undefined],
  ] as const)('at %s with %j: open %s, next opening %s', (now, windows, open, next) => {
    const status = windowStatus(parseWindows(windows), at(now));
    expect(status.open).toBe(open);
    if (!status.open) expect(status.nextOpenAt.toISOString()).toBe(next);
  });
});

describe('manifest policy block', () => {
  const base = `pipeline: orders
units:
  - { id: raw, type: s3-prefix, bucket: orders-lake, prefix: raw/orders/ }
`;

  it('accepts windows, approval, pause rules and schedules, with defaults', () => {
    const m = parseManifest(`${base}policy:
  windows: ["Sat 00:00-06:00 UTC"]
  approval: { timeoutMinutes: 30 }
  pause:
    rules:
      - name: orders-load
      - { name: orders-late-files, eventBus: etl }
    schedules:
      - name: orders-hourly
      - { name: orders-refresh, group: etl }
`);
    expect(m.policy).toEqual({
      windows: ['Sat 00:00-06:00 UTC'],
      approval: { required: true, timeoutMinutes: 30, allowSelfApproval: false },
      pause: {
        rules: [
          { name: 'orders-load', eventBus: 'default' },
          { name: 'orders-late-files', eventBus: 'etl' },
        ],
        schedules: [
          { name: 'orders-hourly', group: 'default' },
          { name: 'orders-refresh', group: 'etl' },
        ],
      },
    });
    expect(parseManifest(base).policy).toBeUndefined();
  });

  it('refuses a schedule listed twice (the default group named or not)', () => {
    expect(() => parseManifest(`${base}policy:\n  pause:\n    schedules:\n      - { name: hourly }\n      - { name: hourly, group: default }\n`)).toThrow(
      /policy\.pause\.schedules\[1\]\.name: schedule "hourly" in group "default" is already listed at pause\.schedules\[0\]/,
    );
  });

  it('names every problem with its path and line', () => {
    const text = `${base}policy:
  windows: ["Sat 00:00-06:00 UTC", "Sat 00:00-06:00"]
  approval: { required: yes, timeoutMinutes: 0 }
  pause:
    rules:
      - name: "orders-*"
      - name: ok-rule
    schedules:
      - { name: hourly, group: "etl/*" }
  notify: true
`;
    let error: ManifestError | undefined;
    try {
      parseManifest(text, 'orders.yaml');
    } catch (e) {
      error = e as ManifestError;
    }
    expect(error).toBeInstanceOf(ManifestError);
    const lines = error!.issues.map((i) => `${i.path}: ${i.message}`);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^policy\.windows\[1\]: must be "<days> HH:MM-HH:MM <time zone>".*\(line 5\)$/),
        expect.stringMatching(/^policy\.approval\.required: expected true or false, got "yes"/),
        expect.stringMatching(/^policy\.approval\.timeoutMinutes: /),
        expect.stringMatching(/^policy\.pause\.rules\[0\]\.name: must be an EventBridge rule name/),
        expect.stringMatching(/^policy\.pause\.schedules\[0\]\.group: must be an EventBridge Scheduler name/),
        expect.stringMatching(/^policy\.notify: unknown field "notify"/),
      ]),
    );
    // Duplicates are checked once each rule is well-formed.
    expect(() => parseManifest(`${base}policy: { pause: { rules: [{ name: a }, { name: b }, { name: a }] } }\n`)).toThrow(
      /policy\.pause\.rules\[2\]\.name: rule "a" on bus "default" is already listed at pause\.rules\[0\]/,
    );
  });
});
