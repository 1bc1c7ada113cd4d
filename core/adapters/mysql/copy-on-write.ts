import { createHash } from 'node:crypto';
import type mysql from 'mysql2/promise';
import { PreflightError, RestorePointMissingError, VerificationFailedError } from '../../errors.ts';
import type { MysqlTableUnit } from '../../manifest/schema.ts';
import { BACKSTOP } from '../backstop.ts';
import { INSTALL_LOCK, RESTORE_LOCK, type TableLockWait } from '../capture-modes.ts';
import { nameHash, readablePart } from '../table-names.ts';
import type { AdapterContext, Changes, Diff, InPlace, Outcome, RestorePoint } from '../types.ts';
import {
  autoIncrementOf, colList, columnsOf, countAndChecksum, differs, ensureRollbackDatabase, findTable, type FoundTable, ident,
  inRollbackDb, inTransaction, keyMatch, literal, type MysqlColumn, type MysqlTableDetails, partitionNamesOf, POINTS_TABLE,
  type PointRow, preflightSource, primaryKeyOf, quarantineTableName, readPointRow, ROLLBACK_DATABASE, rollbackTableExists, scopePredicate, type ShadowMeta,
  select, busyRestore, lockWaitSeconds, withBoundedLocks, withPointLock, withSession, write, innodbTableId, foreignKeyActionsOn, updateInPasses, deleteAndInsert,
} from './sql.ts';

/**
 * Copy-on-write restore points for a MySQL/MariaDB (InnoDB) table (`capture: copy-on-write` on a mysql-table unit).
 *
 * Capture copies nothing. It makes, in `etl_rollback`:
 * - an undo table `cw_…`: the table's stored columns (nullable, same types and collations) plus a kind column, keyed
 *   by the table's primary key;
 * - a guard table `cg_…` with a foreign key to the table's primary key. It stays empty; its only job is that InnoDB
 *   refuses `TRUNCATE` (and `DROP TABLE`) of a table another table references. MySQL runs no trigger on TRUNCATE, so
 *   instead of a TRUNCATE the undo log cannot see, the deploy gets an error ("Cannot truncate a table referenced in a
 *   foreign key constraint") and can `DELETE` instead, which is recorded;
 * and three row triggers on the table, AFTER INSERT / UPDATE / DELETE, that write into the undo table with
 * `ON DUPLICATE KEY UPDATE` as a no-op, so what it keeps for a key is the first event after the capture: the row's
 * pre-image (kind `p`) if the row existed at capture, else the key of an insert (kind `i`). UPDATE records the old
 * row first, then the new key. Row triggers are enough where PostgreSQL needs statement-level ones: InnoDB checks a
 * unique key row by row, so a key can only be taken after the row holding it moved or went, which recorded its
 * pre-image first (`UPDATE … SET id = id + 1` must be written `ORDER BY id DESC` in MySQL for the same reason). The
 * undo rows are written in the deploy's own transaction: a rolled back deploy leaves none.
 * (`ON DUPLICATE KEY UPDATE`, not `INSERT IGNORE`: IGNORE would also turn a truncated value into a warning.)
 *
 * The baseline. The triggers exist before the count and checksum are read, and a write in between would be recorded
 * against an older state. So the last step is one transaction that share-locks every row and gap of the table
 * (`LOCK IN SHARE MODE`: writers wait, plain readers do not), empties the undo table of what such writes recorded,
 * reads the count and checksum of the scope (the same function as copy mode, so the gate compares the same numbers),
 * and seals the point's row in `etl_rollback.restore_points` with the triggers' definitions and creation times. The
 * DDL before it commits on its own; a `pending` row marks a capture that has not sealed, and the next capture of the
 * same point drops its leftovers and starts again.
 *
 * In two halves (the snapshot machine's way: the deploy waits for the first only). `install` makes the same objects,
 * then takes the baseline without reading the table: LOCK TABLES … READ waits for the transactions that wrote the
 * table and holds new writers off while the log is emptied of what they wrote since the triggers went in
 * (milliseconds at any size); its record (the `pending` row's meta, `installed`) keeps the columns, the triggers and
 * the AUTO_INCREMENT counter of that moment. The next `capture` seals it: in one consistent snapshot, the live rows
 * without a log entry plus the logged pre-images are the table at the baseline (every later write logged its
 * pre-image in its own transaction), read without row locks while the deploy writes on. It refuses when the captured
 * columns or the triggers changed since the install. A table with a generated column is captured whole (the seal
 * hashes every column; the log keeps the stored ones).
 *
 * Restore, one transaction that holds the table's writers off (holdWriters; readers go on): by locking the undo log's
 * rows and gaps when the log is proven whole (below: every write of the table then waits in its trigger), else every
 * row and gap of the table (`FOR UPDATE`, a pass over it); checks the window (below);
 * copies the pre-images in scope and the live rows at the keys the log holds into temporary tables (a trigger may not
 * write a table its statement reads, and the restore's own writes fire the triggers, harmlessly: every key they see is
 * already in the log), the table looked up once per logged key: what to write, and the rows it replaces, are read
 * from those copies; keeps in a quarantine table every live row it will delete or overwrite;
 * deletes the rows whose key was not in scope at capture, updates the changed ones from their pre-images, re-inserts
 * the missing ones; then checks the table equals the capture (3, below) and commits only then.
 * The undo log is kept, so a rerun writes nothing and a later restore still has every pre-image. After the commit,
 * an unscoped unit gets its AUTO_INCREMENT counter back (DDL). Release drops the triggers, the guard and the undo table.
 *
 * Trust, but verify (before any write). The triggers can be bypassed: dropped and created again, or outrun: TRUNCATE
 * with `foreign_key_checks = 0`, or the guard dropped. The restore fails with VerificationFailedError, naming the
 * cause and the backstop, when
 * 1. a trigger is gone or is not the one installed (another definition or creation time: dropped and made again,
 *    writes in between were not recorded), or the guard's foreign key is gone;
 * 2. the live rows in scope whose key is not in the undo log (the untouched ones) are not exactly the captured count
 *    minus the recorded pre-images in scope: rows were deleted (or truncated) without the triggers;
 * 3. after the writes, the scope's count and checksum differ from the capture's (the end-to-end check: whatever got
 *    past 1-2, such as an update made while a trigger was missing and then recreated).
 * MySQL has no per-row transaction id like PostgreSQL's xmin, so an unrecorded update is caught by 3 only, after the
 * writes, which the transaction then rolls back: a bypass can make the restore fail, never make it claim a wrong
 * success.
 *
 * 2 and 3 read the whole scope, unless the log is proven whole without reading it (whyUnproven): 1 passes, and what
 * else writes rows without firing a trigger did not happen. TRUNCATE (foreign_key_checks off) and every rebuild of
 * the table (ALTER TABLE … FORCE, ENGINE=InnoDB, a column change) give it a new InnoDB table id, recorded at the
 * baseline and compared; the table's own foreign keys with a CASCADE, SET NULL or SET DEFAULT action (a parent's
 * change written into its rows by InnoDB) are looked for. Then 2 is skipped (no row outside the log was written) and
 * 3 reads only the logged keys: every pre-image in scope is in the table byte for byte (a user trigger rewriting a
 * row on its way in included) and no other row in scope holds a logged key. The restore then costs the logged rows,
 * its lock included: the undo log's rows, not the table's. The proof needs the PROCESS privilege (the InnoDB views);
 * without it, or for points captured before the id was recorded, the table's rows are locked and 2 and 3 read the
 * scope as before.
 * What it cannot see (a foreign key with an action added and dropped again within the window, without a rebuild)
 * the stage's gate still catches: it counts and sums the whole scope after every restore.
 *
 * A deploy that changes the table's columns is refused with the backstop (copy mode can put columns back; this mode
 * keeps only the rows the deploy changed; after a column is dropped or renamed the triggers' column list no
 * longer fits, so the deploy's next write to the table fails in the trigger: it stops rather than change rows the log
 * cannot undo).
 *
 * Not supported (refused at capture with the reason): tables without a primary key, a generated column in the key,
 * partitioned tables and `partition` scopes (InnoDB allows no foreign key to a partitioned table, so no guard).
 * Needs the TRIGGER and REFERENCES privileges on the table; with binary logging on, MySQL also asks for
 * log_bin_trust_function_creators (or SUPER) to create triggers.
 *
 * Not the default at any size (a unit without `capture` gets a copy): its row triggers add to every write of the
 * deploy, its restore without the proof locks every row of the table (a pass over it), and the whole capture
 * (without `install`) reads the table under shared locks, as the copy does. A unit that wants it sets it; the
 * snapshot machine then holds the deploy only for `install`. PostgreSQL's copy-on-write seals without holding
 * writers (and from the earlier point's log, without reading the table), and is the default there above 1 GiB.
 */

/** The undo table's column saying what a row is: `p` a pre-image, `i` the key of a row inserted since the capture. */
export const KIND = 'etlrb_kind';

export type MysqlCowDetails = MysqlTableDetails & { capture: 'copy-on-write' };

interface TriggerRecord {
  name: string;
  event: string;
  /** information_schema.TRIGGERS.CREATED, as text (hundredths of a second). */
  created: string;
  /** MD5 of ACTION_STATEMENT. */
  statementMd5: string;
}

/** The point's record: a copy mode's record without partitions or indexes, plus the guard and the triggers. */
type CowMeta = Omit<ShadowMeta, 'partitions' | 'indexes' | 'sealed'> & {
  mode: 'copy-on-write';
  guard: { table: string; constraint: string };
  triggers: TriggerRecord[];
  sealed: true;
  /** Set on a record of what rollback run `runId` replaced (undoRecord), made from the undo table `from`: no triggers, no guard. */
  record?: { runId: string; from: string };
  /** The point was installed first (install), its seal read afterwards, while the deploy may have been writing. */
  sealedAfterInstall?: true;
  /** The table's InnoDB id at the baseline (innodbTableId); absent where it could not be read. */
  tableId?: string;
};

/** The record of a point installed but not sealed yet (install): the `pending` row's meta; count and checksum to come. */
type InstalledMeta = Omit<CowMeta, 'sealed' | 'count' | 'checksum' | 'sealedAfterInstall'> & { sealed: false; installed: true };

function installedMetaOf(meta: unknown): InstalledMeta | undefined {
  const m = meta as Partial<InstalledMeta> | undefined;
  return m?.tool === 'etl-rollback' && m.mode === 'copy-on-write' && m.installed === true && m.sealed === false ? (m as InstalledMeta) : undefined;
}

/** The names of a point's undo table, guard table, guard constraint and triggers: deterministic, so a retry finds them. */
export function cowNames(pipeline: string, deploymentId: string, unitId: string) {
  const hash = nameHash('mysql-cow', pipeline, deploymentId, unitId);
  const middle = `${readablePart(pipeline, 18)}_${readablePart(unitId, 18)}_${hash}`;
  return {
    undo: `cw_${middle}`,
    guard: `cg_${middle}`,
    constraint: `etlrb_cg_${hash}`,
    triggers: { ins: `etlrb_cw_${hash}_ai`, upd: `etlrb_cw_${hash}_au`, del: `etlrb_cw_${hash}_ad` },
  };
}

function cowMetaOf(meta: unknown): CowMeta | undefined {
  const m = meta as Partial<CowMeta> | undefined;
  return m?.tool === 'etl-rollback' && m.mode === 'copy-on-write' && m.sealed === true ? (m as CowMeta) : undefined;
}

function pointFromMeta(unit: MysqlTableUnit, meta: CowMeta, undoName: string): RestorePoint<MysqlCowDetails> {
  return {
    unitId: unit.id,
    type: 'mysql-table',
    capturedAt: meta.capturedAt,
    count: meta.count,
    checksum: meta.checksum,
    details: {
      connection: unit.connection,
      table: meta.sourceTable,
      shadowTable: `${ROLLBACK_DATABASE}.${undoName}`,
      capture: 'copy-on-write',
      primaryKey: meta.primaryKey,
      columns: meta.columns,
      autoIncrement: meta.autoIncrement,
      ...(meta.where !== undefined ? { where: meta.where } : {}),
    },
  };
}

const columnDef = (c: MysqlColumn, nullable: boolean): string => `${ident(c.name)} ${c.type}${c.collation ? ` COLLATE ${c.collation}` : ''} ${nullable ? 'NULL' : 'NOT NULL'}`;
const stored = (columns: MysqlColumn[]): MysqlColumn[] => columns.filter((c) => !c.generated);
const md5 = (text: string): string => createHash('md5').update(text).digest('hex');

async function triggersOf(conn: mysql.Connection, table: FoundTable, names: string[]): Promise<TriggerRecord[]> {
  const rows = await select<{ name: string; event: string; created: string | null; statement: string }>(
    conn,
    `SELECT TRIGGER_NAME AS name, EVENT_MANIPULATION AS event, CAST(CREATED AS CHAR) AS created, ACTION_STATEMENT AS statement
       FROM information_schema.TRIGGERS
      WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? AND TRIGGER_NAME IN (?) ORDER BY TRIGGER_NAME`,
    [table.db, table.name, names],
  );
  return rows.map((r) => ({ name: r.name, event: r.event, created: r.created ?? '', statementMd5: md5(r.statement) }));
}

async function guardInPlace(conn: mysql.Connection, table: FoundTable, constraint: string): Promise<boolean> {
  const rows = await select(
    conn,
    `SELECT 1 AS x FROM information_schema.REFERENTIAL_CONSTRAINTS
      WHERE CONSTRAINT_SCHEMA = ? AND CONSTRAINT_NAME = ? AND UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?`,
    [ROLLBACK_DATABASE, constraint, table.db, table.name],
  );
  return rows.length > 0;
}

/** An undo table: the stored columns (only the key NOT NULL), the kind, the key as primary key. */
async function createUndoTable(conn: mysql.Connection, undo: string, kept: MysqlColumn[], keyColumns: MysqlColumn[], comment: string): Promise<void> {
  const key = new Set(keyColumns.map((c) => c.name));
  await conn.query(
    `CREATE TABLE ${undo} (\n  ${kept.map((c) => columnDef(c, !key.has(c.name))).join(',\n  ')},\n  ${ident(KIND)} CHAR(1) NOT NULL,\n  PRIMARY KEY (${colList(keyColumns)})\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT=${comment}`,
  );
}

/** Drops what a capture of this point made (any of it may be missing): triggers, guard, undo table. */
async function dropObjects(conn: mysql.Connection, table: FoundTable | undefined, names: ReturnType<typeof cowNames>): Promise<void> {
  if (table) for (const t of Object.values(names.triggers)) await conn.query(`DROP TRIGGER IF EXISTS ${ident(table.db)}.${ident(t)}`);
  await conn.query(`DROP TABLE IF EXISTS ${inRollbackDb(names.guard)}`);
  await conn.query(`DROP TABLE IF EXISTS ${inRollbackDb(names.undo)}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Capture

type Names = ReturnType<typeof cowNames>;


/** An installed point whose undo table is gone: what the deploy changed since is lost to it; never installed again. */
const lostUndo = (unit: MysqlTableUnit, n: Names): PreflightError =>
  new PreflightError(
    `unit "${unit.id}": the copy-on-write restore point was installed, but its undo table ${ROLLBACK_DATABASE}.${n.undo} is gone (dropped): the changes made since cannot be undone from it, ` +
      `and installing it again would take the table as it is now. This restore point cannot be sealed; ${BACKSTOP}.`,
  );

/** The point's bookkeeping row, checked to be this unit's, and whether its undo table exists. */
async function existingPoint(conn: mysql.Connection, unit: MysqlTableUnit, ctx: AdapterContext, n: Names) {
  await ensureRollbackDatabase(conn);
  const existing = await readPointRow(conn, n.undo);
  if (existing && (existing.pipeline !== ctx.pipeline || existing.deploymentId !== ctx.deploymentId || existing.unitId !== unit.id)) {
    throw new PreflightError(
      `${ROLLBACK_DATABASE}.${n.undo} is recorded for another restore point (pipeline "${existing.pipeline}", deployment "${existing.deploymentId}", ` +
        `unit "${existing.unitId}"); refusing to reuse it. Inspect ${ROLLBACK_DATABASE}.${POINTS_TABLE}.`,
    );
  }
  const undoExists = await rollbackTableExists(conn, n.undo);
  if (!existing && undoExists) {
    throw new PreflightError(`${ROLLBACK_DATABASE}.${n.undo} exists but is not recorded in ${ROLLBACK_DATABASE}.${POINTS_TABLE}; inspect it, drop it if it is not needed, and capture again.`);
  }
  return { existing, undoExists };
}

/** The table, if copy-on-write can protect it; refused with the reason otherwise. */
async function protectable(conn: mysql.Connection, unit: MysqlTableUnit) {
  const { source, columns } = await preflightSource(conn, unit);
  const refuse = (why: string) => new PreflightError(`unit "${unit.id}": capture: copy-on-write is not possible for ${source.display}: ${why}. Use capture: copy (the default) for this unit.`);
  if (unit.partition !== undefined || (await partitionNamesOf(conn, source)).length > 0) {
    throw refuse('it is partitioned (or the unit names partitions), and InnoDB allows no foreign key to a partitioned table: the guard that stops TRUNCATE cannot be made');
  }
  const primaryKey = await primaryKeyOf(conn, source);
  if (primaryKey.length === 0) throw refuse('it has no primary key, and the undo log records rows by key');
  const keyColumns = primaryKey.map((k) => columns.find((c) => c.name === k)!);
  if (keyColumns.some((c) => c.generated)) throw refuse('a column of its primary key is generated');
  return { source, columns, primaryKey, keyColumns, refuse };
}

/**
 * 1. The DDL, each statement committing on its own: the `pending` row first (so a crash leaves a trace to clean up;
 * an earlier half-made capture of the point is dropped), the undo table, the guard, the triggers; then the check that
 * a `where` predicate reads only stored columns (it is evaluated on undo rows at restore).
 */
async function installObjects(conn: mysql.Connection, unit: MysqlTableUnit, ctx: AdapterContext, n: Names, t: Awaited<ReturnType<typeof protectable>>, existing: PointRow | undefined): Promise<void> {
  const { source, columns, keyColumns, refuse } = t;
  const undo = inRollbackDb(n.undo);
  if (existing?.state === 'pending') {
    ctx.log.warn('mysql-table found an unsealed copy-on-write capture of this point; dropping its leftovers and capturing again', { unit: unit.id });
    await dropObjects(conn, source, n);
    await write(conn, `UPDATE ${inRollbackDb(POINTS_TABLE)} SET source_table = ?, created_at = UTC_TIMESTAMP(6), meta = NULL WHERE shadow_table = ?`, [source.display, n.undo]);
  } else {
    await write(
      conn,
      `INSERT INTO ${inRollbackDb(POINTS_TABLE)} (shadow_table, state, pipeline, deployment_id, unit_id, source_table, created_at, meta)
       VALUES (?, 'pending', ?, ?, ?, ?, UTC_TIMESTAMP(6), NULL)`,
      [n.undo, ctx.pipeline, ctx.deploymentId, unit.id, source.display],
    );
  }
  const kept = stored(columns);
  const comment = literal(JSON.stringify({ tool: 'etl-rollback', kind: 'undo-log', pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, unitId: unit.id, table: source.display }));
  await createUndoTable(conn, undo, kept, keyColumns, comment);
  await conn.query(
    `CREATE TABLE ${inRollbackDb(n.guard)} (\n  ${keyColumns.map((c) => columnDef(c, false)).join(',\n  ')},\n  CONSTRAINT ${ident(n.constraint)} FOREIGN KEY (${colList(keyColumns)}) REFERENCES ${source.sql} (${colList(keyColumns)})\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='etl-rollback: stays empty; its foreign key makes InnoDB refuse TRUNCATE of the table while a copy-on-write restore point needs it'`,
  );
  const noop = `ON DUPLICATE KEY UPDATE ${ident(KIND)} = ${ident(KIND)}`;
  const pre = `INSERT INTO ${undo} (${colList(kept)}, ${ident(KIND)}) VALUES (${kept.map((c) => `OLD.${ident(c.name)}`).join(', ')}, 'p') ${noop}`;
  const key = `INSERT INTO ${undo} (${colList(keyColumns)}, ${ident(KIND)}) VALUES (${keyColumns.map((c) => `NEW.${ident(c.name)}`).join(', ')}, 'i') ${noop}`;
  const trigger = (name: string, event: string, body: string) => conn.query(`CREATE TRIGGER ${ident(source.db)}.${ident(name)} AFTER ${event} ON ${source.sql} FOR EACH ROW ${body}`);
  await trigger(n.triggers.ins, 'INSERT', key);
  await trigger(n.triggers.upd, 'UPDATE', `BEGIN\n  ${pre};\n  ${key};\nEND`);
  await trigger(n.triggers.del, 'DELETE', pre);
  if (unit.where !== undefined) {
    try {
      await select(conn, `SELECT COUNT(*) AS n FROM ${undo} WHERE ${scopePredicate({ where: unit.where })}`);
    } catch (error) {
      throw refuse(`its "where" predicate cannot be evaluated on the undo log (${(error as Error).message}); it may read only stored columns`);
    }
  }
}

/** The record's fields both halves share: what the table was at the baseline, and what protects it. */
function recordOf(unit: MysqlTableUnit, ctx: AdapterContext, n: Names, t: Awaited<ReturnType<typeof protectable>>, at: { autoIncrement: string | null; triggers: TriggerRecord[]; tableId: string | null }) {
  return {
    tool: 'etl-rollback' as const,
    kind: 'restore-point' as const,
    mode: 'copy-on-write' as const,
    version: 1 as const,
    pipeline: ctx.pipeline,
    deploymentId: ctx.deploymentId,
    unitId: unit.id,
    sourceTable: t.source.display,
    capturedAt: ctx.now().toISOString(),
    primaryKey: t.primaryKey,
    columns: t.columns,
    ...(unit.where !== undefined ? { where: unit.where } : {}),
    autoIncrement: unit.where !== undefined ? null : at.autoIncrement,
    guard: { table: n.guard, constraint: n.constraint },
    triggers: at.triggers,
    ...(at.tableId !== null ? { tableId: at.tableId } : {}),
  };
}

/**
 * The baseline's facts, read with writers held off and the log just emptied: the columns as they were checked, the
 * AUTO_INCREMENT counter (none for a scoped unit) and the three triggers as installed.
 */
async function baselineOf(conn: mysql.Connection, unit: MysqlTableUnit, n: Names, t: Awaited<ReturnType<typeof protectable>>) {
  const now = await columnsOf(conn, t.source);
  if (JSON.stringify(now) !== JSON.stringify(t.columns)) throw new Error(`capture of unit "${unit.id}": the columns of ${t.source.display} changed during the capture; capture again`);
  const at = {
    autoIncrement: unit.where !== undefined ? null : await autoIncrementOf(conn, t.source),
    triggers: await triggersOf(conn, t.source, Object.values(n.triggers)),
    tableId: await innodbTableId(conn, t.source),
  };
  if (at.triggers.length !== 3) throw new Error(`capture of unit "${unit.id}": a trigger on ${t.source.display} vanished during the capture; capture again`);
  return at;
}

/** Writes the `pending` row's record: sealed (state `sealed`) or installed (still `pending`). */
async function recordPoint(conn: mysql.Connection, unit: MysqlTableUnit, n: Names, meta: CowMeta | InstalledMeta): Promise<void> {
  const written = await write(conn, `UPDATE ${inRollbackDb(POINTS_TABLE)} SET state = ?, meta = ? WHERE shadow_table = ? AND state = 'pending'`, [meta.sealed ? 'sealed' : 'pending', JSON.stringify(meta), n.undo]);
  if (written !== 1) throw new Error(`capture of unit "${unit.id}": the pending record of ${ROLLBACK_DATABASE}.${n.undo} vanished; capture again`);
}

/**
 * The whole capture: install and baseline in one go, the table share-locked (writers held off) while its count and
 * checksum are read; or, for a point installed first (`install`), its seal (`seal`).
 */
async function capture(unit: MysqlTableUnit, ctx: AdapterContext, lock: TableLockWait = INSTALL_LOCK): Promise<RestorePoint<MysqlCowDetails>> {
  const n = cowNames(ctx.pipeline, ctx.deploymentId, unit.id);
  const undo = inRollbackDb(n.undo);
  return withSession(ctx, unit.connection, async (conn) => {
    return withPointLock(conn, n.undo, unit.id, async () => {
      const { existing, undoExists } = await existingPoint(conn, unit, ctx, n);
      if (existing?.state === 'sealed') {
        const meta = cowMetaOf(existing.meta);
        if (!meta || !undoExists) {
          throw new PreflightError(
            `unit "${unit.id}": the copy-on-write restore point of deployment "${ctx.deploymentId}" was sealed, but its undo table ${ROLLBACK_DATABASE}.${n.undo} is ` +
              `${undoExists ? 'not a copy-on-write point' : 'gone (released or dropped)'}; it cannot be captured again under the same deployment. Use a new deployment id.`,
          );
        }
        ctx.log.info('mysql-table copy-on-write restore point already sealed', { unit: unit.id, undoTable: `${ROLLBACK_DATABASE}.${n.undo}` });
        return pointFromMeta(unit, meta, n.undo);
      }
      const installed = existing?.state === 'pending' ? installedMetaOf(existing.rawMeta) : undefined;
      // Installed, and the deploy may be writing since: its triggers' log is the way back, so it is sealed, never redone.
      if (installed) return seal(conn, unit, n, installed, undoExists);

      const t = await protectable(conn, unit);
      // The install's locks, bounded the same way (withInstallLock): its DDL, then the share lock of the baseline.
      return withInstallLock(conn, unit, t.source, lock, async () => {
        // A try that timed out left its objects `pending`: installObjects drops them and makes them again.
        await installObjects(conn, unit, ctx, n, t, (await existingPoint(conn, unit, ctx, n)).existing);
        // 2. The baseline: writers held off, what slipped in since the triggers forgotten, count and checksum, seal.
        return await inTransaction(conn, 'START TRANSACTION', async () => {
          await select(conn, `SELECT COUNT(*) AS n FROM ${t.source.sql} LOCK IN SHARE MODE`);
          await write(conn, `DELETE FROM ${undo}`);
          const at = await baselineOf(conn, unit, n, t);
          let counted: { count: number; checksum: string };
          try {
            counted = await countAndChecksum(conn, `${t.source.sql} AS t`, scopePredicate({ where: unit.where }), t.columns);
          } catch (error) {
            if (unit.where === undefined) throw error;
            throw new PreflightError(`unit "${unit.id}": its "where" predicate (${unit.where}) fails on ${t.source.display}: ${(error as Error).message}. Nothing was captured.`, { cause: error });
          }
          const meta: CowMeta = { ...recordOf(unit, ctx, n, t, at), count: counted.count, checksum: counted.checksum, sealed: true };
          await recordPoint(conn, unit, n, meta);
          ctx.log.info('mysql-table copy-on-write restore point captured', { unit: unit.id, table: t.source.display, undoTable: `${ROLLBACK_DATABASE}.${n.undo}`, count: counted.count });
          return pointFromMeta(unit, meta, n.undo);
        });
      });
    });
  });
}

/**
 * The capture's first half (the snapshot's "Capture units"; the deploy may start once it returns): the objects, then
 * the baseline without reading the table. LOCK TABLES … READ waits for every transaction that has written the table
 * (it holds the table's metadata lock until it ends) and holds new writers off while the log is emptied of what they
 * wrote since the triggers went in: milliseconds, not a pass over the table. From then on every write is in the log, in
 * the writer's own transaction, so the seal can be read from any later consistent snapshot (`seal`). Undefined for a
 * table with a generated column (the seal hashes every column; the log keeps stored ones): captured whole instead.
 */
async function install(unit: MysqlTableUnit, ctx: AdapterContext, lock: TableLockWait = INSTALL_LOCK): Promise<InPlace | undefined> {
  const n = cowNames(ctx.pipeline, ctx.deploymentId, unit.id);
  const undo = inRollbackDb(n.undo);
  return withSession(ctx, unit.connection, async (conn) => {
    return withPointLock(conn, n.undo, unit.id, async () => {
      const { existing, undoExists } = await existingPoint(conn, unit, ctx, n);
      // Sealed already: the capture answers it at once.
      if (existing?.state === 'sealed') return undefined;
      const found = existing?.state === 'pending' ? installedMetaOf(existing.rawMeta) : undefined;
      if (found) {
        if (!undoExists) throw lostUndo(unit, n);
        return { status: `in place, seal to follow: triggers on ${found.sourceTable} log every change since ${found.capturedAt} into ${undo}` };
      }
      const t = await protectable(conn, unit);
      if (t.columns.some((c) => c.generated)) return undefined;
      const at = await withInstallLock(conn, unit, t.source, lock, async () => {
        // A try that timed out left its objects `pending`: installObjects drops them and makes them again.
        await installObjects(conn, unit, ctx, n, t, (await existingPoint(conn, unit, ctx, n)).existing);
        await conn.query(`LOCK TABLES ${t.source.sql} READ, ${undo} WRITE`);
        try {
          await write(conn, `DELETE FROM ${undo}`);
          return await baselineOf(conn, unit, n, t);
        } finally {
          await conn.query('UNLOCK TABLES');
        }
      });
      const meta: InstalledMeta = { ...recordOf(unit, ctx, n, t, at), sealed: false, installed: true };
      await recordPoint(conn, unit, n, meta);
      ctx.log.info('mysql-table copy-on-write triggers in place', { unit: unit.id, table: t.source.display, undoTable: `${ROLLBACK_DATABASE}.${n.undo}` });
      return { status: `in place, seal to follow: triggers on ${t.source.display} log every change since ${meta.capturedAt} into ${undo}` };
    });
  });
}

/**
 * The install's DDL (CREATE TRIGGER, the guard's foreign key, DROP TRIGGER of a half-made try) and its LOCK TABLES …
 * READ (the whole capture's share-locking read instead) each wait for every transaction that has written the table,
 * and writers that come after them queue behind.
 * So each waits `lock.timeoutMs` at most, and the install is tried `lock.tries` times (withBoundedLocks). Then it
 * fails, naming the oldest open transactions; what it made stays `pending`, and the next capture of the point starts
 * again (the deploy has not started: install did not return).
 */
async function withInstallLock<T>(conn: mysql.Connection, unit: MysqlTableUnit, source: FoundTable, lock: TableLockWait, install: () => Promise<T>): Promise<T> {
  return withBoundedLocks(
    conn,
    lock,
    (holders) =>
      `unit "${unit.id}": capture: copy-on-write could not lock ${source.display} to install its triggers: ${lock.tries} tries of ${lockWaitSeconds(lock)} s each, ` +
      `and open transactions held it (the oldest: ${holders}). Writers were held for at most one try. ` +
      'Capture again once they end; the deploy must not start before.',
    install,
  );
}

/**
 * The seal of an installed point: in one consistent snapshot, the live rows without a log entry plus the logged
 * pre-images are the table at the baseline (every later write is logged in its own transaction), so their count and
 * checksum are the capture's, read while the deploy writes on (a plain InnoDB read takes no row locks). Refused when
 * the table no longer has the captured columns, or its triggers are not the ones installed (writes may be missing).
 */
async function seal(conn: mysql.Connection, unit: MysqlTableUnit, n: Names, installed: InstalledMeta, undoExists: boolean): Promise<RestorePoint<MysqlCowDetails>> {
  if (!undoExists) throw lostUndo(unit, n);
  const undo = inRollbackDb(n.undo);
  const source = await findTable(conn, installed.sourceTable);
  if (!source) throw new PreflightError(`unit "${unit.id}": table ${installed.sourceTable} is gone; its copy-on-write restore point cannot be sealed; ${BACKSTOP}.`);
  await conn.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
  return inTransaction(conn, 'START TRANSACTION WITH CONSISTENT SNAPSHOT', async () => {
    const now = await columnsOf(conn, source);
    const changed = installed.columns.filter((c) => JSON.stringify(now.find((x) => x.name === c.name)) !== JSON.stringify(c)).map((c) => c.name);
    const triggers = await triggersOf(conn, source, Object.values(n.triggers));
    // Null where it cannot be read now: nothing is concluded from that (a restore then reads the table).
    const tableId = installed.tableId === undefined ? null : await innodbTableId(conn, source);
    const problems = [
      ...(changed.length > 0 ? [`its columns changed after its triggers went in (${changed.join(', ')}), so its rows no longer show the table as it was`] : []),
      ...(JSON.stringify(triggers) !== JSON.stringify(installed.triggers) ? ['its triggers are not the ones installed (dropped or made again since): writes may be missing from the log'] : []),
      ...(tableId !== null && tableId !== installed.tableId
        ? ['it was truncated or rebuilt after its triggers went in (its InnoDB table id changed): rows may have changed without them']
        : []),
    ];
    if (problems.length > 0) throw new PreflightError(`unit "${unit.id}": the seal of ${source.display} cannot be read: ${problems.join('; ')}. This restore point cannot be sealed; ${BACKSTOP}.`);
    const kind = ident(KIND);
    const rows =
      `(SELECT ${colList(installed.columns, 'l')} FROM ${source.sql} AS l WHERE NOT EXISTS (SELECT 1 FROM ${undo} AS u WHERE ${keyMatch(installed.primaryKey, 'u', 'l')}) ` +
      `UNION ALL SELECT ${colList(installed.columns, 'u')} FROM ${undo} AS u WHERE u.${kind} = 'p') AS t`;
    const counted = await countAndChecksum(conn, rows, scopePredicate({ where: installed.where }), installed.columns);
    const { installed: _, ...rest } = installed;
    const meta: CowMeta = { ...rest, count: counted.count, checksum: counted.checksum, sealed: true, sealedAfterInstall: true };
    await recordPoint(conn, unit, n, meta);
    return pointFromMeta(unit, meta, n.undo);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Preflight and the window check

interface Prepared {
  live: FoundTable;
  meta: CowMeta;
  undoName: string;
  /** Stored captured columns (what the undo log and INSERT hold) and those outside the key (what UPDATE writes). */
  kept: MysqlColumn[];
  update: MysqlColumn[];
  where: string;
  bypass: string[];
  recorded: { preImages: number; inserted: number };
  counts: { rowsDeleted: number; rowsUpdated: number; rowsInserted: number };
  /**
   * The log holds every write since the capture, proven without reading the table (whyUnproven): the rows it does
   * not name are as captured, so check 2 and the end-to-end count and checksum need not read the table.
   */
  proven: boolean;
  /** The live table's columns (as captured: a column change is refused). */
  columns: MysqlColumn[];
  notes: string[];
}

const THEN = 'etlrb_cow_then';
const NOW = 'etlrb_cow_now';
/** NOW's columns beside the table's: the row is in the unit's scope (1, 0); what the restore does to it (`d`, `u`, NULL). */
const IN_SCOPE = 'etlrb_in_scope';
const ACT = 'etlrb_act';

/**
 * Why the log cannot be proven to hold every write since the capture without reading the table (undefined: it can).
 * Check 1 (the triggers and the guard, as installed) must pass as well. Then what remains that changes rows without
 * firing a trigger: TRUNCATE with foreign_key_checks off and any rebuild of the table (a new InnoDB table id), and
 * the actions of the table's own foreign keys (CASCADE, SET NULL, SET DEFAULT from the referenced table).
 */
async function whyUnproven(conn: mysql.Connection, live: FoundTable, meta: CowMeta): Promise<string | undefined> {
  if (meta.record) return 'a record of what a rollback replaced has no triggers';
  if (meta.tableId === undefined) return 'the restore point holds no InnoDB table id (captured before it was recorded, or without the PROCESS privilege)';
  const id = await innodbTableId(conn, live);
  if (id === null) return 'the InnoDB table id cannot be read (it needs the PROCESS privilege)';
  if (id !== meta.tableId) return `the table was truncated or rebuilt since the capture (InnoDB table id ${meta.tableId}, now ${id})`;
  const actions = await foreignKeyActionsOn(conn, live);
  if (actions.length > 0) return `its rows can change by foreign key actions, which fire no trigger (${actions.join('; ')})`;
  return undefined;
}

/** Whether the log holds every write since the capture, proven from the catalog alone: check 1 passes and whyUnproven has nothing. */
async function provenWhole(conn: mysql.Connection, live: FoundTable, meta: CowMeta): Promise<boolean> {
  return (await triggersBypassed(conn, live, meta)).length === 0 && (await whyUnproven(conn, live, meta)) === undefined;
}

/** Check 1: what is wrong with the triggers and the guard, against what the capture installed (empty: nothing). */
async function triggersBypassed(conn: mysql.Connection, live: FoundTable, meta: CowMeta): Promise<string[]> {
  const bypass: string[] = [];
  const names = cowNames(meta.pipeline, meta.deploymentId, meta.unitId);
  const nowTriggers = await triggersOf(conn, live, Object.values(names.triggers));
  for (const want of meta.triggers) {
    const found = nowTriggers.find((t) => t.name === want.name);
    if (!found) bypass.push(`trigger ${want.name} on ${live.display} was dropped`);
    else if (found.created !== want.created || found.statementMd5 !== want.statementMd5) {
      bypass.push(`trigger ${want.name} was dropped and created again (created ${want.created}, now ${found.created}): writes in between were not recorded`);
    }
  }
  if (!meta.record && !(await guardInPlace(conn, live, meta.guard.constraint))) {
    bypass.push(`the guard foreign key ${ROLLBACK_DATABASE}.${meta.guard.table} (${meta.guard.constraint}) was dropped, so TRUNCATE was no longer stopped`);
  }
  return bypass;
}

/** Reads the sealed point's record; the point must be this unit's, in this pipeline. */
async function sealedMeta(conn: mysql.Connection, unit: MysqlTableUnit, point: RestorePoint<MysqlCowDetails>, ctx: AdapterContext): Promise<{ meta: CowMeta; undoName: string }> {
  const undoName = point.details.shadowTable.slice(point.details.shadowTable.indexOf('.') + 1);
  const row = await readPointRow(conn, undoName);
  const meta = cowMetaOf(row?.meta);
  if (!(await rollbackTableExists(conn, undoName))) {
    throw new RestorePointMissingError(`unit "${unit.id}": the undo table ${point.details.shadowTable} of the copy-on-write restore point is gone (released or dropped); this point cannot be restored.`);
  }
  if (row?.state !== 'sealed' || !meta || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || meta.checksum !== point.checksum || meta.count !== point.count) {
    throw new RestorePointMissingError(`unit "${unit.id}": ${point.details.shadowTable} is not the sealed undo table this restore point describes; refusing to restore from it.`);
  }
  return { meta, undoName };
}

/**
 * Inside the caller's transaction (locking for a restore, a consistent snapshot for a diff): the window checks 1-2,
 * the temporary tables of pre-images in scope (THEN) and of logged live keys in scope (NOW), and what the writes will be.
 */
async function prepare(conn: mysql.Connection, unit: MysqlTableUnit, point: RestorePoint<MysqlCowDetails>, ctx: AdapterContext): Promise<Prepared> {
  const { meta, undoName } = await sealedMeta(conn, unit, point, ctx);
  const undo = inRollbackDb(undoName);
  const fail = (cause: string) =>
    new VerificationFailedError(
      `unit "${unit.id}": copy-on-write restore point of ${meta.sourceTable} cannot be trusted: ${cause}. Nothing was written. The undo log may miss changes, so this restore point cannot put the table back; ${BACKSTOP}.`,
    );
  const live = await findTable(conn, meta.sourceTable);
  if (!live || live.kind !== 'BASE TABLE') throw fail(`table ${meta.sourceTable} ${live ? 'is no longer a table' : 'no longer exists'}`);
  const columns = await columnsOf(conn, live);
  const describe = (c: MysqlColumn) => `${c.name} ${c.type}${c.collation ? ` ${c.collation}` : ''}${c.generated ? ' generated' : ''}`;
  const was = meta.columns.map(describe);
  const is = columns.map(describe);
  if (was.join('\n') !== is.join('\n')) {
    const gone = was.filter((c) => !is.includes(c));
    const added = is.filter((c) => !was.includes(c));
    throw new PreflightError(
      `unit "${unit.id}": the deploy changed the columns of ${live.display} (${[...gone.map((c) => `was: ${c}`), ...added.map((c) => `now: ${c}`)].join('; ')}); ` +
        `copy-on-write keeps only the rows the deploy changed and does not put a MySQL schema back: revert the DDL by hand, then rerun, or use the backstop (${BACKSTOP}). Nothing was written.`,
    );
  }
  const key = meta.primaryKey;
  const kept = stored(meta.columns);
  const update = kept.filter((c) => !key.includes(c.name));
  const where = scopePredicate({ where: meta.where });

  // 1. The triggers and the guard, as installed at capture.
  const bypass = await triggersBypassed(conn, live, meta);

  // The pre-images in scope (THEN), and the live rows at the keys the log holds (NOW, whole, with whether each is in
  // scope and what the restore does to it): copied out, because the restore's writes fire the triggers, which write
  // the undo table, and a statement may not read a table its trigger writes. NOW is the only read of the table at the
  // logged keys before the writes: what the writes will do, and the rows they replace (the quarantine), come from it,
  // so the table is looked up once per logged key, and again only where a row is written and by the end-to-end check.
  // (Each statement names each temporary table once: MySQL cannot open one twice in a statement.)
  await conn.query(`DROP TEMPORARY TABLE IF EXISTS ${THEN}, ${NOW}`);
  await conn.query(`CREATE TEMPORARY TABLE ${THEN} (${kept.map((c) => columnDef(c, !key.includes(c.name))).join(', ')}, PRIMARY KEY (${colList(kept.filter((c) => key.includes(c.name)))})) ENGINE=InnoDB`);
  await conn.query(
    `CREATE TEMPORARY TABLE ${NOW} (${columns.map((c) => columnDef(c, !key.includes(c.name))).join(', ')}, ${ident(IN_SCOPE)} TINYINT NOT NULL, ${ident(ACT)} CHAR(1) NULL, PRIMARY KEY (${key.map(ident).join(', ')})) ENGINE=InnoDB`,
  );
  await write(conn, `INSERT INTO ${THEN} (${colList(kept)}) SELECT ${colList(kept)} FROM ${undo} WHERE ${ident(KIND)} = 'p' AND ${where}`);
  // Driven by the log: each logged key looked up in the table by primary key (the scope's predicate, written for the
  // table's columns, evaluated on the rows found, in a derived table so that no column name is ambiguous).
  await write(
    conn,
    `INSERT INTO ${NOW} (${colList(columns)}, ${ident(IN_SCOPE)}) SELECT ${colList(columns, 'x')}, IF(${where}, 1, 0) FROM (SELECT l.* FROM ${undo} AS u JOIN ${live.sql} AS l ON ${keyMatch(key, 'l', 'u')}) AS x`,
  );
  // What the restore does to each: `d` delete it (in scope, no pre-image: inserted since, or moved into scope), `u`
  // overwrite it with its pre-image (its bytes differ), nothing (it is its pre-image, or out of scope).
  await write(
    conn,
    `UPDATE ${NOW} AS n LEFT JOIN ${THEN} AS t ON ${keyMatch(key, 't', 'n')}
        SET n.${ident(ACT)} = CASE WHEN t.${ident(key[0]!)} IS NULL THEN IF(n.${ident(IN_SCOPE)} = 1, 'd', NULL) WHEN ${update.length > 0 ? differs(update, 'n', 't') : 'FALSE'} THEN 'u' ELSE NULL END`,
  );

  // Only asked once check 1 has passed (its failures are in `bypass` already).
  const unproven = bypass.length > 0 ? undefined : await whyUnproven(conn, live, meta);
  const proven = bypass.length === 0 && unproven === undefined;

  // 2. Untouched rows in scope: exactly the captured count less the recorded pre-images in scope. Proven, it needs no
  // count: no row the log does not name was written. Otherwise one pass over the scope.
  const [c] = await select<{ p: string | null; i: string | null; pin: string }>(
    conn,
    `SELECT CAST(SUM(${ident(KIND)} = 'p') AS CHAR) AS p, CAST(SUM(${ident(KIND)} = 'i') AS CHAR) AS i, (SELECT CAST(COUNT(*) AS CHAR) FROM ${THEN}) AS pin FROM ${undo}`,
  );
  const preImagesInScope = Number(c?.pin ?? 0);
  const logged = `EXISTS (SELECT 1 FROM ${undo} AS u WHERE ${keyMatch(key, 'u', 'l')})`;
  const untouched = proven
    ? meta.count - preImagesInScope
    : Number((await select<{ n: string }>(conn, `SELECT CAST(COUNT(*) AS CHAR) AS n FROM ${live.sql} AS l WHERE ${where} AND NOT ${logged}`))[0]?.n ?? 0);
  if (untouched !== meta.count - preImagesInScope) {
    bypass.push(
      `${untouched} rows in scope are untouched according to the undo log, but the capture's ${meta.count} rows minus the ${preImagesInScope} recorded pre-images leave ${meta.count - preImagesInScope}: ` +
        'rows were deleted (or truncated, with foreign_key_checks off) without the triggers recording them',
    );
  }

  const [acts] = await select<{ d: string | null; u: string | null }>(conn, `SELECT CAST(SUM(${ident(ACT)} = 'd') AS CHAR) AS d, CAST(SUM(${ident(ACT)} = 'u') AS CHAR) AS u FROM ${NOW}`);
  // Pre-images with no row at their key: no row in NOW (it holds every live row at a logged key).
  const [missing] = await select<{ i: string }>(conn, `SELECT CAST(COUNT(*) AS CHAR) AS i FROM ${THEN} AS t LEFT JOIN ${NOW} AS n ON ${keyMatch(key, 'n', 't')} WHERE n.${ident(key[0]!)} IS NULL`);
  const notes = [
    meta.record
      ? `the record of what run ${meta.record.runId} replaced: the rows at the keys its copy-on-write restore point had logged, in ${point.details.shadowTable}`
      : `capture: copy-on-write (the unit sets capture: copy-on-write): undo table ${point.details.shadowTable}`,
  ];
  if (meta.where !== undefined) notes.push(`scope: rows where ${meta.where}`);
  if (proven) notes.push('the triggers, the guard and the table are as the capture left them (same InnoDB table id, no foreign key actions on it): the table was not read to look for unrecorded writes');
  else if (unproven !== undefined) notes.push(`every row in scope was counted for writes the triggers did not record: ${unproven}`);
  return {
    live,
    meta,
    undoName,
    kept,
    update,
    where,
    bypass,
    recorded: { preImages: Number(c?.p ?? 0), inserted: Number(c?.i ?? 0) },
    counts: { rowsDeleted: Number(acts?.d ?? 0), rowsUpdated: Number(acts?.u ?? 0), rowsInserted: Number(missing?.i ?? 0) },
    proven,
    columns,
    notes,
  };
}

async function dropTemporary(conn: mysql.Connection): Promise<void> {
  await conn.query(`DROP TEMPORARY TABLE IF EXISTS ${THEN}, ${NOW}`).catch(() => undefined);
}

function changesOf(rows: Prepared['counts'], rowsQuarantined: number): Changes {
  return { rowsInserted: rows.rowsInserted, rowsUpdated: rows.rowsUpdated, rowsDeleted: rows.rowsDeleted, ...(rowsQuarantined > 0 ? { rowsQuarantined } : {}) };
}

const writesOf = (c: Prepared['counts']): number => c.rowsDeleted + c.rowsUpdated + c.rowsInserted;

// ---------------------------------------------------------------------------------------------------------------
// Diff

async function diff(unit: MysqlTableUnit, point: RestorePoint<MysqlCowDetails>, ctx: AdapterContext): Promise<Diff> {
  return withSession(ctx, point.details.connection, async (conn) => {
    await conn.query('START TRANSACTION WITH CONSISTENT SNAPSHOT');
    try {
      const p = await prepare(conn, unit, point, ctx);
      const notes = [...p.notes, `undo log: ${p.recorded.preImages} pre-image(s), ${p.recorded.inserted} inserted key(s) recorded since the capture`];
      if (p.bypass.length > 0) notes.push(`copy-on-write check FAILED, the restore will fail and write nothing: ${p.bypass.join('; ')}; ${BACKSTOP}`);
      const changes = changesOf(p.counts, p.counts.rowsDeleted + p.counts.rowsUpdated);
      return { changes, writes: writesOf(p.counts), notes };
    } finally {
      await conn.query('ROLLBACK').catch(() => undefined);
      await dropTemporary(conn);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Restore

async function restore(unit: MysqlTableUnit, point: RestorePoint<MysqlCowDetails>, ctx: AdapterContext, lock: TableLockWait = RESTORE_LOCK): Promise<Outcome> {
  const runId = ctx.runId;
  if (!runId) throw new PreflightError(`restore of unit "${unit.id}" needs the rollback run id (it names the quarantine table); none was given`);
  return withSession(ctx, point.details.connection, async (conn) => {
    // The quarantine table is DDL: made before the row transaction, dropped again if the restore kept nothing in it.
    const pre = await sealedMeta(conn, unit, point, ctx);
    const live = await findTable(conn, pre.meta.sourceTable);
    const qName = quarantineTableName(ctx.pipeline, runId, unit.id);
    const q = inRollbackDb(qName);
    if (live) {
      const liveColumns = await columnsOf(conn, live);
      const note = {
        tool: 'etl-rollback',
        kind: 'quarantine',
        pipeline: ctx.pipeline,
        runId,
        unitId: unit.id,
        table: live.display,
        restorePoint: { deploymentId: pre.meta.deploymentId, capturedAt: pre.meta.capturedAt, undoTable: point.details.shadowTable, capture: 'copy-on-write' },
        reason: 'live rows deleted or overwritten by the rollback restore',
      };
      await conn.query(
        `CREATE TABLE IF NOT EXISTS ${q} (\n  ${liveColumns.map((c) => columnDef(c, true)).join(',\n  ')}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT=${literal(JSON.stringify(note))}`,
      );
    }
    // How the restore holds writers off (holdWriters): by the undo log's rows when the log can be proven whole (the
    // catalog checks, read here first, without locks), else by every row of the table.
    const hold: HoldBy = live && (await provenWhole(conn, live, pre.meta)) ? 'log' : 'table';
    let outcome: Outcome;
    const attempt = (by: HoldBy) =>
      withBoundedLocks(conn, lock, (holders) => busyRestore(unit.id, pre.meta.sourceTable, lock, holders), () => inTransaction(conn, 'START TRANSACTION', async () => {
        // Writers held off before anything is read: none can change the table until COMMIT.
        if (live) await holdWriters(conn, live, inRollbackDb(pre.undoName), by);
        const p = await prepare(conn, unit, point, ctx);
        // The proof failed under the lock (the catalog changed since it was read above): only every row locked holds
        // off what writes rows without the triggers. Rolled back, nothing written, and tried so.
        if (by === 'log' && !p.proven && p.bypass.length === 0) throw new NeedsRowLocks();
        if (p.bypass.length > 0) {
          throw new VerificationFailedError(
            `unit "${unit.id}": copy-on-write restore point of ${p.live.display} cannot be trusted: ${p.bypass.join('; ')}. Nothing was written. ` +
              `The undo log misses changes, so this restore point cannot put the table back; ${BACKSTOP}.`,
          );
        }
        const notes = [
          ...p.notes,
          by === 'log'
            ? `writers held off by locking the undo log's rows and gaps (${p.recorded.preImages + p.recorded.inserted} rows; every write of the table waits in its trigger), not the table's rows`
            : `writers held off by locking every row and gap of ${p.live.display}`,
        ];
        if (writesOf(p.counts) === 0) return { changes: changesOf(p.counts, 0), writes: 0, notes };
        const key = p.meta.primaryKey;
        // Keep what is about to be deleted or overwritten, as it is now: NOW holds it, read under the lock.
        const rowsQuarantined = await write(conn, `INSERT INTO ${q} (${colList(p.columns)}) SELECT ${colList(p.columns)} FROM ${NOW} WHERE ${ident(ACT)} IS NOT NULL`);
        // Each write driven by NOW (STRAIGHT_JOIN: the table looked up only at the keys it writes). Delete first: it
        // frees unique values the others may need.
        const rowsDeleted = await write(conn, `DELETE l FROM ${NOW} AS n STRAIGHT_JOIN ${p.live.sql} AS l ON ${keyMatch(key, 'l', 'n')} WHERE n.${ident(ACT)} = 'd'`);
        const rowsUpdated = p.update.length === 0 ? 0 : await overwrite(conn, p, unit.id);
        const rowsInserted = await write(
          conn,
          `INSERT INTO ${p.live.sql} (${colList(p.kept)}) SELECT ${colList(p.kept, 't')} FROM ${THEN} AS t LEFT JOIN ${NOW} AS n ON ${keyMatch(key, 'n', 't')} WHERE n.${ident(key[0]!)} IS NULL`,
        );
        // 3. The end-to-end check: commit only a table equal to the capture. Proven (the rows the log does not name
        // are as captured), that is each pre-image in scope now in the table byte for byte (what a user trigger could
        // rewrite on its way in included), and no other row in scope at a logged key: read at the logged keys only.
        // Otherwise the scope counted and summed whole. Either way the stage's gate then counts and sums the scope.
        const now = p.proven ? await restoredAtLoggedKeys(conn, p) : await countAndChecksum(conn, `${p.live.sql} AS t`, p.where, p.meta.columns);
        if (now.count !== p.meta.count || now.checksum !== p.meta.checksum) {
          throw new VerificationFailedError(
            `unit "${unit.id}": copy-on-write restore of ${p.live.display} did not reproduce the restore point (count ${now.count}, expected ${p.meta.count}; ` +
              `checksum ${now.checksum}, expected ${p.meta.checksum}): changes were made that the triggers did not record. The restore was rolled back; nothing was written. ` +
              `${BACKSTOP[0]!.toUpperCase()}${BACKSTOP.slice(1)}.`,
          );
        }
        notes.push(
          p.proven
            ? `verified in the restore transaction: ${now.count} rows (the restored rows equal their pre-images; the others are unchanged since the capture)`
            : `verified in the restore transaction: ${now.count} rows, checksum equal to the capture's`,
        );
        const changes = changesOf({ rowsDeleted, rowsUpdated, rowsInserted }, rowsQuarantined);
        ctx.log.info('mysql-table restored from copy-on-write undo log', { unit: unit.id, table: p.live.display, ...changes });
        return { changes, writes: rowsDeleted + rowsUpdated + rowsInserted, notes, ...(rowsQuarantined > 0 ? { keptAt: `${ROLLBACK_DATABASE}.${qName}` } : {}) };
      }));
    try {
      outcome = await attempt(hold).catch((error: unknown) => {
        if (!(error instanceof NeedsRowLocks)) throw error;
        ctx.log.warn('mysql-table copy-on-write restore: the undo log could not be proven whole under its lock; locking every row of the table instead', { unit: unit.id });
        return attempt('table');
      });
    } finally {
      await dropTemporary(conn);
      if (live) {
        const rows = await select(conn, `SELECT 1 AS x FROM ${q} LIMIT 1`).catch(() => [{}]);
        if (rows.length === 0) await conn.query(`DROP TABLE IF EXISTS ${q}`).catch(() => undefined);
      }
    }
    // After the commit (DDL): the AUTO_INCREMENT counter, for an unscoped unit; a rerun retries it.
    const counter = pre.meta.autoIncrement;
    if (live && counter !== null) {
      const current = await autoIncrementOf(conn, live);
      if (current !== null && current !== counter) {
        await conn.query(`ALTER TABLE ${live.sql} AUTO_INCREMENT = ${BigInt(counter).toString()}`);
        outcome.notes.push(`AUTO_INCREMENT of ${live.display} reset from ${current} to ${(await autoIncrementOf(conn, live)) ?? '?'} (captured ${counter})`);
      }
    }
    return outcome;
  });
}

/**
 * Overwrites the rows NOW marks `u` with their pre-images, in key order; returns how many. A value of a unique key
 * the deploy moved between rows is put back one row at a time (updateInPasses); rows that swapped values (no order of
 * updates works) are deleted and inserted again (deleteAndInsert), unless the table has triggers of its own that
 * would fire for that: then the restore fails, naming the rows and the triggers.
 */
async function overwrite(conn: mysql.Connection, p: Prepared, unitId: string): Promise<number> {
  const key = p.meta.primaryKey;
  return updateInPasses(
    conn,
    `UPDATE ${NOW} AS n STRAIGHT_JOIN ${THEN} AS t ON ${keyMatch(key, 't', 'n')} STRAIGHT_JOIN ${p.live.sql} AS l ON ${keyMatch(key, 'l', 'n')}
        SET ${p.update.map((c) => `l.${ident(c.name)} = t.${ident(c.name)}`).join(', ')} WHERE n.${ident(ACT)} = 'u'`,
    {
      pending: async () =>
        (await select<Record<string, unknown>>(conn, `SELECT ${key.map(ident).join(', ')} FROM ${NOW} WHERE ${ident(ACT)} = 'u' ORDER BY ${key.map(ident).join(', ')}`)).map((r) => key.map((k) => r[k])),
      one: key.map((k) => `n.${ident(k)} = ?`).join(' AND '),
    },
    (keys, collision) =>
      deleteAndInsert(conn, p.live, key, keys, { sql: THEN, alias: 't', columns: p.kept }, (why, named) =>
        new VerificationFailedError(
          `unit "${unitId}": copy-on-write restore of ${p.live.display} cannot put back ${keys.length} row(s) (keys ${named}): ` +
            `the deploy swapped values of a unique key between them (${collision}), so no order of updates can put them back, and ${why}. ` +
            `The restore was rolled back; nothing was written. Put those rows back by hand (the undo log ${ROLLBACK_DATABASE}.${p.undoName} holds their pre-images), then rerun; or ${BACKSTOP}.`,
        ),
      ),
  );
}

export type HoldBy = 'log' | 'table';

/** The undo log under its lock could not be proven whole (see restore): try again with every row of the table locked. */
class NeedsRowLocks extends Error {
  constructor() {
    super('the copy-on-write undo log could not be proven whole; every row of the table must be locked');
  }
}

/**
 * Holds every writer of the table off for the rest of the caller's transaction (readers go on), in one of two ways:
 * - `log`: every row and gap of the undo table locked (`FOR UPDATE` along its primary key). Sound only when the log is
 *   proven whole (the triggers as installed, nothing that writes the table's rows without firing them: whyUnproven),
 *   the caller's to check under the lock. Then every INSERT, UPDATE and DELETE of the table fires a trigger that writes
 *   the undo table: a new key needs a gap this holds, a logged key's no-op update needs its row. So the writer waits in
 *   its trigger until the restore commits, its own row change uncommitted. It costs the log's rows, not the table's. A
 *   writer waiting there holds its row's lock: if the restore needs that row too, InnoDB ends the deadlock by rolling
 *   one of them back (the restore is then tried again, see withBoundedLocks).
 * - `table`: every row and gap of the table locked `FOR UPDATE`, a pass over the table, which also holds off what
 *   fires no trigger (a foreign key's CASCADE).
 * Either way the table is then open in the transaction: its metadata lock, held to COMMIT, keeps DDL out (DROP
 * TRIGGER, a rebuild, TRUNCATE) from here on.
 */
export async function holdWriters(conn: mysql.Connection, live: Pick<FoundTable, 'sql'>, undo: string, by: HoldBy): Promise<void> {
  if (by === 'table') {
    await select(conn, `SELECT COUNT(*) AS n FROM ${live.sql} FOR UPDATE`);
    return;
  }
  await select(conn, `SELECT COUNT(*) AS n FROM ${undo} FORCE INDEX (PRIMARY) FOR UPDATE`);
  await select(conn, `SELECT 1 AS x FROM ${live.sql} LIMIT 1`);
}

/**
 * After the writes, with the log proven whole: the table equals the capture exactly when every pre-image in scope
 * (THEN) is in it byte for byte and no row at a logged key it held (NOW) is left without a pre-image. The capture's
 * count and checksum then, else a checksum naming what differs.
 */
async function restoredAtLoggedKeys(conn: mysql.Connection, p: Prepared): Promise<{ count: number; checksum: string }> {
  const key = p.meta.primaryKey;
  const [r] = await select<{ want: string; same: string | null }>(
    conn,
    `SELECT CAST(COUNT(*) AS CHAR) AS want, CAST(SUM(l.${ident(key[0]!)} IS NOT NULL AND NOT ${differs(p.kept, 'l', 't')}) AS CHAR) AS same
       FROM ${THEN} AS t LEFT JOIN ${p.live.sql} AS l ON ${keyMatch(key, 'l', 't')}`,
  );
  // The rows in scope at logged keys with no pre-image (NOW's `d`): none may be left.
  const [e] = await select<{ extra: string }>(conn, `SELECT CAST(COUNT(*) AS CHAR) AS extra FROM ${NOW} AS n STRAIGHT_JOIN ${p.live.sql} AS l ON ${keyMatch(key, 'l', 'n')} WHERE n.${ident(ACT)} = 'd'`);
  const missing = Number(r?.want ?? 0) - Number(r?.same ?? 0);
  const extra = Number(e?.extra ?? 0);
  if (missing === 0 && extra === 0) return { count: p.meta.count, checksum: p.meta.checksum };
  return { count: p.meta.count + extra, checksum: `not the capture's: ${missing} pre-image(s) not in the table as they were, ${extra} row(s) left at logged keys` };
}

// ---------------------------------------------------------------------------------------------------------------
// Release

async function release(unit: MysqlTableUnit, point: RestorePoint<MysqlCowDetails>, ctx: AdapterContext): Promise<void> {
  const undoName = point.details.shadowTable.slice(point.details.shadowTable.indexOf('.') + 1);
  await withSession(ctx, point.details.connection, async (conn) => {
    const row = await readPointRow(conn, undoName);
    const meta = cowMetaOf(row?.meta);
    const exists = await rollbackTableExists(conn, undoName);
    if (exists && (!meta || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || meta.checksum !== point.checksum)) {
      throw new PreflightError(`unit "${unit.id}": refusing to drop ${point.details.shadowTable}: it is not the sealed undo table of this restore point. Inspect it and drop it by hand if it is not needed.`);
    }
    const names = cowNames(ctx.pipeline, meta?.deploymentId ?? ctx.deploymentId, unit.id);
    // Triggers first (the table's writes stop being logged), then the guard, the undo table, and last the record.
    await dropObjects(conn, await findTable(conn, point.details.table), names);
    if (row) await write(conn, `DELETE FROM ${inRollbackDb(POINTS_TABLE)} WHERE shadow_table = ?`, [undoName]);
    ctx.log.info('mysql-table copy-on-write restore point released', { unit: unit.id, undoTable: point.details.shadowTable });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Undo record

/**
 * What rollback run `ctx.runId` is about to replace, recorded for `undo` (as the point of `ctx.deploymentId`,
 * `undo-<run>`) before its restore from `restoring` writes. That restore writes only at the keys the undo log names, so
 * the record keeps the live row at each of them (kind `p`) or, where there is none, the key (kind `i`): an undo log of
 * the rollback, in an undo table of its own, which the same restore consumes. It has no triggers and no guard behind
 * it; its restore's end-to-end check catches a write made since at a key it does not hold. Its count and checksum are
 * the scope's now: when the restoring point's log is proven whole (as its restore proves it: whyUnproven) and holds
 * every column the checksum hashes (no generated column), they are carried from the capture's at the logged keys
 * (carriedCount), writers held off by the log's lock (holdWriters), and the record costs the rows logged; otherwise
 * (MySQL has no per-row transaction id to prove the other rows unchanged) they are read from the table, under the
 * same shared lock as a capture's baseline. Either way it writes the rows logged, not the table (a shadow copy writes
 * it all).
 * Undefined when the table's columns changed since the capture (the restore refuses that anyway): the caller copies.
 * Idempotent: the record this run already made is returned as it is; a half-made one is made again.
 */
async function undoRecord(unit: MysqlTableUnit, restoring: RestorePoint<MysqlCowDetails>, ctx: AdapterContext, lock: TableLockWait = RESTORE_LOCK): Promise<RestorePoint<MysqlCowDetails> | undefined> {
  const runId = ctx.runId;
  if (!runId) return undefined;
  const n = cowNames(ctx.pipeline, ctx.deploymentId, unit.id);
  const undo = inRollbackDb(n.undo);
  return withSession(ctx, restoring.details.connection, async (conn) =>
    withPointLock(conn, n.undo, unit.id, async () => {
      await ensureRollbackDatabase(conn);
      const existing = await readPointRow(conn, n.undo);
      if (existing?.state === 'sealed') {
        const meta = cowMetaOf(existing.meta);
        if (!meta || meta.record?.runId !== runId || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || !(await rollbackTableExists(conn, n.undo))) {
          throw new PreflightError(`${ROLLBACK_DATABASE}.${n.undo} is recorded, but not as the record of what run "${runId}" replaced in unit "${unit.id}"; inspect ${ROLLBACK_DATABASE}.${POINTS_TABLE}.`);
        }
        return pointFromMeta(unit, meta, n.undo);
      }
      if (existing && (existing.pipeline !== ctx.pipeline || existing.deploymentId !== ctx.deploymentId || existing.unitId !== unit.id)) {
        throw new PreflightError(`${ROLLBACK_DATABASE}.${n.undo} is recorded for another restore point; refusing to reuse it. Inspect ${ROLLBACK_DATABASE}.${POINTS_TABLE}.`);
      }
      const { meta: from, undoName } = await sealedMeta(conn, unit, restoring, ctx);
      const live = await findTable(conn, from.sourceTable);
      if (!live || live.kind !== 'BASE TABLE') return undefined;
      const columns = await columnsOf(conn, live);
      if (JSON.stringify(columns) !== JSON.stringify(from.columns)) return undefined;
      // DDL commits on its own: the pending row first, so a crash leaves a trace the next call cleans up.
      await conn.query(`DROP TABLE IF EXISTS ${undo}`);
      if (!existing) {
        await write(
          conn,
          `INSERT INTO ${inRollbackDb(POINTS_TABLE)} (shadow_table, state, pipeline, deployment_id, unit_id, source_table, created_at, meta)
           VALUES (?, 'pending', ?, ?, ?, ?, UTC_TIMESTAMP(6), NULL)`,
          [n.undo, ctx.pipeline, ctx.deploymentId, unit.id, live.display],
        );
      }
      const key = from.primaryKey;
      const kept = stored(from.columns);
      const keyColumns = key.map((k) => kept.find((c) => c.name === k)!);
      const comment = literal(JSON.stringify({ tool: 'etl-rollback', kind: 'undo-record', pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, unitId: unit.id, runId, table: live.display }));
      await createUndoTable(conn, undo, kept, keyColumns, comment);
      const logged = inRollbackDb(undoName);
      const where = scopePredicate({ where: from.where });
      // The log proven whole (as a restore proves it) and holding every column the checksum hashes: the count and
      // checksum are carried from the capture's, and writers are held off by the log's lock (see holdWriters).
      const provable = async () => kept.length === from.columns.length && (await provenWhole(conn, live, from));
      const attempt = (by: HoldBy) => withBoundedLocks(conn, lock, (holders) => busyRestore(unit.id, live.display, lock, holders), () => inTransaction(conn, 'START TRANSACTION', async () => {
        if (by === 'log') {
          await holdWriters(conn, live, logged, 'log');
          if (!(await provable())) throw new NeedsRowLocks();
        } else {
          // Writers held off, as for a capture's baseline, so the rows kept and the count read are one state.
          await select(conn, `SELECT COUNT(*) AS n FROM ${live.sql} LOCK IN SHARE MODE`);
        }
        const present = `l.${ident(key[0]!)} IS NOT NULL`;
        await write(
          conn,
          `INSERT INTO ${undo} (${colList(kept)}, ${ident(KIND)})
           SELECT ${kept.map((c) => `${key.includes(c.name) ? 'u' : 'l'}.${ident(c.name)}`).join(', ')}, CASE WHEN ${present} THEN 'p' ELSE 'i' END
             FROM ${inRollbackDb(undoName)} AS u LEFT JOIN ${live.sql} AS l ON ${keyMatch(key, 'l', 'u')}`,
        );
        const counted = by === 'log' ? await carriedCount(conn, live, logged, from, where) : await countAndChecksum(conn, `${live.sql} AS t`, where, from.columns);
        const meta: CowMeta = {
          ...from,
          deploymentId: ctx.deploymentId,
          capturedAt: ctx.now().toISOString(),
          count: counted.count,
          checksum: counted.checksum,
          autoIncrement: from.where !== undefined ? null : await autoIncrementOf(conn, live),
          guard: { table: '', constraint: '' },
          triggers: [],
          sealed: true,
          record: { runId, from: `${ROLLBACK_DATABASE}.${undoName}` },
        };
        const sealed = await write(conn, `UPDATE ${inRollbackDb(POINTS_TABLE)} SET state = 'sealed', meta = ? WHERE shadow_table = ? AND state = 'pending'`, [JSON.stringify(meta), n.undo]);
        if (sealed !== 1) throw new Error(`record of unit "${unit.id}": the pending row of ${ROLLBACK_DATABASE}.${n.undo} vanished; rerun`);
        ctx.log.info('mysql-table copy-on-write: what the rollback replaces recorded at the logged keys', {
          unit: unit.id,
          table: live.display,
          record: `${ROLLBACK_DATABASE}.${n.undo}`,
          count: meta.count,
          countedBy: by === 'log' ? 'carried from the capture at the logged keys' : 'reading the table',
        });
        return pointFromMeta(unit, meta, n.undo);
      }));
      return attempt((await provable()) ? 'log' : 'table').catch((error: unknown) => {
        if (!(error instanceof NeedsRowLocks)) throw error;
        return attempt('table');
      });
    }),
  );
}

/**
 * The scope's count and checksum now, without reading the table, for a log proven whole (every row it does not name
 * is as captured, in scope or not as it was): the capture's, less the pre-images in scope, plus the live rows in
 * scope at the logged keys. The checksum is a plain sum of one term per row (countAndChecksum), so this is exact.
 */
async function carriedCount(conn: mysql.Connection, live: FoundTable, logged: string, from: CowMeta, where: string): Promise<{ count: number; checksum: string }> {
  const gone = await countAndChecksum(conn, `${logged} AS t`, `t.${ident(KIND)} = 'p' AND ${where}`, from.columns);
  const now = await countAndChecksum(conn, `(SELECT l.* FROM ${logged} AS u JOIN ${live.sql} AS l ON ${keyMatch(from.primaryKey, 'l', 'u')}) AS t`, where, from.columns);
  return { count: from.count - gone.count + now.count, checksum: (BigInt(from.checksum) - BigInt(gone.checksum) + BigInt(now.checksum)).toString() };
}

export const mysqlCopyOnWrite = { capture, install, diff, restore, release, undoRecord };
