import type { S3PrefixUnit } from '../../manifest/schema.ts';
import { PreflightError } from '../../errors.ts';
import { copyObject, deleteInBatches, headObject, listCurrent, listPrefix, SOURCE_VERSION_META, type IoOptions } from '../s3/io.ts';
import { compareKeys, contentChecksum, mapLimit, nameSome, s3Url } from '../s3/keys.ts';
import { loadPointManifest, MANIFEST_FORMAT, type AnyManifest, type S3PrefixDetails } from '../s3/manifest.ts';
import { DEFAULT_RETRY_POLICY } from '../s3/retry.ts';
import type { Check } from '../types.ts';
import { scratchUnitPrefix } from './names.ts';
import type { DrillScratch, ScratchTarget } from './types.ts';

/**
 * An s3-prefix unit rehearsed into `s3://<scratch bucket>/drills/<run>/<unit>/`: every object of the restore point is
 * copied there server-side (versioned mode: from its captured version in the unit's bucket, read only; copy mode: from
 * the restore point's copy in the state bucket), keys kept relative to the unit's prefix. The only writes go to the
 * scratch prefix; a scratch bucket that is a unit's own bucket is refused before anything is copied.
 */

const IO: IoOptions = { multipartThresholdBytes: 5 * 1024 ** 3, partSizeBytes: 512 * 1024 ** 2, copyConcurrency: 16, retry: DEFAULT_RETRY_POLICY };

interface Source {
  /** Key relative to the unit's prefix. */
  relative: string;
  bucket: string;
  key: string;
  versionId?: string;
  /** The ETag the restore point records (the checksum counts it), and the ETag a plain copy of the source has. */
  etag: string;
  copyEtag: string;
  size: number;
}

function sources(unit: S3PrefixUnit, manifest: AnyManifest, stateBucket: string): Source[] {
  if (manifest.format === MANIFEST_FORMAT) {
    return manifest.entries.map((e) => ({ relative: e.key.slice(unit.prefix.length), bucket: unit.bucket, key: e.key, versionId: e.versionId, etag: e.etag, copyEtag: e.etag, size: e.size }));
  }
  return manifest.entries.map((e) => ({ relative: e.key.slice(unit.prefix.length), bucket: stateBucket, key: e.backupKey, etag: e.etag, copyEtag: e.backupEtag, size: e.size }));
}

/**
 * Refuses a scratch location in a unit's own bucket: a drill never writes where production data lives, not even beside
 * it under another prefix (a bucket's lifecycle rules, notifications and replication would see the copies).
 */
export function assertScratchApart(unit: S3PrefixUnit, scratch: DrillScratch): void {
  if (scratch.s3Bucket === unit.bucket) {
    throw new PreflightError(
      `unit "${unit.id}": the drill's scratch bucket s3://${scratch.s3Bucket} is the unit's own bucket (s3://${unit.bucket}/${unit.prefix}); ` +
        'a drill never writes where production data lives. Name another bucket as "drill.scratchBucket" in the manifest.',
    );
  }
}

export const s3Scratch: ScratchTarget<S3PrefixUnit, S3PrefixDetails> = {
  async restore(unit, point, ctx, scratch) {
    assertScratchApart(unit, scratch);
    const manifest = await loadPointManifest(unit, point, ctx, IO.retry);
    const target = scratchUnitPrefix(scratch.runId, unit.id);
    const present = await listCurrent(ctx.s3, scratch.s3Bucket, target, IO.retry);
    const todo = sources(unit, manifest, ctx.stateBucket).filter((s) => {
      const have = present.get(target + s.relative);
      return !(have && have.size === s.size && have.etag === s.copyEtag);
    });
    await mapLimit(todo, IO.copyConcurrency, async (s) => {
      // A multipart copy gets another ETag: it is marked with the version it reproduces, as a rollback marks its copies.
      const multipart = s.size > IO.multipartThresholdBytes && s.versionId !== undefined;
      const head = multipart ? await headObject(ctx.s3, IO.retry, s.bucket, s.key, s.versionId) : undefined;
      await copyObject(ctx.s3, IO, {
        from: { bucket: s.bucket, key: s.key, versionId: s.versionId },
        to: { bucket: scratch.s3Bucket, key: target + s.relative },
        size: s.size,
        ...(head ? { replace: { head, extraMetadata: { [SOURCE_VERSION_META]: s.versionId! } } } : {}),
      });
    });
    ctx.log.info('drill: s3-prefix rehearsed', { unit: unit.id, at: s3Url(scratch.s3Bucket, target), copied: todo.length });
    return { target: s3Url(scratch.s3Bucket, target), changes: { objectsCopied: todo.length }, notes: [] };
  },

  async verify(unit, point, ctx, scratch): Promise<{ checks: Check[]; notes: string[] }> {
    const manifest = await loadPointManifest(unit, point, ctx, IO.retry);
    const target = scratchUnitPrefix(scratch.runId, unit.id);
    const live = await listCurrent(ctx.s3, scratch.s3Bucket, target, IO.retry);
    const expected = new Map(sources(unit, manifest, ctx.stateBucket).map((s) => [s.relative, s]));
    const entries: { key: string; etag: string; size: number }[] = [];
    const missing = [...expected.keys()].filter((k) => !live.has(target + k));
    const extra: string[] = [];
    const toHead: { key: string; etag: string; size: number; source: ReturnType<typeof expected.get> }[] = [];
    for (const o of live.values()) {
      const relative = o.key.slice(target.length);
      const s = expected.get(relative);
      if (!s) extra.push(relative);
      // A copy of the captured object has its ETag; a multipart copy has another, and says which version it reproduces.
      if (s && o.size === s.size && o.etag === s.copyEtag) entries.push({ key: unit.prefix + relative, etag: s.etag, size: o.size });
      else if (s && o.size === s.size) toHead.push({ key: o.key, etag: o.etag, size: o.size, source: s });
      else entries.push({ key: unit.prefix + relative, etag: o.etag, size: o.size });
    }
    await mapLimit(toHead, IO.copyConcurrency, async (h) => {
      const head = await headObject(ctx.s3, IO.retry, scratch.s3Bucket, h.key);
      const same = h.source?.versionId !== undefined && head?.metadata[SOURCE_VERSION_META] === h.source.versionId;
      entries.push({ key: unit.prefix + h.key.slice(target.length), etag: same ? h.source!.etag : h.etag, size: h.size });
    });
    const checks: Check[] = [];
    if (unit.checks.count) checks.push({ name: 'objectCount', ok: live.size === point.count, expected: point.count, actual: live.size });
    if (unit.checks.checksum) {
      const actual = contentChecksum(entries);
      checks.push({
        name: 'checksum',
        ok: actual === point.details.contentChecksum,
        expected: point.details.contentChecksum,
        actual,
        detail: `scratch copy ${s3Url(scratch.s3Bucket, target)}${missing.length + extra.length > 0 ? `: missing ${nameSome(missing.sort(compareKeys), 5) || 'none'}; extra ${nameSome(extra.sort(compareKeys), 5) || 'none'}` : ''}`,
      });
    }
    return { checks, notes: [] };
  },

  async cleanup(unit, ctx, scratch) {
    const target = scratchUnitPrefix(scratch.runId, unit.id);
    // Every version and delete marker under the run's own prefix (the scratch bucket may keep versions); nothing else.
    const listing = await listPrefix(ctx.s3, scratch.s3Bucket, target, IO.retry);
    const versions = [...listing.values()].flatMap((h) => [...h.versions, ...h.markers].map((v) => ({ key: h.key, versionId: v.versionId })));
    await deleteInBatches(ctx.s3, IO.retry, scratch.s3Bucket, target, versions, 'removing the drill scratch copy');
    return { removed: versions.length > 0 ? [`${s3Url(scratch.s3Bucket, target)} (${versions.length} object version(s))`] : [] };
  },
};

