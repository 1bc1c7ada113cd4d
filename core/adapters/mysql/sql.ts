import mysql from 'mysql2/promise';
import { PreflightError } from '../../errors.ts';
import { withLockTries, type TableLockWait } from '../capture-modes.ts';
import { tableNameParts, type MysqlTableUnit } from '../../manifest/schema.ts';
import type { AdapterContext, Check } from '../types.ts';
import { nameHash, readablePart } from '../table-names.ts';
import type { PointInTimeSource } from '../rds/temporary-copy.ts';

/**
 * What the mysql-table adapter's two capture modes share (core/adapters/mysql-table.ts: shadow copies;
 * core/adapters/mysql/copy-on-write.ts: undo logs kept by triggers): names, sessions with fixed settings, the catalog,
 * the restore-point bookkeeping table, the byte-exact row digest and checksum, scopes, the foreign keys whose actions
 * would reach other tables, and the gate's SQL assertions.
 */
/** The database holding shadow copies (`rp_…`), quarantine tables (`q_…`) and the `restore_points` table. */
export const ROLLBACK_DATABASE = 'etl_rollback';
export const POINTS_TABLE = 'restore_points';

export type MysqlColumn = {
  name: string;
  /** `COLUMN_TYPE` at capture, e.g. `decimal(12,2)`, `varchar(40)`, `enum('a','b')`. */
  type: string;
  /** `DATA_TYPE`, e.g. `decimal`, `json`. */
  dataType: string;
  /** Collation of a character column, else null. */
  collation: string | null;
  /** Virtual or stored generated column (never written; recomputed by the table). */
  generated: boolean;
  /**
   * Recorded since schema restore (absent in older points, whose schema then cannot be restored): NULL allowed,
   * `COLUMN_DEFAULT` as SQL text (null: no default), `EXTRA`, the generation expression, and the full column
   * definition as SHOW CREATE TABLE prints it (charset and collation made explicit), which ALTER TABLE re-applies.
   * The column's position is its index in `columns`.
   */
  nullable?: boolean;
  default?: string | null;
  extra?: string;
  expression?: string | null;
  definition?: string;
};

export type MysqlTableDetails = {
  /** Connection name from the manifest. */
  connection: string;
  /** The captured table as `database.table`. */
  table: string;
  /** The shadow copy, `etl_rollback.rp_…`. */
  shadowTable: string;
  /** Primary key columns in key order; empty when the table has none (restore then reloads the scope). */
  primaryKey: string[];
  /** All columns in table order at capture. Restore puts them back (ALTER TABLE) when the live columns differ. */
  columns: MysqlColumn[];
  /** The scope captured: a predicate and/or partitions. Restore and verify use this scope, not the unit's. */
  where?: string;
  partitions?: string[];
  /** AUTO_INCREMENT counter at capture (decimal string), or null when the table has no AUTO_INCREMENT column. */
  autoIncrement: string | null;
  /**
   * Secondary indexes at capture, as SHOW CREATE TABLE prints them (`KEY \`i\` (\`a\`)`, `UNIQUE KEY …`); absent in
   * older points. A schema restore puts them back along with the columns.
   */
  indexes?: string[];
  /**
   * How the point was taken; absent means `copy`. For `copy-on-write`, `shadowTable` names the undo table. For
   * `point-in-time` (a `--to` rollback), `shadowTable` names the copy the restore fills with the rows at T read from a
   * point-in-time copy of the database, then restores from as a `copy` point.
   */
  capture?: 'copy' | 'copy-on-write' | 'point-in-time';
  /** Set with `capture: 'point-in-time'`: the RDS instance or cluster and the time the rows are read at. */
  pointInTime?: PointInTimeSource;
};

/** Metadata of a sealed point, kept as JSON in `etl_rollback.restore_points.meta`. */
export type ShadowMeta = {
  tool: 'etl-rollback';
  kind: 'restore-point';
  version: 1;
  pipeline: string;
  deploymentId: string;
  unitId: string;
  sourceTable: string;
  capturedAt: string;
  count: number;
  checksum: string;
  primaryKey: string[];
  columns: MysqlColumn[];
  where?: string;
  partitions?: string[];
  autoIncrement: string | null;
  indexes?: string[];
  sealed: true;
};

export type Row = mysql.RowDataPacket;

// ---------------------------------------------------------------------------------------------------------------
// Names


/**
 * Shadow table name, deterministic from (pipeline, deployment, unit) so a retried capture finds its own copy:
 * `rp_` + 18 + `_` + 18 + `_` + 16 hex = at most 57 characters, under MySQL's 64.
 */
export function shadowTableName(pipeline: string, deploymentId: string, unitId: string): string {
  return `rp_${readablePart(pipeline, 18)}_${readablePart(unitId, 18)}_${nameHash('mysql-shadow', pipeline, deploymentId, unitId)}`;
}

/** Quarantine table name for one rollback run of one unit: `q_` + 24 + `_` + 16 hex (at most 43 characters). */
export function quarantineTableName(pipeline: string, runId: string, unitId: string): string {
  return `q_${readablePart(unitId, 24)}_${nameHash('mysql-quarantine', pipeline, runId, unitId)}`;
}

/** Schema quarantine of one rollback run of one unit: the live rows with the deploy's columns, kept before ALTER TABLE. */
export function schemaQuarantineTableName(pipeline: string, runId: string, unitId: string): string {
  return `qs_${readablePart(unitId, 24)}_${nameHash('mysql-schema-quarantine', pipeline, runId, unitId)}`;
}

export const ident = (name: string): string => `\`${name.replace(/`/g, '``')}\``;
export const literal = (value: string | number | null): string => mysql.escape(value);
export const inRollbackDb = (name: string): string => `${ident(ROLLBACK_DATABASE)}.${ident(name)}`;

// ---------------------------------------------------------------------------------------------------------------
// Sessions

/** The session's wait for a metadata lock, outside the bounded waits of withBoundedLocks. */
const SESSION_LOCK_WAIT_SECONDS = 120;

/** Fixed session settings: value text (checksums) and write semantics must not depend on server or user defaults. */
export const SESSION_SETTINGS = [
  'SET NAMES utf8mb4',
  "SET SESSION time_zone = '+00:00'",
  "SET SESSION sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'",
  'SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ',
  // Metadata locks (DDL on the shadow, quarantine, AUTO_INCREMENT): fail after 2 minutes instead of MariaDB's year.
  `SET SESSION lock_wait_timeout = ${SESSION_LOCK_WAIT_SECONDS}`,
];

export async function open(ctx: AdapterContext, connection: string): Promise<mysql.Connection> {
  const conn = await ctx.mysql.connect(connection);
  try {
    for (const setting of SESSION_SETTINGS) await conn.query(setting);
  } catch (error) {
    conn.destroy();
    throw error;
  }
  return conn;
}

export async function withSession<T>(ctx: AdapterContext, connection: string, fn: (conn: mysql.Connection) => Promise<T>): Promise<T> {
  const conn = await open(ctx, connection);
  try {
    return await fn(conn);
  } finally {
    await conn.end().catch(() => conn.destroy());
  }
}

export async function select<T extends object>(conn: mysql.Connection, sql: string, values?: unknown[]): Promise<T[]> {
  const [rows] = values ? await conn.query<Row[]>(sql, values) : await conn.query<Row[]>(sql);
  return rows as unknown as T[];
}

/** Runs a write; returns the rows it affected (matched, for UPDATE: mysql2 sets CLIENT_FOUND_ROWS). */
export async function write(conn: mysql.Connection, sql: string, values?: unknown[]): Promise<number> {
  const [result] = values ? await conn.query<mysql.ResultSetHeader>(sql, values) : await conn.query<mysql.ResultSetHeader>(sql);
  return result.affectedRows;
}

export async function inTransaction<T>(conn: mysql.Connection, begin: string, fn: () => Promise<T>): Promise<T> {
  await conn.query(begin);
  try {
    const result = await fn();
    await conn.query('COMMIT');
    return result;
  } catch (error) {
    await conn.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/**
 * Runs `fn` holding the named lock of one restore point (GET_LOCK, on this session): concurrent captures of the same
 * point are serialised, the second waits, then finds the point sealed. Waits up to 2 minutes.
 */
export async function withPointLock<T>(conn: mysql.Connection, tableName: string, unitId: string, fn: () => Promise<T>): Promise<T> {
  const lockName = `etlrb:${tableName}`;
  const [got] = await select<{ ok: number | string | null }>(conn, 'SELECT GET_LOCK(?, 120) AS ok', [lockName]);
  if (Number(got?.ok) !== 1) throw new Error(`capture of unit "${unitId}": another capture of the same restore point held its lock for 2 minutes; retry`);
  try {
    return await fn();
  } finally {
    await conn.query('SELECT RELEASE_LOCK(?)', [lockName]).catch(() => undefined);
  }
}

export const errno = (error: unknown): number | undefined => (error as { errno?: unknown } | null)?.errno as number | undefined;
export const ER_BAD_DB_ERROR = 1049;
export const ER_NO_SUCH_TABLE = 1146;
/** "Lock wait timeout exceeded": a row lock, or a metadata lock (DDL, LOCK TABLES) past lock_wait_timeout. */
const ER_LOCK_WAIT_TIMEOUT = 1205;
/** This transaction was chosen as a deadlock's victim and rolled back whole. */
const ER_LOCK_DEADLOCK = 1213;

/** One try's wait in whole seconds, as MySQL takes it (at least one). */
export const lockWaitSeconds = (lock: TableLockWait): number => Math.max(1, Math.round(lock.timeoutMs / 1000));

/** A restore (or its record) that could not lock the table within `lock`'s tries: what TableBusyError says. */
export function busyRestore(unitId: string, table: string, lock: TableLockWait, holders: string): string {
  return (
    `unit "${unitId}": the restore could not lock ${table}: ${lock.tries} tries of ${lockWaitSeconds(lock)} s each, and open transactions held it ` +
    `(the oldest: ${holders}). Nothing was written. End or wait for them, then rerun; a rollback run tries the unit again by itself for a while.`
  );
}

/** The oldest open transactions on the server but this session's, at most three, for a message. */
async function openTransactions(conn: mysql.Connection): Promise<string[]> {
  const [rows] = await conn.query(
    `SELECT CONCAT('thread ', trx_mysql_thread_id, ' (a transaction open since ', trx_started, ': ', COALESCE(LEFT(trx_query, 60), 'idle'), ')') AS who
       FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_started LIMIT 3`,
  );
  return (rows as { who: string }[]).map((r) => r.who);
}

/**
 * Runs `attempt` with this session's lock waits bounded to `lock.timeoutMs` (row locks: innodb_lock_wait_timeout;
 * metadata locks, as DDL and LOCK TABLES take them: lock_wait_timeout; whole seconds, at least one), tried until it
 * does not fail on a lock wait (or as a deadlock's victim), at most `lock.tries` times. Then TableBusyError, its
 * message made by `busy` from the oldest open transactions. Each try must undo itself when it fails (its transaction
 * rolled back: a lock wait timeout undoes only the statement). The session's own waits are back afterwards.
 */
export async function withBoundedLocks<T>(conn: mysql.Connection, lock: TableLockWait, busy: (holders: string) => string, attempt: () => Promise<T>): Promise<T> {
  const seconds = lockWaitSeconds(lock);
  await conn.query(`SET SESSION innodb_lock_wait_timeout = ${seconds}, lock_wait_timeout = ${seconds}`);
  try {
    const isLockTimeout = (error: unknown) => errno(error) === ER_LOCK_WAIT_TIMEOUT || errno(error) === ER_LOCK_DEADLOCK;
    return await withLockTries(lock, { isLockTimeout, holders: () => openTransactions(conn) }, busy, attempt);
  } finally {
    await conn.query(`SET SESSION innodb_lock_wait_timeout = DEFAULT, lock_wait_timeout = ${SESSION_LOCK_WAIT_SECONDS}`).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Catalog

export interface TableRef {
  db: string;
  name: string;
  /** Quoted: safe to splice into SQL. */
  sql: string;
  /** `db.table`, for messages and the restore point. */
  display: string;
}

/** A part as messages and restore points write it: plain when it reads back the same, else in backticks. */
const displayPart = (part: string): string => (/^[A-Za-z_][A-Za-z0-9_$]*$/.test(part) ? part : `\`${part.replace(/`/g, '``')}\``);

export const tableRef = (db: string, name: string): TableRef => ({ db, name, sql: `${ident(db)}.${ident(name)}`, display: `${displayPart(db)}.${displayPart(name)}` });

export interface FoundTable extends TableRef {
  kind: string;
  engine: string | null;
}

/** Resolves `table` (in the connection's database) or `db.table`; undefined when it does not exist. */
export async function findTable(conn: mysql.Connection, qualified: string): Promise<FoundTable | undefined> {
  const parts = tableNameParts(qualified);
  let db: string;
  if (parts.length > 1) db = parts[0]!;
  else {
    const [row] = await select<{ db: string | null }>(conn, 'SELECT DATABASE() AS db');
    if (!row?.db) return undefined;
    db = row.db;
  }
  const name = parts[parts.length - 1]!;
  const rows = await select<{ db: string; name: string; kind: string; engine: string | null }>(
    conn,
    `SELECT TABLE_SCHEMA AS db, TABLE_NAME AS name, TABLE_TYPE AS kind, ENGINE AS engine
       FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`,
    [db, name],
  );
  const row = rows.find((r) => r.db === db && r.name === name) ?? rows[0];
  return row ? { ...tableRef(row.db, row.name), kind: row.kind, engine: row.engine } : undefined;
}

export async function rollbackTableExists(conn: mysql.Connection, name: string): Promise<boolean> {
  const rows = await select(conn, 'SELECT 1 AS x FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [ROLLBACK_DATABASE, name]);
  return rows.length > 0;
}

export const GENERATED_EXTRA = /\b(VIRTUAL|STORED|PERSISTENT|ROW START|ROW END)\b/i;

export async function columnsOf(conn: mysql.Connection, t: TableRef): Promise<MysqlColumn[]> {
  const rows = await select<{
    name: string;
    type: string;
    dataType: string;
    charset: string | null;
    collation: string | null;
    extra: string | null;
    nullable: string;
    dflt: string | null;
    expression: string | null;
  }>(
    conn,
    `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, DATA_TYPE AS dataType, CHARACTER_SET_NAME AS charset, COLLATION_NAME AS collation,
            EXTRA AS extra, IS_NULLABLE AS nullable, COLUMN_DEFAULT AS dflt, GENERATION_EXPRESSION AS expression
       FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
    [t.db, t.name],
  );
  const definitions = await columnDefinitionsOf(conn, t);
  return rows.map((r) => {
    const type = String(r.type);
    let definition = definitions.get(r.name);
    // A column in the table's default collation is printed without one: make it explicit, so the definition does
    // not depend on the table default.
    if (definition !== undefined && r.collation && !/\bCOLLATE\b/i.test(definition) && definition.startsWith(type)) {
      definition = `${type} CHARACTER SET ${r.charset ?? r.collation.split('_')[0]} COLLATE ${r.collation}${definition.slice(type.length)}`;
    }
    return {
      name: r.name,
      type,
      dataType: String(r.dataType).toLowerCase(),
      collation: r.collation ?? null,
      generated: GENERATED_EXTRA.test(r.extra ?? ''),
      nullable: r.nullable === 'YES',
      default: r.dflt ?? null,
      extra: r.extra ?? '',
      expression: r.expression ?? null,
      ...(definition !== undefined ? { definition } : {}),
    };
  });
}

export const INDEX_LINE = /^ {2}((?:UNIQUE |FULLTEXT |SPATIAL )?KEY `(?:[^`]|``)+` .*?),?$/;
export const indexName = (line: string): string => /KEY `((?:[^`]|``)+)`/.exec(line)![1]!.replace(/``/g, '`');

/** Secondary indexes as SHOW CREATE TABLE prints them (not the primary key, not foreign keys or checks). */
export async function indexesOf(conn: mysql.Connection, t: TableRef): Promise<string[]> {
  const [row] = await select<Record<string, string>>(conn, `SHOW CREATE TABLE ${t.sql}`);
  return (row?.['Create Table'] ?? '').split('\n').flatMap((line) => {
    const m = INDEX_LINE.exec(line);
    return m ? [m[1]!] : [];
  });
}

/** Each column's definition as SHOW CREATE TABLE prints it: `` `name` <definition>, `` lines (comments are escaped, one line). */
export async function columnDefinitionsOf(conn: mysql.Connection, t: TableRef): Promise<Map<string, string>> {
  const [row] = await select<Record<string, string>>(conn, `SHOW CREATE TABLE ${t.sql}`);
  const text = row?.['Create Table'] ?? '';
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^ {2}`((?:[^`]|``)+)` (.*?),?$/.exec(line);
    if (m) out.set(m[1]!.replace(/``/g, '`'), m[2]!);
  }
  return out;
}

export async function primaryKeyOf(conn: mysql.Connection, t: TableRef): Promise<string[]> {
  const rows = await select<{ name: string }>(
    conn,
    `SELECT COLUMN_NAME AS name FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX`,
    [t.db, t.name],
  );
  return rows.map((r) => r.name);
}

export async function hasAutoIncrementColumn(conn: mysql.Connection, t: TableRef): Promise<boolean> {
  const rows = await select(
    conn,
    "SELECT 1 AS x FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND EXTRA LIKE '%auto_increment%'",
    [t.db, t.name],
  );
  return rows.length > 0;
}

/** The table's AUTO_INCREMENT counter as SHOW CREATE TABLE reports it (exact on MySQL 8 and MariaDB), or null. */
export async function autoIncrementOf(conn: mysql.Connection, t: TableRef): Promise<string | null> {
  if (!(await hasAutoIncrementColumn(conn, t))) return null;
  const [row] = await select<Record<string, string>>(conn, `SHOW CREATE TABLE ${t.sql}`);
  const text = row?.['Create Table'] ?? '';
  // The table options line, `) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=…`; absent when the counter is 1.
  const options = /\n\) ENGINE=[^\n]*/.exec(text)?.[0] ?? '';
  return /\bAUTO_INCREMENT=(\d+)/.exec(options)?.[1] ?? '1';
}

export async function partitionNamesOf(conn: mysql.Connection, t: TableRef): Promise<string[]> {
  const rows = await select<{ p: string | null; s: string | null }>(
    conn,
    'SELECT PARTITION_NAME AS p, SUBPARTITION_NAME AS s FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
    [t.db, t.name],
  );
  return [...new Set(rows.flatMap((r) => [r.p, r.s]).filter((n): n is string => n !== null))];
}

// ---------------------------------------------------------------------------------------------------------------
// Restore point rows (`etl_rollback.restore_points`)

export async function ensureRollbackDatabase(conn: mysql.Connection): Promise<void> {
  await conn.query(`CREATE DATABASE IF NOT EXISTS ${ident(ROLLBACK_DATABASE)} CHARACTER SET utf8mb4`);
  await conn.query(
    `CREATE TABLE IF NOT EXISTS ${inRollbackDb(POINTS_TABLE)} (
       shadow_table VARCHAR(64) NOT NULL PRIMARY KEY,
       state ENUM('pending', 'sealed') NOT NULL,
       pipeline VARCHAR(64) NOT NULL,
       deployment_id VARCHAR(1024) NOT NULL,
       unit_id VARCHAR(64) NOT NULL,
       source_table VARCHAR(130) NOT NULL,
       created_at DATETIME(6) NOT NULL,
       meta LONGTEXT NULL
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
       COMMENT='etl-rollback: one row per mysql-table shadow copy; a shadow is a restore point only once its row is sealed'`,
  );
}

export interface PointRow {
  state: 'pending' | 'sealed';
  pipeline: string;
  deploymentId: string;
  unitId: string;
  meta: ShadowMeta | undefined;
  /** The record as stored, sealed or not (a copy-on-write point installed before its seal keeps its record here). */
  rawMeta?: unknown;
}

/** The bookkeeping row of a shadow table; undefined when there is none (or no etl_rollback database yet). */
export async function readPointRow(conn: mysql.Connection, shadowName: string): Promise<PointRow | undefined> {
  let rows: Array<{ state: PointRow['state']; pipeline: string; deploymentId: string; unitId: string; meta: string | null }>;
  try {
    rows = await select(
      conn,
      `SELECT state, pipeline, deployment_id AS deploymentId, unit_id AS unitId, meta FROM ${inRollbackDb(POINTS_TABLE)} WHERE shadow_table = ?`,
      [shadowName],
    );
  } catch (error) {
    if (errno(error) === ER_BAD_DB_ERROR || errno(error) === ER_NO_SUCH_TABLE) return undefined;
    throw error;
  }
  const row = rows[0];
  if (!row) return undefined;
  let rawMeta: unknown;
  try {
    rawMeta = row.meta ? (JSON.parse(row.meta) as unknown) : undefined;
  } catch {
    rawMeta = undefined;
  }
  const parsed = rawMeta as Partial<ShadowMeta> | undefined;
  const meta = parsed?.tool === 'etl-rollback' && parsed.kind === 'restore-point' && parsed.sealed === true ? (parsed as ShadowMeta) : undefined;
  return { state: row.state, pipeline: row.pipeline, deploymentId: row.deploymentId, unitId: row.unitId, meta, rawMeta };
}

// ---------------------------------------------------------------------------------------------------------------
// SQL builders

export interface Scope {
  where?: string;
  partitions?: string[];
}

export const partitionClause = (s: Scope): string => (s.partitions && s.partitions.length > 0 ? ` PARTITION (${s.partitions.map(ident).join(', ')})` : '');
/** The scope's predicate; the newline ends any `--` comment the predicate may hold. */
export const scopePredicate = (s: Scope): string => (s.where ? `(${s.where}\n)` : 'TRUE');
export const isScoped = (s: Scope): boolean => Boolean(s.where) || Boolean(s.partitions && s.partitions.length > 0);

export const colList = (columns: MysqlColumn[], alias?: string): string => columns.map((c) => (alias ? `${alias}.${ident(c.name)}` : ident(c.name))).join(', ');

/** A value's bytes: what the checksum hashes and what "differs" compares (JSON of MySQL 8 as its text). */
export function bytesOf(c: MysqlColumn, alias: string): string {
  const ref = `${alias}.${ident(c.name)}`;
  return c.dataType === 'json' ? `CAST(CAST(${ref} AS CHAR CHARACTER SET utf8mb4) AS BINARY)` : `CAST(${ref} AS BINARY)`;
}

/** MD5 over the per-column MD5s ('N' for NULL): fixed-width fields, so no value can imitate a separator. */
export const rowDigest = (columns: MysqlColumn[], alias: string): string =>
  `MD5(CONCAT_WS('|', ${columns.map((c) => `IFNULL(MD5(${bytesOf(c, alias)}), 'N')`).join(', ')}))`;

export const keyMatch = (key: string[], a: string, b: string): string => key.map((k) => `${a}.${ident(k)} = ${b}.${ident(k)}`).join(' AND ');

/** True when a live row differs from its shadow row in any of `columns`, byte for byte, NULL-safe. */
export const differs = (columns: MysqlColumn[], a: string, b: string): string =>
  `NOT (${columns.map((c) => `${bytesOf(c, a)} <=> ${bytesOf(c, b)}`).join(' AND ')})`;

export async function countAndChecksum(conn: mysql.Connection, from: string, where: string, columns: MysqlColumn[]): Promise<{ count: number; checksum: string }> {
  const [row] = await select<{ n: string; checksum: string }>(
    conn,
    `SELECT CAST(COUNT(*) AS CHAR) AS n,
            CAST(COALESCE(SUM(CAST(CONV(SUBSTR(${rowDigest(columns, 't')}, 1, 16), 16, 10) AS DECIMAL(20,0))), 0) AS CHAR) AS checksum
       FROM ${from} WHERE ${where}`,
  );
  return { count: Number(row?.n ?? 0), checksum: String(row?.checksum ?? '0') };
}

export const scopeOf = (d: Pick<MysqlTableDetails, 'where' | 'partitions'>): Scope => ({ where: d.where, partitions: d.partitions });

export function describeScope(s: Scope): string {
  const parts: string[] = [];
  if (s.partitions && s.partitions.length > 0) parts.push(`partition ${s.partitions.join(', ')}`);
  if (s.where) parts.push(`where ${s.where}`);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

export const unitPartitions = (unit: MysqlTableUnit): string[] | undefined =>
  unit.partition === undefined ? undefined : Array.isArray(unit.partition) ? unit.partition : [unit.partition];

export async function preflightSource(conn: mysql.Connection, unit: MysqlTableUnit): Promise<{ source: FoundTable; columns: MysqlColumn[] }> {
  const source = await findTable(conn, unit.table);
  if (!source) {
    throw new PreflightError(
      `unit "${unit.id}": table "${unit.table}" does not exist on connection "${unit.connection}"` +
        (unit.table.includes('.') ? '' : ' (in the connection\'s default database, if it has one)') +
        '. Check the unit\'s table name (database.table) and the connection\'s database.',
    );
  }
  if (source.kind !== 'BASE TABLE') {
    throw new PreflightError(`unit "${unit.id}": ${source.display} is not a table (${source.kind}); only tables can be captured. Point the unit at the underlying table.`);
  }
  if ((source.engine ?? '').toLowerCase() !== 'innodb') {
    throw new PreflightError(
      `unit "${unit.id}": ${source.display} uses the ${source.engine ?? 'unknown'} storage engine; only InnoDB tables can be captured ` +
        'and restored transactionally. Convert it (ALTER TABLE … ENGINE=InnoDB) or protect it another way.',
    );
  }
  const columns = await columnsOf(conn, source);
  if (columns.length === 0) throw new PreflightError(`unit "${unit.id}": table ${source.display} has no columns; there is nothing to capture.`);
  const partitions = unitPartitions(unit);
  if (partitions) {
    const known = await partitionNamesOf(conn, source);
    if (known.length === 0) throw new PreflightError(`unit "${unit.id}": table ${source.display} is not partitioned, but the unit names partition(s) ${partitions.join(', ')}.`);
    const lower = new Set(known.map((n) => n.toLowerCase()));
    const unknown = partitions.filter((p) => !lower.has(p.toLowerCase()));
    if (unknown.length > 0) {
      throw new PreflightError(`unit "${unit.id}": table ${source.display} has no partition ${unknown.map((p) => `"${p}"`).join(', ')} (known: ${known.join(', ')}).`);
    }
  }
  return { source, columns };
}

/**
 * The table's InnoDB id (information_schema.INNODB_SYS_TABLES in MariaDB, INNODB_TABLES in MySQL 8). TRUNCATE and
 * every ALTER TABLE that rebuilds the table give it a new one: both write rows without firing a trigger. Null where
 * neither view can be read (they need the PROCESS privilege) or the name is not found as written (InnoDB stores some
 * characters of names encoded): then nothing is proven by it.
 */
export async function innodbTableId(conn: mysql.Connection, t: TableRef): Promise<string | null> {
  for (const view of ['INNODB_SYS_TABLES', 'INNODB_TABLES']) {
    try {
      const [row] = await select<{ id: string }>(conn, `SELECT CAST(TABLE_ID AS CHAR) AS id FROM information_schema.${view} WHERE NAME = ?`, [`${t.db}/${t.name}`]);
      return row?.id ?? null;
    } catch {
      // Not this server's view, or not readable by this user: try the other, then give up.
    }
  }
  return null;
}

/**
 * Foreign keys of the table, as the referencing side, whose ON DELETE or ON UPDATE action changes its rows (CASCADE,
 * SET NULL, SET DEFAULT): InnoDB writes those rows without firing the table's triggers.
 */
export async function foreignKeyActionsOn(conn: mysql.Connection, t: TableRef): Promise<string[]> {
  const rows = await select<{ name: string; parent: string; onDelete: string; onUpdate: string }>(
    conn,
    `SELECT CONSTRAINT_NAME AS name, REFERENCED_TABLE_NAME AS parent, DELETE_RULE AS onDelete, UPDATE_RULE AS onUpdate
       FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? ORDER BY CONSTRAINT_NAME`,
    [t.db, t.name],
  );
  return rows
    .filter((r) => !PASSIVE_RULES.has(r.onDelete) || !PASSIVE_RULES.has(r.onUpdate))
    .map((r) => `${r.name} referencing ${r.parent}: ON DELETE ${r.onDelete}, ON UPDATE ${r.onUpdate}`);
}

/** A foreign key into the restored table whose action would change rows of another table. */
export interface CascadingForeignKey {
  name: string;
  child: TableRef;
  columns: string[];
  referenced: string[];
  onDelete: string;
  onUpdate: string;
}

export const PASSIVE_RULES = new Set(['RESTRICT', 'NO ACTION']);

export async function cascadingForeignKeys(conn: mysql.Connection, table: TableRef): Promise<CascadingForeignKey[]> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>(
    `SELECT rc.CONSTRAINT_SCHEMA AS db, rc.CONSTRAINT_NAME AS name, rc.TABLE_NAME AS child, rc.DELETE_RULE AS onDelete, rc.UPDATE_RULE AS onUpdate,
            GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR '\u0001') AS cols,
            GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR '\u0001') AS refs
       FROM information_schema.REFERENTIAL_CONSTRAINTS rc
       JOIN information_schema.KEY_COLUMN_USAGE k
         ON k.CONSTRAINT_SCHEMA = rc.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = rc.CONSTRAINT_NAME AND k.TABLE_NAME = rc.TABLE_NAME
      WHERE rc.UNIQUE_CONSTRAINT_SCHEMA = ? AND rc.REFERENCED_TABLE_NAME = ?
      GROUP BY rc.CONSTRAINT_SCHEMA, rc.CONSTRAINT_NAME, rc.TABLE_NAME, rc.DELETE_RULE, rc.UPDATE_RULE`,
    [table.db, table.name],
  );
  return rows
    .map((r) => ({
      name: String(r.name),
      child: tableRef(String(r.db), String(r.child)),
      columns: String(r.cols).split('\u0001'),
      referenced: String(r.refs).split('\u0001'),
      onDelete: String(r.onDelete),
      onUpdate: String(r.onUpdate),
    }))
    .filter((fk) => !PASSIVE_RULES.has(fk.onDelete) || !PASSIVE_RULES.has(fk.onUpdate));
}

// ---------------------------------------------------------------------------------------------------------------
// Verify

export function isTrue(value: unknown): boolean {
  if (value === true || value === 1 || value === '1' || value === 1n) return true;
  return Buffer.isBuffer(value) && value.length > 0 && value.every((b, i) => (i === value.length - 1 ? b === 1 : b === 0));
}

export async function runAssertions(unit: MysqlTableUnit, ctx: AdapterContext, connection: string): Promise<Check[]> {
  const assertions = unit.assertions ?? [];
  if (assertions.length === 0) return [];
  // A session of the connection's own defaults (time zone, sql_mode): the assertion means what its author wrote.
  const conn = await ctx.mysql.connect(connection);
  try {
    const [v] = await select<{ v: string }>(conn, 'SELECT VERSION() AS v');
    const mariadb = /mariadb/i.test(v?.v ?? '');
    const checks: Check[] = [];
    for (const a of assertions) {
      const name = `assertion:${a.name}`;
      try {
        await conn.query(mariadb ? `SET SESSION max_statement_time = ${a.timeoutSeconds}` : `SET SESSION MAX_EXECUTION_TIME = ${a.timeoutSeconds * 1000}`);
        const rows = await inTransaction(conn, 'START TRANSACTION READ ONLY', async () => {
          const [r] = await conn.query<mysql.RowDataPacket[]>({ sql: a.sql, rowsAsArray: true });
          return r as unknown as unknown[][];
        });
        const first = rows[0]?.[0];
        const ok = isTrue(first);
        const actual =
          rows.length === 0 ? 'no row' : first === null || first === undefined ? 'null' : Buffer.isBuffer(first) ? `0x${first.toString('hex')}` : String(first);
        checks.push({ name, ok, expected: 'true', actual, ...(ok ? {} : { detail: `${a.sql} returned ${actual}` }) });
      } catch (error) {
        const n = errno(error);
        const timedOut = n === 1969 || n === 3024;
        const message = error instanceof Error ? error.message : String(error);
        checks.push({ name, ok: false, expected: 'true', actual: `error: ${message}`, detail: `${a.sql} failed${timedOut ? ` after ${a.timeoutSeconds} s` : ''}` });
      } finally {
        await conn.query(mariadb ? 'SET SESSION max_statement_time = 0' : 'SET SESSION MAX_EXECUTION_TIME = 0').catch(() => undefined);
      }
    }
    return checks;
  } finally {
    await conn.end().catch(() => conn.destroy());
  }
}


/** ER_DUP_ENTRY: a unique key would hold a value twice. */
export const ER_DUP_ENTRY = 1062;

/**
 * Runs `update`, an UPDATE that puts rows back to their restore point's values; returns the rows it changed. InnoDB
 * checks a unique key row by row, so one statement fails when the deploy moved a value of a unique (non-primary) key
 * from one row to another and the row whose restored values hold it comes first. Then (the failed statement undone,
 * the transaction going on) one row at a time, in passes: a row that would still collide waits for the next pass,
 * after the rows ahead of it have given their values back. A chain of such moves takes as many passes as it is long.
 * A cycle (rows that swapped values) makes no progress: the rows left (and the collision) are handed to `cycle`,
 * which puts them back another way and returns how many (or throws, naming them; the caller's transaction is then
 * rolled back). `rows.pending` lists the rows `update` would change, each as its key values; `rows.one` is the
 * predicate (with a `?` per key column) that narrows `update` to one of them.
 */
export async function updateInPasses(
  conn: mysql.Connection,
  update: string,
  rows: { pending: () => Promise<unknown[][]>; one: string },
  cycle: (keys: unknown[][], collision: string) => Promise<number>,
): Promise<number> {
  try {
    return await write(conn, update);
  } catch (error) {
    if (errno(error) !== ER_DUP_ENTRY) throw error;
  }
  let pending = await rows.pending();
  let written = 0;
  let collision = '';
  while (pending.length > 0) {
    const next: unknown[][] = [];
    for (const values of pending) {
      try {
        written += await write(conn, `${update} AND ${rows.one}`, values);
      } catch (error) {
        if (errno(error) !== ER_DUP_ENTRY) throw error;
        collision = (error as Error).message;
        next.push(values);
      }
    }
    if (next.length === pending.length) return written + (await cycle(next, collision));
    pending = next;
  }
  return written;
}

/** `(k1, k2) IN ((?, ?), …)` over `alias`, and its values, for rows named by their key values. */
export function keysIn(key: string[], alias: string, keys: unknown[][]): { where: string; values: unknown[] } {
  const one = `(${key.map(() => '?').join(', ')})`;
  return { where: `(${key.map((k) => `${alias}.${ident(k)}`).join(', ')}) IN (${keys.map(() => one).join(', ')})`, values: keys.flat() };
}

/**
 * Puts back rows whose unique values form a cycle (no order of updates can): deletes them, then inserts their restored
 * values (`insert`). A unique key is checked row by row, but the deleted rows hold no value any more when the inserts
 * run. The delete runs with foreign_key_checks off, so that InnoDB neither refuses it nor cascades it into the rows of
 * other tables that reference these keys: the same keys are back before the caller commits. The insert runs with the
 * checks on (the rows' own foreign keys are checked). MySQL cannot switch a table's triggers off, and a DELETE or
 * INSERT trigger of the table's own (not etl-rollback's) would act on a delete of rows that stay: then `refuse` gets
 * the reason and the rows' keys (up to five), and nothing is done. `keys`: each row's values of the primary key `key`;
 * `from`: the table (`sql`, quoted, aliased `alias` in the insert) that holds their restored values in `columns`.
 * Returns the rows put back; throws unless every row deleted was inserted again.
 */
export async function deleteAndInsert(
  conn: mysql.Connection,
  table: TableRef,
  key: string[],
  keys: unknown[][],
  from: { sql: string; alias: string; columns: MysqlColumn[] },
  refuse: (why: string, keys: string) => Error,
): Promise<number> {
  const triggers = await select<{ name: string; event: string }>(
    conn,
    `SELECT TRIGGER_NAME AS name, EVENT_MANIPULATION AS event FROM information_schema.TRIGGERS
      WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? AND EVENT_MANIPULATION IN ('DELETE', 'INSERT') AND TRIGGER_NAME NOT LIKE 'etlrb\\_cw\\_%' ORDER BY 1`,
    [table.db, table.name],
  );
  if (triggers.length > 0) {
    const named = `${keys.slice(0, 5).map((v) => `(${v.join(', ')})`).join(', ')}${keys.length > 5 ? ', …' : ''}`;
    throw refuse(`deleting and inserting them again would fire the table's own triggers ${triggers.map((t) => `${t.name} (${t.event})`).join(', ')}, which MySQL cannot switch off`, named);
  }
  const expected = keys.length;
  const at = (alias: string) => keysIn(key, alias, keys);
  const [[{ checks }]] = (await conn.query('SELECT @@SESSION.foreign_key_checks AS checks')) as unknown as [[{ checks: number }]];
  await conn.query('SET SESSION foreign_key_checks = 0');
  let gone: number;
  try {
    gone = await write(conn, `DELETE l FROM ${table.sql} AS l WHERE ${at('l').where}`, at('l').values);
  } finally {
    await conn.query(`SET SESSION foreign_key_checks = ${Number(checks) ? 1 : 0}`);
  }
  const back = await write(
    conn,
    `INSERT INTO ${table.sql} (${colList(from.columns)}) SELECT ${colList(from.columns, from.alias)} FROM ${from.sql} AS ${from.alias} WHERE ${at(from.alias).where}`,
    at(from.alias).values,
  );
  if (gone !== expected || back !== expected) throw new Error(`${table.display}: deleting and inserting ${expected} row(s) again wrote ${gone} and ${back}`);
  return back;
}
