import type { S3PrefixUnit } from '../../manifest/schema.ts';
import type { AdapterContext, Changes, Check } from '../types.ts';
import { backupKeyFor, compareKeys, contentChecksum, mapLimit, quarantineKeyFor } from './keys.ts';
import { copyObject, deleteInBatches, headObject, listCurrent, userMetadata, type IoOptions, type ListedObject, type ObjectHead } from './io.ts';
import { COPY_MANIFEST_FORMAT, type CopyEntry, type CopyManifest } from './manifest.ts';
import { versioningOf } from './preflight.ts';
import { buildChecks } from './versioned.ts';

/**
 * Copy mode, for buckets without versioning (allowed on versioned buckets too: it then ignores their versions and
 * keeps its own copies, which also survive a lifecycle rule that expires noncurrent versions).
 *
 * capture  – every current object under the prefix is copied server-side (CopyObject, metadata and tags kept, guarded by
 *            CopySourceIfMatch on the ETag its HeadObject gave) to `restore-points/<pipeline>/<deployment>/<unit>/objects/<key>`
 *            in the state bucket; the manifest lists (key, etag, size, contentType, user metadata, backup key and ETag).
 * restore  – compares the live listing with the manifest; for every key it will overwrite or delete, it first copies the
 *            live object to `quarantine/<runId>/<unit>/<key>` in the state bucket, then copies the kept object back
 *            (or deletes the added key). Nothing is lost; a rerun finds everything equal and writes nothing.
 * verify   – count, per-key size and ETag (the original's or our copy's), Content-Type and user metadata of every key
 *            written since the capture (LastModified after it: the only keys a deploy or a restore can have changed).
 * release  – deletes the copies and the manifest (never the quarantine: that is the evidence of a run).
 *
 * Equality of a live object with its kept copy is by size and ETag: the original's ETag, or the ETag our copy got
 * (they differ for multipart uploads; a multipart copy back with the same part size reproduces our copy's ETag).
 * Metadata is read (HeadObject) only for keys written after the capture, never for every key.
 */

/** Allowance for clock skew between the capturing process and S3 when deciding "written after the capture". */
const CLOCK_SKEW_MS = 5 * 60_000;

function metadataDifferences(entry: CopyEntry, head: ObjectHead): string[] {
  const diffs: string[] = [];
  if ((head.contentType ?? '') !== (entry.contentType ?? '')) diffs.push(`contentType ${JSON.stringify(head.contentType ?? '')} vs ${JSON.stringify(entry.contentType ?? '')}`);
  const a = userMetadata(head);
  const keys = new Set([...Object.keys(a), ...Object.keys(entry.metadata)]);
  if ([...keys].some((k) => a[k] !== entry.metadata[k])) diffs.push('user metadata');
  return diffs;
}

function sameBytes(entry: CopyEntry, live: ListedObject): boolean {
  return live.size === entry.size && (live.etag === entry.etag || live.etag === entry.backupEtag);
}

const writtenSince = (live: ListedObject, capturedAt: string) => live.lastModified >= Date.parse(capturedAt) - CLOCK_SKEW_MS;

export async function captureCopy(unit: S3PrefixUnit, ctx: AdapterContext, opts: IoOptions, folder: string): Promise<CopyManifest> {
  await versioningOf(ctx.s3, opts.retry, unit.bucket); // the bucket exists (names the fix if not)
  const live = await listCurrent(ctx.s3, unit.bucket, unit.prefix, opts.retry);
  const copied = await mapLimit([...live.values()], opts.copyConcurrency, async (o): Promise<CopyEntry | undefined> => {
    const head = await headObject(ctx.s3, opts.retry, unit.bucket, o.key);
    if (!head) return undefined; // deleted between the listing and now: not part of the point
    const backupKey = backupKeyFor(folder, o.key);
    const out = await copyObject(ctx.s3, opts, {
      from: { bucket: unit.bucket, key: o.key, ifMatch: head.etag },
      to: { bucket: ctx.stateBucket, key: backupKey },
      size: head.size,
    });
    return { key: o.key, etag: head.etag, size: head.size, contentType: head.contentType, metadata: userMetadata(head), backupKey, backupEtag: out.etag };
  });
  const entries = copied.filter((e): e is CopyEntry => e !== undefined).sort((a, b) => compareKeys(a.key, b.key));
  const sum = contentChecksum(entries);
  return {
    format: COPY_MANIFEST_FORMAT,
    pipeline: ctx.pipeline,
    deploymentId: ctx.deploymentId,
    unitId: unit.id,
    bucket: unit.bucket,
    prefix: unit.prefix,
    capturedAt: ctx.now().toISOString(),
    count: entries.length,
    totalBytes: entries.reduce((s, e) => s + e.size, 0),
    checksum: sum,
    contentChecksum: sum,
    entries,
  };
}

export interface CopyPlan {
  /** Kept objects to copy back, with the live object they replace (quarantined first), if any. */
  restores: { entry: CopyEntry; live?: ListedObject }[];
  /** Live objects added since capture: quarantined, then deleted. */
  deletions: ListedObject[];
  unchanged: number;
  bytes: number;
}

export async function planCopy(unit: S3PrefixUnit, manifest: CopyManifest, ctx: AdapterContext, opts: IoOptions): Promise<CopyPlan> {
  const live = await listCurrent(ctx.s3, unit.bucket, unit.prefix, opts.retry);
  const plan: CopyPlan = { restores: [], deletions: [], unchanged: 0, bytes: 0 };
  const suspects: { entry: CopyEntry; live: ListedObject }[] = [];
  for (const entry of manifest.entries) {
    const l = live.get(entry.key);
    if (l && sameBytes(entry, l)) {
      if (writtenSince(l, manifest.capturedAt)) suspects.push({ entry, live: l });
      else plan.unchanged++;
    } else {
      plan.restores.push({ entry, ...(l ? { live: l } : {}) });
    }
  }
  // Same bytes, but rewritten after the capture: its metadata decides.
  await mapLimit(suspects, opts.copyConcurrency, async (s) => {
    const head = await headObject(ctx.s3, opts.retry, unit.bucket, s.entry.key);
    if (head && metadataDifferences(s.entry, head).length === 0) plan.unchanged++;
    else plan.restores.push(s);
  });
  plan.restores.sort((a, b) => compareKeys(a.entry.key, b.entry.key));
  const captured = new Set(manifest.entries.map((e) => e.key));
  plan.deletions = [...live.values()].filter((l) => !captured.has(l.key)).sort((a, b) => compareKeys(a.key, b.key));
  plan.bytes = plan.restores.reduce((s, r) => s + r.entry.size, 0);
  return plan;
}

export function copyPlanChanges(plan: CopyPlan): Changes {
  return {
    objectsCopied: plan.restores.length,
    deleteMarkersRemoved: 0,
    objectsDeleted: plan.deletions.length,
    objectsQuarantined: plan.restores.filter((r) => r.live).length + plan.deletions.length,
    objectsUnchanged: plan.unchanged,
    bytesCopied: plan.bytes,
  };
}

export function copyPlanWrites(plan: CopyPlan): number {
  const c = copyPlanChanges(plan);
  return c.objectsCopied! + c.objectsDeleted! + c.objectsQuarantined!;
}

export function copyPlanNotes(plan: CopyPlan): string[] {
  const notes: string[] = [];
  const q = copyPlanChanges(plan).objectsQuarantined!;
  if (q > 0) notes.push(`${q} live object(s) copied to the quarantine before being overwritten or deleted`);
  if (copyPlanWrites(plan) === 0) notes.push('prefix already equals its restore point');
  return notes;
}

export function quarantineFolder(ctx: AdapterContext, unit: S3PrefixUnit): string {
  return `quarantine/${encodeURIComponent(runIdOf(ctx))}/${encodeURIComponent(unit.id)}/`;
}

function runIdOf(ctx: AdapterContext): string {
  return ctx.runId ?? `adhoc-${ctx.now().toISOString().replace(/[:.]/g, '-')}`;
}

export async function executeCopy(unit: S3PrefixUnit, plan: CopyPlan, ctx: AdapterContext, opts: IoOptions): Promise<void> {
  const { s3, stateBucket } = ctx;
  const { bucket, prefix } = unit;
  const runId = runIdOf(ctx);
  const quarantine = (l: ListedObject) =>
    copyObject(s3, opts, { from: { bucket, key: l.key, ifMatch: l.etag }, to: { bucket: stateBucket, key: quarantineKeyFor(runId, unit.id, l.key) }, size: l.size });
  await mapLimit(plan.restores, opts.copyConcurrency, async ({ entry, live }) => {
    if (!entry.key.startsWith(prefix)) throw new Error(`refusing to write ${JSON.stringify(entry.key)}: outside s3://${bucket}/${prefix}`);
    if (live) await quarantine(live);
    await copyObject(s3, opts, { from: { bucket: stateBucket, key: entry.backupKey, ifMatch: entry.backupEtag }, to: { bucket, key: entry.key }, size: entry.size });
  });
  await deleteInBatches(
    s3,
    opts.retry,
    bucket,
    prefix,
    plan.deletions.map((l) => ({ key: l.key })),
    'deleting objects added since capture',
    async (batch) => {
      const byKey = new Map(plan.deletions.map((l) => [l.key, l]));
      await mapLimit(batch, opts.copyConcurrency, (t) => quarantine(byKey.get(t.key)!));
    },
  );
}

export async function verifyCopy(unit: S3PrefixUnit, manifest: CopyManifest, contentSum: string, ctx: AdapterContext, opts: IoOptions): Promise<Check[]> {
  const live = await listCurrent(ctx.s3, unit.bucket, unit.prefix, opts.retry);
  const missing: string[] = [];
  const changed: string[] = [];
  const metadata: string[] = [];
  const effective = new Map<string, string>();
  const toHead: { entry: CopyEntry; live: ListedObject }[] = [];
  for (const e of manifest.entries) {
    const l = live.get(e.key);
    if (!l) missing.push(e.key);
    else if (!sameBytes(e, l)) changed.push(e.key);
    else {
      effective.set(e.key, e.etag);
      if (writtenSince(l, manifest.capturedAt)) toHead.push({ entry: e, live: l });
    }
  }
  await mapLimit(toHead, opts.copyConcurrency, async ({ entry }) => {
    const head = await headObject(ctx.s3, opts.retry, unit.bucket, entry.key);
    const diffs = head ? metadataDifferences(entry, head) : ['gone'];
    if (diffs.length > 0) metadata.push(`${JSON.stringify(entry.key)} (${diffs.join(', ')})`);
  });
  const captured = new Set(manifest.entries.map((e) => e.key));
  const extra = [...live.keys()].filter((k) => !captured.has(k)).sort(compareKeys);
  return buildChecks(unit, manifest.count, live.size, contentSum, {
    missing,
    extra,
    changed: changed.sort(compareKeys),
    metadata: metadata.sort(),
    checksumEntries: [...live.values()].map((l) => ({ key: l.key, size: l.size, etag: effective.get(l.key) ?? l.etag })),
    headed: toHead.length,
  });
}


