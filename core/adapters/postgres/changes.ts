import type pg from 'pg';
import { partitionTree, type Relation } from './catalog.ts';

/**
 * Change detection by transaction id: which live rows may differ from the restore point, without comparing every row.
 *
 * Capture records, from the capture transaction's own snapshot (REPEATABLE READ, so the snapshot the shadow copy was
 * read with), `since` = pg_snapshot_xmin(pg_current_snapshot()) as an xid8 (64 bits: epoch and xid, never wraps), and
 * the relfilenode of every leaf of the table. Restore flags a live row as "possibly changed" when its xmin (the
 * transaction that wrote that version of the row) lies in [since, bound], bound being an xid8 no smaller than any
 * transaction that can have written a row we read (the restore's own xid, or its snapshot's xmax).
 *
 * Why this is correct (no changed row is missed):
 * - Every row version the shadow copy does not hold was written by a transaction not visible to the capture snapshot:
 *   one in progress at capture (xid >= snapshot xmin) or started after it (xid >= snapshot xmax >= xmin). A
 *   subtransaction's xid is larger than its top-level transaction's, so rows written in a savepoint of a transaction
 *   in progress at capture are >= xmin too. That is why the threshold is the snapshot's xmin, not the capture's own
 *   txid (which would miss them) nor "not visible in the snapshot" (pg_current_snapshot lists top-level xids only).
 * - An UPDATE, DELETE+INSERT, INSERT … ON CONFLICT, MERGE or COPY always writes a new row version with a new xmin.
 *   COPY FREEZE needs a table created or truncated in the same transaction: a new relfilenode, see below.
 * - xmin is a 32-bit xid, so it is mapped to 64 bits against the bound: F = bound - ((bound32 - xmin) mod 2^32), the
 *   unique full xid in (bound - 2^32, bound]. A row written after the capture has a full xid in [since, bound]; while
 *   bound - since < 2^31 that interval is inside (bound - 2^32, bound], so the mapping gives its true xid and the row is
 *   flagged. Wraparound of the 32-bit counter between capture and restore is therefore harmless. When
 *   bound - since >= 2^31 (the capture is older than 2^31 transactions) this is not guaranteed: full comparison.
 * - Frozen rows: since 9.4 freezing sets infomask bits and keeps the raw xmin, which is what the `xmin` column shows.
 *   A row written after the capture and frozen since keeps its raw xmin, so it is still flagged (freezing never hides a
 *   change). A row frozen long ago (raw xmin older than 2^32 transactions) may map into the window by accident: it is
 *   then a false positive, and a flagged row is only a candidate: it is compared with the shadow copy by key and
 *   written only if it differs, so a false positive costs one key lookup and never a wrong write. xmin values 0-2
 *   (Invalid, Bootstrap, Frozen: pre-9.4 frozen rows) are never flagged: no row written after the capture has them.
 * - Rows deleted since the capture leave no row version behind: they are found by the anti-join of the shadow's keys
 *   against the live table's primary key (the shadow is indexed on the key too).
 * - A rewrite of the table (VACUUM FULL, CLUSTER, TRUNCATE, ALTER TABLE that rewrites) gives it a new relfilenode;
 *   most keep xmin, but an ALTER TABLE rewrite stamps every row with its own xid and TRUNCATE … COPY FREEZE could
 *   write frozen rows. Rather than reason about each, any relfilenode change falls back to the full comparison, as do
 *   a changed table oid, a schema change (an added column with a default, or a re-added one, changes what rows read as
 *   without writing them), and a restore point that predates this tracking.
 * Not seen by xmin: changes that alter how a row reads without rewriting it (ALTER TYPE … RENAME VALUE of an enum, a
 * domain or collation change). The verify gate's count and checksum after the stage catches those.
 */

/** What capture records for change detection. */
export interface ChangeTracking {
  /** xid8 (decimal text): xmin of the capture snapshot. */
  since: string;
  /** Leaf relation oid -> relfilenode at capture (the table itself when it is not partitioned). */
  filenodes: Record<string, string>;
}

const WINDOW_LIMIT = 2n ** 31n;

async function filenodesOf(client: pg.Client, table: Relation): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const leaf of await partitionTree(client, table)) {
    if (!leaf.isLeaf) continue;
    const { rows } = await client.query<{ f: string | null }>('SELECT pg_catalog.pg_relation_filenode($1::oid::regclass)::text AS f', [leaf.oid]);
    out[String(leaf.oid)] = rows[0]?.f ?? '';
  }
  return out;
}

/** Called inside the capture's REPEATABLE READ transaction, after the rows were read. */
export async function captureTracking(client: pg.Client, table: Relation): Promise<ChangeTracking> {
  const { rows } = await client.query<{ since: string }>('SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text AS since');
  return { since: rows[0]?.since ?? '0', filenodes: await filenodesOf(client, table) };
}

export type ChangeDetection =
  /** `predicate`: SQL over alias `alias`, true for every row that may differ from the restore point (a superset). */
  | { ok: true; predicate: (alias: string) => string; note: string }
  | { ok: false; note: string };

/**
 * Decides whether the xmin path is valid and, if it is, returns the predicate. `bound` is `own` (the calling transaction
 * takes an xid and uses it: restore, which holds a lock that keeps writers out) or `snapshot` (the snapshot's xmax:
 * read-only diff).
 */
export async function changeDetection(
  client: pg.Client,
  table: Relation,
  tracking: ChangeTracking | undefined,
  options: { sameTable: boolean; schemaChanged: boolean; bound: 'own' | 'snapshot' },
): Promise<ChangeDetection> {
  const full = (reason: string): ChangeDetection => ({ ok: false, note: `full comparison: ${reason}` });
  if (!tracking) return full('the restore point predates change tracking (no capture transaction id recorded)');
  if (!options.sameTable) return full('the table was dropped and made again since the capture (another oid)');
  if (options.schemaChanged) return full('the deploy changed the table\'s definition, which can change rows without writing them');
  const now = await filenodesOf(client, table);
  const before = tracking.filenodes;
  const changed = [...new Set([...Object.keys(before), ...Object.keys(now)])].filter((oid) => before[oid] !== now[oid]);
  if (changed.length > 0) {
    return full(`the table was rewritten since the capture (relfilenode changed: VACUUM FULL, CLUSTER, TRUNCATE or an ALTER TABLE that rewrites)`);
  }
  const { rows } = await client.query<{ b: string }>(
    options.bound === 'own' ? 'SELECT pg_catalog.pg_current_xact_id()::text AS b' : 'SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text AS b',
  );
  const bound = BigInt(rows[0]?.b ?? '0');
  const since = BigInt(tracking.since);
  const span = bound - since;
  if (span < 0n) return full(`the capture's transaction id ${since} is ahead of the database's (${bound}): the database was restored or replaced`);
  if (span >= WINDOW_LIMIT) return full(`the capture is ${span} transactions old, beyond the 2^31 that 32-bit xmin values can tell apart`);
  return {
    ok: true,
    // age(xid) is (reference - xid) as a 32-bit difference, with one reference per transaction (its own xid, or the
    // next one when it has none yet: GetStableLatestTransactionId), and INT_MAX for frozen and special xids (0-2). So
    // age(xmin) <= age(since) holds exactly for the xids from `since` on, up to the reference, while the span is under
    // 2^31 (checked above); rows the restore itself writes, newer than the reference, come out negative and are
    // candidates too. The limit is an InitPlan, computed once; the per-row test is one cheap function call, where
    // mapping xmin to 64 bits through text costs several times more on every row of the table.
    predicate: (a) => `(pg_catalog.age(${a}.xmin) <= (SELECT pg_catalog.age('${since & 0xffffffffn}'::xid)))`,
    note: `change detection: xmin since ${since}`,
  };
}
