import { GetBucketLifecycleConfigurationCommand, type LifecycleRule, type S3Client } from '@aws-sdk/client-s3';
import { OutsideRestorableWindowError, PreflightError } from '../../errors.ts';
import type { S3PrefixUnit } from '../../manifest/schema.ts';
import type { AdapterContext } from '../types.ts';
import { listPrefix, type IoOptions, type Listing } from './io.ts';
import { compareKeys, contentChecksum, manifestChecksum } from './keys.ts';
import { MANIFEST_FORMAT, type ManifestEntry, type VersionManifest } from './manifest.ts';
import { prefixesOverlap, rulePrefix, versioningOf } from './preflight.ts';
import { errorName, sendOnce, type RetryPolicy } from './retry.ts';
import { latestEntries } from './versioned.ts';

/**
 * Rollback to a time (`--to`), s3-prefix side: the prefix's state at a time T, read from the bucket's own version
 * history, written as the same version manifest a capture writes, so that the ordinary restore (listing path, sharded
 * Distributed Map path) puts it back unchanged and verify checks it the same way.
 *
 * The rule, per key: of its versions and delete markers, the newest one with LastModified <= T decides. A version: the
 * key held that version at T. A delete marker, or nothing at or before T: the key was absent at T (a restore hides it
 * behind a new delete marker, reversibly). Keys that have no history at all any more (every version permanently
 * deleted) are invisible to the listing; a key absent from the listing was absent at T as far as S3 can tell.
 *
 * Resolution is to the second: S3 lists LastModified with one-second resolution, so a write made in the same second as
 * T counts as made at or before T. A version and a delete marker of the same key in the same second cannot be ordered
 * from the listing (the SDK returns versions and markers as two lists): the one S3 marks latest wins if it is one of
 * them, else the version (the key stays visible; a restore that hides it would be just as reversible, but data
 * stays in view). Such keys are named in the resolution, so a person can check them.
 *
 * The window: the bucket must keep versions (versioning Enabled or Suspended; never enabled: no history, refused, naming
 * the bucket). Lifecycle rules expiring noncurrent versions under the prefix after N days bound it: a version replaced
 * more than N days ago may be gone, so the earliest restorable time is now − N days (the smallest N of the rules that
 * overlap the prefix). A rule that keeps only a number of newer noncurrent versions (NewerNoncurrentVersions) can expire
 * versions of any age: the window is not narrowed, but the resolution says so. A time after now is refused too.
 */

export interface RestorableWindow {
  /** Undefined: no lifecycle rule expires noncurrent versions under the prefix (bounded only by when versioning began). */
  earliest?: Date;
  latest: Date;
  /** Sentences for the resolution: what bounds the window, and what may already be gone. */
  notes: string[];
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** The restorable window of a prefix from the bucket's lifecycle rules (pure). */
export function windowFromRules(rules: readonly LifecycleRule[], prefix: string, now: Date): RestorableWindow {
  let days: { n: number; rule: string } | undefined;
  const notes: string[] = [];
  for (const rule of rules) {
    if (rule.Status !== 'Enabled' || !prefixesOverlap(rulePrefix(rule), prefix)) continue;
    const id = JSON.stringify(rule.ID ?? '(no id)');
    const expiry = rule.NoncurrentVersionExpiration;
    if (expiry?.NoncurrentDays !== undefined && (days === undefined || expiry.NoncurrentDays < days.n)) days = { n: expiry.NoncurrentDays, rule: id };
    if (expiry?.NewerNoncurrentVersions !== undefined) {
      notes.push(`lifecycle rule ${id} keeps only ${expiry.NewerNoncurrentVersions} newer noncurrent version(s) of a key: older versions may have been expired whatever their age`);
    }
  }
  if (!days) return { latest: now, notes };
  const earliest = new Date(now.getTime() - days.n * DAY_MS);
  notes.unshift(`lifecycle rule ${days.rule} expires noncurrent versions after ${days.n} day(s): the state before ${earliest.toISOString()} may already be gone`);
  return { earliest, latest: now, notes };
}

async function lifecycleRules(s3: S3Client, policy: RetryPolicy, bucket: string): Promise<LifecycleRule[]> {
  try {
    return (await sendOnce(policy, () => s3.send(new GetBucketLifecycleConfigurationCommand({ Bucket: bucket })))).Rules ?? [];
  } catch (error) {
    if (errorName(error) === 'NoSuchLifecycleConfiguration') return [];
    throw error;
  }
}

/**
 * The restorable window of the unit's prefix, refusing what cannot be rolled back to a time: a bucket that never kept
 * versions (PreflightError naming it), a time outside the window (OutsideRestorableWindowError naming the window).
 */
export async function assertRestorableAt(s3: S3Client, policy: RetryPolicy, unit: S3PrefixUnit, at: Date, now: Date): Promise<RestorableWindow> {
  const where = `s3://${unit.bucket}/${unit.prefix}`;
  const status = await versioningOf(s3, policy, unit.bucket);
  if (status !== 'Enabled' && status !== 'Suspended') {
    throw new PreflightError(
      `unit "${unit.id}": bucket ${unit.bucket} has never had versioning enabled, so it keeps no history: ${where} cannot be rolled back to a time. ` +
        'Only a restore point taken before the change (etl-rollback snapshot) can restore it; enable versioning to make --to possible from now on.',
    );
  }
  const window = windowFromRules(await lifecycleRules(s3, policy, unit.bucket), unit.prefix, now);
  if (at.getTime() > now.getTime() || (window.earliest && at.getTime() < window.earliest.getTime())) {
    throw new OutsideRestorableWindowError(
      `unit "${unit.id}": ${where} cannot be rolled back to ${at.toISOString()}: its restorable window is ` +
        `[${window.earliest?.toISOString() ?? 'when versioning was enabled'}, ${window.latest.toISOString()}]` +
        (window.earliest ? ` (${window.notes[0]})` : ''),
    );
  }
  if (status === 'Suspended') window.notes.push(`versioning of ${unit.bucket} is suspended: writes since it was suspended replaced objects without keeping the version they replaced`);
  return window;
}

/** What the prefix held at `at` (ms since the epoch), per key, from its listed history. Pure. */
export function entriesAt(listing: Listing, at: number): { entries: ManifestEntry[]; ambiguous: string[] } {
  const entries: ManifestEntry[] = [];
  const ambiguous: string[] = [];
  // Listed LastModified values are whole seconds: compare at the second, so a write in T's own second counts.
  const cutoff = Math.floor(at / 1000) * 1000 + 999;
  for (const history of listing.values()) {
    const version = history.versions.filter((v) => v.lastModified <= cutoff).reduce<(typeof history.versions)[number] | undefined>((a, v) => (a && a.lastModified >= v.lastModified ? a : v), undefined);
    const marker = history.markers.filter((m) => m.lastModified <= cutoff).reduce<(typeof history.markers)[number] | undefined>((a, m) => (a && a.lastModified >= m.lastModified ? a : m), undefined);
    if (!version) continue;
    if (marker && marker.lastModified > version.lastModified) continue;
    if (marker && marker.lastModified === version.lastModified) {
      ambiguous.push(history.key);
      if (history.latest?.kind === 'marker' && history.latest.entry === marker) continue;
    }
    entries.push({ key: history.key, versionId: version.versionId, etag: version.etag, size: version.size });
  }
  return { entries: entries.sort((a, b) => compareKeys(a.key, b.key)), ambiguous: ambiguous.sort(compareKeys) };
}

/** How the state at T differs from the live state, key by key. */
export interface AsOfDifferences {
  /** Keys live now and at T, with another version now (a restore copies the older one back). */
  older: number;
  /** Keys present at T, absent now (a restore uncovers or copies them back). */
  deletedSince: number;
  /** Keys live now, absent at T (a restore hides them behind delete markers). */
  addedSince: number;
}

export function differencesFromNow(atT: readonly ManifestEntry[], listing: Listing): AsOfDifferences {
  const live = new Map(latestEntries(listing).map((e) => [e.key, e]));
  const then = new Set(atT.map((e) => e.key));
  let older = 0;
  let deletedSince = 0;
  for (const e of atT) {
    const now = live.get(e.key);
    if (!now) deletedSince++;
    else if (now.versionId !== e.versionId) older++;
  }
  const addedSince = [...live.keys()].filter((k) => !then.has(k)).length;
  return { older, deletedSince, addedSince };
}

const n = (x: number) => x.toLocaleString('en-US');

/** The resolution in one line, for the plan and the confirmation ("s3://b/p/ as of …: 1,204 keys, 37 differ from now (…)"). */
export function describeAsOf(where: string, at: Date, count: number, d: AsOfDifferences): string {
  const differ = d.older + d.deletedSince + d.addedSince;
  return (
    `${where} as of ${at.toISOString()}: ${n(count)} keys, ${n(differ)} differ from now` +
    (differ > 0 ? ` (${n(d.older)} back to an older version, ${n(d.deletedSince)} deleted since, ${n(d.addedSince)} added since)` : '')
  );
}

/**
 * The version manifest of the prefix as of `at` (header as a capture writes it; `capturedAt` is `at` itself, so that
 * resolving the same time again gives the same manifest) and the lines that show the resolution.
 */
export async function resolveVersionedAt(
  unit: S3PrefixUnit,
  at: Date,
  ctx: AdapterContext,
  opts: IoOptions,
): Promise<{ manifest: VersionManifest; listing: Listing; window: RestorableWindow; ambiguous: string[] }> {
  const window = await assertRestorableAt(ctx.s3, opts.retry, unit, at, ctx.now());
  const listing = await listPrefix(ctx.s3, unit.bucket, unit.prefix, opts.retry);
  const { entries, ambiguous } = entriesAt(listing, at.getTime());
  const manifest: VersionManifest = {
    format: MANIFEST_FORMAT,
    pipeline: ctx.pipeline,
    deploymentId: ctx.deploymentId,
    unitId: unit.id,
    bucket: unit.bucket,
    prefix: unit.prefix,
    capturedAt: at.toISOString(),
    count: entries.length,
    totalBytes: entries.reduce((sum, e) => sum + e.size, 0),
    checksum: manifestChecksum(entries),
    contentChecksum: contentChecksum(entries),
    entries,
  };
  return { manifest, listing, window, ambiguous };
}
