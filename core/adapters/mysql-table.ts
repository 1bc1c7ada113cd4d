import mysql from 'mysql2/promise';
import { EtlRollbackError, InputError, PreflightError, RestorePointMissingError, VerificationFailedError } from '../errors.ts';
import type { MysqlTableUnit } from '../manifest/schema.ts';
import type { AdapterContext, Changes, Check, Diff, InPlace, Outcome, RestorePoint, UnitAdapter } from './types.ts';
import {
  autoIncrementOf, bytesOf, cascadingForeignKeys, colList, columnsOf, countAndChecksum, describeScope, differs,
  ensureRollbackDatabase, findTable, type FoundTable, ident, indexesOf, indexName, inRollbackDb, inTransaction,
  isScoped, keyMatch, literal, type MysqlColumn, type MysqlTableDetails, partitionClause, partitionNamesOf,
  PASSIVE_RULES, POINTS_TABLE, preflightSource, primaryKeyOf, quarantineTableName, readPointRow, ROLLBACK_DATABASE,
  rollbackTableExists, rowDigest, runAssertions, schemaQuarantineTableName, type Scope, scopeOf, scopePredicate,
  select, SESSION_SETTINGS, type ShadowMeta, shadowTableName, type TableRef, tableRef, unitPartitions, busyRestore, withBoundedLocks, withPointLock, withSession, write, updateInPasses, deleteAndInsert,
} from './mysql/sql.ts';
import { mysqlCopyOnWrite, type MysqlCowDetails } from './mysql/copy-on-write.ts';
import { RESTORE_LOCK, type TableLockWait } from './capture-modes.ts';
import type { Endpoint } from '../runtime/connections.ts';
import { checkSourceWindow, describeRds, tableAtTime } from './rds/temporary-copy.ts';
import { isoUtc } from './rds/window.ts';

/**
 * A MySQL/MariaDB (InnoDB) table, or a `where`/`partition` scope of one, as a rollback unit. Same guarantees as
 * `postgres-table`; what differs comes from MySQL committing implicitly around every DDL statement.
 *
 * Capture
 *   1. Under a named lock (GET_LOCK) for the point, a `pending` row for the shadow table is written to
 *      `etl_rollback.restore_points`, then `CREATE TABLE etl_rollback.rp_… LIKE <table>` makes the empty shadow (DDL,
 *      so outside any transaction).
 *   2. One REPEATABLE READ transaction started WITH CONSISTENT SNAPSHOT copies the rows in scope (INSERT … SELECT; in
 *      REPEATABLE READ InnoDB reads the source under shared next-key locks, so writers wait for the copy and readers do
 *      not), computes count and checksum over the copy, and flips the row to `sealed` with the point's metadata. Copy
 *      and seal commit together: a shadow is either sealed and complete, or `pending` — a half-made copy, which the
 *      next capture of the same point drops and redoes. A table in `etl_rollback` without a row is not ours: refused.
 *
 * Restore
 *   - Preflight (outside any transaction, before writing anything): the sealed point, the live table, its columns
 *     and primary key. When the deploy changed the columns, the captured definition is put back first by one ALTER
 *     TABLE, after every live row was kept with its live columns (see "Schema restore" for the crash-safety
 *     argument). Refused, with a PreflightError naming each cause: a primary key change, drift under a `where` or
 *     `partition` scope, a column to drop that a view or generated column uses, a foreign key on a changed column,
 *     a point captured before column definitions were recorded.
 *   - The quarantine table `etl_rollback.q_…` is created empty, idempotently, before the row transaction (DDL), with
 *     every column nullable and no keys (it may collect rows of several restores of one run).
 *   - ONE transaction: locking reads (SELECT … FOR UPDATE) over the scope and over the live rows whose keys the point
 *     holds. In REPEATABLE READ these are next-key locks: writers to the locked rows and gaps wait, readers go on
 *     reading through MVCC. (LOCK TABLES was not chosen: it commits implicitly, blocks readers, and needs every alias
 *     locked.) The read view is opened only after the locks are held, so the plan sees what the writes will touch.
 *     Then the rows to be replaced are copied to quarantine, and only the difference is written by primary key
 *     (DELETE, UPDATE, INSERT), values compared byte for byte with `<=>` (NULL-safe). No primary key: the scope is
 *     reloaded whole (its rows quarantined first), with a note. Generated columns are never written.
 *   - After COMMIT: the AUTO_INCREMENT counter is put back to its captured value with ALTER TABLE (DDL, so not in the
 *     row transaction). It runs whenever the counter differs, also on a rerun that writes no rows, so a crash between
 *     commit and ALTER converges; a failure leaves a note, never undoes the committed rows. Scoped units leave the
 *     counter alone (rows outside the scope use it too).
 *   A failure or a killed connection before COMMIT rolls back every row write; an empty quarantine table left by it is
 *   dropped (best effort) or reused by the rerun.
 *
 * Checksum: SUM over rows of the first 64 bits of MD5(row digest), as an unsigned integer summed in DECIMAL; the row
 * digest is MD5 of the per-column MD5s of each value's bytes (`CAST(v AS BINARY)`, 'N' for NULL), separated by "|".
 * A sum does not depend on row order and, unlike XOR, counts duplicates. Bytes, not collation equality: 'a' and 'A'
 * differ. Every session uses time_zone '+00:00' (TIMESTAMP values, and `where` predicates, read in UTC), utf8mb4, and
 * a fixed sql_mode (strict; NO_AUTO_VALUE_ON_ZERO so a captured id 0 is written back as 0).
 *
 * Scopes (`where`, `partition`): the predicate names columns unqualified (it is evaluated against the table under an
 * alias). Only rows in scope are captured, compared and written, with one deliberate exception that keeps keys
 * consistent: a captured row the deploy moved out of the scope (it changed a column the predicate reads) is matched
 * by key and put back. A row the deploy moved into the scope is handled like one it added: deleted and quarantined.
 * Restore, diff and verify use the scope recorded in the point, not the unit's current one.
 *
 * Copy-on-write points (`capture: copy-on-write`) are kept by triggers instead: core/adapters/mysql/copy-on-write.ts.
 */

// ---------------------------------------------------------------------------------------------------------------
// Capture

function pointFromMeta(unit: MysqlTableUnit, meta: ShadowMeta, shadowName: string): RestorePoint<MysqlTableDetails> {
  const details: MysqlTableDetails = {
    connection: unit.connection,
    table: meta.sourceTable,
    shadowTable: `${ROLLBACK_DATABASE}.${shadowName}`,
    primaryKey: meta.primaryKey,
    columns: meta.columns,
    autoIncrement: meta.autoIncrement,
  };
  if (meta.indexes !== undefined) details.indexes = meta.indexes;
  if (meta.where !== undefined) details.where = meta.where;
  if (meta.partitions !== undefined) details.partitions = meta.partitions;
  return { unitId: unit.id, type: 'mysql-table', capturedAt: meta.capturedAt, count: meta.count, checksum: meta.checksum, details };
}

const isCow = (point: RestorePoint<MysqlTableDetails>): point is RestorePoint<MysqlCowDetails> => point.details.capture === 'copy-on-write';
const isPitr = (point: RestorePoint<MysqlTableDetails>): boolean => point.details.capture === 'point-in-time';

/** Why this mode: the plan and the dry run say it. */
function modeNotes(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>): string[] {
  const asked = unit.capture ?? 'copy';
  const used = point.details.capture ?? 'copy';
  const notes = used === 'copy' ? [`capture: copy (${unit.capture === 'copy' ? 'the unit sets capture: copy' : 'the default; the unit does not set capture'}): shadow copy ${point.details.shadowTable}`] : [];
  if (asked !== used) notes.push(`the unit now asks for capture: ${asked}, but this restore point was taken with capture: ${used}; it is restored as taken`);
  return notes;
}

async function capture(unit: MysqlTableUnit, ctx: AdapterContext): Promise<RestorePoint<MysqlTableDetails>> {
  if (unit.capture === 'copy-on-write') return mysqlCopyOnWrite.capture(unit, ctx);
  const shadowName = shadowTableName(ctx.pipeline, ctx.deploymentId, unit.id);
  const shadowSql = inRollbackDb(shadowName);
  const scope: Scope = { where: unit.where, partitions: unitPartitions(unit) };
  return withSession(ctx, unit.connection, async (conn) => {
    return withPointLock(conn, shadowName, unit.id, async () => {
      await ensureRollbackDatabase(conn);
      const existing = await readPointRow(conn, shadowName);
      const shadowExists = await rollbackTableExists(conn, shadowName);
      if (existing && (existing.pipeline !== ctx.pipeline || existing.deploymentId !== ctx.deploymentId || existing.unitId !== unit.id)) {
        throw new PreflightError(
          `${ROLLBACK_DATABASE}.${shadowName} is recorded for another restore point (pipeline "${existing.pipeline}", deployment ` +
            `"${existing.deploymentId}", unit "${existing.unitId}"); refusing to reuse it. Inspect ${ROLLBACK_DATABASE}.${POINTS_TABLE}.`,
        );
      }
      if (existing?.state === 'sealed') {
        if (!existing.meta || !shadowExists) {
          throw new PreflightError(
            `unit "${unit.id}": the restore point of deployment "${ctx.deploymentId}" was sealed, but its shadow copy ` +
              `${ROLLBACK_DATABASE}.${shadowName} is ${shadowExists ? 'unreadable' : 'gone (released or dropped)'}; it cannot be captured again ` +
              'under the same deployment (the table may already hold the deploy\'s changes). Use a new deployment id.',
          );
        }
        ctx.log.info('mysql-table restore point already sealed; not copying again', { unit: unit.id, shadowTable: `${ROLLBACK_DATABASE}.${shadowName}` });
        return pointFromMeta(unit, existing.meta, shadowName);
      }
      if (!existing && shadowExists) {
        throw new PreflightError(
          `${ROLLBACK_DATABASE}.${shadowName} exists but is not recorded in ${ROLLBACK_DATABASE}.${POINTS_TABLE}; it was not made by ` +
            'etl-rollback or its record was removed. Inspect it, drop it if it is not needed, and capture again.',
        );
      }

      const { source, columns } = await preflightSource(conn, unit);
      const primaryKey = await primaryKeyOf(conn, source);
      const writable = columns.filter((c) => !c.generated);

      // 1. The empty shadow (DDL: commits on its own). A `pending` row marks it as ours and unfinished.
      if (existing?.state === 'pending') {
        ctx.log.warn('mysql-table found a half-made shadow copy of this point; dropping it and copying again', { unit: unit.id, shadowTable: shadowName });
        await conn.query(`DROP TABLE IF EXISTS ${shadowSql}`);
        await write(conn, `UPDATE ${inRollbackDb(POINTS_TABLE)} SET source_table = ?, created_at = UTC_TIMESTAMP(6) WHERE shadow_table = ?`, [source.display, shadowName]);
      } else {
        await write(
          conn,
          `INSERT INTO ${inRollbackDb(POINTS_TABLE)} (shadow_table, state, pipeline, deployment_id, unit_id, source_table, created_at, meta)
           VALUES (?, 'pending', ?, ?, ?, ?, UTC_TIMESTAMP(6), NULL)`,
          [shadowName, ctx.pipeline, ctx.deploymentId, unit.id, source.display],
        );
      }
      await conn.query(`CREATE TABLE ${shadowSql} LIKE ${source.sql}`);

      // 2. Copy, count, checksum and seal in one consistent-snapshot transaction.
      return await inTransaction(conn, 'START TRANSACTION WITH CONSISTENT SNAPSHOT', async () => {
        const autoIncrement = await autoIncrementOf(conn, source);
        try {
          await write(
            conn,
            `INSERT INTO ${shadowSql} (${colList(writable)})
             SELECT ${colList(writable, 'l')} FROM ${source.sql}${partitionClause(scope)} AS l WHERE ${scopePredicate(scope)}`,
          );
        } catch (error) {
          if (!scope.where) throw error;
          throw new PreflightError(`unit "${unit.id}": copying ${source.display} where ${scope.where} failed: ${(error as Error).message}. Check the unit's "where" predicate.`, {
            cause: error,
          });
        }
        // The copy holds the source's metadata lock until COMMIT: the columns cannot change from here on.
        const after = await columnsOf(conn, source);
        if (JSON.stringify(after) !== JSON.stringify(columns)) {
          throw new Error(`capture of unit "${unit.id}": the columns of ${source.display} changed while it was being copied; capture again`);
        }
        const { count, checksum } = await countAndChecksum(conn, `${shadowSql} AS t`, 'TRUE', columns);
        const indexes = await indexesOf(conn, source);
        const meta: ShadowMeta = {
          tool: 'etl-rollback',
          kind: 'restore-point',
          version: 1,
          pipeline: ctx.pipeline,
          deploymentId: ctx.deploymentId,
          unitId: unit.id,
          sourceTable: source.display,
          capturedAt: ctx.now().toISOString(),
          count,
          checksum,
          primaryKey,
          columns,
          ...(scope.where !== undefined ? { where: scope.where } : {}),
          ...(scope.partitions !== undefined ? { partitions: scope.partitions } : {}),
          autoIncrement: isScoped(scope) ? null : autoIncrement,
          indexes,
          sealed: true,
        };
        const sealed = await write(
          conn,
          `UPDATE ${inRollbackDb(POINTS_TABLE)} SET state = 'sealed', meta = ? WHERE shadow_table = ? AND state = 'pending'`,
          [JSON.stringify(meta), shadowName],
        );
        if (sealed !== 1) throw new Error(`capture of unit "${unit.id}": the pending record of ${ROLLBACK_DATABASE}.${shadowName} vanished; capture again`);
        ctx.log.info('mysql-table restore point captured', { unit: unit.id, table: source.display, shadowTable: `${ROLLBACK_DATABASE}.${shadowName}`, count });
        return pointFromMeta(unit, meta, shadowName);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Preflight shared by diff and restore

interface Prepared {
  live: FoundTable;
  shadow: TableRef;
  scope: Scope;
  columns: MysqlColumn[];
  primaryKey: string[];
  meta: ShadowMeta;
  /** The live columns now. */
  liveColumns: MysqlColumn[];
  /** Notes for the outcome (a scoped unit's attribute drift left alone). */
  notes: string[];
  /** Set when the deploy changed the columns: how the captured definition is put back (nothing refused). */
  schema?: SchemaPlan;
}

/**
 * How the live columns differ from the captured ones. The shape (names, types, collations, generated or not) decides
 * whether rows can be compared and written; `attributes` adds the rest of each definition (default, nullability,
 * generation expression, comment…) and the column order, which a schema restore also puts back.
 */
function describeDrift(captured: MysqlColumn[], live: MysqlColumn[], options: { attributes: boolean } = { attributes: false }): string[] {
  const problems: string[] = [];
  const liveByName = new Map(live.map((c) => [c.name.toLowerCase(), c]));
  const capturedByName = new Map(captured.map((c) => [c.name.toLowerCase(), c]));
  for (const c of captured) {
    const now = liveByName.get(c.name.toLowerCase());
    if (!now) problems.push(`column "${c.name}" (${c.type}) was dropped`);
    else if (now.type !== c.type) problems.push(`column "${c.name}" changed type from ${c.type} to ${now.type}`);
    else if (now.collation !== c.collation) problems.push(`column "${c.name}" changed collation from ${c.collation} to ${now.collation}`);
    else if (now.generated !== c.generated) problems.push(`column "${c.name}" ${c.generated ? 'is no longer' : 'became'} a generated column`);
    else if (options.attributes && c.definition !== undefined && now.definition !== c.definition) problems.push(`column "${c.name}" changed from ${c.definition} to ${now.definition}`);
  }
  for (const c of live) if (!capturedByName.has(c.name.toLowerCase())) problems.push(`column "${c.name}" (${c.type}) was added`);
  if (options.attributes && problems.length === 0 && captured.some((c) => c.definition !== undefined)) {
    const order = (cols: MysqlColumn[]) => cols.map((c) => c.name).join('\u0000');
    if (order(captured) !== order(live)) problems.push(`columns were reordered (${live.map((c) => c.name).join(', ')}; captured ${captured.map((c) => c.name).join(', ')})`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// Schema restore

/**
 * Putting back the captured column definitions when the deploy altered the table (column added, dropped, renamed,
 * retyped, default, nullability, generation expression, collation, order): ONE `ALTER TABLE` on the same table (never
 * DROP/RENAME TABLE), so its views, grants, triggers and foreign keys stay attached. A renamed column is handled as
 * dropped plus re-added: its live values go to quarantine, the captured ones come back with the rows.
 *
 * MySQL commits implicitly around DDL, so the ALTER cannot share the row transaction. Crash safety instead:
 *   1. `etl_rollback.qs_…` (one per run and unit; COMMENT marks it as this run's schema quarantine, written in the
 *      same CREATE statement) gets every live row with its live columns (all nullable, plain; generated values kept
 *      as values) plus each row's MD5 digest. Filling is a top-up: only rows whose digest it does not hold yet, so a
 *      rerun never refills or duplicates, yet picks up rows written since.
 *   2. Under LOCK TABLES (live WRITE, so no writer slips between the copy and the ALTER), the top-up, then one
 *      ALTER TABLE. InnoDB's ALTER is atomic: the table has either the old or the captured definition, never half.
 *      A value the ALTER cannot convert (strict mode) makes it fail: the restore refuses with the cause, the table
 *      unchanged, its rows kept in the quarantine table.
 *   3. The normal row restore (its own transaction) rewrites the rows from the shadow copy.
 * A rerun after a crash anywhere converges: before the ALTER, step 1 tops up (nothing new if nothing changed) and
 * the ALTER runs; after it, the live definition equals the captured one, so no DDL runs and only rows are restored.
 */
interface SchemaPlan {
  /** What changes, for notes and the dry run. */
  changes: string[];
  /** The ALTER TABLE statement. */
  alter: string;
}

/** Column names the expression (MariaDB: backquoted) mentions. */
const mentions = (expression: string | null | undefined, column: string): boolean =>
  Boolean(expression) && expression!.toLowerCase().includes(`\`${column.replace(/`/g, '``').toLowerCase()}\``);

async function planSchema(
  conn: mysql.Connection,
  table: TableRef,
  captured: MysqlColumn[],
  live: MysqlColumn[],
  capturedIndexes: string[] | undefined,
): Promise<{ plan: SchemaPlan; refusals: string[] }> {
  const refusals: string[] = [];
  const changes: string[] = [];
  const clauses: string[] = [];
  if (captured.some((c) => c.definition === undefined)) {
    refusals.push(
      'the restore point was captured by an older etl-rollback that did not record column definitions (defaults, nullability, order), so the captured schema cannot be rebuilt; revert the schema change by hand, then rerun',
    );
    return { plan: { changes, alter: '' }, refusals };
  }
  const key = (n: string) => n.toLowerCase();
  const liveByName = new Map(live.map((c) => [key(c.name), c]));
  const capturedNames = new Set(captured.map((c) => key(c.name)));
  const dropped = live.filter((c) => !capturedNames.has(key(c.name)));
  const keptLiveOrder = live.filter((c) => capturedNames.has(key(c.name))).map((c) => key(c.name));
  const keptCapturedOrder = captured.filter((c) => liveByName.has(key(c.name))).map((c) => key(c.name));
  const reordered = keptLiveOrder.join('\u0000') !== keptCapturedOrder.join('\u0000');
  const changed: string[] = [];

  for (const l of dropped) {
    clauses.push(`DROP COLUMN ${ident(l.name)}`);
    changes.push(`column "${l.name}" (${l.type}), added by the deploy, dropped (its values kept in quarantine)`);
    changed.push(l.name);
  }
  captured.forEach((c, i) => {
    const position = i === 0 ? 'FIRST' : `AFTER ${ident(captured[i - 1]!.name)}`;
    const l = liveByName.get(key(c.name));
    if (!l) {
      clauses.push(`ADD COLUMN ${ident(c.name)} ${c.definition!} ${position}`);
      changes.push(`column "${c.name}" re-added as ${c.definition!}`);
      return;
    }
    const redefined = l.definition !== c.definition || l.name !== c.name;
    if (redefined) {
      changes.push(`column "${c.name}" changed back from ${l.definition ?? l.type} to ${c.definition!}`);
      changed.push(l.name);
    }
    if (redefined || reordered) clauses.push(`CHANGE COLUMN ${ident(l.name)} ${ident(c.name)} ${c.definition!} ${position}`);
  });
  if (reordered) changes.push(`column order restored to ${captured.map((c) => c.name).join(', ')}`);

  // Secondary indexes, in the same ALTER (points that recorded them). An index on dropped columns only goes with them.
  if (capturedIndexes !== undefined) {
    const liveIndexes = await indexesOf(conn, table);
    const keptLive = new Set(liveIndexes);
    const droppedNames = new Set(dropped.map((l) => key(l.name)));
    for (const line of liveIndexes) {
      if (capturedIndexes.includes(line)) continue;
      const cols = [...line.matchAll(/`((?:[^`]|``)+)`/g)].slice(1).map((m) => key(m[1]!.replace(/``/g, '`')));
      if (cols.length > 0 && cols.every((c) => droppedNames.has(c))) continue;
      clauses.push(`DROP INDEX ${ident(indexName(line))}`);
      changes.push(`index ${line} dropped`);
    }
    for (const line of capturedIndexes) {
      if (keptLive.has(line)) continue;
      clauses.push(`ADD ${line}`);
      changes.push(`index ${line} re-created`);
    }
  }

  // What ALTER would break or cannot do.
  for (const l of dropped) {
    const gen = live.filter((g) => g !== l && capturedNames.has(key(g.name)) && mentions(g.expression, l.name));
    if (gen.length > 0) refusals.push(`column "${l.name}" must be dropped, but generated column(s) ${gen.map((g) => `"${g.name}"`).join(', ')} use it`);
    const views = await select<{ db: string; name: string }>(
      conn,
      `SELECT TABLE_SCHEMA AS db, TABLE_NAME AS name FROM information_schema.VIEWS
        WHERE LOCATE(?, LOWER(VIEW_DEFINITION)) > 0 AND LOCATE(?, LOWER(VIEW_DEFINITION)) > 0`,
      [`\`${table.name.toLowerCase()}\``, `.\`${l.name.toLowerCase()}\``],
    );
    if (views.length > 0) refusals.push(`column "${l.name}" must be dropped, but view(s) ${views.map((v) => `${v.db}.${v.name}`).join(', ')} use it; change or drop them first`);
  }
  if (changed.length > 0) {
    const fks = await select<{ name: string; db: string; t: string; col: string; refCol: string | null }>(
      conn,
      `SELECT CONSTRAINT_NAME AS name, TABLE_SCHEMA AS db, TABLE_NAME AS t, COLUMN_NAME AS col, REFERENCED_COLUMN_NAME AS refCol
         FROM information_schema.KEY_COLUMN_USAGE
        WHERE REFERENCED_TABLE_NAME IS NOT NULL
          AND ((TABLE_SCHEMA = ? AND TABLE_NAME = ?) OR (REFERENCED_TABLE_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?))`,
      [table.db, table.name, table.db, table.name],
    );
    const changedSet = new Set(changed.map(key));
    for (const fk of fks) {
      const ownSide = fk.db === table.db && fk.t === table.name && changedSet.has(key(fk.col));
      const referencedSide = fk.refCol !== null && changedSet.has(key(fk.refCol));
      if (ownSide || referencedSide) {
        refusals.push(`foreign key ${fk.db}.${fk.t}.${fk.name} uses column "${ownSide ? fk.col : fk.refCol}", which the schema restore would change; drop or change the key first`);
      }
    }
  }
  return { plan: { changes, alter: clauses.length > 0 ? `ALTER TABLE ${table.sql} ${clauses.join(', ')}` : '' }, refusals: [...new Set(refusals)] };
}

async function prepare(conn: mysql.Connection, unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext): Promise<Prepared> {
  const d = point.details;
  const shadowName = d.shadowTable.slice(d.shadowTable.indexOf('.') + 1);
  const row = await readPointRow(conn, shadowName);
  if (!(await rollbackTableExists(conn, shadowName)) || !row) {
    throw new RestorePointMissingError(
      `unit "${unit.id}": the shadow copy ${d.shadowTable} of the restore point is gone (released or dropped); ` +
        'this point cannot be restored. Pick another deployment\'s restore point.',
    );
  }
  const meta = row.meta;
  if (row.state !== 'sealed' || !meta || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || meta.checksum !== point.checksum || meta.count !== point.count) {
    throw new RestorePointMissingError(
      `unit "${unit.id}": ${d.shadowTable} is not the sealed copy this restore point describes ` +
        `(expected ${point.count} rows, checksum ${point.checksum}); refusing to restore from it.`,
    );
  }
  const live = await findTable(conn, d.table);
  if (!live || live.kind !== 'BASE TABLE') {
    throw new PreflightError(
      `unit "${unit.id}": table ${d.table} ${live ? 'is no longer a table' : 'no longer exists'} on connection "${d.connection}". ` +
        'Restoring a dropped or replaced table is not supported: recreate it with the captured columns, then rerun.',
    );
  }
  if ((live.engine ?? '').toLowerCase() !== 'innodb') {
    throw new PreflightError(`unit "${unit.id}": table ${live.display} now uses the ${live.engine ?? 'unknown'} engine; restore needs InnoDB. Nothing was written.`);
  }
  const columns = await columnsOf(conn, live);
  const drift = describeDrift(d.columns, columns, { attributes: true });
  const shapeDrift = describeDrift(d.columns, columns);
  const problems: string[] = [];
  const notes: string[] = [];
  const primaryKey = await primaryKeyOf(conn, live);
  if (primaryKey.join('\u0000') !== d.primaryKey.join('\u0000')) {
    const show = (k: string[]) => (k.length ? `(${k.join(', ')})` : 'none');
    problems.push(`primary key changed from ${show(d.primaryKey)} to ${show(primaryKey)} (a key change is not restored: rows are matched by key)`);
  }
  const scope = scopeOf(d);
  if (scope.partitions) {
    const known = new Set((await partitionNamesOf(conn, live)).map((n) => n.toLowerCase()));
    const gone = scope.partitions.filter((p) => !known.has(p.toLowerCase()));
    if (gone.length > 0) problems.push(`partition(s) ${gone.join(', ')} no longer exist`);
  }
  let schema: SchemaPlan | undefined;
  if (drift.length > 0) {
    if (isScoped(scope) && shapeDrift.length === 0) {
      // Rows can still be compared and written; the shared definition is left as the deploy made it.
      notes.push(`schema not restored for a scoped unit${describeScope(scope)}: ${drift.join('; ')}`);
    } else if (isScoped(scope)) {
      problems.push(
        `the deploy changed its columns (${drift.join('; ')}), and this unit is scoped${describeScope(scope)}: the definition is shared with rows outside the scope, so it is not restored by a scoped unit`,
      );
    } else if (problems.length === 0) {
      const planned = await planSchema(conn, live, d.columns, columns, d.indexes);
      if (planned.refusals.length > 0) problems.push(`the deploy changed its columns (${drift.join('; ')}), but ${planned.refusals.join('; ')}`);
      else schema = planned.plan;
    }
  }
  if (problems.length > 0) {
    throw new PreflightError(
      `unit "${unit.id}": table ${live.display} cannot be restored: ${problems.join('; ')}. ` +
        'Nothing was written. Revert the schema change by hand, then rerun the rollback.',
    );
  }
  // Captured column order and metadata: the checksum was computed over them.
  return { live, shadow: tableRef(ROLLBACK_DATABASE, shadowName), scope, columns: d.columns, primaryKey, meta, liveColumns: columns, notes, ...(schema ? { schema } : {}) };
}

// ---------------------------------------------------------------------------------------------------------------
// Plan

interface Plan {
  rowsInserted: number;
  rowsUpdated: number;
  rowsDeleted: number;
  fullReload: boolean;
}

const writableOf = (p: Prepared): MysqlColumn[] => p.columns.filter((c) => !c.generated);

async function countOf(conn: mysql.Connection, sql: string): Promise<number> {
  const [row] = await select<{ n: string }>(conn, `SELECT CAST(COUNT(*) AS CHAR) AS n FROM (${sql}) AS x`);
  return Number(row?.n ?? 0);
}

/** The live rows in scope, aliased `l`. */
const liveScope = (p: Prepared): string => `${p.live.sql}${partitionClause(p.scope)} AS l`;

/** Live rows in scope whose key the point does not hold (PK tables). */
const goneFromPoint = (p: Prepared): string =>
  `${scopePredicate(p.scope)} AND NOT EXISTS (SELECT 1 FROM ${p.shadow.sql} AS s WHERE ${keyMatch(p.primaryKey, 's', 'l')})`;

/**
 * Dry run of a restore that will first put the schema back (the ALTER cannot run in a read-only preview): a live
 * column compared with its captured value as is when its type is unchanged, as text when retyped, as NULL when it
 * will be re-added. The counts after the ALTER may differ slightly (e.g. a retyped value that converts back equal).
 */
function differsAcrossSchema(p: Prepared): string {
  const liveByName = new Map(p.liveColumns.map((c) => [c.name.toLowerCase(), c]));
  const terms = writableOf(p).map((c) => {
    const l = liveByName.get(c.name.toLowerCase());
    if (!l) return `(NULL <=> ${bytesOf(c, 's')})`;
    if (l.type === c.type && l.collation === c.collation) return `${bytesOf(l, 'l')} <=> ${bytesOf(c, 's')}`;
    return `CAST(l.${ident(l.name)} AS CHAR CHARACTER SET utf8mb4) <=> CAST(s.${ident(c.name)} AS CHAR CHARACTER SET utf8mb4)`;
  });
  return `NOT (${terms.join(' AND ')})`;
}

async function plan(conn: mysql.Connection, p: Prepared): Promise<Plan> {
  const shadow = p.shadow.sql;
  if (p.schema && p.primaryKey.length === 0) {
    return {
      rowsDeleted: await countOf(conn, `SELECT 1 AS x FROM ${liveScope(p)}`),
      rowsInserted: await countOf(conn, `SELECT 1 AS x FROM ${shadow} AS s`),
      rowsUpdated: 0,
      fullReload: true,
    };
  }
  if (p.primaryKey.length === 0) {
    // Multiset comparison of whole rows: equal scopes (duplicates included) write nothing.
    const unequal = await countOf(
      conn,
      `SELECT h FROM (
         SELECT ${rowDigest(p.columns, 'l')} AS h, 1 AS w FROM ${liveScope(p)} WHERE ${scopePredicate(p.scope)}
         UNION ALL
         SELECT ${rowDigest(p.columns, 's')} AS h, -1 AS w FROM ${shadow} AS s
       ) AS u GROUP BY h HAVING SUM(w) <> 0`,
    );
    if (unequal === 0) return { rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 0, fullReload: true };
    return {
      rowsDeleted: await countOf(conn, `SELECT 1 AS x FROM ${liveScope(p)} WHERE ${scopePredicate(p.scope)}`),
      rowsInserted: await countOf(conn, `SELECT 1 AS x FROM ${shadow} AS s`),
      rowsUpdated: 0,
      fullReload: true,
    };
  }
  const key = p.primaryKey;
  return {
    rowsDeleted: await countOf(conn, `SELECT 1 AS x FROM ${liveScope(p)} WHERE ${goneFromPoint(p)}`),
    rowsInserted: await countOf(conn, `SELECT 1 AS x FROM ${shadow} AS s WHERE NOT EXISTS (SELECT 1 FROM ${p.live.sql} AS l WHERE ${keyMatch(key, 'l', 's')})`),
    // By key over the whole table: a row the deploy moved out of the scope is put back (it was in scope at capture).
    rowsUpdated: await countOf(
      conn,
      `SELECT 1 AS x FROM ${p.live.sql} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')} WHERE ${p.schema ? differsAcrossSchema(p) : differs(writableOf(p), 'l', 's')}`,
    ),
    fullReload: false,
  };
}

const changesOf = (p: Pick<Plan, 'rowsInserted' | 'rowsUpdated' | 'rowsDeleted'>): Changes => ({
  rowsInserted: p.rowsInserted,
  rowsUpdated: p.rowsUpdated,
  rowsDeleted: p.rowsDeleted,
});

const total = (c: Changes): number => Object.values(c).reduce((a, b) => a + b, 0);

function noPkNote(p: Prepared, planned: Plan): string {
  const what = `${p.live.display}${describeScope(p.scope)}`;
  return planned.rowsDeleted + planned.rowsInserted === 0
    ? `no primary key on ${p.live.display}: compared whole rows; ${what} already equals its restore point`
    : `no primary key on ${p.live.display}: full reload of ${what} (all ${planned.rowsDeleted} live rows replaced by the ${planned.rowsInserted} captured rows)`;
}

// ---------------------------------------------------------------------------------------------------------------
// Diff

async function diff(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext): Promise<Diff> {
  if (isPitr(point)) return atTime.diff(unit, point, ctx);
  const out = isCow(point) ? await mysqlCopyOnWrite.diff(unit, point, ctx) : await diffCopy(unit, point, ctx);
  return { ...out, notes: [...modeNotes(unit, point), ...out.notes] };
}

async function diffCopy(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext): Promise<Diff> {
  return withSession(ctx, point.details.connection, async (conn) => {
    const p = await prepare(conn, unit, point, ctx);
    return inTransaction(conn, 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY', async () => {
      const planned = await plan(conn, p);
      const changes = changesOf(planned);
      const notes = [...p.notes, ...(planned.fullReload ? [noPkNote(p, planned)] : [])];
      if (p.schema) {
        notes.unshift(
          `schema will be restored: ${p.schema.changes.join('; ')} (one ALTER TABLE, after the live rows are kept in ` +
            `${ROLLBACK_DATABASE}.${schemaQuarantineTableName(ctx.pipeline, ctx.runId ?? '?', unit.id)}); row counts estimated across the schema change`,
        );
      }
      const counter = point.details.autoIncrement;
      if (counter !== null && !isScoped(p.scope)) {
        const current = await autoIncrementOf(conn, p.live);
        if (current !== null && current !== counter) notes.push(`AUTO_INCREMENT of ${p.live.display} would be reset from ${current} to ${counter}`);
      }
      return { changes, writes: total(changes), notes };
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Restore

/** Quarantine table: the live columns with their types, all nullable, no keys, no generated columns. */
async function ensureQuarantine(conn: mysql.Connection, p: Prepared, qName: string, note: Record<string, unknown>): Promise<void> {
  const defs = p.columns.map((c) => `${ident(c.name)} ${c.type}${c.collation ? ` COLLATE ${c.collation}` : ''} NULL`).join(',\n  ');
  let comment = JSON.stringify(note);
  if (comment.length > 2000) comment = JSON.stringify({ ...note, restorePoint: undefined, reason: undefined });
  await conn.query(`CREATE TABLE IF NOT EXISTS ${inRollbackDb(qName)} (\n  ${defs}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT=${literal(comment)}`);
}

async function dropIfEmpty(conn: mysql.Connection, qName: string): Promise<void> {
  const rows = await select(conn, `SELECT 1 AS x FROM ${inRollbackDb(qName)} LIMIT 1`);
  if (rows.length === 0) await conn.query(`DROP TABLE IF EXISTS ${inRollbackDb(qName)}`);
}

/** Puts the AUTO_INCREMENT counter back (DDL, after the row transaction). Returns a note when it acted or could not. */
async function restoreAutoIncrement(conn: mysql.Connection, p: Prepared, counter: string | null, ctx: AdapterContext): Promise<string | undefined> {
  if (counter === null || isScoped(p.scope)) return undefined;
  try {
    const current = await autoIncrementOf(conn, p.live);
    if (current === null || current === counter) return undefined;
    await conn.query(`ALTER TABLE ${p.live.sql} AUTO_INCREMENT = ${BigInt(counter).toString()}`);
    const after = await autoIncrementOf(conn, p.live);
    return after === counter
      ? `AUTO_INCREMENT of ${p.live.display} reset from ${current} to ${counter}`
      : `AUTO_INCREMENT of ${p.live.display} set to ${after ?? '?'} (captured ${counter}; InnoDB keeps it above the largest id in the table)`;
  } catch (error) {
    ctx.log.warn('mysql-table could not reset AUTO_INCREMENT', { table: p.live.display, error: (error as Error).message });
    return `AUTO_INCREMENT of ${p.live.display} could not be reset to ${counter}: ${(error as Error).message}; the rows are restored; rerun to retry`;
  }
}

interface SchemaQuarantineMarker {
  tool: 'etl-rollback';
  kind: 'schema-quarantine';
  pipeline: string;
  runId: string;
  unitId: string;
  table: string;
  shadowTable: string;
  state: 'schema restore in progress';
}

const ROW_DIGEST_COLUMN = '_etlrb_row_md5';

/**
 * Steps 1 and 2 of the schema restore (see "Schema restore"): keep every live row with its live columns in the
 * schema quarantine, then one ALTER TABLE back to the captured columns, both under LOCK TABLES … WRITE.
 * Returns the quarantine table's name.
 */
async function restoreSchema(conn: mysql.Connection, p: Prepared, schema: SchemaPlan, marker: SchemaQuarantineMarker, unit: MysqlTableUnit, ctx: AdapterContext, lock: TableLockWait): Promise<string> {
  const unitId = unit.id;
  const qsName = schemaQuarantineTableName(marker.pipeline, marker.runId, unitId);
  const qs = inRollbackDb(qsName);
  const keptAt = `${ROLLBACK_DATABASE}.${qsName}`;
  const liveCols = p.liveColumns;

  // 1. The quarantine, created with its marker in one statement (no window where it exists unmarked).
  const [existing] = await select<{ c: string }>(
    conn,
    'SELECT TABLE_COMMENT AS c FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
    [ROLLBACK_DATABASE, qsName],
  );
  if (existing) {
    let found: Partial<SchemaQuarantineMarker> | undefined;
    try {
      found = JSON.parse(existing.c) as Partial<SchemaQuarantineMarker>;
    } catch {
      found = undefined;
    }
    if (found?.kind !== 'schema-quarantine' || found.runId !== marker.runId || found.unitId !== marker.unitId || found.table !== marker.table) {
      throw new PreflightError(`unit "${unitId}": ${keptAt} exists but is not the schema quarantine of this run; inspect it. Nothing was written.`);
    }
    const held = (await columnsOf(conn, tableRef(ROLLBACK_DATABASE, qsName))).filter((c) => c.name !== ROW_DIGEST_COLUMN);
    const sig = (cols: MysqlColumn[]) => cols.map((c) => `${c.name.toLowerCase()} ${c.type}`).join(', ');
    if (sig(held) !== sig(liveCols)) {
      throw new PreflightError(
        `unit "${unitId}": the schema quarantine ${keptAt} of this run holds rows with columns (${sig(held)}), but ${p.live.display} now has (${sig(liveCols)}): ` +
          'the table was altered again during the rollback. Inspect both, then rerun with a new run id. Nothing more was written.',
      );
    }
    ctx.log.info('mysql-table schema quarantine of this run found; topping it up', { unit: unitId, keptAt });
  } else {
    const defs = liveCols.map((c) => `${ident(c.name)} ${c.type}${c.collation ? ` COLLATE ${c.collation}` : ''} NULL`);
    await conn.query(
      `CREATE TABLE IF NOT EXISTS ${qs} (\n  ${[...defs, `${ident(ROW_DIGEST_COLUMN)} CHAR(32) NOT NULL`, `KEY (${ident(ROW_DIGEST_COLUMN)})`].join(',\n  ')}\n)` +
        ` ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT=${literal(JSON.stringify(marker))}`,
    );
  }

  // 2. Copy (top-up: rows whose digest is not kept yet), then ALTER, with writers held off in between.
  const digestOf = rowDigest(liveCols, 'l');
  // LOCK TABLES … WRITE queues readers too: waited for within `lock`'s tries, so that a long transaction on the table
  // holds them up for one try at most, not for as long as it stays open.
  await withBoundedLocks(conn, lock, (holders) => busyRestore(unit.id, p.live.display, lock, holders), () => conn.query(`LOCK TABLES ${p.live.sql} WRITE, ${p.live.sql} AS l READ, ${qs} WRITE, ${qs} AS x READ`));
  try {
    const copied = await write(
      conn,
      `INSERT INTO ${qs} (${colList(liveCols)}, ${ident(ROW_DIGEST_COLUMN)})
       SELECT ${colList(liveCols, 'l')}, ${digestOf} FROM ${p.live.sql} AS l
        WHERE NOT EXISTS (SELECT 1 FROM ${qs} AS x WHERE x.${ident(ROW_DIGEST_COLUMN)} = ${digestOf})`,
    );
    ctx.log.info('mysql-table live rows kept before the schema restore', { unit: unitId, keptAt, copied });
    try {
      await conn.query(schema.alter);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new PreflightError(
        `unit "${unitId}": putting back the captured definition of ${p.live.display} failed: ${reason}. ALTER TABLE is atomic, so the table ` +
          `keeps the deploy's definition; no row was changed, and every live row is kept with its columns in ${keptAt}. ` +
          'Fix the values that cannot take the captured definition (or revert the schema by hand), then rerun the rollback.',
        { cause: error },
      );
    }
  } finally {
    await conn.query('UNLOCK TABLES').catch(() => undefined);
  }
  ctx.log.info('mysql-table schema restored', { unit: unitId, table: p.live.display, changes: schema.changes });
  return keptAt;
}

async function restore(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext, lock: TableLockWait = RESTORE_LOCK): Promise<Outcome> {
  if (isCow(point)) return mysqlCopyOnWrite.restore(unit, point, ctx, lock);
  if (!ctx.runId) {
    throw new InputError(`restore of unit "${unit.id}" needs the rollback run id (it names the quarantine table); none was given`);
  }
  if (isPitr(point)) return atTime.restore(unit, point, ctx);
  const runId = ctx.runId;
  const d = point.details;
  const qName = quarantineTableName(ctx.pipeline, runId, unit.id);
  const keptAt = `${ROLLBACK_DATABASE}.${qName}`;
  return withSession(ctx, d.connection, async (conn) => {
    // Everything that can refuse does so here, before any write.
    let p = await prepare(conn, unit, point, ctx);
    const schemaNotes: string[] = [];
    if (p.schema) {
      const marker: SchemaQuarantineMarker = {
        tool: 'etl-rollback',
        kind: 'schema-quarantine',
        pipeline: ctx.pipeline,
        runId,
        unitId: unit.id,
        table: p.live.display,
        shadowTable: d.shadowTable,
        state: 'schema restore in progress',
      };
      const schemaKeptAt = await restoreSchema(conn, p, p.schema, marker, unit, ctx, lock);
      schemaNotes.push(`schema restored: ${p.schema.changes.join('; ')}; the live rows with the deploy's columns are kept in ${schemaKeptAt}`);
      p = await prepare(conn, unit, point, ctx);
      if (p.schema) throw new Error(`restore of unit "${unit.id}": ${p.live.display} still differs from the captured definition after ALTER TABLE: ${p.schema.changes.join('; ')}`);
    }
    let createdQuarantine = false;
    try {
      let quarantineReady = await rollbackTableExists(conn, qName);
      let result: Outcome | undefined;
      for (let attempt = 0; attempt < 3 && !result; attempt++) {
        result = await withBoundedLocks(conn, lock, (holders) => busyRestore(unit.id, p.live.display, lock, holders), () => inTransaction(conn, 'START TRANSACTION', async () => {
          await lockScope(conn, p);
          const planned = await plan(conn, p);
          const notes = planned.fullReload ? [noPkNote(p, planned)] : [];
          if (total(changesOf(planned)) === 0) return { changes: changesOf(planned), writes: 0, notes };
          await refuseCascades(conn, p, unit.id);
          if (!quarantineReady) return undefined; // DDL cannot run here: roll back, create it, go again.
          const changes = await writeDifference(conn, p, qName);
          return { changes, writes: total(changes), notes, keptAt };
        }));
        if (!result) {
          await ensureQuarantine(conn, p, qName, {
            tool: 'etl-rollback',
            kind: 'quarantine',
            pipeline: ctx.pipeline,
            runId,
            unitId: unit.id,
            table: p.live.display,
            restorePoint: { deploymentId: p.meta.deploymentId, capturedAt: p.meta.capturedAt, shadowTable: d.shadowTable },
            at: ctx.now().toISOString(),
            reason: 'live rows deleted or overwritten by the rollback restore',
          });
          createdQuarantine = true;
          quarantineReady = true;
        }
      }
      if (!result) throw new Error(`restore of unit "${unit.id}": the quarantine table ${keptAt} could not be prepared; rerun the rollback`);
      result.notes.unshift(...schemaNotes, ...p.notes);
      // Made for writes that, once the locks were held, turned out not to be needed.
      if (result.writes === 0 && createdQuarantine) await dropIfEmpty(conn, qName).catch(() => undefined);
      const counterNote = await restoreAutoIncrement(conn, p, d.autoIncrement, ctx);
      if (counterNote) result.notes.push(counterNote);
      if (result.writes === 0) {
        ctx.log.info('mysql-table already equals its restore point; nothing written', { unit: unit.id, table: p.live.display });
      } else {
        ctx.log.info('mysql-table restored', { unit: unit.id, table: p.live.display, ...result.changes, keptAt });
      }
      return result;
    } catch (error) {
      if (createdQuarantine) await dropIfEmpty(conn, qName).catch(() => undefined);
      if (error instanceof EtlRollbackError) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      const written = schemaNotes.length > 0 ? `the row restore failed and was rolled back (the ${schemaNotes[0]!})` : 'failed and was rolled back, nothing was written';
      throw new Error(
        `restore of unit "${unit.id}" (table ${d.table}) ${written}: ${reason}. ` +
          'Fix the cause (a constraint, trigger or foreign key added since the capture, a lock wait timeout or deadlock), then rerun the rollback.',
        { cause: error },
      );
    }
  });
}

/**
 * Locking reads, first thing in the transaction (so the read view opens after the locks are held): every row of the
 * scope, and the live rows (or, for absent keys, the gaps) matching the point's keys. Whole-table units lock the
 * whole table against writers.
 */
async function lockScope(conn: mysql.Connection, p: Prepared): Promise<void> {
  await conn.query(`SELECT COUNT(*) AS n FROM ${liveScope(p)} WHERE ${scopePredicate(p.scope)} FOR UPDATE`);
  if (p.primaryKey.length > 0 && isScoped(p.scope)) {
    await conn.query(`SELECT COUNT(*) AS n FROM ${p.shadow.sql} AS s JOIN ${p.live.sql} AS l ON ${keyMatch(p.primaryKey, 'l', 's')} FOR UPDATE`);
  }
}

/**
 * Nothing is deleted that was not first kept: the restore quarantines the rows of its own table, but an
 * `ON DELETE CASCADE` / `SET NULL` / `SET DEFAULT` (or the same `ON UPDATE`) foreign key from another table would
 * change that table's rows too, unseen. Refuse, before writing, when any row of another table references a row
 * the restore would delete (or whose referenced columns it would change). RESTRICT/NO ACTION keys need no check: the
 * write fails and the transaction rolls back. In a well-formed manifest the referencing table is a consumer unit,
 * restored in an earlier stage, so its rows are already back and nothing references the rows being removed.
 */
async function refuseCascades(conn: mysql.Connection, p: Prepared, unitId: string): Promise<void> {
  const fks = await cascadingForeignKeys(conn, p.live);
  if (fks.length === 0) return;
  const removed = p.primaryKey.length === 0 ? scopePredicate(p.scope) : goneFromPoint(p);
  for (const fk of fks) {
    const join = fk.columns.map((c, i) => `c.${ident(c)} = l.${ident(fk.referenced[i]!)}`).join(' AND ');
    const checks: { what: string; rule: string; where: string }[] = [];
    if (!PASSIVE_RULES.has(fk.onDelete)) checks.push({ what: 'delete', rule: `ON DELETE ${fk.onDelete}`, where: removed });
    if (!PASSIVE_RULES.has(fk.onUpdate) && p.primaryKey.length > 0) {
      const refChanged = fk.referenced.map((r) => `NOT (l.${ident(r)} <=> s.${ident(r)})`).join(' OR ');
      checks.push({
        what: 'change the referenced columns of',
        rule: `ON UPDATE ${fk.onUpdate}`,
        where: `EXISTS (SELECT 1 FROM ${p.shadow.sql} AS s WHERE ${keyMatch(p.primaryKey, 's', 'l')} AND (${refChanged}))`,
      });
    }
    for (const check of checks) {
      const referencing = await countOf(conn, `SELECT 1 AS x FROM ${liveScope(p)} JOIN ${fk.child.sql} AS c ON ${join} WHERE ${check.where}`);
      if (referencing > 0) {
        throw new PreflightError(
          `unit "${unitId}": the restore would ${check.what} rows of ${p.live.display} that ${referencing} row(s) of ${fk.child.display} reference ` +
            `through foreign key ${fk.name} (${check.rule}); the database would change those rows without their being kept. ` +
            `Add ${fk.child.display} as a unit that dependsOn "${unitId}" (it is then restored first), or resolve those rows, then rerun. Nothing was written.`,
        );
      }
    }
  }
}

/** Quarantine, then DELETE, UPDATE, INSERT only what differs. DELETE first frees unique values the others may need. */
async function writeDifference(conn: mysql.Connection, p: Prepared, qName: string): Promise<Changes> {
  const live = p.live.sql;
  const shadow = p.shadow.sql;
  const q = inRollbackDb(qName);
  const all = p.columns;
  const writable = writableOf(p);
  const partition = partitionClause(p.scope);
  const where = scopePredicate(p.scope);

  if (p.primaryKey.length === 0) {
    await write(conn, `INSERT INTO ${q} (${colList(all)}) SELECT ${colList(all, 'l')} FROM ${liveScope(p)} WHERE ${where}`);
    const rowsDeleted = await write(conn, `DELETE FROM ${live}${partition} WHERE ${where}`);
    const rowsInserted = await write(conn, `INSERT INTO ${live} (${colList(writable)}) SELECT ${colList(writable, 's')} FROM ${shadow} AS s`);
    return { rowsInserted, rowsUpdated: 0, rowsDeleted };
  }

  const key = p.primaryKey;
  // 1. Keep the rows about to be replaced: in scope and not in the point, or differing from it.
  await write(conn, `INSERT INTO ${q} (${colList(all)}) SELECT ${colList(all, 'l')} FROM ${liveScope(p)} WHERE ${goneFromPoint(p)}`);
  await write(
    conn,
    `INSERT INTO ${q} (${colList(all)}) SELECT ${colList(all, 'l')} FROM ${live} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')} WHERE ${differs(writable, 'l', 's')}`,
  );
  // 2. Write the difference. Single-table DELETE (it may name partitions); the subquery refers to the table by name.
  const rowsDeleted = await write(
    conn,
    `DELETE FROM ${live}${partition} WHERE ${where} AND NOT EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${key.map((k) => `s.${ident(k)} = ${live}.${ident(k)}`).join(' AND ')})`,
  );
  // Key columns too: equal under the key's collation is not equal bytes ('abc' vs 'ABC'). A value of a unique key the
  // deploy moved between rows: put back one row at a time where the rows collide (updateInPasses).
  const rowsUpdated = await updateInPasses(
    conn,
    `UPDATE ${live} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')}
        SET ${writable.map((c) => `l.${ident(c.name)} = s.${ident(c.name)}`).join(', ')}
      WHERE ${differs(writable, 'l', 's')}`,
    {
      pending: async () =>
        (await select<Record<string, unknown>>(conn, `SELECT ${key.map((k) => `s.${ident(k)}`).join(', ')} FROM ${live} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')} WHERE ${differs(writable, 'l', 's')} ORDER BY ${key.map((k) => `s.${ident(k)}`).join(', ')}`)).map(
          (row) => key.map((k) => row[k]),
        ),
      one: key.map((k) => `s.${ident(k)} = ?`).join(' AND '),
    },
    (keys, collision) =>
      deleteAndInsert(conn, p.live, key, keys, { sql: shadow, alias: 's', columns: writable }, (why, named) =>
        new Error(
          `${p.live.display} cannot get back ${keys.length} row(s) (keys ${named}): ` +
            `the deploy swapped values of a unique key between them (${collision}), so no order of updates can put them back, and ${why}; put those rows back by hand (the restore point holds them)`,
        ),
      ),
  );
  const rowsInserted = await write(
    conn,
    `INSERT INTO ${live} (${colList(writable)})
     SELECT ${colList(writable, 's')} FROM ${shadow} AS s WHERE NOT EXISTS (SELECT 1 FROM ${live} AS l WHERE ${keyMatch(key, 'l', 's')})`,
  );
  return { rowsInserted, rowsUpdated, rowsDeleted };
}

async function verify(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext): Promise<Check[]> {
  if (isPitr(point)) {
    const copy = await sealedCopyOf(unit, point, ctx);
    if (copy) return verify(unit, copy, ctx);
    const detail = `the rows as of ${point.details.pointInTime?.time ?? point.capturedAt} were never read: no restore of this point ran`;
    return [{ name: 'rowsAtTime', ok: false, expected: `rows read into ${point.details.shadowTable}`, actual: 'absent', detail }];
  }
  const d = point.details;
  const wantCount = unit.checks.count;
  const wantChecksum = unit.checks.checksum;
  const checks: Check[] = [];
  if (wantCount || wantChecksum) {
    await withSession(ctx, d.connection, (conn) =>
      inTransaction(conn, 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY', async () => {
        const live = await findTable(conn, d.table);
        if (!live || live.kind !== 'BASE TABLE') {
          const detail = `table ${d.table} ${live ? 'is not a table' : 'does not exist'}`;
          if (wantCount) checks.push({ name: 'rowCount', ok: false, expected: point.count, actual: 'missing', detail });
          if (wantChecksum) checks.push({ name: 'checksum', ok: false, expected: point.checksum, actual: 'missing', detail });
          return;
        }
        const scope = scopeOf(d);
        const from = `${live.sql}${partitionClause(scope)} AS t`;
        const problems = describeDrift(d.columns, await columnsOf(conn, live));
        if (problems.length > 0 || !wantChecksum) {
          const [row] = await select<{ n: string }>(conn, `SELECT CAST(COUNT(*) AS CHAR) AS n FROM ${from} WHERE ${scopePredicate(scope)}`);
          const actual = Number(row?.n ?? 0);
          if (wantCount) checks.push({ name: 'rowCount', ok: actual === point.count, expected: point.count, actual });
          if (wantChecksum) {
            checks.push({ name: 'checksum', ok: false, expected: point.checksum, actual: 'not computed', detail: `columns differ from the restore point: ${problems.join('; ')}` });
          }
          return;
        }
        const { count, checksum } = await countAndChecksum(conn, from, scopePredicate(scope), d.columns);
        if (wantCount) checks.push({ name: 'rowCount', ok: count === point.count, expected: point.count, actual: count });
        checks.push({ name: 'checksum', ok: checksum === point.checksum, expected: point.checksum, actual: checksum });
      }),
    );
  }
  checks.push(...(await runAssertions(unit, ctx, d.connection)));
  return checks;
}

// ---------------------------------------------------------------------------------------------------------------
// Release

async function release(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext): Promise<void> {
  if (isPitr(point)) return atTime.release(unit, point, ctx);
  if (isCow(point)) return mysqlCopyOnWrite.release(unit, point, ctx);
  const d = point.details;
  const shadowName = d.shadowTable.slice(d.shadowTable.indexOf('.') + 1);
  await withSession(ctx, d.connection, async (conn) => {
    const row = await readPointRow(conn, shadowName);
    const exists = await rollbackTableExists(conn, shadowName);
    const ours = row?.state === 'sealed' && row.meta?.unitId === unit.id && row.meta.pipeline === ctx.pipeline && row.meta.checksum === point.checksum;
    if (!exists) {
      // Dropped earlier (perhaps by a release that stopped before removing the record): finish the job.
      if (ours) await write(conn, `DELETE FROM ${inRollbackDb(POINTS_TABLE)} WHERE shadow_table = ?`, [shadowName]);
      ctx.log.info('mysql-table shadow copy already gone', { unit: unit.id, shadowTable: d.shadowTable });
      return;
    }
    if (!ours) {
      throw new PreflightError(
        `unit "${unit.id}": refusing to drop ${d.shadowTable}: it is not the sealed shadow copy of this restore point. ` +
          'Inspect it and drop it by hand if it is not needed.',
      );
    }
    // Table first, then its record: a crash in between leaves a record without a table, which the rerun removes.
    await conn.query(`DROP TABLE ${inRollbackDb(shadowName)}`);
    await write(conn, `DELETE FROM ${inRollbackDb(POINTS_TABLE)} WHERE shadow_table = ?`, [shadowName]);
    ctx.log.info('mysql-table shadow copy dropped', { unit: unit.id, shadowTable: d.shadowTable });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Rollback to a time (`--to`): as for postgres-table (see there and rds/temporary-copy.ts), with MySQL's bookkeeping:
// the rows at T are read from the point-in-time copy into a shadow table recorded `pending`, then counted,
// checksummed against the copy's own rows and flipped to `sealed` in one transaction, exactly as a capture does; from
// then on the point is an ordinary `copy` point, restored by the ordinary copy restore.

/** Rows read from the point-in-time copy per round trip. */
const EXTRACT_BATCH_ROWS = 5000;

const shadowNameOf = (point: RestorePoint<MysqlTableDetails>): string => point.details.shadowTable.slice(point.details.shadowTable.indexOf('.') + 1);

async function sealedIn(conn: mysql.Connection, unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext): Promise<RestorePoint<MysqlTableDetails> | undefined> {
  const shadowName = shadowNameOf(point);
  const row = await readPointRow(conn, shadowName);
  if (!row || row.state !== 'sealed') return undefined;
  if (!row.meta || row.pipeline !== ctx.pipeline || row.deploymentId !== ctx.deploymentId || row.unitId !== unit.id || !(await rollbackTableExists(conn, shadowName))) {
    throw new PreflightError(`unit "${unit.id}": ${point.details.shadowTable} is recorded, but not as the sealed rows as of ${point.capturedAt} for deployment "${ctx.deploymentId}"; inspect it and rerun.`);
  }
  return pointFromMeta(unit, row.meta, shadowName);
}

async function sealedCopyOf(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext): Promise<RestorePoint<MysqlTableDetails> | undefined> {
  return withSession(ctx, point.details.connection, (conn) => sealedIn(conn, unit, point, ctx));
}

async function asOf(unit: MysqlTableUnit, at: Date, ctx: AdapterContext): Promise<{ point: RestorePoint<MysqlTableDetails>; shows: string[] }> {
  const what = `mysql-table unit "${unit.id}"`;
  const rds = ctx.mysql.rdsOf?.(unit.connection);
  if (!rds) {
    throw new PreflightError(
      `${what}: a rollback to a time reads the table from a point-in-time restore of the RDS instance or Aurora cluster holding it, ` +
        `but connection "${unit.connection}" does not name one. Add "rds": { "instanceId": "…" } or { "clusterId": "…" } to connections.${unit.connection} in the manifest, ` +
        'or roll back to a deployment\'s restore point instead.',
    );
  }
  const window = await checkSourceWindow(ctx, what, rds, at);
  const time = isoUtc(at);
  return withSession(ctx, unit.connection, async (conn) => {
    const { source, columns } = await preflightSource(conn, unit);
    const scope: Scope = { where: unit.where, partitions: unitPartitions(unit) };
    const [row] = await select<{ n: string }>(conn, `SELECT CAST(COUNT(*) AS CHAR) AS n FROM ${source.sql}${partitionClause(scope)} AS l WHERE ${scopePredicate(scope)}`);
    const count = Number(row?.n ?? 0);
    const details: MysqlTableDetails = {
      connection: unit.connection,
      table: source.display,
      shadowTable: `${ROLLBACK_DATABASE}.${shadowTableName(ctx.pipeline, ctx.deploymentId, unit.id)}`,
      primaryKey: await primaryKeyOf(conn, source),
      columns,
      autoIncrement: null,
      ...(scope.where !== undefined ? { where: scope.where } : {}),
      ...(scope.partitions !== undefined ? { partitions: scope.partitions } : {}),
      capture: 'point-in-time',
      pointInTime: { rds, time },
    };
    // Count: the rows in scope now, as the size of the work; the real count and checksum at T are sealed by the restore.
    const point: RestorePoint<MysqlTableDetails> = { unitId: unit.id, type: 'mysql-table', capturedAt: time, count, checksum: `point-in-time:${describeRds(rds)}@${time}`, details };
    const shows = [
      `${source.display}, ${describeScope(scope)}: as of ${time}, read from a point-in-time copy of ${describeRds(rds)} ` +
        `(restorable window [${isoUtc(window.earliest)}, ${isoUtc(window.latest)}]), merged back writing only the rows that differ (${count} rows in scope now)`,
    ];
    return { point, shows };
  });
}

async function extractAtTime(unit: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, ctx: AdapterContext, endpoint: Endpoint): Promise<{ copy: RestorePoint<MysqlTableDetails>; rows: number }> {
  const d = point.details;
  const time = d.pointInTime?.time ?? point.capturedAt;
  const connectTo = ctx.mysql.connectTo?.bind(ctx.mysql);
  if (!connectTo) throw new PreflightError(`unit "${unit.id}": this runtime cannot open a connection to the point-in-time copy (its connector has no connectTo)`);
  const shadowName = shadowNameOf(point);
  const shadowSql = inRollbackDb(shadowName);
  return withSession(ctx, d.connection, (conn) =>
    withPointLock(conn, shadowName, unit.id, async () => {
      await ensureRollbackDatabase(conn);
      const existing = await readPointRow(conn, shadowName);
      if (existing?.state === 'sealed') return { copy: (await sealedIn(conn, unit, point, ctx))!, rows: 0 };
      if (existing && (existing.pipeline !== ctx.pipeline || existing.deploymentId !== ctx.deploymentId || existing.unitId !== unit.id)) {
        throw new PreflightError(`${d.shadowTable} is recorded for another restore point (deployment "${existing.deploymentId}", unit "${existing.unitId}"); refusing to reuse it.`);
      }
      const live = await findTable(conn, d.table);
      if (!live || live.kind !== 'BASE TABLE') throw new PreflightError(`unit "${unit.id}": table ${d.table} no longer exists on connection "${d.connection}"; nothing was written.`);
      const columns = await columnsOf(conn, live);
      const source = await connectTo(d.connection, endpoint);
      try {
        for (const setting of SESSION_SETTINGS) await source.query(setting);
        // The table as the unit names it, in the connection's database: the copy holds the same databases as the
        // source (a point-in-time restore copies the whole server), and the connection opens the same default one.
        const named = await findTable(conn, unit.table);
        if (named?.display !== live.display) throw new PreflightError(`unit "${unit.id}": its table "${unit.table}" is no longer ${d.table}; plan the rollback again.`);
        const then = await findTable(source, unit.table);
        if (!then || then.kind !== 'BASE TABLE') {
          throw new PreflightError(`unit "${unit.id}": table ${d.table} did not exist as a table at ${time} (read from the point-in-time copy); there are no rows to roll back to. Nothing was written.`);
        }
        const problems = describeDrift(await columnsOf(source, then), columns);
        if (problems.length > 0) {
          throw new PreflightError(
            `unit "${unit.id}": the columns of ${d.table} changed since ${time} (${problems.join('; ')}); a rollback to a time merges rows into the table ` +
              'as it is now and does not change its definition. Revert the schema change first, then rerun. Nothing was written.',
          );
        }
        // A half-made copy of an earlier attempt is dropped and made again, as a capture does.
        if (existing?.state === 'pending') {
          await conn.query(`DROP TABLE IF EXISTS ${shadowSql}`);
        } else {
          await write(
            conn,
            `INSERT INTO ${inRollbackDb(POINTS_TABLE)} (shadow_table, state, pipeline, deployment_id, unit_id, source_table, created_at, meta)
             VALUES (?, 'pending', ?, ?, ?, ?, UTC_TIMESTAMP(6), NULL)`,
            [shadowName, ctx.pipeline, ctx.deploymentId, unit.id, live.display],
          );
        }
        await conn.query(`CREATE TABLE ${shadowSql} LIKE ${live.sql}`);
        const scope = scopeOf(d);
        const writable = columns.filter((c) => !c.generated);
        const primaryKey = await primaryKeyOf(conn, live);
        return await inTransaction(conn, 'START TRANSACTION', () =>
          inTransaction(source, 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY', async () => {
            // Pages in key order within one snapshot of the copy (no key: one page). Values travel as mysql2 reads
            // them (strings for numbers and dates, Buffers for bytes); the checksums below prove nothing changed.
            const order = primaryKey.length > 0 ? ` ORDER BY ${primaryKey.map((k) => `l.${ident(k)}`).join(', ')}` : '';
            let rows = 0;
            for (let offset = 0; ; offset += EXTRACT_BATCH_ROWS) {
              const page = primaryKey.length > 0 ? ` LIMIT ${EXTRACT_BATCH_ROWS} OFFSET ${offset}` : '';
              const [batch] = await source.query<mysql.RowDataPacket[]>({
                sql: `SELECT ${colList(writable, 'l')} FROM ${then.sql}${partitionClause(scope)} AS l WHERE ${scopePredicate(scope)}${order}${page}`,
                rowsAsArray: true,
                // JSON as the server's own text: parsed and printed again it would change bytes ({"n": 1} vs {"n":1}).
                // MySQL marks it by type, MariaDB (LONGTEXT underneath) by its extended metadata.
                typeCast: (field, next) => (field.type === 'JSON' || (field as { extendedFormat?: string }).extendedFormat === 'json' ? field.string('utf8') : next()),
              });
              if (batch.length > 0) {
                await write(conn, `INSERT INTO ${shadowSql} (${colList(writable)}) VALUES ?`, [batch]);
                rows += batch.length;
              }
              if (primaryKey.length === 0 || batch.length < EXTRACT_BATCH_ROWS) break;
            }
            const { count, checksum } = await countAndChecksum(conn, `${shadowSql} AS t`, 'TRUE', columns);
            const atSource = await countAndChecksum(source, `${then.sql}${partitionClause(scope)} AS t`, scopePredicate(scope), columns);
            if (atSource.count !== count || atSource.checksum !== checksum) {
              throw new VerificationFailedError(
                `unit "${unit.id}": the rows read from the point-in-time copy (${atSource.count}, checksum ${atSource.checksum}) differ from those written ` +
                  `to ${d.shadowTable} (${count}, checksum ${checksum}); nothing was written to the table. Rerun the rollback.`,
              );
            }
            const meta: ShadowMeta = {
              tool: 'etl-rollback',
              kind: 'restore-point',
              version: 1,
              pipeline: ctx.pipeline,
              deploymentId: ctx.deploymentId,
              unitId: unit.id,
              sourceTable: live.display,
              capturedAt: time,
              count,
              checksum,
              primaryKey,
              columns,
              ...(scope.where !== undefined ? { where: scope.where } : {}),
              ...(scope.partitions !== undefined ? { partitions: scope.partitions } : {}),
              // The counter stays where it is: ids issued since T are not handed out again.
              autoIncrement: null,
              indexes: await indexesOf(conn, live),
              sealed: true,
            };
            const sealed = await write(conn, `UPDATE ${inRollbackDb(POINTS_TABLE)} SET state = 'sealed', meta = ? WHERE shadow_table = ? AND state = 'pending'`, [JSON.stringify(meta), shadowName]);
            if (sealed !== 1) throw new Error(`unit "${unit.id}": the pending record of ${d.shadowTable} vanished; rerun the rollback`);
            ctx.log.info('mysql-table rows as of a time read from the point-in-time copy', { unit: unit.id, table: live.display, time, rows, shadowTable: d.shadowTable });
            return { copy: pointFromMeta(unit, meta, shadowName), rows };
          }),
        );
      } finally {
        await source.end().catch(() => source.destroy());
      }
    }),
  );
}

const atTime = tableAtTime<MysqlTableUnit, RestorePoint<MysqlTableDetails>>({
  sealedCopyOf,
  extractAtTime,
  restore,
  diff,
  release,
  verifyScope: (unit, copy, ctx) => verify({ ...unit, checks: { count: true, checksum: true }, assertions: [] }, copy, ctx),
});
const mergeFromCopy = atTime.mergeFromCopy;

/** The adapter's operations with their exact types: `capture` always answers with a point (it never pends). */
/**
 * What a rollback run is about to replace (core/workflow/undo.ts): restoring a copy-on-write point, the rows at the keys
 * its undo log names (mysqlCopyOnWrite.undoRecord: the restore writes nowhere else); otherwise, and for the other
 * modes, a shadow copy of the unit's scope.
 */
async function undoRecord(unit: MysqlTableUnit, ctx: AdapterContext, restoring?: RestorePoint<MysqlTableDetails>): Promise<RestorePoint<MysqlTableDetails>> {
  const record = restoring && isCow(restoring) ? await mysqlCopyOnWrite.undoRecord(unit, restoring, ctx) : undefined;
  return record ?? capture({ ...unit, capture: 'copy' }, ctx);
}

/** Copy-on-write units only: the triggers in place (the deploy may start), the seal to follow with the next capture. */
async function install(unit: MysqlTableUnit, ctx: AdapterContext): Promise<InPlace | undefined> {
  return unit.capture === 'copy-on-write' ? mysqlCopyOnWrite.install(unit, ctx) : undefined;
}

export const mysqlTable = { type: 'mysql-table' as const, capture, install, diff, restore, verify, release, asOf, mergeFromCopy, undoRecord };

export const mysqlTableAdapter: UnitAdapter<MysqlTableUnit, MysqlTableDetails> = mysqlTable;

export { ROLLBACK_DATABASE, quarantineTableName, schemaQuarantineTableName, shadowTableName, type MysqlColumn, type MysqlTableDetails } from './mysql/sql.ts';
