import type pg from 'pg';
import type { Relation } from './catalog.ts';
import type { Scope } from './scope.ts';
import { cols, countOf, deleteAndInsert, ident, keyMatch, rowText, updateInPasses } from './sql.ts';

/**
 * Which rows a restore writes, and how: the diff by primary key, or a reload of the scope.
 *
 * Scope semantics (a `where` or `partition` unit): the rows to put back are the captured ones (the shadow copy holds
 * exactly the rows that were in scope at capture). A live row is the restore's business if it is in scope now, or if
 * its key was in scope at capture:
 * - in scope now, key not captured (inserted, or moved into scope by the deploy): deleted (kept in quarantine);
 * - key captured, values differ (including a row the deploy moved out of scope, or to another partition): updated back;
 * - key captured, missing: inserted;
 * - neither in scope now nor captured: never read for writing, never written.
 * A table without a primary key has no keys to follow: its rows in scope are reloaded, and a row the deploy moved out
 * of scope stays where it is (it cannot be told from a row that was always outside).
 */

export type Strategy = 'diff' | 'reload';

export interface ReloadPolicy {
  /** Reload when more than this fraction of the rows in scope would be written by the diff (default 0.5). */
  fraction: number;
  /** ... and the scope holds at least this many rows: below it the diff is cheap anyway and keeps row identity. */
  minRows: number;
  /** Reload a whole table with TRUNCATE (no dead tuples) when nothing references it (default true). */
  truncate: boolean;
}

export interface RowSet {
  live: Relation;
  /** Quoted shadow table. */
  shadow: string;
  key: string[];
  scope: Scope;
  /** Columns an INSERT writes (not generated), captured names. */
  write: string[];
  /** Columns an UPDATE compares and writes (not key, not generated, not GENERATED ALWAYS identity), with how to compare. */
  update: { name: string; live: string; shadow: string }[];
  /** Non-key GENERATED ALWAYS identity columns: an UPDATE cannot write them; a difference there forces a reload. */
  alwaysIdentity: { live: string; shadow: string }[];
  /** INSERT needs OVERRIDING SYSTEM VALUE (a GENERATED ALWAYS identity column is written). */
  overriding: boolean;
  /** Every live row's data changes (schema restore drops, re-adds or retypes a column): all are quarantined. */
  allReplaced: boolean;
  /**
   * Change detection (postgres/changes.ts): SQL over a live-row alias, true for every live row that may differ from
   * the restore point. Given, live rows are only read where it holds (plus the anti-join for deleted rows); absent,
   * every row is compared.
   */
  changed?: (alias: string) => string;
  /**
   * A restore (a writable transaction) materializes what the statements below would otherwise each compute again:
   * `flaggedTids`, an SQL array of the ctids of the rows `changed` flags (one pass over the table), and `missing`, a
   * temporary table of the captured keys the live table lacks (one anti-join). Read-only diffs cannot make them.
   */
  flaggedTids?: string;
  missing?: string;
  /** How many rows `flaggedTids` holds (with it). */
  flaggedCount?: number;
  /**
   * The live and shadow columns compared have the same types (no schema change to put back, or after it): rows are
   * compared byte for byte (record_image_eq), cheaper than comparing their text and never calling equal two rows that
   * read differently. Otherwise (a column retyped or renamed by the deploy) by their text.
   */
  sameTypes?: boolean;
}

export interface RowPlan {
  strategy: Strategy;
  truncate: boolean;
  rowsInserted: number;
  rowsUpdated: number;
  rowsDeleted: number;
  /** Live rows kept in quarantine before the writes. */
  rowsQuarantined: number;
  /** Rows in scope (max of live now and captured): what the reload threshold is measured against. */
  inScope: number;
  /** Rows the diff would write (insert + update + delete). */
  differing: number;
  reason: string;
  /** Set when the plan cannot be carried out (a GENERATED ALWAYS difference and no reload possible). */
  refusal?: string;
}

const differs = (pairs: { live: string; shadow: string }[], sameTypes: boolean | undefined): string =>
  sameTypes
    ? `NOT (ROW(${pairs.map((p) => p.live).join(', ')})::record *= ROW(${pairs.map((p) => p.shadow).join(', ')})::record)`
    : `ROW(${pairs.map((p) => p.live).join(', ')})::text IS DISTINCT FROM ROW(${pairs.map((p) => p.shadow).join(', ')})::text`;

/** `AND <change predicate>` over alias `l`, or nothing (every row is a candidate). */
const candidate = (r: RowSet): string => (r.changed ? ` AND ${r.changed('l')}` : '');

/**
 * The live rows a restore replaces, as `FROM … WHERE …` over alias `l`: as replacedRows, but one outer join to the
 * shadow copy instead of two correlated lookups per row, so the planner can hash or merge the two sides in one pass.
 * For a large share of rows to compare (no change detection, or most rows flagged: see keyLookups); with a few flagged
 * rows replacedRows looks each up by key.
 */
export function replacedRowsJoined(r: RowSet): string {
  if (r.allReplaced || r.key.length === 0) return `FROM ${r.live.sql} AS l WHERE ${replacedRows(r)}`;
  const changed = [...r.update, ...r.alwaysIdentity];
  const absent = `s.${ident(r.key[0]!)} IS NULL`;
  // The scope and change predicates are unqualified SQL over the live row (its system columns too): evaluated where the
  // live table is the only relation, before the join brings the shadow copy's columns of the same names.
  const inScope = ident('etl_rollback$in');
  const flagged = ident('etl_rollback$changed');
  return (
    `FROM (SELECT l.*, ${r.scope.predicate} AS ${inScope}, ${r.changed ? r.changed('l') : 'TRUE'} AS ${flagged} FROM ${r.live.sql} AS l) AS l ` +
    `LEFT JOIN ${r.shadow} AS s ON ${keyMatch(r.key, 's', 'l')} ` +
    `WHERE l.${flagged} AND ((l.${inScope} AND ${absent})` +
    (changed.length === 0 ? '' : ` OR (NOT ${absent} AND ${differs(changed, r.sameTypes)})`) +
    ')'
  );
}

/** Live rows (alias `l`) the restore replaces, i.e. keeps in quarantine first. */
export function replacedRows(r: RowSet): string {
  if (r.allReplaced) return `(${r.scope.predicate} OR ${r.key.length ? `EXISTS (SELECT 1 FROM ${r.shadow} AS s WHERE ${keyMatch(r.key, 's', 'l')})` : 'FALSE'})`;
  if (r.key.length === 0) return `(${r.scope.predicate})`;
  const changed = [...r.update, ...r.alwaysIdentity];
  // With change detection, the flagged rows' ctids first (one scan): a TID scan then reads only them, and the planner,
  // seeing few rows, probes the shadow's key index for each instead of hashing the whole shadow copy.
  const flagged = r.flaggedTids
    ? `l.ctid = ANY (${r.flaggedTids}) AND `
    : r.changed
      ? `l.ctid = ANY (ARRAY(SELECT c.ctid FROM ${r.live.sql} AS c WHERE ${r.changed('c')})) AND `
      : '';
  return (
    `(${flagged}((${r.scope.predicate} AND NOT EXISTS (SELECT 1 FROM ${r.shadow} AS s WHERE ${keyMatch(r.key, 's', 'l')}))` +
    (changed.length === 0 ? '' : ` OR EXISTS (SELECT 1 FROM ${r.shadow} AS s WHERE ${keyMatch(r.key, 's', 'l')} AND ${differs(changed, r.sameTypes)})`) +
    '))'
  );
}

/**
 * Whether the statements driven by change detection should look each flagged row up by key (nested loops): yes while
 * the flagged rows are a small share of the scope (the planner, which cannot see how few they are, would hash the whole
 * shadow copy); no once they are a large one (a deploy that rewrote most of the table), where hashing or merging the
 * two sides in one pass is cheaper than a lookup per row. Without a count of the flagged rows (a read-only diff), yes.
 */
export function keyLookups(r: RowSet, inScope: number): boolean {
  if (r.changed === undefined) return false;
  return r.flaggedCount === undefined || fewOf(r.flaggedCount, Math.max(1, inScope));
}

/**
 * Whether `n` rows are few enough among `of` (under 5%) to be looked up one by one by key rather than found by
 * hashing or merging with the whole table: the rule a restore from a copy and one from an undo log both follow.
 */
export const fewOf = (n: number, of: number): boolean => n * 20 < of;

/**
 * Runs `fn` with hash and merge joins off: with change detection the live side is the few flagged rows, which the
 * planner cannot estimate (the xmin predicate has no statistics) and would otherwise join by hashing the whole shadow
 * copy. A nested loop over the flagged rows with the shadow's key index costs what changed. Settings are put back.
 */
export async function withNestedLoops<T>(client: pg.Client, on: boolean, fn: () => Promise<T>): Promise<T> {
  return on ? withJoinsOff(client, ['hashjoin', 'mergejoin'], fn) : fn();
}

/** Runs `fn` with the given join methods off (SET LOCAL), then puts their settings back as they were. */
export async function withJoinsOff<T>(client: pg.Client, joins: Array<'hashjoin' | 'mergejoin'>, fn: () => Promise<T>): Promise<T> {
  const names = joins.map((j) => `enable_${j}`);
  const { rows } = await client.query<{ v: string[] }>('SELECT array_agg(current_setting(n) ORDER BY i) AS v FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i)', [names]);
  await client.query(names.map((n) => `SET LOCAL ${n} = off`).join('; '));
  try {
    return await fn();
  } finally {
    await client.query(names.map((n, i) => `SET LOCAL ${n} = ${rows[0]?.v[i] === 'off' ? 'off' : 'on'}`).join('; ')).catch(() => undefined);
  }
}

export async function planRows(
  client: pg.Client,
  r: RowSet,
  capturedCount: number,
  policy: ReloadPolicy,
  reloadBlockedBy: string | undefined,
  options: { countQuarantine?: boolean } = {},
): Promise<RowPlan> {
  const live = r.live.sql;
  const shadow = r.shadow;
  const liveInScope = await countOf(client, `SELECT 1 FROM ${live} WHERE ${r.scope.predicate}`);
  const inScope = Math.max(liveInScope, capturedCount);
  const truncate = policy.truncate && r.scope.kind === 'table' && reloadBlockedBy === undefined;
  const quarantined = async () => countOf(client, `SELECT 1 FROM ${live} AS l WHERE ${replacedRows(r)}`);
  const reloadDeletes = async () =>
    r.key.length === 0 || r.scope.kind === 'table'
      ? liveInScope
      : countOf(client, `SELECT 1 FROM ${live} AS l WHERE ${r.scope.predicate} OR EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(r.key, 's', 'l')})`);

  if (r.key.length === 0) {
    // Multiset comparison of row text: equal scopes (duplicates included) write nothing.
    const same =
      !r.allReplaced &&
      (await countOf(client, `SELECT ${rowText(r.write, 't')} FROM (${r.scope.select(r.write)}) AS t EXCEPT ALL SELECT ${rowText(r.write, 's')} FROM ${shadow} AS s`)) === 0 &&
      (await countOf(client, `SELECT ${rowText(r.write, 's')} FROM ${shadow} AS s EXCEPT ALL SELECT ${rowText(r.write, 't')} FROM (${r.scope.select(r.write)}) AS t`)) === 0;
    if (same) return { strategy: 'reload', truncate: false, rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 0, rowsQuarantined: 0, inScope, differing: 0, reason: 'no primary key' };
    return {
      strategy: 'reload',
      truncate,
      rowsInserted: capturedCount,
      rowsUpdated: 0,
      rowsDeleted: liveInScope,
      rowsQuarantined: liveInScope,
      inScope,
      differing: liveInScope + capturedCount,
      reason: 'no primary key: the rows in scope are replaced by the captured rows',
    };
  }

  const key = r.key;
  const nested = keyLookups(r, inScope);
  const rowsDeleted = await withNestedLoops(client, nested, () =>
    countOf(client, `SELECT 1 FROM ${live} AS l WHERE ${r.scope.predicate}${candidate(r)} AND NOT EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(key, 's', 'l')})`),
  );
  const rowsInserted = r.missing
    ? await countOf(client, `SELECT 1 FROM ${r.missing}`)
    : await countOf(client, `SELECT 1 FROM ${shadow} AS s WHERE NOT EXISTS (SELECT 1 FROM ${live} AS l WHERE ${keyMatch(key, 'l', 's')})`);
  const rowsUpdated =
    r.update.length === 0
      ? 0
      : await withNestedLoops(client, nested, () => countOf(client, `SELECT 1 FROM ${live} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')} WHERE ${differs(r.update, r.sameTypes)}${candidate(r)}`));
  const conflicts =
    r.alwaysIdentity.length === 0
      ? 0
      : await withNestedLoops(client, nested, () => countOf(client, `SELECT 1 FROM ${live} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')} WHERE ${differs(r.alwaysIdentity, r.sameTypes)}${candidate(r)}`));
  const differing = rowsInserted + rowsUpdated + rowsDeleted;
  const share = inScope === 0 ? 0 : differing / inScope;
  const pct = `${Math.round(share * 100)}%`;
  const counted = `${differing} of ${inScope} rows in scope differ (${pct})`;

  const diffPlan = (reason: string): RowPlan => ({ strategy: 'diff', truncate: false, rowsInserted, rowsUpdated, rowsDeleted, rowsQuarantined: 0, inScope, differing, reason });
  let plan: RowPlan;
  if (conflicts > 0) {
    const why = `${conflicts} row(s) differ in a GENERATED ALWAYS identity column outside the key, which UPDATE cannot write`;
    plan = reloadBlockedBy
      ? { ...diffPlan(why), refusal: `${why}, and a reload is not possible (${reloadBlockedBy})` }
      : { strategy: 'reload', truncate, rowsInserted: capturedCount, rowsUpdated: 0, rowsDeleted: await reloadDeletes(), rowsQuarantined: 0, inScope, differing, reason: `${why}; ${counted}` };
  } else if (differing > 0 && inScope >= policy.minRows && share > policy.fraction) {
    plan = reloadBlockedBy
      ? diffPlan(`${counted}, above the ${Math.round(policy.fraction * 100)}% reload threshold, but a reload is not possible (${reloadBlockedBy})`)
      : {
          strategy: 'reload',
          truncate,
          rowsInserted: capturedCount,
          rowsUpdated: 0,
          rowsDeleted: await reloadDeletes(),
          rowsQuarantined: 0,
          inScope,
          differing,
          reason: `${counted}, above the ${Math.round(policy.fraction * 100)}% reload threshold`,
        };
  } else {
    plan = diffPlan(counted);
  }
  // The rows the restore will keep, counted for a dry run; a restore counts them as it keeps them (the same pass,
  // once), so it asks for no count here (`countQuarantine: false`, rowsQuarantined left 0).
  plan.rowsQuarantined =
    options.countQuarantine === false || (differing === 0 && conflicts === 0 && !r.allReplaced)
      ? 0
      : plan.strategy === 'diff'
        ? await withNestedLoops(client, nested, quarantined)
        : await quarantined();
  return plan;
}

/** Writes the plan. Returns the rows written, by kind, as PostgreSQL counted them. */
export async function writeRows(client: pg.Client, r: RowSet, plan: RowPlan): Promise<{ rowsInserted: number; rowsUpdated: number; rowsDeleted: number }> {
  const live = r.live.sql;
  const shadow = r.shadow;
  const key = r.key;
  const overriding = r.overriding ? ' OVERRIDING SYSTEM VALUE' : '';
  const rowCount = async (sql: string) => (await client.query(sql)).rowCount ?? 0;

  if (plan.strategy === 'reload') {
    let rowsDeleted: number;
    if (plan.truncate) {
      // The whole table, nothing references it: TRUNCATE leaves no dead tuples (the table keeps its oid, grants,
      // indexes and triggers; CONTINUE IDENTITY: sequences are set from the restore point afterwards).
      rowsDeleted = await countOf(client, `SELECT 1 FROM ${live}`);
      await client.query(`TRUNCATE ${r.live.kind === 'p' ? '' : 'ONLY '}${live} CONTINUE IDENTITY`);
    } else {
      rowsDeleted = await rowCount(
        key.length === 0
          ? `DELETE FROM ${live} WHERE ${r.scope.predicate}`
          : `DELETE FROM ${live} AS l WHERE ${r.scope.predicate} OR EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(key, 's', 'l')})`,
      );
    }
    const rowsInserted = await rowCount(`INSERT INTO ${live} (${cols(r.write)})${overriding} SELECT ${cols(r.write)} FROM ${shadow}`);
    return { rowsInserted, rowsUpdated: 0, rowsDeleted };
  }

  // DELETE first frees unique values the UPDATE or INSERT may need.
  const nested = keyLookups(r, plan.inScope);
  const rowsDeleted = await withNestedLoops(client, nested, () =>
    rowCount(`DELETE FROM ${live} AS l WHERE ${r.scope.predicate}${candidate(r)} AND NOT EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(key, 's', 'l')})`),
  );
  // A value of a unique key the deploy moved between rows: put back one row at a time where the rows collide
  // (updateInPasses), each row named by its shadow row.
  const changedRows = `${keyMatch(key, 'l', 's')} AND ${differs(r.update, r.sameTypes)}${candidate(r)}`;
  const rowsUpdated =
    r.update.length === 0
      ? 0
      : await withNestedLoops(client, nested, () =>
          updateInPasses(
            client,
            `UPDATE ${live} AS l SET ${r.update.map((c) => `${ident(c.name)} = s.${ident(c.name)}`).join(', ')} FROM ${shadow} AS s WHERE ${changedRows}`,
            {
              pending: async () => (await client.query<{ t: string }>(`SELECT s.ctid::text AS t FROM ${live} AS l JOIN ${shadow} AS s ON ${changedRows} ORDER BY ${cols(key, 's')}`)).rows.map((x) => x.t),
              one: 's.ctid = $1::tid',
            },
            (tids) =>
              deleteAndInsert(
                client,
                r.live,
                key,
                tids,
                { sql: shadow, alias: 's', columns: r.write, overriding: r.overriding },
                (why, keys) =>
                  new Error(
                    `${r.live.display} cannot get back ${tids.length} row(s) (keys ${keys}): the deploy swapped values of a unique key between them, ` +
                      `so no order of updates can put them back, and ${why}; put those rows back by hand (the restore point holds them)`,
                  ),
              ),
          ),
        );
  // The captured keys missing from the live table: neither DELETE (of keys not captured) nor UPDATE (by key) changes
  // which they are, so a set materialized before them still holds.
  const rowsInserted = await rowCount(
    r.missing
      ? `INSERT INTO ${live} (${cols(r.write)})${overriding}
         SELECT ${cols(r.write, 's')} FROM ${r.missing} AS m JOIN ${shadow} AS s ON ${keyMatch(key, 'm', 's')}`
      : `INSERT INTO ${live} (${cols(r.write)})${overriding}
         SELECT ${cols(r.write, 's')} FROM ${shadow} AS s
          WHERE NOT EXISTS (SELECT 1 FROM ${live} AS l WHERE ${keyMatch(key, 'l', 's')})`,
  );
  return { rowsInserted, rowsUpdated, rowsDeleted };
}
