/**
 * The AWS requests a rollback makes, counted from what it writes. Pure: the same counters (a dry run's diff, or a
 * run's recorded changes) always give the same counts, so an estimate and the run it estimated are counted alike.
 *
 * What is counted, and why (see core/adapters/s3/versioned.ts, copy-mode.ts and rollback.asl.json):
 *   s3-prefix unit, versioned mode: the prefix is listed three times (the undo record lists what the run is about to
 *     replace, restore plans against a listing, verify lists again; a change-log unit is not recorded: twice),
 *     1,000 keys a page, and the undo record reads the bucket's versioning and lifecycle (counted with the GETs); its restore-point manifest is read twice (GetObject); every copy heads its source version
 *     once, and verify heads two versions of every rewritten key (HeadObject ×3 per copy); one CopyObject per object
 *     copied (objects above 5 GiB go part by part: counted as one); delete markers removed and objects hidden go in
 *     DeleteObjects batches of 1,000 (each kind its own batches).
 *   s3-prefix unit, copy mode: as above, but each live object overwritten or deleted is first copied to the quarantine
 *     (one more CopyObject), and no heads are needed.
 *   table and RDS units: no S3 requests (their work is rows written, or the RDS control plane, which is not priced).
 *   custom units: two more Lambda invocations, their handler's function at restore and at verify (its running time is
 *     the handler owner's, not counted).
 *   every unit: one Lambda invocation (restore), its step written twice (restore, verify), three state transitions
 *     (Restore unit, Unit restored?, Unit restored), and one read of the deployed manifest.
 *   every stage: two Lambda invocations (Collect shards, Verify stage), seven state transitions, two manifest reads.
 *   every run: seven Lambda invocations (plan, window, lock, pause and resume triggers, finish, release), twelve state
 *     transitions, ten ledger writes (run, index, statuses, lock, throughput record), two manifest reads, and the
 *     report written three times (state JSON, audit JSON, audit Markdown).
 * Retries, RDS poll loops and the Distributed Map of very large prefixes are not counted: an estimate is a floor there.
 */

export const REQUEST_KINDS = [
  'S3 ListObjectVersions',
  'S3 GetObject',
  'S3 HeadObject',
  'S3 CopyObject',
  'S3 DeleteObjects',
  'S3 PutObject',
  'DynamoDB writes',
  'Lambda invocations',
  'Step Functions transitions',
] as const;

export type RequestKind = (typeof REQUEST_KINDS)[number];
export type Requests = Record<RequestKind, number>;

/** Named counters of a unit's writes (`objectsCopied`, `rowsDeleted`, `bytesCopied`, ...), as adapters report them. */
export type Counters = Readonly<Record<string, number>>;

/**
 * S3 requests billed as PUT, COPY, POST or LIST (tier 1); the others are GET and "all other" (tier 2). DeleteObjects is
 * a POST; the S3 price page lists DELETE requests as free. It is priced here as a POST, so that the estimate errs on
 * the high side by at most one tier-1 request per 1,000 keys.
 */
export const S3_TIER1: readonly RequestKind[] = ['S3 ListObjectVersions', 'S3 CopyObject', 'S3 DeleteObjects', 'S3 PutObject'];
export const S3_TIER2: readonly RequestKind[] = ['S3 GetObject', 'S3 HeadObject'];

const KEYS_PER_PAGE = 1000;
const KEYS_PER_DELETE = 1000;

export function noRequests(): Requests {
  return Object.fromEntries(REQUEST_KINDS.map((k) => [k, 0])) as Requests;
}

export function addRequests(into: Requests, more: Requests): Requests {
  for (const k of REQUEST_KINDS) into[k] += more[k];
  return into;
}

/** What a unit moves: objects written (copied, uncovered, hidden, quarantined), bytes copied, rows written. */
export interface Work {
  objects: number;
  bytes: number;
  rows: number;
}

const count = (c: Counters, name: string) => Math.max(0, c[name] ?? 0);

/** Counters that say what was left alone (`objectsUnchanged`) are not work. */
export function workOf(changes: Counters): Work {
  let objects = 0;
  let rows = 0;
  for (const [name, n] of Object.entries(changes)) {
    if (/Unchanged$/.test(name) || !(n > 0)) continue;
    if (/^(objects|deleteMarkers)/.test(name)) objects += n;
    else if (/^rows/.test(name)) rows += n;
  }
  return { objects, bytes: count(changes, 'bytesCopied'), rows };
}

/** The S3 requests one unit's restore and verification make. */
export function unitS3Requests(type: string, changes: Counters): Requests {
  const r = noRequests();
  if (type !== 's3-prefix') return r;
  const copied = count(changes, 'objectsCopied');
  const markers = count(changes, 'deleteMarkersRemoved');
  const deleted = count(changes, 'objectsDeleted');
  const quarantined = count(changes, 'objectsQuarantined');
  const keys = count(changes, 'objectsUnchanged') + copied + deleted + markers;
  const pages = Math.max(1, Math.ceil(keys / KEYS_PER_PAGE));
  const copyMode = 'objectsQuarantined' in changes;
  // A change-log unit's rollback is not recorded for undo (core/workflow/undo.ts): it never lists before it writes.
  const recorded = !('changeLogKeys' in changes);
  r['S3 ListObjectVersions'] = (recorded ? 3 : 2) * pages;
  r['S3 GetObject'] = 2 + (recorded ? 2 : 0);
  r['S3 HeadObject'] = copyMode ? 0 : 3 * copied;
  r['S3 CopyObject'] = copied + (copyMode ? quarantined : 0);
  r['S3 DeleteObjects'] = Math.ceil(markers / KEYS_PER_DELETE) + Math.ceil(deleted / KEYS_PER_DELETE);
  return r;
}

/** A unit's requests: its S3 requests plus its share of the workflow (Lambda, state transitions, ledger, manifest). */
export function unitRequests(type: string, changes: Counters): Requests {
  const r = unitS3Requests(type, changes);
  r['S3 GetObject'] += 1;
  r['Lambda invocations'] += type === 'custom' ? 3 : 1;
  r['DynamoDB writes'] += 2;
  r['Step Functions transitions'] += 3;
  return r;
}

/** What a stage costs beyond its units: Collect shards and Verify stage, and the transitions around them. */
export function stageRequests(): Requests {
  const r = noRequests();
  r['S3 GetObject'] = 2;
  r['Lambda invocations'] = 2;
  r['Step Functions transitions'] = 7;
  return r;
}

/** What a run costs beyond its stages: planning, lock, triggers, finish, report. */
export function runRequests(): Requests {
  const r = noRequests();
  r['S3 GetObject'] = 2;
  r['S3 PutObject'] = 3;
  r['Lambda invocations'] = 7;
  r['DynamoDB writes'] = 10;
  r['Step Functions transitions'] = 12;
  return r;
}
