import { RestoreObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { S3PrefixUnit } from '../../manifest/schema.ts';
import type { ArchiveRetrievalPrices } from '../../plan/prices.ts';
import type { AdapterContext, Pending } from '../types.ts';
import { compareKeys, headKey, mapLimit, nameSome } from './keys.ts';
import { headObject, type IoOptions, type ObjectHead } from './io.ts';
import type { ManifestEntry } from './manifest.ts';
import { errorName, sendOnce } from './retry.ts';

/**
 * Restore-point versions in an archive tier, and how a restore gets them back.
 *
 * A version in S3 Glacier Flexible Retrieval or Glacier Deep Archive, or an Intelligent-Tiering object in its Archive
 * Access or Deep Archive Access tier, cannot be the source of a CopyObject (ObjectNotInActiveTierError) until a
 * RestoreObject has made it readable: a temporary copy for `days` days (Glacier classes), or the object moved back to the
 * Frequent Access tier (Intelligent-Tiering: no `Days`, the request fails with one). That takes minutes to two days, so
 * the restore never waits in a Lambda: the unit's first call issues RestoreObject (with the VersionId) for every
 * captured version it must copy that is archived and not already on its way, copies everything else, and answers
 * `pending`; the state machine waits ("Wait for restore") and calls again; each later call reads the state of the
 * versions still waiting from one HeadObject each (`x-amz-restore: ongoing-request="false"` = readable) and copies each
 * as soon as it is. Nothing is remembered between calls: a rerun (or a retrieval whose temporary copy expired before it
 * was copied) simply finds the version archived again and asks again; a request for a retrieval already under way
 * answers RestoreAlreadyInProgress, which is what we wanted.
 *
 * Retrieval times, from the AWS documentation ("Understanding archive retrieval options",
 * https://docs.aws.amazon.com/AmazonS3/latest/userguide/restoring-objects-retrieval-options.html, and "Restoring objects
 * from the Intelligent-Tiering Archive Access and Deep Archive Access tiers" in "Restoring an archived object",
 * https://docs.aws.amazon.com/AmazonS3/latest/userguide/restoring-objects.html; the RestoreObject API reference for
 * Expedited being available to Flexible Retrieval and the Intelligent-Tiering Archive tier only):
 *   Glacier Flexible Retrieval – Expedited 1–5 minutes (objects under 250 MB), Standard 3–5 hours, Bulk 5–12 hours.
 *   Glacier Deep Archive       – Standard within 12 hours, Bulk within 48 hours; no Expedited.
 *   Intelligent-Tiering Archive Access      – as Flexible Retrieval (Expedited, Standard, Bulk).
 *   Intelligent-Tiering Deep Archive Access – as Deep Archive (Standard within 12 h, Bulk within 48 h); no Expedited.
 * Where the manifest asks for Expedited and the tier has none, Standard is used, and the plan says so.
 */

export type RetrievalTier = NonNullable<S3PrefixUnit['archiveRetrieval']>['tier'];

/** The unit's retrieval options, defaults filled in: Standard, 1 day. */
export function retrievalOf(unit: S3PrefixUnit): { tier: RetrievalTier; days: number } {
  return { tier: unit.archiveRetrieval?.tier ?? 'Standard', days: unit.archiveRetrieval?.days ?? 1 };
}

/** Where an archived version sits: a storage class, or an Intelligent-Tiering archive tier. */
export type ArchiveKind = 'GLACIER' | 'DEEP_ARCHIVE' | 'ARCHIVE_ACCESS' | 'DEEP_ARCHIVE_ACCESS';

/** Storage classes whose versions may need a RestoreObject; INTELLIGENT_TIERING only when HeadObject says ArchiveStatus. */
export const MAYBE_ARCHIVED_CLASSES: ReadonlySet<string> = new Set(['GLACIER', 'DEEP_ARCHIVE', 'INTELLIGENT_TIERING']);

interface Delay {
  /** As people read it: "3–5 hours". */
  text: string;
  /** The documented upper bound, in seconds: what the poll budget must cover. */
  maxSeconds: number;
  /** How long to wait between polls: a small fraction of the expected delay, so the copy follows soon after. */
  pollSeconds: number;
}

const MINUTE = 60;
const HOUR = 3600;

const DELAYS: Record<'flexible' | 'deep', Partial<Record<RetrievalTier, Delay>>> = {
  flexible: {
    Expedited: { text: '1–5 minutes', maxSeconds: 5 * MINUTE, pollSeconds: MINUTE },
    Standard: { text: '3–5 hours', maxSeconds: 5 * HOUR, pollSeconds: 15 * MINUTE },
    Bulk: { text: '5–12 hours', maxSeconds: 12 * HOUR, pollSeconds: 30 * MINUTE },
  },
  deep: {
    Standard: { text: 'within 12 hours', maxSeconds: 12 * HOUR, pollSeconds: 30 * MINUTE },
    Bulk: { text: 'within 48 hours', maxSeconds: 48 * HOUR, pollSeconds: HOUR },
  },
};

const family = (kind: ArchiveKind): 'flexible' | 'deep' => (kind === 'GLACIER' || kind === 'ARCHIVE_ACCESS' ? 'flexible' : 'deep');

/** The tier a retrieval of `kind` really uses: the asked one, or Standard where the asked one does not exist. */
export function effectiveTier(kind: ArchiveKind, asked: RetrievalTier): RetrievalTier {
  return DELAYS[family(kind)][asked] ? asked : 'Standard';
}

export function retrievalDelay(kind: ArchiveKind, asked: RetrievalTier): Delay & { tier: RetrievalTier } {
  const tier = effectiveTier(kind, asked);
  return { ...DELAYS[family(kind)][tier]!, tier };
}

/**
 * The poll budget for a wait of at most `maxSeconds` polled every `pollSeconds`: the documented bound with 50% to spare
 * (retrievals are "typically" within it), and never less than the adapters' usual budget needs.
 */
export function pollBudget(delay: Pick<Delay, 'maxSeconds' | 'pollSeconds'>): number {
  return Math.ceil((delay.maxSeconds * 1.5) / delay.pollSeconds) + 2;
}

/** Where a captured version stands: in an archive tier (and whether its retrieval runs), or readable. */
export type ArchiveState = { kind: ArchiveKind; state: 'archived' | 'restoring' } | { state: 'readable' };

/** Reads the state from a HeadObject of the version and the storage class its listing gave. */
export function archiveStateOf(storageClass: string, head: ObjectHead | undefined): ArchiveState {
  const restore = head?.restore ?? '';
  if (restore.includes('ongoing-request="false"')) return { state: 'readable' };
  const ongoing = restore.includes('ongoing-request="true"');
  if (storageClass === 'GLACIER' || storageClass === 'DEEP_ARCHIVE') return { kind: storageClass, state: ongoing ? 'restoring' : 'archived' };
  if (storageClass === 'INTELLIGENT_TIERING' && (head?.archiveStatus === 'ARCHIVE_ACCESS' || head?.archiveStatus === 'DEEP_ARCHIVE_ACCESS')) {
    return { kind: head.archiveStatus, state: ongoing ? 'restoring' : 'archived' };
  }
  return { state: 'readable' };
}

/** A captured version the restore must copy that is not readable yet. */
export interface WaitingVersion {
  entry: ManifestEntry;
  kind: ArchiveKind;
  state: 'archived' | 'restoring';
}

/**
 * The versions among `candidates` (copies whose source's storage class may be archived) that are not readable: one
 * HeadObject each, only for these (an Intelligent-Tiering version in an access tier costs that one request and is
 * then copied like any other).
 */
export async function findWaiting(
  s3: S3Client,
  opts: IoOptions,
  bucket: string,
  candidates: readonly { entry: ManifestEntry; storageClass: string }[],
): Promise<WaitingVersion[]> {
  const heads = new Map<string, ObjectHead | undefined>();
  await mapLimit(candidates, opts.copyConcurrency, async ({ entry }) => void heads.set(headKey(entry.key, entry.versionId), await headObject(s3, opts.retry, bucket, entry.key, entry.versionId)));
  return waitingFrom(candidates, heads);
}

/** The same from heads already fetched (by `headKey`): no request. A candidate without a head counts as readable. */
export function waitingFrom(candidates: readonly { entry: ManifestEntry; storageClass: string }[], heads: ReadonlyMap<string, ObjectHead | undefined>): WaitingVersion[] {
  const waiting: WaitingVersion[] = [];
  for (const { entry, storageClass } of candidates) {
    const state = archiveStateOf(storageClass, heads.get(headKey(entry.key, entry.versionId)));
    if (state.state !== 'readable') waiting.push({ entry, kind: state.kind, state: state.state });
  }
  return waiting.sort((a, b) => compareKeys(a.entry.key, b.entry.key));
}

/**
 * Issues RestoreObject (with the VersionId) for every waiting version whose retrieval has not started. Answers how many
 * were requested now. RestoreAlreadyInProgress (a request raced with another, or S3 had not shown it yet) is fine.
 * InvalidObjectState means S3 finds nothing to restore (an Intelligent-Tiering object that moved back to an access
 * tier meanwhile): the next poll's HeadObject decides.
 */
export async function requestRetrievals(
  s3: S3Client,
  opts: IoOptions,
  unit: S3PrefixUnit,
  waiting: readonly WaitingVersion[],
  ctx: Pick<AdapterContext, 'log'>,
): Promise<number> {
  let requested = 0;
  const { tier, days } = retrievalOf(unit);
  await mapLimit(
    waiting.filter((w) => w.state === 'archived'),
    opts.copyConcurrency,
    async (w) => {
      const intelligentTiering = w.kind === 'ARCHIVE_ACCESS' || w.kind === 'DEEP_ARCHIVE_ACCESS';
      try {
        await sendOnce(opts.retry, () =>
          s3.send(
            new RestoreObjectCommand({
              Bucket: unit.bucket,
              Key: w.entry.key,
              VersionId: w.entry.versionId,
              RestoreRequest: { ...(intelligentTiering ? {} : { Days: days }), GlacierJobParameters: { Tier: effectiveTier(w.kind, tier) } },
            }),
          ),
        );
        requested++;
      } catch (error) {
        const name = errorName(error);
        if (name === 'RestoreAlreadyInProgress') return;
        if (name === 'InvalidObjectState') {
          ctx.log.warn('RestoreObject found nothing to restore; the next poll reads the version again', { unit: unit.id, key: w.entry.key, versionId: w.entry.versionId });
          return;
        }
        throw error;
      }
    },
  );
  return requested;
}

/** Counts and bytes of waiting (or would-be-waiting) versions per archive kind. */
function byKind(versions: readonly { entry: ManifestEntry; kind: ArchiveKind }[]): Map<ArchiveKind, { count: number; bytes: number }> {
  const out = new Map<ArchiveKind, { count: number; bytes: number }>();
  for (const v of versions) {
    const k = out.get(v.kind) ?? { count: 0, bytes: 0 };
    k.count++;
    k.bytes += v.entry.size;
    out.set(v.kind, k);
  }
  return out;
}

const KIND_NAMES: Record<ArchiveKind, string> = {
  GLACIER: 'Glacier Flexible Retrieval',
  DEEP_ARCHIVE: 'Glacier Deep Archive',
  ARCHIVE_ACCESS: 'Intelligent-Tiering Archive Access',
  DEEP_ARCHIVE_ACCESS: 'Intelligent-Tiering Deep Archive Access',
};

/** The slowest retrieval among the waiting versions: what the wait between polls and the poll budget are sized for. */
export function slowestDelay(versions: readonly { kind: ArchiveKind }[], asked: RetrievalTier): Delay & { tier: RetrievalTier } {
  return versions.map((v) => retrievalDelay(v.kind, asked)).reduce((a, b) => (b.maxSeconds > a.maxSeconds ? b : a));
}

/** Retrieval prices as the plan uses them: which region's list prices, and of when. */
export interface RetrievalPricing {
  pricedRegion: string;
  asOf: string;
  prices: ArchiveRetrievalPrices;
}

/**
 * What retrieving `count` versions of `bytes` costs at list prices: per GB and per request of the tier. Intelligent-
 * Tiering's Standard and Bulk retrievals are free; its Expedited retrieval is not priced here (undefined).
 */
export function retrievalCostUsd(kind: ArchiveKind, tier: RetrievalTier, count: number, bytes: number, prices: ArchiveRetrievalPrices): number | undefined {
  const used = effectiveTier(kind, tier);
  if (kind === 'ARCHIVE_ACCESS' || kind === 'DEEP_ARCHIVE_ACCESS') return used === 'Expedited' ? undefined : 0;
  const p = kind === 'GLACIER' ? prices.glacierFlexible[used] : prices.deepArchive[used as 'Standard' | 'Bulk'];
  return (bytes / 1024 ** 3) * p.perGb + (count / 1000) * p.perThousandRequests;
}

const usd = (n: number): string => (n === 0 ? '$0 (free)' : n >= 0.01 ? `$${n.toFixed(2)}` : `$${n.toPrecision(2)}`);

/**
 * The plan's lines about archived versions: per archive kind, how many, how many bytes, the retrieval tier used (and
 * why, when it is not the one asked for), the documented delay and, with `pricing`, the retrieval's list price. Empty
 * when nothing is archived.
 */
export function archiveNotes(unit: S3PrefixUnit, waiting: readonly WaitingVersion[], pricing?: RetrievalPricing): string[] {
  const { tier, days } = retrievalOf(unit);
  const notes: string[] = [];
  for (const [kind, { count, bytes }] of byKind(waiting)) {
    const delay = retrievalDelay(kind, tier);
    const fallback = delay.tier !== tier ? ` (${tier} does not exist for ${KIND_NAMES[kind]})` : '';
    const keep = kind === 'GLACIER' || kind === 'DEEP_ARCHIVE' ? `, temporary copy kept ${days} day(s)` : ', moved back to Frequent Access';
    const started = waiting.filter((w) => w.kind === kind && w.state === 'restoring').length;
    const cost = pricing ? retrievalCostUsd(kind, tier, count, bytes, pricing.prices) : undefined;
    const priced = pricing ? `; retrieval ${cost === undefined ? 'not priced' : usd(cost)} (${pricing.pricedRegion} list prices of ${pricing.asOf})` : '';
    notes.push(
      `archived: ${count} captured version(s), ${bytes} bytes, in ${KIND_NAMES[kind]}: RestoreObject with the ${delay.tier} tier${fallback}${keep}; ` +
        `expected delay ${delay.text}${started > 0 ? ` (${started} retrieval(s) already under way)` : ''}${priced}; each is copied as soon as it is readable`,
    );
  }
  return notes;
}

/** The `pending` answer of a restore still waiting for retrievals: status for people, wait and budget from the tier. */
export function archivePending(unit: S3PrefixUnit, waiting: readonly WaitingVersion[], requestedNow: number): Pending {
  const delay = slowestDelay(waiting, retrievalOf(unit).tier);
  const keys = nameSome(waiting.map((w) => w.entry.key));
  const asked = requestedNow > 0 ? `${requestedNow} retrieval(s) requested now, ` : '';
  return {
    waitSeconds: delay.pollSeconds,
    maxPolls: pollBudget(delay),
    status: `${asked}waiting for ${waiting.length} archived version(s) to be readable (${delay.tier} retrieval, expected ${delay.text}): ${keys}`,
  };
}
