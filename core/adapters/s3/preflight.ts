import { GetBucketLifecycleConfigurationCommand, GetBucketVersioningCommand, type LifecycleRule, type S3Client } from '@aws-sdk/client-s3';
import { PreflightError } from '../../errors.ts';
import { errorName, sendOnce, type RetryPolicy } from './retry.ts';

/** Storage classes a version cannot be copied from without a RestoreObject first (hours). */
export const ARCHIVE_CLASSES: ReadonlySet<string> = new Set(['GLACIER', 'DEEP_ARCHIVE']);

/** The bucket's versioning status; a PreflightError naming the fix if the bucket does not exist. */
export async function versioningOf(s3: S3Client, policy: RetryPolicy, bucket: string): Promise<string | undefined> {
  try {
    return (await sendOnce(policy, () => s3.send(new GetBucketVersioningCommand({ Bucket: bucket })))).Status;
  } catch (error) {
    if (errorName(error) === 'NoSuchBucket') {
      throw new PreflightError(`bucket ${bucket} does not exist (or not in this account/region): fix the unit's "bucket" in the manifest`, { cause: error });
    }
    throw error;
  }
}

export async function assertVersioned(s3: S3Client, policy: RetryPolicy, bucket: string): Promise<void> {
  const status = await versioningOf(s3, policy, bucket);
  if (status !== 'Enabled') {
    throw new PreflightError(
      `bucket ${bucket} has versioning ${status ? `"${status}"` : 'never enabled'}: an s3-prefix restore point needs it on. ` +
        `Enable it with: aws s3api put-bucket-versioning --bucket ${bucket} --versioning-configuration Status=Enabled ` +
        '(or give the unit mode: copy, which copies the prefix into the state bucket)',
    );
  }
}

/**
 * The prefix a lifecycle rule applies to, or undefined when it applies to the whole bucket (no filter, an empty one, or
 * one that narrows only by tags or object size: those can match any key, so conservatively they overlap every prefix).
 */
export function rulePrefix(rule: LifecycleRule): string | undefined {
  const filter = rule.Filter;
  const prefix = filter?.Prefix ?? filter?.And?.Prefix ?? rule.Prefix;
  return prefix ? prefix : undefined;
}

/** Two prefixes overlap when one starts with the other: some key can match both. */
export function prefixesOverlap(a: string | undefined, b: string): boolean {
  return a === undefined || a.startsWith(b) || b.startsWith(a);
}

/** What in a rule would make a captured (soon noncurrent) version unusable before `retentionDays`; [] if nothing. */
export function lifecycleHazards(rule: LifecycleRule, retentionDays: number): string[] {
  if (rule.Status !== 'Enabled') return [];
  const hazards: string[] = [];
  const expire = rule.NoncurrentVersionExpiration?.NoncurrentDays;
  if (expire !== undefined && expire < retentionDays) {
    hazards.push(`NoncurrentVersionExpiration after ${expire} day(s)`);
  }
  for (const t of rule.NoncurrentVersionTransitions ?? []) {
    if (t.StorageClass && ARCHIVE_CLASSES.has(t.StorageClass) && t.NoncurrentDays !== undefined && t.NoncurrentDays < retentionDays) {
      hazards.push(`NoncurrentVersionTransition to ${t.StorageClass} after ${t.NoncurrentDays} day(s)`);
    }
  }
  return hazards;
}

/**
 * Refuses a bucket whose lifecycle would expire (or archive, which blocks a copy for hours) noncurrent versions under
 * the unit's prefix before the restore point's retention ends. No lifecycle configuration is fine.
 */
export async function assertLifecycleKeepsVersions(s3: S3Client, policy: RetryPolicy, bucket: string, prefix: string, retentionDays: number): Promise<void> {
  let rules: LifecycleRule[];
  try {
    rules = (await sendOnce(policy, () => s3.send(new GetBucketLifecycleConfigurationCommand({ Bucket: bucket })))).Rules ?? [];
  } catch (error) {
    if (errorName(error) === 'NoSuchLifecycleConfiguration') return;
    throw error;
  }
  const problems: string[] = [];
  for (const rule of rules) {
    const scope = rulePrefix(rule);
    if (!prefixesOverlap(scope, prefix)) continue;
    for (const hazard of lifecycleHazards(rule, retentionDays)) {
      problems.push(`rule ${JSON.stringify(rule.ID ?? '(no id)')} (${scope === undefined ? 'whole bucket' : `prefix ${JSON.stringify(scope)}`}): ${hazard}`);
    }
  }
  if (problems.length > 0) {
    throw new PreflightError(
      `bucket ${bucket}: its lifecycle would remove or archive noncurrent versions under ${JSON.stringify(prefix)} before the ` +
        `restore point's ${retentionDays}-day retention ends: ${problems.join('; ')}. Raise NoncurrentDays to at least ${retentionDays} ` +
        `in those rules (aws s3api put-bucket-lifecycle-configuration --bucket ${bucket} …), or lower retention.days in the manifest.`,
    );
  }
}
