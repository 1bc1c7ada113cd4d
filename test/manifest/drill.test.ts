import { describe, expect, it } from 'vitest';
import { ManifestError } from '../../core/errors.ts';
import { durationSeconds, parseDuration } from '../../core/manifest/drill.ts';
import { parseManifest, validateManifest } from '../../core/manifest/load.ts';

const BASE = `
pipeline: orders
units:
  - id: raw
    type: s3-prefix
    bucket: orders-lake
    prefix: raw/orders/
`;

function issues(text: string): string[] {
  try {
    parseManifest(text, 'orders.yaml');
  } catch (error) {
    if (error instanceof ManifestError) return error.issues.map((i) => `${i.path}: ${i.message}`);
    throw error;
  }
  return [];
}

describe('manifest rto and drill', () => {
  it.each([
    ['90s', 90],
    ['15m', 900],
    ['1h', 3600],
    ['24h', 86_400],
    [' 5m ', 300],
  ])('reads the duration %j as %i seconds', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
    expect(durationSeconds(text)).toBe(seconds);
  });

  it.each(['15', '15 m', '1.5h', '0s', '-5m', '1d', '15min', '', '25h'])('refuses %j with a message that says what a duration is', (text) => {
    expect(typeof parseDuration(text)).toBe('string');
  });

  it('takes rto and a drill with its defaults, and the result is valid input again (the deployed manifest is re-read)', () => {
    const manifest = parseManifest(`${BASE}rto: 15m\ndrill:\n  schedule: "cron(0 3 ? * SUN *)"\n`);
    expect(manifest.rto).toBe('15m');
    expect(manifest.drill).toEqual({ schedule: 'cron(0 3 ? * SUN *)', deployment: 'latest' });
    expect(validateManifest(JSON.parse(JSON.stringify(manifest)))).toEqual(manifest);
  });

  it('names the field and the problem for a bad rto, schedule, deployment or scratch bucket, all at once', () => {
    const found = issues(`${BASE}rto: 15 minutes\ndrill:\n  schedule: every sunday\n  deployment: "../x"\n  scratchBucket: Not_A_Bucket\n  extra: 1\n`);
    expect(found).toEqual(
      expect.arrayContaining([
        'rto: must be a duration: a whole number followed by s, m or h ("90s", "15m", "1h") (got "15 minutes") (line 8)',
        expect.stringMatching(/^drill\.schedule: must be an EventBridge Scheduler expression/),
        expect.stringMatching(/^drill\.deployment: must be "latest" or a deployment id/),
        expect.stringMatching(/^drill\.scratchBucket: must be a valid S3 bucket name/),
        'drill.extra: unknown field "extra" (line 13)',
      ]),
    );
    expect(issues(`${BASE}rto: 48h\n`)).toEqual([expect.stringMatching(/^rto: must be at most 24h/)]);
  });
});
