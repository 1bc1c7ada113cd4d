import pg from 'pg';
import { withLockTries, type TableLockWait } from '../capture-modes.ts';
import type { AdapterContext } from '../types.ts';
import { lockKey, quarantineTableName, ROLLBACK_SCHEMA } from './names.ts';

/**
 * SQL text builders and transaction plumbing shared by the table adapter's parts. Engine-neutral in shape (a MySQL
 * adapter mirrors `cols`, `rowText`, `keyMatch`, `inTransaction` with its own quoting and session settings).
 */

export const { escapeIdentifier: ident, escapeLiteral: literal } = pg;

/**
 * Session settings that make a value's text form independent of who reads it: the checksum hashes row text, so a
 * timestamptz must print the same at capture (one session) and at verify (another, perhaps with another TimeZone).
 */
export const STABLE_TEXT_SETTINGS = [
  "SET LOCAL TimeZone = 'UTC'",
  "SET LOCAL DateStyle = 'ISO, YMD'",
  "SET LOCAL IntervalStyle = 'postgres'",
  'SET LOCAL extra_float_digits = 1',
  "SET LOCAL bytea_output = 'hex'",
  "SET LOCAL lc_monetary = 'C'",
];

/** `a, b, c` or `l.a, l.b, l.c`, each quoted. */
export const cols = (names: string[], alias?: string): string => names.map((n) => (alias ? `${alias}.${ident(n)}` : ident(n))).join(', ');

/** Text of a row over the given columns; never NULL (a NULL field prints as nothing, `''` as `""`). */
export const rowText = (names: string[], alias?: string): string => `ROW(${cols(names, alias)})::text`;

/** `a.k1 = b.k1 AND a.k2 = b.k2`: key columns are NOT NULL (primary key), so `=` is exact. */
export const keyMatch = (key: string[], a: string, b: string): string => key.map((k) => `${a}.${ident(k)} = ${b}.${ident(k)}`).join(' AND ');

/** `SELECT count(*)` over a query, as a number. */
export async function countOf(client: pg.Client, sql: string): Promise<number> {
  const { rows } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM (${sql}) AS x`);
  return Number(rows[0]?.n ?? 0);
}

export async function withClient<T>(ctx: AdapterContext, connection: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await ctx.postgres.connect(connection);
  try {
    return await fn(client);
  } finally {
    // Not awaited: by now the work is committed (or rolled back) and the session has nothing in flight; end() only
    // waits for the server to close the socket after its backend exits (milliseconds no caller needs to wait for).
    void client.end().catch(() => undefined);
  }
}

export async function inTransaction<T>(client: pg.Client, begin: string, fn: () => Promise<T>): Promise<T> {
  try {
    // One round trip (the simple query protocol runs them in order; the first error stops the rest).
    await client.query([begin, ...STABLE_TEXT_SETTINGS].join('; '));
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/**
 * Runs the statements in one round trip (the simple query protocol runs them in order and stops at the first error)
 * and returns each one's result, in order. For statements whose text does not depend on an earlier one's answer:
 * parameters cannot be sent this way, so values go in as literals (`literal`).
 */
export async function batch(client: pg.Client, statements: string[]): Promise<pg.QueryResult[]> {
  if (statements.length === 0) return [];
  const out = (await client.query(statements.join(';\n'))) as pg.QueryResult | pg.QueryResult[];
  return Array.isArray(out) ? out : [out];
}

/** lock_not_available: a lock wait that ran past lock_timeout. */
const isLockTimeout = (error: unknown): boolean => (error as { code?: unknown } | null)?.code === '55P03';

/**
 * LOCK TABLE, waiting `timeoutMs` at most (lock_timeout for this statement only; the rest of the transaction waits as
 * the session would). One round trip. Past the wait it fails with lock_not_available (isLockTimeout), and the
 * transaction is aborted: the caller's try is over.
 */
export async function lockTableWithin(client: pg.Client, table: string, mode: string, timeoutMs: number): Promise<void> {
  await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.round(timeoutMs))}; LOCK TABLE ${table} IN ${mode} MODE; SET LOCAL lock_timeout TO DEFAULT`);
}

/**
 * The sessions holding a lock on `table` (a name as to_regclass reads it), oldest transaction first, at most three,
 * each as `pid N (user, application, state, in a transaction open since …: query)`.
 */
async function lockHolders(client: pg.Client, table: string): Promise<string[]> {
  const { rows } = await client.query<{ who: string }>(
    `SELECT format('pid %s (%s%s, %s, in a transaction open since %s: %s)', a.pid, a.usename, coalesce(', ' || nullif(a.application_name, ''), ''), a.state,
                   to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), left(a.query, 60)) AS who
       FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND l.relation = pg_catalog.to_regclass($1)
      ORDER BY a.xact_start LIMIT 3`,
    [table],
  );
  return rows.map((r) => r.who);
}

/**
 * `attempt` (a transaction that takes its table lock with lockTableWithin, `lock.timeoutMs`) tried until the lock is
 * granted, at most `lock.tries` times. Then TableBusyError, its message made by `busy` from the sessions that held
 * `table`: each try rolled back, and the queue behind the lock request never waited longer than one try.
 */
export async function withTableLockTries<T>(client: pg.Client, lock: TableLockWait, table: string, busy: (holders: string) => string, attempt: () => Promise<T>): Promise<T> {
  return withLockTries(lock, { isLockTimeout, holders: () => lockHolders(client, table) }, busy, attempt);
}

/** A restore's transaction under withTableLockTries: TableBusyError says nothing was written, and how to go on. */
export async function withRestoreLock<T>(client: pg.Client, lock: TableLockWait, unitId: string, table: string, attempt: () => Promise<T>): Promise<T> {
  return withTableLockTries(
    client,
    lock,
    table,
    (holders) =>
      `unit "${unitId}": the restore could not lock ${table}: ${lock.tries} tries of ${lock.timeoutMs} ms each, and other sessions held it (${holders}). ` +
      'Nothing was written. End or wait for them, then rerun; a rollback run tries the unit again by itself for a while.',
    attempt,
  );
}

/** Runs `sql`; if it fails, undoes just it (a savepoint) and runs `fallback` instead. */
export async function withFallback(client: pg.Client, sql: string, fallback: string): Promise<'first' | 'fallback'> {
  await client.query('SAVEPOINT etl_rollback_try');
  try {
    await client.query(sql);
    await client.query('RELEASE SAVEPOINT etl_rollback_try');
    return 'first';
  } catch {
    await client.query('ROLLBACK TO SAVEPOINT etl_rollback_try');
    await client.query('RELEASE SAVEPOINT etl_rollback_try');
    await client.query(fallback);
    return 'fallback';
  }
}

/** Creates the rollback schema if missing. */
export async function ensureRollbackSchema(client: pg.Client): Promise<void> {
  // Its own short transaction, serialised: two units captured in parallel on one database would otherwise race on
  // CREATE SCHEMA IF NOT EXISTS (a unique violation on pg_namespace).
  try {
    await batch(client, ['BEGIN', `SELECT pg_advisory_xact_lock(hashtextextended(${literal(lockKey('schema'))}, 0))`, `CREATE SCHEMA IF NOT EXISTS ${ident(ROLLBACK_SCHEMA)}`, 'COMMIT']);
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

export type QuarantineSpec = { runId: string; unitId: string; live: { sql: string; display: string }; scope: string; restorePoint: Record<string, unknown> };

/**
 * ensureQuarantine as statements, for a caller to send ahead of its own in one round trip: the first answers whether
 * an earlier attempt of this run made the table (quarantineExisted reads its result); a caller that ends up keeping
 * nothing drops only a table it made.
 */
export function quarantineStatements(ctx: Pick<AdapterContext, 'pipeline' | 'now'>, q: QuarantineSpec): { sql: string; display: string; statements: string[] } {
  const name = quarantineTableName(ctx.pipeline, q.runId, q.unitId);
  const sql = `${ident(ROLLBACK_SCHEMA)}.${ident(name)}`;
  const note = {
    tool: 'etl-rollback',
    kind: 'quarantine',
    pipeline: ctx.pipeline,
    runId: q.runId,
    unitId: q.unitId,
    table: q.live.display,
    scope: q.scope,
    restorePoint: q.restorePoint,
    at: ctx.now().toISOString(),
    reason: 'live rows deleted or overwritten by the rollback restore',
  };
  return {
    sql,
    display: `${ROLLBACK_SCHEMA}.${name}`,
    statements: [
      `SELECT pg_catalog.to_regclass(${literal(`${ROLLBACK_SCHEMA}.${name}`)})::text AS t`,
      `CREATE TABLE IF NOT EXISTS ${sql} (LIKE ${q.live.sql})`,
      `COMMENT ON TABLE ${sql} IS ${literal(JSON.stringify(note))}`,
    ],
  };
}

/** Whether the quarantine table was there before quarantineStatements ran, from the first statement's result. */
export const quarantineExisted = (first: pg.QueryResult | undefined): boolean => (first?.rows[0] as { t: string | null } | undefined)?.t != null;

/**
 * The quarantine table of one run of one unit (`etl_rollback.q_…`, the live table's columns), made if missing, with a
 * COMMENT that says whose rows it keeps and why. Returns its quoted name and its name for people and reports.
 */
export async function ensureQuarantine(
  client: pg.Client,
  ctx: Pick<AdapterContext, 'pipeline' | 'now'>,
  q: QuarantineSpec,
): Promise<{ sql: string; display: string; existed: boolean }> {
  const { sql, display, statements } = quarantineStatements(ctx, q);
  const [found] = await batch(client, statements);
  return { sql, display, existed: quarantineExisted(found) };
}

/** unique_violation: a unique index would hold a value twice. */
export const isUniqueViolation = (error: unknown): boolean => (error as { code?: unknown } | null)?.code === '23505';

/**
 * Runs `update`, an UPDATE that puts rows back to their restore point's values; returns the rows it changed.
 * PostgreSQL checks a unique constraint row by row, so one statement fails when the deploy moved a value of a unique
 * (non-primary) key from one row to another and the row whose restored values hold it comes first. Then (the statement
 * undone to a savepoint, the transaction going on) one row at a time, in passes, each row under a savepoint: a row that
 * would still collide waits for the next pass, after the rows ahead of it have given their values back. A chain of
 * such moves takes as many passes as it is long. A cycle (rows that swapped values) makes no progress: the rows left
 * are handed to `cycle`, which puts them back another way and returns how many (or throws, naming them; the
 * caller's transaction is then rolled back).
 * `rows.pending` lists the rows `update` would change, each as a tid of the table it reads the restored values from
 * (which nothing writes meanwhile); `rows.one` is the predicate that narrows `update` to the row at `$1`.
 */
export async function updateInPasses(
  client: pg.Client,
  update: string,
  rows: { pending: () => Promise<string[]>; one: string },
  cycle: (tids: string[]) => Promise<number>,
): Promise<number> {
  const attempt = async (sql: string, values: unknown[] = []): Promise<number | 'collided'> => {
    await client.query('SAVEPOINT etl_rollback_update');
    try {
      const n = (await client.query(sql, values)).rowCount ?? 0;
      await client.query('RELEASE SAVEPOINT etl_rollback_update');
      return n;
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      await client.query('ROLLBACK TO SAVEPOINT etl_rollback_update');
      return 'collided';
    }
  };
  const all = await attempt(update);
  if (all !== 'collided') return all;
  let pending = await rows.pending();
  let written = 0;
  while (pending.length > 0) {
    const next: string[] = [];
    for (const tid of pending) {
      const n = await attempt(`${update} AND ${rows.one}`, [tid]);
      if (n === 'collided') next.push(tid);
      else written += n;
    }
    if (next.length === pending.length) return written + (await cycle(next));
    pending = next;
  }
  return written;
}

/** `alias.ctid = ANY(…)` for the rows at `tids`, as literals (the statement may be sent with others, unparameterized). */
const tidsIn = (alias: string, tids: string[]): string => `${alias}.ctid = ANY(ARRAY[${tids.map((t) => literal(t)).join(', ')}]::tid[])`;

/**
 * Puts back rows whose unique values form a cycle (no order of updates can), by deleting them and inserting their
 * restored values in one statement: the DELETE of the live rows (alias `l`) runs first, and the INSERT waits for it
 * through the `(SELECT count(*) FROM gone)` guard; a unique key is checked row by row, but the deleted rows hold no
 * value any more when the inserts run. Foreign keys from other tables are checked at the end of the statement for NO
 * ACTION, when the same keys are back; one with an ON DELETE action (CASCADE, SET NULL, SET DEFAULT) or RESTRICT would
 * act on the delete of a row it references: if any row of another table references the rows, `refuse` says which,
 * and nothing is done. The rows are named by `tids` in `from` (a table, aliased `alias`, holding their restored
 * values, matched to the live rows on the primary key `key`); `columns` are the ones written (with `OVERRIDING SYSTEM
 * VALUE` when `overriding`); `only` leaves inheritance children out. `refuse` gets the reason and the keys of (up to
 * five of) the rows. Returns the rows put back; throws unless every row deleted was inserted again.
 */
export async function deleteAndInsert(
  client: pg.Client,
  live: { oid: number; sql: string; display: string },
  key: string[],
  tids: string[],
  from: { sql: string; alias: string; columns: string[]; overriding: boolean; only?: boolean },
  refuse: (why: string, keys: string) => Error,
): Promise<number> {
  const a = from.alias;
  const rows = { using: `${from.sql} AS ${a}`, join: keyMatch(key, 'l', a), where: tidsIn(a, tids) };
  const { rows: keys } = await client.query<{ name: string; child: string; action: string; cols: string[]; refs: string[] }>(
    `SELECT c.conname AS name, c.conrelid::regclass::text AS child, c.confdeltype::text AS action,
            array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, i) JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
            array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, i) JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS refs
       FROM pg_catalog.pg_constraint c
      WHERE c.contype = 'f' AND c.confrelid = $1 AND c.conparentid = 0 AND c.confdeltype <> 'a' ORDER BY 1`,
    [live.oid],
  );
  const names: Record<string, string> = { r: 'RESTRICT', c: 'CASCADE', n: 'SET NULL', d: 'SET DEFAULT' };
  const acting: string[] = [];
  for (const fk of keys) {
    const on = fk.cols.map((col, i) => `c.${ident(col)} = l.${ident(fk.refs[i]!)}`).join(' AND ');
    const n = await countOf(client, `SELECT 1 FROM ${live.sql} AS l JOIN ${rows.using} ON ${rows.join} JOIN ${fk.child} AS c ON ${on} WHERE ${rows.where}`);
    if (n > 0) acting.push(`${n} row(s) of ${fk.child} (foreign key ${fk.name}, ON DELETE ${names[fk.action] ?? fk.action})`);
  }
  if (acting.length > 0) {
    const { rows: named } = await client.query<{ k: string }>(`SELECT ${rowText(key, a)} AS k FROM ${rows.using} WHERE ${rows.where} ORDER BY 1 LIMIT 6`);
    const keys = `${named.slice(0, 5).map((r) => r.k).join(', ')}${named.length > 5 ? ', …' : ''}`;
    throw refuse(`deleting and inserting them again would act on ${acting.join(', ')} that reference them`, keys);
  }
  const { rows: done } = await client.query<{ gone: string; back: string }>(
    `WITH gone AS (DELETE FROM ${from.only ? 'ONLY ' : ''}${live.sql} AS l USING ${rows.using} WHERE ${rows.where} AND ${rows.join} RETURNING 1),
          back AS (INSERT INTO ${live.sql} (${cols(from.columns)})${from.overriding ? ' OVERRIDING SYSTEM VALUE' : ''}
                   SELECT ${cols(from.columns, a)} FROM ${rows.using} WHERE ${rows.where} AND (SELECT count(*) FROM gone) >= 0 RETURNING 1)
     SELECT (SELECT count(*) FROM gone)::text AS gone, (SELECT count(*) FROM back)::text AS back`,
  );
  const gone = Number(done[0]?.gone ?? 0);
  const back = Number(done[0]?.back ?? 0);
  const expected = tids.length;
  if (gone !== expected || back !== expected) throw new Error(`${live.display}: deleting and inserting ${expected} row(s) again wrote ${gone} and ${back}`);
  return back;
}
