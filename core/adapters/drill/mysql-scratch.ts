import type mysql from 'mysql2/promise';
import { PreflightError, RestorePointMissingError } from '../../errors.ts';
import type { MysqlTableUnit } from '../../manifest/schema.ts';
import { mysqlTableAdapter } from '../mysql-table.ts';
import { KIND } from '../mysql/copy-on-write.ts';
import { colList, findTable, ident, inTransaction, keyMatch, literal, select, withSession, write, type MysqlTableDetails } from '../mysql/sql.ts';
import type { RestorePoint } from '../types.ts';
import { pointCheckAt } from './check-target.ts';
import { drillMarker, isMarkerOf, scratchSchemaName } from './names.ts';
import type { DrillScratch, ScratchTarget } from './types.ts';

/**
 * A mysql-table unit rehearsed into table `etl_rollback_drill_<short>.<unit id>` (a database of the drill's own, on the
 * unit's connection): a copy-mode point from its shadow copy; a copy-on-write point from the live table with the undo
 * table applied, read in one statement (one snapshot). MySQL databases carry no comment, so the database holds an
 * owner table naming the drill run, read back before anything is dropped. The production table is only read.
 */

const OWNER_TABLE = 'etl_rollback_drill_owner';

const scratchTableSql = (scratch: DrillScratch, unit: MysqlTableUnit) => `${ident(scratchSchemaName(scratch.short))}.${ident(unit.id)}`;

/** The run the scratch database belongs to: undefined if there is no such database, null if it is not a drill's. */
async function ownerOf(conn: mysql.Connection, db: string): Promise<string | null | undefined> {
  const dbs = await select(conn, 'SELECT 1 AS x FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [db]);
  if (dbs.length === 0) return undefined;
  const owner = await select<{ t: string }>(conn, 'SELECT 1 AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [db, OWNER_TABLE]);
  if (owner.length === 0) return null;
  const [row] = await select<{ marker: string }>(conn, `SELECT marker FROM ${ident(db)}.${ident(OWNER_TABLE)} LIMIT 1`);
  return row?.marker ?? null;
}

export const mysqlScratch: ScratchTarget<MysqlTableUnit, MysqlTableDetails> = {
  async restore(unit, point, ctx, scratch) {
    const d = point.details;
    const db = scratchSchemaName(scratch.short);
    const target = scratchTableSql(scratch, unit);
    const stored = d.columns.filter((c) => !c.generated);
    const rows = await withSession(ctx, d.connection, async (conn) => {
      // DDL commits on its own in MySQL: the database, its owner mark and the empty table first, then the copy in one transaction.
      const owner = await ownerOf(conn, db);
      if (owner === undefined) {
        await write(conn, `CREATE DATABASE ${ident(db)} CHARACTER SET utf8mb4`);
        await write(conn, `CREATE TABLE ${ident(db)}.${ident(OWNER_TABLE)} (marker VARCHAR(1000) NOT NULL) ENGINE=InnoDB`);
        await write(conn, `INSERT INTO ${ident(db)}.${ident(OWNER_TABLE)} (marker) VALUES (${literal(JSON.stringify(drillMarker(scratch.runId, ctx.pipeline)))})`);
      } else if (!isMarkerOf(owner, scratch.runId)) {
        throw new PreflightError(`database ${db} exists and is not the scratch database of drill ${scratch.runId}; the drill does not write into it. Inspect it.`);
      }
      let source: string;
      let like: string;
      if (d.capture === 'copy-on-write') {
        const [live, undo] = [await findTable(conn, d.table), await findTable(conn, d.shadowTable)];
        if (!live) throw new RestorePointMissingError(`unit "${unit.id}": table ${d.table} is gone; a copy-on-write restore point needs it (use the backstop)`);
        if (!undo) throw new RestorePointMissingError(`unit "${unit.id}": its undo table ${d.shadowTable} is gone (released?)`);
        like = live.sql;
        source =
          `SELECT ${colList(stored, 'l')} FROM ${live.sql} AS l WHERE NOT EXISTS (SELECT 1 FROM ${undo.sql} AS u WHERE ${keyMatch(d.primaryKey, 'u', 'l')}) ` +
          `UNION ALL SELECT ${colList(stored, 'u')} FROM ${undo.sql} AS u WHERE u.${ident(KIND)} = 'p'`;
      } else {
        const shadow = await findTable(conn, d.shadowTable);
        if (!shadow) throw new RestorePointMissingError(`unit "${unit.id}": its shadow copy ${d.shadowTable} is gone (released?)`);
        like = shadow.sql;
        source = `SELECT ${colList(stored)} FROM ${shadow.sql}`;
      }
      // A rerun starts the copy again: the table is the drill's (its database is).
      await write(conn, `DROP TABLE IF EXISTS ${target}`);
      await write(conn, `CREATE TABLE ${target} LIKE ${like}`);
      await write(conn, `ALTER TABLE ${target} COMMENT = ${literal(JSON.stringify(drillMarker(scratch.runId, ctx.pipeline)))}`);
      return inTransaction(conn, 'START TRANSACTION', () => write(conn, `INSERT INTO ${target} (${colList(stored)}) ${source}`));
    });
    ctx.log.info('drill: mysql-table rehearsed', { unit: unit.id, at: target, rows });
    return { target: `mysql ${d.connection}: ${db}.${unit.id}`, changes: { rowsCopied: rows }, notes: [] };
  },

  async verify(unit, point, ctx, scratch) {
    const d = point.details;
    const target = scratchTableSql(scratch, unit);
    const notes: string[] = [];
    const assertions = (unit.assertions ?? []).flatMap((a) => {
      const pointed = pointCheckAt(a.sql, unit.table, target, '`');
      if ('sql' in pointed) return [{ ...a, sql: pointed.sql }];
      notes.push(`user check "${a.name}" not run: ${pointed.reason}`);
      return [];
    });
    // A copy-mode scratch table holds only the rows in scope (no partitions); a copy-on-write one the whole table.
    const scratchPoint: RestorePoint<MysqlTableDetails> = {
      ...point,
      details: { ...d, table: `${scratchSchemaName(scratch.short)}.${unit.id}`, partitions: undefined, ...(d.capture === 'copy-on-write' ? {} : { where: undefined }) },
    };
    const scratchUnit: MysqlTableUnit = { ...unit, table: `${scratchSchemaName(scratch.short)}.${unit.id}`, assertions, partition: undefined, where: undefined };
    const checks = await mysqlTableAdapter.verify(scratchUnit, scratchPoint as never, ctx);
    return { checks, notes };
  },

  async cleanup(unit, ctx, scratch) {
    const db = scratchSchemaName(scratch.short);
    return withSession(ctx, unit.connection, async (conn) => {
      const owner = await ownerOf(conn, db);
      if (owner === undefined) return { removed: [] };
      if (!isMarkerOf(owner, scratch.runId)) {
        throw new PreflightError(`database ${db} is not the scratch database of drill ${scratch.runId} (its owner table says otherwise); not dropped. Inspect it.`);
      }
      const removed: string[] = [];
      const tables = await select<{ name: string; comment: string }>(conn, 'SELECT TABLE_NAME AS name, TABLE_COMMENT AS comment FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [db]);
      for (const t of tables) {
        if (!isMarkerOf(t.comment, scratch.runId)) continue;
        await write(conn, `DROP TABLE ${ident(db)}.${ident(t.name)}`);
        removed.push(`mysql ${unit.connection}: ${db}.${t.name}`);
      }
      // DROP DATABASE takes everything in it: only when nothing but the owner table is left.
      const [left] = await select<{ n: string }>(
        conn,
        `SELECT CAST((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> ?) +
                     (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?) AS CHAR) AS n`,
        [db, OWNER_TABLE, db],
      );
      if (Number(left?.n ?? 0) > 0) throw new PreflightError(`scratch database ${db} holds objects the drill did not make, so it was left in place; inspect it.`);
      await write(conn, `DROP TABLE ${ident(db)}.${ident(OWNER_TABLE)}`);
      await write(conn, `DROP DATABASE ${ident(db)}`);
      removed.push(`mysql ${unit.connection}: database ${db}`);
      return { removed };
    });
  },
};
