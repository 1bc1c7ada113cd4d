import { describe, expect, it } from 'vitest';
import { formatBytes, formatSeconds, formatUsd } from '../../core/report/estimate-text.ts';

describe('numbers as operators read them', () => {
  const seconds: [number, string][] = [
    [0, '0 ms'],
    [0.0415, '42 ms'],
    [0.9994, '999 ms'],
    [1, '1.0 s'],
    [59.94, '59.9 s'],
    [61, '1 min 1 s'],
    [2400, '40 min 0 s'],
    [3 * 3600 + 20 * 60, '3 h 20 min'],
  ];
  it.each(seconds)('%s seconds: %s', (s, text) => expect(formatSeconds(s)).toBe(text));

  const bytes: [number, string][] = [
    [0, '0 B'],
    [35, '35 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [5 * 1024 ** 3, '5.0 GiB'],
    [3.5 * 1024 ** 4, '3.5 TiB'],
  ];
  it.each(bytes)('%s bytes: %s', (n, text) => expect(formatBytes(n)).toBe(text));

  const usd: [number, string][] = [
    [0, '$0'],
    [12.345, '$12.35'],
    [0.5, '$0.5000'],
    [0.001125, '$0.001125'],
    [0.00007712, '$0.00007712'],
  ];
  it.each(usd)('%s USD: %s (four significant digits below a dollar)', (n, text) => expect(formatUsd(n)).toBe(text));
});
