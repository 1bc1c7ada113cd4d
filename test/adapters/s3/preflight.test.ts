import { describe, expect, it } from 'vitest';
import { PutBucketLifecycleConfigurationCommand, type LifecycleRule } from '@aws-sdk/client-s3';
import { lifecycleHazards, prefixesOverlap, rulePrefix, s3PrefixAdapter } from '../../../core/adapters/s3-prefix.ts';
import { PreflightError } from '../../../core/errors.ts';
import { contextFor, expectRejects, newBucket, put, s3, unitFor, versionFingerprint } from './helpers.ts';

describe('s3-prefix lifecycle preflight (pure)', () => {
  it('reads a rule prefix from Filter.Prefix, Filter.And.Prefix or the legacy Prefix; tag-only or empty filters cover the bucket', () => {
    expect(rulePrefix({ Status: 'Enabled', Filter: { Prefix: 'orders/' } })).toBe('orders/');
    expect(rulePrefix({ Status: 'Enabled', Filter: { And: { Prefix: 'orders/x/', Tags: [{ Key: 'a', Value: 'b' }] } } })).toBe('orders/x/');
    expect(rulePrefix({ Status: 'Enabled', Prefix: 'legacy/' })).toBe('legacy/');
    expect(rulePrefix({ Status: 'Enabled', Filter: {} })).toBeUndefined();
    expect(rulePrefix({ Status: 'Enabled', Filter: { Tag: { Key: 'a', Value: 'b' } } })).toBeUndefined();
    expect(prefixesOverlap(undefined, 'orders/')).toBe(true);
    expect(prefixesOverlap('orders/2024/', 'orders/')).toBe(true);
    expect(prefixesOverlap('ord', 'orders/')).toBe(true);
    expect(prefixesOverlap('orders-archive/', 'orders/')).toBe(false);
    const rule: LifecycleRule = { Status: 'Enabled', NoncurrentVersionTransitions: [{ NoncurrentDays: 3, StorageClass: 'GLACIER_IR' }, { NoncurrentDays: 5, StorageClass: 'DEEP_ARCHIVE' }] };
    expect(lifecycleHazards(rule, 14)).toEqual(['NoncurrentVersionTransition to DEEP_ARCHIVE after 5 day(s)']);
    expect(lifecycleHazards({ ...rule, Status: 'Disabled' }, 14)).toEqual([]);
  });
});

describe('s3-prefix lifecycle preflight (moto)', () => {
  async function captureWith(rules: LifecycleRule[], retentionDays = 14) {
    const bucket = await newBucket('data', true);
    const state = await newBucket('state', false);
    await put(bucket, 'orders/a.csv', 'a');
    if (rules.length > 0) await s3.send(new PutBucketLifecycleConfigurationCommand({ Bucket: bucket, LifecycleConfiguration: { Rules: rules } }));
    const ctx = contextFor(state, undefined, s3, retentionDays);
    return { bucket, state, run: () => s3PrefixAdapter.capture(unitFor(bucket, 'orders/'), ctx) };
  }

  it('refuses a rule on the prefix that expires noncurrent versions sooner than retention, naming bucket, rule and fix', async () => {
    const c = await captureWith([{ ID: 'short', Status: 'Enabled', Filter: { Prefix: 'orders/' }, NoncurrentVersionExpiration: { NoncurrentDays: 7 } }]);
    const error = await expectRejects(c.run());
    expect(error).toBeInstanceOf(PreflightError);
    expect(error.message).toContain(`bucket ${c.bucket}`);
    expect(error.message).toContain('rule "short" (prefix "orders/"): NoncurrentVersionExpiration after 7 day(s)');
    expect(error.message).toContain('Raise NoncurrentDays to at least 14');
    expect(await versionFingerprint(c.state)).toEqual([]); // no manifest written
  });

  it('refuses And-filters on a sub-prefix, whole-bucket rules, tag-only rules and archive transitions', async () => {
    const cases: LifecycleRule[] = [
      { ID: 'and', Status: 'Enabled', Filter: { And: { Prefix: 'orders/2024/', Tags: [{ Key: 'k', Value: 'v' }] } }, NoncurrentVersionExpiration: { NoncurrentDays: 3 } },
      { ID: 'all', Status: 'Enabled', Filter: {}, NoncurrentVersionExpiration: { NoncurrentDays: 1 } },
      { ID: 'tag', Status: 'Enabled', Filter: { Tag: { Key: 'k', Value: 'v' } }, NoncurrentVersionExpiration: { NoncurrentDays: 1 } },
      { ID: 'cold', Status: 'Enabled', Filter: { Prefix: 'orders/' }, NoncurrentVersionTransitions: [{ NoncurrentDays: 2, StorageClass: 'GLACIER' }] },
    ];
    for (const rule of cases) {
      const c = await captureWith([rule]);
      const error = await expectRejects(c.run());
      expect(error, rule.ID).toBeInstanceOf(PreflightError);
      expect(error.message).toContain(`rule "${rule.ID}"`);
    }
  });

  it('accepts no lifecycle, rules on other prefixes (orders-archive/ included), long enough or disabled rules', async () => {
    expect((await (await captureWith([])).run()).count).toBe(1);
    const ok = await captureWith([
      { ID: 'other', Status: 'Enabled', Filter: { Prefix: 'orders-archive/' }, NoncurrentVersionExpiration: { NoncurrentDays: 1 } },
      { ID: 'long', Status: 'Enabled', Filter: { Prefix: 'orders/' }, NoncurrentVersionExpiration: { NoncurrentDays: 30 } },
      { ID: 'off', Status: 'Disabled', Filter: { Prefix: 'orders/' }, NoncurrentVersionExpiration: { NoncurrentDays: 1 } },
    ]);
    expect((await ok.run()).count).toBe(1);
    // The same 30-day rule is too short for a 40-day retention.
    const longer = await captureWith([{ ID: 'long', Status: 'Enabled', Filter: { Prefix: 'orders/' }, NoncurrentVersionExpiration: { NoncurrentDays: 30 } }], 40);
    expect((await expectRejects(longer.run())).message).toContain('40-day retention');
  });
});
