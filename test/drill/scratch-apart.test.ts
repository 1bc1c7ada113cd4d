import { describe, expect, it } from 'vitest';
import { drillShort, isMarkerOf, drillMarker, scratchSchemaName, scratchUnitPrefix } from '../../core/adapters/drill/names.ts';
import { drillIdentifier } from '../../core/adapters/drill/rds-scratch.ts';
import { assertScratchApart } from '../../core/adapters/drill/s3-scratch.ts';
import type { S3PrefixUnit } from '../../core/manifest/schema.ts';

const unit: S3PrefixUnit = { id: 'raw', type: 's3-prefix', bucket: 'orders-lake', prefix: 'raw/orders/', mode: 'versioned', capture: 'listing', dependsOn: [], checks: { count: true, checksum: true } };
const runId = 'drill-orders-d-42-20261129T030000000Z-ab12';

describe('drill scratch names and ownership', () => {
  it('refuses a scratch bucket that is a unit\'s own bucket, whatever the prefix; accepts any other', () => {
    expect(() => assertScratchApart(unit, { runId, short: drillShort(runId), s3Bucket: 'orders-lake' })).toThrow(
      /the drill's scratch bucket s3:\/\/orders-lake is the unit's own bucket .* a drill never writes where production data lives/,
    );
    expect(() => assertScratchApart(unit, { runId, short: drillShort(runId), s3Bucket: 'etl-rollback-state' })).not.toThrow();
  });

  it('derives every scratch name from the run: S3 prefix, schema, RDS identifier', () => {
    const short = drillShort(runId);
    expect(short).toMatch(/^[0-9a-f]{8}$/);
    expect(scratchUnitPrefix(runId, 'raw')).toBe(`drills/${runId}/raw/`);
    expect(scratchSchemaName(short)).toBe(`etl_rollback_drill_${short}`);
    expect(drillIdentifier('orders-db', short)).toBe(`orders-db-drill-${short}`);
    // A 41-character identifier (the manifest's longest) still fits RDS's 63 and keeps "-drill-<short>" readable.
    const long = drillIdentifier('a'.repeat(41), short);
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long.endsWith(`-drill-${short}`)).toBe(true);
  });

  it('a marker proves ownership by one run only', () => {
    const marker = JSON.stringify(drillMarker(runId, 'orders'));
    expect(isMarkerOf(marker, runId)).toBe(true);
    expect(isMarkerOf(marker, `${runId}-other`)).toBe(false);
    expect(isMarkerOf('{"tool":"etl-rollback","kind":"restore-point","runId":"x"}', 'x')).toBe(false);
    expect(isMarkerOf('not json', runId)).toBe(false);
    expect(isMarkerOf(null, runId)).toBe(false);
  });
});
