import type pg from 'pg';
import { PreflightError, RestorePointMissingError, VerificationFailedError } from '../../errors.ts';
import type { PostgresTableUnit } from '../../manifest/schema.ts';
import { BACKSTOP } from '../backstop.ts';
import { gib, INSTALL_LOCK, RESTORE_LOCK, type TableLockWait } from '../capture-modes.ts';
import { type AdapterContext, type CaptureResult, type Changes, type Diff, type InPlace, type Outcome, type PendingCapture, type RestorePoint } from '../types.ts';
import { definitionOf, findRelation, isTable, liveColumns, ownedSequences, primaryKeyOf, tableFacts, userTriggersOf, userTriggersSql, type OwnedSequence, type PostgresColumn, type Relation, type UserTriggers } from './catalog.ts';
import { countAndChecksum, rowHash } from './checksum.ts';
import { cowTriggerNames, lockKey, ROLLBACK_SCHEMA, shadowTableName, undoTableName } from './names.ts';
import { planSchemaRestore } from './schema-restore.ts';
import { fewOf } from './rows.ts';
import { resolveScope, scopeOfUnit, type Scope, type ScopeSpec } from './scope.ts';
import { resetSequences, sequencesToReset } from './sequences.ts';
import {
  batch, cols, deleteAndInsert, ensureQuarantine, ensureRollbackSchema, ident, inTransaction, isUniqueViolation, keyMatch, literal, lockTableWithin, quarantineExisted, quarantineStatements, rowText,
  updateInPasses, withClient, withRestoreLock, withTableLockTries,
} from './sql.ts';
import { resumeUserTriggers, suspendUserTriggers, triggerSuspension, type TriggerMode } from './triggers.ts';

/**
 * Copy-on-write restore points for a PostgreSQL table (`capture: copy-on-write`).
 *
 * Capture copies nothing. In one short transaction that first locks the table against writers (SHARE ROW EXCLUSIVE,
 * the lock CREATE TRIGGER takes anyway; readers go on), it creates an undo table `etl_rollback.cw_…` (the table's columns, nullable
 * except the key, unique on the key, plus a kind column) and four triggers on the table, all ENABLE ALWAYS (they fire
 * in `session_replication_role = replica` sessions too, so that bypass is closed):
 * - AFTER UPDATE / AFTER DELETE, statement level, with transition tables: each old row's pre-image, kind `p`;
 * - AFTER INSERT / AFTER UPDATE: each new row's key, kind `i` ("not there at capture");
 * - BEFORE TRUNCATE: every row of the table, kind `p`.
 * Every insert into the undo table is `ON CONFLICT (key) DO NOTHING`, so what it keeps for a key is the first event
 * after the capture: a pre-image if the row existed at capture (its first change saw it as captured), else the key
 * of an insert. Old rows are recorded before new keys, so `UPDATE … SET id = id + 1` keeps 1, 2, 3 as pre-images and
 * only 4 as inserted. The undo rows are written in the deploy's own transaction: an aborted deploy leaves none, and
 * a second writer of the same key waits on the row (or the undo key) until the first commits.
 * It records the capture snapshot, the relfilenode, the triggers' oids and the function's source hash in the undo
 * table's COMMENT and commits: writers wait only for the DDL, milliseconds at any table size. Then a second,
 * read-only transaction (see `seal`) reads the count and checksum of the rows in scope as they were at the install
 * (the same function as copy mode: the gate compares the same numbers) without holding writers off, and seals; the
 * snapshot machine lets the deploy start between the two (`install`, deployment IN_PLACE), since the seal is exact
 * from any later snapshot. While
 * an earlier point of the same unit still guards the table with its triggers provably intact (the last deploy's, kept
 * for its retention), the seal is carried from that point's log and the new one's instead (see `sealFromEarlier`):
 * then the whole capture costs the rows changed since the earlier point, not the table.
 *
 * Undo of a rollback (core/workflow/undo.ts): a restore writes only at the keys the undo log names, so what it is about
 * to replace is recorded, before it writes, as the live rows at those keys and the keys it will insert (see
 * `undoRecord`): an undo log of the rollback, restored by the same code, with no triggers behind it.
 *
 * Restore, one transaction (the table locked against writers): checks the window (below); then one statement (see
 * fusedRestoreSql) deletes the rows whose key was inserted since the capture, updates the changed ones back from their
 * pre-images, re-inserts the deleted ones, and keeps each row deleted or overwritten in a quarantine table; sets
 * sequences back; then checks that the table is the capture and commits only if it is. The statement is driven by the
 * undo log and looks each logged key up once by primary key (see preferKeyLookups), so a restore costs the rows the
 * deploy changed, not the table. The undo table is kept: the point stays valid (a rerun writes nothing, a later restore still has every
 * pre-image). Release drops the triggers, the function and the undo table.
 *
 * Trust, but verify (the window check, before any write). Triggers can be bypassed: dropped, disabled and re-enabled
 * (ALTER TABLE … DISABLE TRIGGER), outrun by DDL that rewrites rows (ALTER TABLE … TYPE), or the table replaced. The
 * restore fails with VerificationFailedError, naming the cause and the backstop, when:
 * 1. a trigger or the function is gone, disabled or not ALWAYS, or has another oid or source than at capture
 *    (dropped and made again: there was a gap), or the table has another oid;
 * 2. a live row was written after the capture (its xmin is not visible in the capture snapshot, see changes.ts for
 *    the xid arithmetic) but its key is not in the undo table: a write the triggers did not see (a disabled window,
 *    or a rewrite by ALTER TABLE, which stamps every row);
 * 3. the live rows in scope whose key is not in the undo table (the untouched ones) are not exactly the captured
 *    count minus the recorded pre-images in scope: a delete the triggers did not see;
 * 4. after the writes, the table is not the capture (the end-to-end check). With 2 and 3 passed, the rows the log does
 *    not name are as captured, so the table is the capture exactly when every logged pre-image is the live row at its
 *    key, and no other logged key has a row: the writes make that so statement by statement, and each row written is
 *    compared, as written, with its pre-image, at the cost of the rows restored. Without that (a capture older than
 *    2^31 transactions, or after a schema restore) the whole scope is counted and summed against the capture's.
 * 2 and 3 read the whole table, so they run only when the catalog cannot prove them. Each trigger's pg_trigger row and
 * the function's pg_proc row get a new version (a new xmin) whenever anything disables, re-enables, replaces or drops
 * them, even for a moment, and TRUNCATE or a rewrite gives the table a new relfilenode. When all of them are exactly
 * as the capture (or the last verified restore) recorded them, the triggers were in place and firing for every write
 * of the whole window, 2 and 3 cannot find anything, and are skipped. Any difference, even a harmless VACUUM FULL,
 * sends the restore through 2 and 3 instead.
 * 1-3 name a cause; 4 makes the guarantee: the restore commits only a table equal to the capture (up to a 64-bit
 * checksum collision), so a bypass can make it fail, never make it claim a wrong success. What changes how a row
 * reads without writing it (an enum label renamed) is not a write: the stage's gate, which counts and sums the whole
 * scope after every restore, catches it, with the replaced rows still in quarantine; so would it catch what no
 * catalog shows (an extension writing heap pages directly).
 * Why not pg_stat_user_tables n_tup_ins/upd/del deltas against the recorded rows: those counters are not
 * transactional (aborted writes count), are flushed late (up to seconds after a write), and are lost by
 * pg_stat_reset() or a crash: they would fail good rollbacks and could not prove a bad one.
 * Limits: a bypass that is undone before the restore (a row changed with triggers off, then changed back) is not
 * seen, and needs no undoing. Check 2 is skipped when the capture is older than 2^31 transactions (checks 1, 3, 4 stay).
 * DDL that drops or retypes a captured column loses the values of rows the deploy did not touch: refused with the
 * backstop. A renamed or added column is put back by ALTER TABLE (no data lost). After such DDL the trigger's
 * recorded column list no longer fits the table, so the deploy's next write to it fails in the trigger function
 * (named etl_rollback.cw_…_fn): the deploy stops rather than change rows the restore point cannot undo.
 *
 * Not supported (refused at capture with the reason): tables without a primary key (the undo log is keyed),
 * partitioned tables and `partition` scopes, and tables with inheritance children (a write addressed to a partition or
 * a child directly does not fire the parent's statement triggers), and GENERATED ALWAYS identity columns outside the key (an UPDATE cannot put them back).
 *
 * Default: a unit that does not set `capture` is captured copy-on-write when its table is at least 1 GiB
 * (pg_total_relation_size: heap, indexes, TOAST; COPY_ON_WRITE_ABOVE_BYTES) and none of the above refuses it, else by
 * a copy (chooseDefault): below that the copy takes a few seconds and its restore does not depend on the triggers'
 * integrity; above it the copy's time and storage (a second copy of the table for every deploy) dominate, while
 * copy-on-write costs only the deploy's changes. The point records why (`why`); the dry run says it.
 */


/** The undo table's column saying what a row is: `p` a pre-image, `i` the key of a row inserted since the capture. */
export const KIND = 'etl_rollback$kind';

export type CowMeta = {
  tool: 'etl-rollback';
  kind: 'restore-point';
  mode: 'copy-on-write';
  version: 1;
  pipeline: string;
  deploymentId: string;
  unitId: string;
  sourceTable: string;
  tableOid: number;
  capturedAt: string;
  count: number;
  checksum: string;
  primaryKey: string[];
  columns: PostgresColumn[];
  scope: ScopeSpec;
  sequences: OwnedSequence[];
  captureTxid: string;
  /** The capture snapshot (pg_snapshot text) and its xmax: a row whose xmin it does not see was written after capture. */
  snapshot: string;
  snapshotXmax: string;
  filenode: string;
  function: { name: string; oid: number; md5: string };
  triggers: { name: string; oid: number }[];
  /**
   * The catalog rows that make the triggers fire, as the capture left them (or the last verified restore, whose own
   * disable/enable of them it records): each trigger's pg_trigger oid and xmin, and the function's pg_proc oid and
   * xmin. Any ALTER TABLE … DISABLE/ENABLE TRIGGER, ALTER TRIGGER, DROP/CREATE, CREATE OR REPLACE FUNCTION writes a new
   * version of that row, with a new xmin, even when it is undone later: equal xmins prove nobody touched them in
   * between. Absent in restore points made before it existed (then the full pass runs).
   */
  catalog?: { triggers: { name: string; oid: number; xmin: string }[]; function: { oid: number; xmin: string } };
  /** False from the installing transaction until the sealing read has recorded the count and checksum. */
  sealed: boolean;
  /**
   * Set on a record of what rollback run `runId` replaced (undoRecord), made from the undo table `from` of the point
   * that run restored: no triggers, no function. Its restore checks every row for writes since the record.
   */
  record?: { runId: string; from: string };
  /** The undo table of the earlier point whose count and checksum this seal was carried from (sealFromEarlier). */
  sealedFrom?: string;
  /**
   * A seal read in key ranges over several calls (sealInSlices), while it is under way: the last key read (each
   * column as text), and the count and checksum of the table as installed up to it. Gone once sealed.
   */
  sealProgress?: { after: string[]; count: number; checksum: string; chunks: number };
  /** How many key ranges the seal was read in, when it was read in slices. */
  sealedInChunks?: number;
  /** Why this point is copy-on-write: the unit asks for it, or the default for a table of its size. */
  why?: string;
};

export interface CowDetails {
  connection: string;
  table: string;
  shadowTable: string;
  capture: 'copy-on-write';
  primaryKey: string[];
  columns: PostgresColumn[];
  captureTxid: string;
  scope?: ScopeSpec;
  sequences?: OwnedSequence[];
}

/** The undo table's record (its COMMENT); sealed only, unless `pending` is asked for too (the capture finishing its own work). */
function metaOf(text: string | null | undefined, options: { pending?: boolean } = {}): CowMeta | undefined {
  if (!text) return undefined;
  try {
    const meta = JSON.parse(text) as Partial<CowMeta>;
    return meta.tool === 'etl-rollback' && meta.mode === 'copy-on-write' && (meta.sealed === true || (options.pending && meta.sealed === false)) ? (meta as CowMeta) : undefined;
  } catch {
    return undefined;
  }
}

async function readMeta(client: pg.Client, undo: Relation, options: { pending?: boolean } = {}): Promise<CowMeta | undefined> {
  const { rows } = await client.query<{ comment: string | null }>("SELECT pg_catalog.obj_description($1::oid, 'pg_class') AS comment", [undo.oid]);
  return metaOf(rows[0]?.comment, options);
}

function pointFromMeta(unit: PostgresTableUnit, meta: CowMeta, undo: Relation): RestorePoint<CowDetails> {
  return {
    unitId: unit.id,
    type: 'postgres-table',
    capturedAt: meta.capturedAt,
    count: meta.count,
    checksum: meta.checksum,
    details: {
      connection: unit.connection,
      table: meta.sourceTable,
      shadowTable: undo.display,
      capture: 'copy-on-write',
      primaryKey: meta.primaryKey,
      columns: meta.columns,
      captureTxid: meta.captureTxid,
      ...(Object.keys(meta.scope).length > 0 ? { scope: meta.scope } : {}),
      sequences: meta.sequences,
    },
  };
}

/** `(predicate)` evaluated over the captured columns of the row `alias` (a live row or an undo row). */
function inScopeOf(scope: Scope, names: string[]): (alias: string) => string {
  if (scope.kind === 'table') return () => 'TRUE';
  // The predicate is unqualified SQL over the table's columns: a scalar subquery whose only FROM item exposes the
  // row's columns under their own names makes those names resolve to that row (innermost scope first).
  return (alias) => `(SELECT ${scope.predicate} FROM (SELECT ${names.map((n) => `${alias}.${ident(n)} AS ${ident(n)}`).join(', ')}) AS etl_scope_row)`;
}

function triggerFunctionSql(fn: string, undo: string, table: Relation, names: string[], key: string[]): string {
  const all = cols(names);
  const k = cols(key);
  const kind = ident(KIND);
  return `CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $etl_rollback$
BEGIN
  -- etl-rollback copy-on-write: the first event for a key since the restore point wins (ON CONFLICT DO NOTHING).
  IF TG_OP = 'UPDATE' OR TG_OP = 'DELETE' THEN
    INSERT INTO ${undo} (${all}, ${kind}) SELECT ${all}, 'p' FROM etl_old ON CONFLICT (${k}) DO NOTHING;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO ${undo} (${k}, ${kind}) SELECT ${k}, 'i' FROM etl_new ON CONFLICT (${k}) DO NOTHING;
  END IF;
  -- An UPDATE logs a key as inserted only where it moved a row onto it: the keys it kept were just logged from
  -- etl_old, and probing the undo table's index again for each of them would only find them there.
  IF TG_OP = 'UPDATE' THEN
    INSERT INTO ${undo} (${k}, ${kind}) SELECT ${cols(key, 'n')}, 'i' FROM etl_new AS n WHERE NOT EXISTS (SELECT 1 FROM etl_old AS o WHERE ${keyMatch(key, 'o', 'n')}) ON CONFLICT (${k}) DO NOTHING;
  END IF;
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO ${undo} (${all}, ${kind}) SELECT ${all}, 'p' FROM ONLY ${table.sql} ON CONFLICT (${k}) DO NOTHING;
  END IF;
  RETURN NULL;
END
$etl_rollback$`;
}

/** Why copy-on-write cannot protect `source` for `unit` (see "Not supported" above); undefined when it can. */
async function copyOnWriteRefusal(client: pg.Client, source: Relation, unit: PostgresTableUnit): Promise<string | undefined> {
  if (source.kind === 'p' || unit.partition !== undefined) {
    return "it is partitioned (or the unit names partitions), and a write addressed to a partition directly does not fire the parent table's statement triggers";
  }
  const { rows: inh } = await client.query<{ children: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1) AS children', [source.oid]);
  if (inh[0]?.children === true) return "it has inheritance children, and a write addressed to a child does not fire the parent table's triggers";
  const primaryKey = await primaryKeyOf(client, source.oid);
  if (primaryKey.length === 0) return 'it has no primary key, and the undo log records rows by key';
  const { rows: own } = await client.query<{ owns: boolean }>("SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owns FROM pg_catalog.pg_class c WHERE c.oid = $1", [source.oid]);
  if (own[0]?.owns !== true) return "the role etl-rollback connects as does not own it, and making its triggers fire always (ALTER TABLE … ENABLE ALWAYS TRIGGER) needs the table's owner";
  const always = (await liveColumns(client, source.oid)).filter((c) => c.identityAlways && !primaryKey.includes(c.name));
  if (always.length > 0) return `column(s) ${always.map((c) => `"${c.name}"`).join(', ')} are GENERATED ALWAYS AS IDENTITY outside the key, which an UPDATE cannot put back`;
  return undefined;
}

/**
 * Carrying a count and checksum across an undo log `u` joined to the live table `l` by key (LEFT JOIN: `l.ctid` is
 * null where the live row is missing): each logged row's checksum term that leaves (its pre-image, when in scope) and
 * the one that comes (the live row at its key, when there is one in scope); null where none. count() of each is the
 * rows, sum() the terms.
 */
function carriedTerms(p: { inScope: (alias: string) => string }, names: string[]): { leaves: string; comes: string } {
  return {
    leaves: `CASE WHEN u.${ident(KIND)} = 'p' AND ${p.inScope('u')} THEN ${rowHash(names, 'u')} END`,
    comes: `CASE WHEN l.ctid IS NOT NULL AND ${p.inScope('l')} THEN ${rowHash(names, 'l')} END`,
  };
}

/**
 * This transaction's id and snapshot (a row whose xmin the snapshot does not see was written after it), and the
 * table's relfilenode (a rewrite without triggers changes it): what a point records of the moment it was made.
 */
async function transactionMark(client: pg.Client, tableOid: number): Promise<{ txid: string; snapshot: string; xmax: string; filenode: string }> {
  const { rows } = await client.query<{ txid: string; snapshot: string; xmax: string; filenode: string }>(
    `SELECT pg_catalog.pg_current_xact_id()::text AS txid, pg_catalog.pg_current_snapshot()::text AS snapshot,
            pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text AS xmax, pg_catalog.pg_relation_filenode($1::oid::regclass)::text AS filenode`,
    [tableOid],
  );
  return { txid: rows[0]?.txid ?? '', snapshot: rows[0]?.snapshot ?? '', xmax: rows[0]?.xmax ?? '', filenode: rows[0]?.filenode ?? '' };
}

/** An empty undo table beside `source`: its columns (only the key NOT NULL), the kind, a unique index on the key. */
async function createUndoTable(client: pg.Client, undoSql: string, source: Relation, columns: PostgresColumn[], primaryKey: string[]): Promise<void> {
  await client.query(`CREATE TABLE ${undoSql} (LIKE ${source.sql})`);
  for (const c of columns) if (c.notNull && !primaryKey.includes(c.name)) await client.query(`ALTER TABLE ${undoSql} ALTER COLUMN ${ident(c.name)} DROP NOT NULL`);
  await client.query(`ALTER TABLE ${undoSql} ADD COLUMN ${ident(KIND)} "char" NOT NULL`);
  await client.query(`CREATE UNIQUE INDEX ON ${undoSql} (${cols(primaryKey)})`);
}

export interface CowAdapterParts {
  triggerMode: TriggerMode;
  /**
   * Seal large tables in slices (sealInSlices), so that no call reads longer than a function may run: a capture then
   * answers "pending" between slices and is called again (the snapshot machine's poll loop). Absent: every seal is
   * one read, and a capture never pends.
   */
  slicing?: SealSlicing;
  /** How long the install waits for its table lock, and how often it tries. @default INSTALL_LOCK */
  installLock?: TableLockWait;
  /** The same for a restore's (and an undo record's) table lock. @default RESTORE_LOCK */
  restoreLock?: TableLockWait;
}

export interface SealSlicing {
  /** A first seal reads the table in slices when it holds at least this many rows (pg_class.reltuples). */
  above: number;
  /** Rows of the table per key range (one statement, one snapshot). */
  chunkRows: number;
  /** A call reads key ranges until this many seconds have passed, then answers pending. */
  sliceSeconds: number;
}

/**
 * The capture function may run 5 minutes: a call reads for about 2. Each range is one transaction, and holds the
 * table's ACCESS SHARE lock while it reads: a deploy's DDL (even ADD COLUMN) waits for it, and every query on the
 * table queues behind that DDL. So ranges are short, half a million rows (2.5 s at the 5 µs a row measured), and only
 * a table under a million rows is read whole (in parallel, about 5 s at most): the deploy's DDL waits seconds, not
 * the minutes a whole read of a large table takes. The seal itself is about 1.4 times slower read so, while the deploy
 * runs, which does not wait for it.
 */
export const DEFAULT_SEAL_SLICING: SealSlicing = { above: 1_000_000, chunkRows: 500_000, sliceSeconds: 120 };

export function copyOnWrite(parts: CowAdapterParts) {
  // -------------------------------------------------------------------------------------------------------------
  // Capture

  /** The whole capture: install, then seal (see `seal`); pending between the slices of a sliced seal. */
  async function capture(unit: PostgresTableUnit, ctx: AdapterContext, options: { why?: string } = {}): Promise<CaptureResult<CowDetails>> {
    return installed<CaptureResult<CowDetails>>(unit, ctx, options, async (client, meta, undo) => {
      // 2. Seal: the count and checksum of the table as installed, read without holding writers off.
      const sealed = meta.sealed ? meta : await seal(client, unit, meta, undo, ctx);
      if ('pending' in sealed) return sealed;
      ctx.log.info('postgres-table copy-on-write restore point captured', { unit: unit.id, table: sealed.sourceTable, undoTable: undo.display, count: sealed.count });
      return pointFromMeta(unit, sealed, undo);
    });
  }

  /**
   * The capture's first half: the triggers in place and the point recorded unsealed, in milliseconds at any size. From
   * then on every write is logged, so the deploy may start; the next `capture` of the same point seals it while the
   * deploy writes (the seal reads the table as installed from any later snapshot).
   */
  async function install(unit: PostgresTableUnit, ctx: AdapterContext, options: { why?: string } = {}): Promise<InPlace> {
    return installed(unit, ctx, options, async (_client, meta, undo) => {
      ctx.log.info('postgres-table copy-on-write triggers in place', { unit: unit.id, table: meta.sourceTable, undoTable: undo.display, sealed: meta.sealed });
      return { status: `${meta.sealed ? 'sealed' : 'in place, seal to follow'}: triggers on ${meta.sourceTable} log every change since ${meta.capturedAt} into ${undo.display}` };
    });
  }

  const lockWait = parts.installLock ?? INSTALL_LOCK;
  const restoreLock = parts.restoreLock ?? RESTORE_LOCK;

  /**
   * Runs the install's transaction until it gets its table lock within `lockWait`, at most `lockWait.tries` times. Then
   * it fails, naming the sessions whose open transactions hold the table: nothing was made, and the deploy must not
   * start before a capture gets through.
   */
  async function withInstallLock<T>(client: pg.Client, unit: PostgresTableUnit, install: () => Promise<T>): Promise<T> {
    return withTableLockTries(
      client,
      lockWait,
      unit.table,
      (holders) =>
        `unit "${unit.id}": capture: copy-on-write could not lock ${unit.table} to install its triggers: ${lockWait.tries} tries of ${lockWait.timeoutMs} ms each, ` +
        `and open transactions still held it (${holders}). Nothing was installed, and writers were held for at most one try. ` +
        'Capture again once they end; the deploy must not start before.',
      install,
    );
  }

  /** Installs the point (or finds it installed: a retried capture), then runs `next` under the point's advisory lock. */
  async function installed<T>(
    unit: PostgresTableUnit,
    ctx: AdapterContext,
    options: { why?: string },
    next: (client: pg.Client, meta: CowMeta, undo: Relation) => Promise<T>,
  ): Promise<T> {
    const undoName = undoTableName(ctx.pipeline, ctx.deploymentId, unit.id);
    const undoSql = `${ident(ROLLBACK_SCHEMA)}.${ident(undoName)}`;
    const fnSql = `${ident(ROLLBACK_SCHEMA)}.${ident(`${undoName}_fn`)}`;
    const names = cowTriggerNames(ctx.pipeline, ctx.deploymentId, unit.id);
    return withClient(ctx, unit.connection, async (client) => {
      await ensureRollbackSchema(client);
      await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [lockKey(undoName)]);
      try {
        // 1. Install, in one short transaction: the table locked against writers (not readers) only while the undo
        // table and the triggers are made. READ COMMITTED, and the LOCK before anything reads the table; a lock not
        // had within INSTALL_LOCK's wait is tried again (the transaction rolled back: nothing made yet).
        const meta = await withInstallLock(client, unit, () => inTransaction(client, 'BEGIN ISOLATION LEVEL READ COMMITTED', async () => {
          const existing = await findRelation(client, undoSql);
          if (existing) {
            const found = await readMeta(client, existing, { pending: true });
            if (!found || found.pipeline !== ctx.pipeline || found.deploymentId !== ctx.deploymentId || found.unitId !== unit.id) {
              throw new PreflightError(
                `${existing.display} exists but is not the copy-on-write restore point of unit "${unit.id}" in deployment "${ctx.deploymentId}"; inspect it, drop it if it is not needed, and capture again.`,
              );
            }
            return found;
          }
          const source = await findRelation(client, unit.table);
          if (!source || !isTable(source)) {
            throw new PreflightError(
              source
                ? `unit "${unit.id}": ${source.display} is not a table (relkind ${source.kind}); only tables can be captured.`
                : `unit "${unit.id}": table "${unit.table}" does not exist on connection "${unit.connection}".`,
            );
          }
          // Read from the catalog before the lock: a role that may not lock the table (it does not own it) is told why.
          const refusal = await copyOnWriteRefusal(client, source, unit);
          if (refusal) throw new PreflightError(`unit "${unit.id}": capture: copy-on-write is not possible for ${source.display}: ${refusal}. Use capture: copy for this unit.`);
          await lockTableWithin(client, source.sql, 'SHARE ROW EXCLUSIVE', lockWait.timeoutMs);
          const primaryKey = await primaryKeyOf(client, source.oid);
          const columns = await liveColumns(client, source.oid);
          const { scope, recorded } = await resolveScope(client, source, scopeOfUnit(unit), unit.id);
          const colNames = columns.map((c) => c.name);
          if (unit.where !== undefined) {
            try {
              await client.query(`SELECT count(*) FROM (${scope.select(colNames)}) AS t WHERE false`);
            } catch (error) {
              throw new PreflightError(`unit "${unit.id}": its "where" predicate (${unit.where}) fails on ${source.display}: ${error instanceof Error ? error.message : String(error)}. Nothing was captured.`);
            }
          }

          await createUndoTable(client, undoSql, source, columns, primaryKey);
          await client.query(triggerFunctionSql(fnSql, undoSql, source, colNames, primaryKey));
          const t = (name: string) => `${ident(name)}`;
          await client.query(`CREATE TRIGGER ${t(names.ins)} AFTER INSERT ON ${source.sql} REFERENCING NEW TABLE AS etl_new FOR EACH STATEMENT EXECUTE FUNCTION ${fnSql}()`);
          await client.query(`CREATE TRIGGER ${t(names.upd)} AFTER UPDATE ON ${source.sql} REFERENCING OLD TABLE AS etl_old NEW TABLE AS etl_new FOR EACH STATEMENT EXECUTE FUNCTION ${fnSql}()`);
          await client.query(`CREATE TRIGGER ${t(names.del)} AFTER DELETE ON ${source.sql} REFERENCING OLD TABLE AS etl_old FOR EACH STATEMENT EXECUTE FUNCTION ${fnSql}()`);
          await client.query(`CREATE TRIGGER ${t(names.trn)} BEFORE TRUNCATE ON ${source.sql} FOR EACH STATEMENT EXECUTE FUNCTION ${fnSql}()`);
          for (const name of Object.values(names)) await client.query(`ALTER TABLE ${source.sql} ENABLE ALWAYS TRIGGER ${t(name)}`);

          const snap = await transactionMark(client, source.oid);
          const state = await triggerState(client, source, Object.values(names), fnSql);
          const installed: CowMeta = {
            tool: 'etl-rollback',
            kind: 'restore-point',
            mode: 'copy-on-write',
            version: 1,
            pipeline: ctx.pipeline,
            deploymentId: ctx.deploymentId,
            unitId: unit.id,
            sourceTable: source.display,
            tableOid: source.oid,
            capturedAt: ctx.now().toISOString(),
            count: 0,
            checksum: '',
            primaryKey,
            columns: columns.map(definitionOf),
            scope: recorded,
            sequences: scope.kind === 'table' ? await ownedSequences(client, source.oid) : [],
            captureTxid: snap.txid,
            snapshot: snap.snapshot,
            snapshotXmax: snap.xmax,
            filenode: snap.filenode,
            function: { name: fnSql, oid: state.function?.oid ?? 0, md5: state.function?.md5 ?? '' },
            triggers: state.triggers.map((x) => ({ name: x.name, oid: x.oid })),
            catalog: catalogOf(state),
            sealed: false,
            why: options.why ?? 'the unit sets capture: copy-on-write',
          };
          await client.query(`COMMENT ON TABLE ${undoSql} IS ${literal(JSON.stringify(installed))}`);
          return installed;
        }));
        const undo = await findRelation(client, undoSql);
        if (!undo) throw new Error(`undo table ${undoSql} vanished after its capture committed`);
        return await next(client, meta, undo);
      } finally {
        await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [lockKey(undoName)]).catch(() => undefined);
      }
    });
  }

  /**
   * The mode of a unit that does not set `capture`: copy-on-write for a table of at least `above` bytes that it can
   * protect, else copy (undefined). A point already begun in either mode keeps it (a retried capture).
   */
  async function chooseDefault(unit: PostgresTableUnit, ctx: AdapterContext, above: number): Promise<{ why: string } | undefined> {
    return withClient(ctx, unit.connection, async (client) => {
      if (await findRelation(client, `${ident(ROLLBACK_SCHEMA)}.${ident(undoTableName(ctx.pipeline, ctx.deploymentId, unit.id))}`)) return { why: 'the default for a large table; this capture had begun copy-on-write' };
      if (await findRelation(client, `${ident(ROLLBACK_SCHEMA)}.${ident(shadowTableName(ctx.pipeline, ctx.deploymentId, unit.id))}`)) return undefined;
      const source = await findRelation(client, unit.table);
      if (!source || !isTable(source)) return undefined;
      const { rows } = await client.query<{ bytes: string }>('SELECT pg_catalog.pg_total_relation_size($1::oid)::text AS bytes', [source.oid]);
      const bytes = Number(rows[0]?.bytes ?? 0);
      if (bytes < above) return undefined;
      const refusal = await copyOnWriteRefusal(client, source, unit);
      if (refusal) {
        ctx.log.info('postgres-table: a large table captured by a copy, copy-on-write cannot protect it', { unit: unit.id, table: source.display, bytes, why: refusal });
        return undefined;
      }
      return { why: `the default for a table over ${gib(above)}: ${source.display} was ${gib(bytes)}; the unit does not set capture` };
    });
  }

  /**
   * The sealing read. Every write to the table since the install was logged by the triggers in the writer's own
   * transaction, so in any one snapshot the rows without a log entry, plus the logged pre-images, are exactly the
   * table as it was when the triggers went in. Reading that in one REPEATABLE READ transaction gives the capture's
   * count and checksum while the deploy (or anything else) writes on: the only lock held meanwhile is ACCESS SHARE.
   * A capture that stopped between install and seal leaves a record with `sealed: false`; the next capture of the
   * same point seals it (the triggers have been logging since the install).
   */
  async function seal(client: pg.Client, unit: PostgresTableUnit, meta: CowMeta, undo: Relation, ctx: AdapterContext): Promise<CowMeta | PendingCapture> {
    if (!meta.sealProgress) {
      const whole = await inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ', async () => {
        const live = await sealedTable(client, unit, meta);
        const { scope } = await resolveScope(client, live, meta.scope, unit.id);
        const names = meta.columns.map((c) => c.name);
        const inScope = inScopeOf(scope, names);
        const carried = await sealFromEarlier(client, unit, meta, undo, ctx);
        if (!carried && parts.slicing && (await estimatedRows(client, live.oid)) >= parts.slicing.above) return undefined;
        const counted = carried ?? (await countAndChecksum(client, asInstalled(live, undo, meta, inScope), names));
        const sealed: CowMeta = { ...meta, count: counted.count, checksum: counted.checksum, sealed: true, ...(carried ? { sealedFrom: carried.from } : {}) };
        await client.query(`COMMENT ON TABLE ${undo.sql} IS ${literal(JSON.stringify(sealed))}`);
        return sealed;
      });
      if (whole) return whole;
    }
    return sealInSlices(client, unit, meta, undo, ctx);
  }

  /**
   * The table the seal reads, in the seal's transaction: the one installed (same oid), with every captured column still
   * there under its type. The deploy may start once the triggers are in, so it may have altered the table before (or,
   * read in slices, during) the seal: a column dropped, renamed or retyped would make the live rows show other values
   * than the table as installed held (numeric(12,2) to numeric(12,4) changes every row's text), and the seal would be
   * wrong. Then the seal fails, saying so; an added column does not matter (the seal reads the captured ones).
   */
  async function sealedTable(client: pg.Client, unit: PostgresTableUnit, meta: CowMeta): Promise<Relation> {
    const live = await findRelation(client, meta.sourceTable);
    if (!live || live.oid !== meta.tableOid) throw new Error(`capture of unit "${unit.id}": table ${meta.sourceTable} was replaced before its restore point was sealed; release the point and capture again`);
    const now = await liveColumns(client, live.oid);
    const changed = meta.columns.flatMap((c) => {
      const l = now.find((x) => x.name === c.name);
      return !l ? [`column ${c.name} is gone (dropped or renamed)`] : l.type !== c.type ? [`column ${c.name} is ${l.type}, was ${c.type}`] : [];
    });
    if (changed.length > 0) {
      throw new PreflightError(
        `unit "${unit.id}": the seal of ${meta.sourceTable} cannot be read: its columns changed after its triggers went in (${changed.join('; ')}), so its rows no longer show the table as it was. ` +
          `This restore point cannot be sealed; ${BACKSTOP}.`,
      );
    }
    return live;
  }

  /** The table as installed (see `seal`), as rows; `range` limits both halves to the same keys (sealInSlices). */
  function asInstalled(live: Relation, undo: Relation, meta: CowMeta, inScope: (alias: string) => string, range: (alias: string) => string = () => 'true'): string {
    const names = meta.columns.map((c) => c.name);
    const key = meta.primaryKey;
    return (
      `SELECT ${cols(names, 'l')} FROM ${live.sql} AS l WHERE ${range('l')} AND ${inScope('l')} AND NOT EXISTS (SELECT 1 FROM ${undo.sql} AS u WHERE ${keyMatch(key, 'u', 'l')}) ` +
      `UNION ALL SELECT ${cols(names, 'u')} FROM ${undo.sql} AS u WHERE u.${ident(KIND)} = 'p' AND ${range('u')} AND ${inScope('u')}`
    );
  }

  /**
   * The seal of a large table in slices, each call reading key ranges for `sliceSeconds`, then answering pending (its
   * progress in the undo table's record), so a table of any size is sealed within the capture function's timeout.
   *
   * Why the ranges add up to the seal: the table as installed, restricted to the keys of one range, is, in any one
   * snapshot, the live rows of that range without a log entry plus the logged pre-images of that range (the argument of
   * `seal`, for a subset of the keys). Each range is read in its own snapshot, the next range's bounds taken in that
   * snapshot from the live table's key order: (-inf, k1], (k1, k2], ..., (kn, +inf) partition every key, so every row
   * of the table as installed is counted once, under its key as installed (a pre-image carries it), in whichever slice
   * covers that key, whatever was written before or after that slice was read: a row moved to a key not yet read is
   * logged there as inserted and left out; a row deleted ahead is counted from its pre-image. Count and checksum are
   * sums, so the slices' add up. Row comparison on the primary key follows its index order (its collations).
   */
  async function sealInSlices(client: pg.Client, unit: PostgresTableUnit, meta: CowMeta, undo: Relation, ctx: AdapterContext): Promise<CowMeta | PendingCapture> {
    // An adapter without slicing that finds a sliced seal under way (begun by the capture function) finishes it in
    // this call: it never answers pending.
    const slicing = parts.slicing ?? { ...DEFAULT_SEAL_SLICING, sliceSeconds: Number.POSITIVE_INFINITY };
    const started = Date.now();
    const names = meta.columns.map((c) => c.name);
    const key = meta.primaryKey;
    const types = key.map((k) => meta.columns.find((c) => c.name === k)?.type ?? 'text');
    const row = (values: string[]) => `ROW(${values.map((v, i) => `${literal(v)}::${types[i]}`).join(', ')})`;
    let current = meta;
    for (;;) {
      const progress = current.sealProgress ?? { after: [], count: 0, checksum: '0', chunks: 0 };
      const next = await inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ', async () => {
        const live = await sealedTable(client, unit, meta);
        const { scope } = await resolveScope(client, live, meta.scope, unit.id);
        const inScope = inScopeOf(scope, names);
        const lower = (alias: string) => (progress.after.length > 0 ? `ROW(${cols(key, alias)}) > ${row(progress.after)}` : 'true');
        const { rows: bound } = await client.query<Record<string, string>>(
          `SELECT ${key.map((k, i) => `l.${ident(k)}::text AS k${i}`).join(', ')} FROM ${live.sql} AS l WHERE ${lower('l')} ORDER BY ${cols(key, 'l')} OFFSET ${slicing.chunkRows - 1} LIMIT 1`,
        );
        const upper = bound[0] ? key.map((_, i) => bound[0]![`k${i}`]!) : undefined;
        const range = (alias: string) => `${lower(alias)}${upper ? ` AND ROW(${cols(key, alias)}) <= ${row(upper)}` : ''}`;
        const part = await countAndChecksum(client, asInstalled(live, undo, meta, inScope, range), names);
        const sum = { count: progress.count + part.count, checksum: (BigInt(progress.checksum) + BigInt(part.checksum)).toString(), chunks: progress.chunks + 1 };
        const { sealProgress: _, ...rest } = current;
        const after: CowMeta = upper ? { ...rest, sealProgress: { after: upper, ...sum } } : { ...rest, count: sum.count, checksum: sum.checksum, sealed: true, sealedInChunks: sum.chunks };
        await client.query(`COMMENT ON TABLE ${undo.sql} IS ${literal(JSON.stringify(after))}`);
        return after;
      });
      if (next.sealed) {
        ctx.log.info('postgres-table copy-on-write seal read in slices', { unit: unit.id, table: meta.sourceTable, chunks: next.sealedInChunks, count: next.count });
        return next;
      }
      current = next;
      if ((Date.now() - started) / 1000 >= slicing.sliceSeconds) {
        const p = next.sealProgress!;
        return { pending: { status: `sealing ${meta.sourceTable} in key ranges: ${p.chunks} read, ${p.count} rows of the table as installed so far`, waitSeconds: 1 } };
      }
    }
  }

  /** The planner's row estimate of a table (reltuples; from its size when never analyzed or vacuumed). */
  async function estimatedRows(client: pg.Client, oid: number): Promise<number> {
    const { rows } = await client.query<{ n: string }>(
      'SELECT (CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE pg_catalog.pg_relation_size(c.oid) / 100 END)::bigint::text AS n FROM pg_catalog.pg_class c WHERE c.oid = $1',
      [oid],
    );
    return Number(rows[0]?.n ?? 0);
  }

  /**
   * What rollback run `ctx.runId` is about to replace, recorded for `undo` (as the point of `ctx.deploymentId`,
   * `undo-<run>`) before its restore from `restoring` writes, at the cost of the rows logged, not of the table.
   *
   * That restore writes only at the keys `restoring`'s undo table names, so the table it replaces differs from the one
   * it leaves at those keys only. The record keeps, for each of them, the live row (kind `p`) or, where there is none,
   * the key (kind `i`: a row the restore is about to insert): an undo log of the restore, made before it, which the
   * ordinary copy-on-write restore consumes. Its count and checksum are those of the live scope, carried from the
   * capture's without reading the table: the rows the log does not name are as captured (prepare's proof), so
   * count(now) = count(capture) - pre-images in scope + live rows at logged keys in scope, and the checksum likewise
   * with each row's term (it is a sum). Without that proof, after a schema change, or when the point cannot be restored
   * anyway, it answers undefined and the caller takes a shadow copy. A record has no triggers: its own restore checks
   * every row for writes since the record (prepare's pass over the table) before it writes.
   *
   * The table is held against writers while the record is made (the rows logged are read, not the table). Idempotent:
   * the record this run already made is returned as it is.
   */
  async function undoRecord(unit: PostgresTableUnit, restoring: RestorePoint<CowDetails>, ctx: AdapterContext): Promise<RestorePoint<CowDetails> | undefined> {
    const runId = ctx.runId;
    if (!runId) return undefined;
    const undoName = undoTableName(ctx.pipeline, ctx.deploymentId, unit.id);
    const undoSql = `${ident(ROLLBACK_SCHEMA)}.${ident(undoName)}`;
    return withClient(ctx, restoring.details.connection, async (client) => {
      await ensureRollbackSchema(client);
      return withRestoreLock(client, restoreLock, unit.id, restoring.details.table, () => inTransaction(client, 'BEGIN ISOLATION LEVEL READ COMMITTED', async () => {
        await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKey(undoName)]);
        const existing = await findRelation(client, undoSql);
        if (existing) {
          const found = await readMeta(client, existing);
          if (!found || found.record?.runId !== runId || found.unitId !== unit.id || found.deploymentId !== ctx.deploymentId) {
            throw new PreflightError(`${existing.display} exists but is not the record of what run "${runId}" replaced in unit "${unit.id}"; inspect it, drop it if it is not needed, and rerun.`);
          }
          return pointFromMeta(unit, found, existing);
        }
        const target = await findRelation(client, restoring.details.table);
        if (!target || !isTable(target)) return undefined;
        await lockTableWithin(client, target.sql, 'SHARE ROW EXCLUSIVE', restoreLock.timeoutMs);
        // The restore itself names what is wrong with the point (prepare's errors); the record just does not apply.
        const p = await prepare(client, unit, restoring, ctx).catch(() => undefined);
        if (!p || p.bypass.length > 0 || !p.untouchedProven || p.schema.changes.length > 0) return undefined;
        await preferKeyLookups(client, p);
        const names = p.meta.columns.map((c) => c.name);
        const key = p.meta.primaryKey;
        const kind = ident(KIND);
        const logged = `${p.undo.sql} AS u LEFT JOIN ONLY ${p.live.sql} AS l ON ${keyMatch(key, 'l', 'u')}`;
        await createUndoTable(client, undoSql, p.live, p.columns, key);
        // One pass over the log: each logged key looked up once; the rows written to the record and the terms that carry
        // the count and checksum (a pre-image in scope leaves, the live row in scope comes) read from the same lookup.
        const carried = carriedTerms(p, names);
        const present = ident('etl_rollback$present');
        const leaves = ident('etl_rollback$leaves');
        const comes = ident('etl_rollback$comes');
        const { rows: sum } = await client.query<{ count: string; checksum: string }>(
          `WITH r AS MATERIALIZED (
             SELECT ${names.map((n) => `${key.includes(n) ? 'u' : 'l'}.${ident(n)}`).join(', ')}, l.ctid IS NOT NULL AS ${present},
                    ${carried.leaves} AS ${leaves}, ${carried.comes} AS ${comes}
               FROM ${logged}),
           kept AS (INSERT INTO ${undoSql} (${cols(names)}, ${kind}) SELECT ${cols(names)}, CASE WHEN ${present} THEN 'p' ELSE 'i' END FROM r RETURNING 1)
           SELECT ($1::bigint - count(${leaves}) + count(${comes}))::text AS count,
                  ($2::numeric - coalesce(sum(${leaves}), 0) + coalesce(sum(${comes}), 0))::text AS checksum,
                  (SELECT count(*) FROM kept) AS kept
             FROM r`,
          [p.meta.count, p.meta.checksum],
        );
        const snap = await transactionMark(client, p.live.oid);
        const meta: CowMeta = {
          tool: 'etl-rollback',
          kind: 'restore-point',
          mode: 'copy-on-write',
          version: 1,
          pipeline: ctx.pipeline,
          deploymentId: ctx.deploymentId,
          unitId: unit.id,
          sourceTable: p.live.display,
          tableOid: p.live.oid,
          capturedAt: ctx.now().toISOString(),
          count: Number(sum[0]?.count ?? 0),
          checksum: sum[0]?.checksum ?? '0',
          primaryKey: key,
          columns: p.meta.columns,
          scope: p.meta.scope,
          sequences: p.scope.kind === 'table' ? await ownedSequences(client, p.live.oid) : [],
          captureTxid: snap.txid,
          snapshot: snap.snapshot,
          snapshotXmax: snap.xmax,
          filenode: snap.filenode,
          function: { name: '', oid: 0, md5: '' },
          triggers: [],
          sealed: true,
          record: { runId, from: p.undo.display },
        };
        await client.query(`COMMENT ON TABLE ${undoSql} IS ${literal(JSON.stringify(meta))}`);
        const undo = await findRelation(client, undoSql);
        if (!undo) throw new Error(`record table ${undoSql} vanished inside its own transaction`);
        ctx.log.info('postgres-table copy-on-write: what the rollback replaces recorded at the logged keys', { unit: unit.id, table: meta.sourceTable, record: undo.display, count: meta.count });
        return pointFromMeta(unit, meta, undo);
      }));
    });
  }

  /**
   * The seal without reading the table, when an earlier restore point of the same unit still guards it (the daily
   * deploy's, kept for its retention): its triggers have logged every write since its capture, so its count and
   * checksum carry over to now (the rows its log does not name are as it captured them, proven by the catalog, as a
   * restore proves it), and the new point's log carries them back to the install:
   *
   *   now     = earlier - (its pre-images in scope) + (live rows at its logged keys in scope)
   *   install = now - (live rows at the new log's keys in scope) + (the new log's pre-images in scope)
   *
   * for the count and for the checksum (a sum of one term per row), all in the seal's one snapshot. The cost is the
   * two logs, not the table. Only a point of the same pipeline and unit, on the same table (oid), with the same key,
   * columns and scope; sealed, not a record; whose triggers, function and relfilenode are as it recorded them, with no
   * schema change since. Otherwise (or when its log is a large part of the table, where the read costs as much)
   * undefined: the caller reads the table.
   */
  async function sealFromEarlier(client: pg.Client, unit: PostgresTableUnit, meta: CowMeta, undo: Relation, ctx: AdapterContext): Promise<{ count: number; checksum: string; from: string } | undefined> {
    const { rows: found } = await client.query<{ name: string; comment: string }>(
      `SELECT c.relname AS name, pg_catalog.obj_description(c.oid, 'pg_class') AS comment FROM pg_catalog.pg_class c
        WHERE c.relnamespace = $1::text::regnamespace AND c.relkind = 'r' AND c.oid <> $2 AND pg_catalog.obj_description(c.oid, 'pg_class') LIKE '%"mode":"copy-on-write"%'`,
      [ROLLBACK_SCHEMA, undo.oid],
    );
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    const earlier = found
      .map((r) => {
        try {
          return { name: r.name, meta: JSON.parse(r.comment) as Partial<CowMeta> };
        } catch {
          return undefined;
        }
      })
      .filter((x): x is { name: string; meta: CowMeta } => {
        const m = x?.meta;
        return (
          m?.tool === 'etl-rollback' && m.mode === 'copy-on-write' && m.sealed === true && m.record === undefined && m.pipeline === meta.pipeline && m.unitId === meta.unitId &&
          m.deploymentId !== meta.deploymentId && m.tableOid === meta.tableOid && same(m.primaryKey, meta.primaryKey) && same(m.columns, meta.columns) && same(m.scope, meta.scope)
        );
      })
      .sort((a, b) => b.meta.capturedAt.localeCompare(a.meta.capturedAt))[0];
    if (!earlier) return undefined;
    const earlierUndo = await findRelation(client, `${ident(ROLLBACK_SCHEMA)}.${ident(earlier.name)}`);
    if (!earlierUndo) return undefined;
    await client.query('SAVEPOINT etl_rollback_earlier');
    try {
      const p = await prepare(client, unit, pointFromMeta(unit, earlier.meta, earlierUndo), ctx, { scan: false });
      const logged = p.recorded.preImages + p.recorded.inserted;
      if (p.bypass.length > 0 || !p.untouchedProven || p.schema.changes.length > 0 || logged > Math.max(10_000, p.tableRows / 4)) {
        await client.query('RELEASE SAVEPOINT etl_rollback_earlier');
        return undefined;
      }
      await preferKeyLookups(client, p);
      const names = meta.columns.map((c) => c.name);
      const { leaves, comes } = carriedTerms(p, names);
      const terms = (log: string) =>
        `SELECT count(${leaves}) AS pn, coalesce(sum(${leaves}), 0) AS ps, count(${comes}) AS ln, coalesce(sum(${comes}), 0) AS ls
           FROM ${log} AS u LEFT JOIN ONLY ${p.live.sql} AS l ON ${keyMatch(meta.primaryKey, 'l', 'u')}`;
      const { rows } = await client.query<{ count: string; checksum: string }>(
        `SELECT ($1::bigint - e.pn + e.ln - n.ln + n.pn)::text AS count, ($2::numeric - e.ps + e.ls - n.ls + n.ps)::text AS checksum
           FROM (${terms(earlierUndo.sql)}) AS e, (${terms(undo.sql)}) AS n`,
        [earlier.meta.count, earlier.meta.checksum],
      );
      await client.query('RELEASE SAVEPOINT etl_rollback_earlier');
      const count = Number(rows[0]?.count ?? Number.NaN);
      const checksum = rows[0]?.checksum;
      if (!Number.isSafeInteger(count) || count < 0 || !checksum) return undefined;
      ctx.log.info('postgres-table copy-on-write seal carried from the earlier restore point', { unit: unit.id, from: earlierUndo.display, logged, count });
      return { count, checksum, from: earlierUndo.display };
    } catch (error) {
      // Whatever stopped it (the earlier point half released, say), the full read decides.
      await client.query('ROLLBACK TO SAVEPOINT etl_rollback_earlier');
      ctx.log.warn('postgres-table copy-on-write seal could not be carried from the earlier restore point; reading the table', { unit: unit.id, from: earlierUndo.display, error: error instanceof Error ? error.message : String(error) });
      return undefined;
    }
  }

  type TriggerState = { triggers: { name: string; oid: number; enabled: string; fnOid: number; xmin: string }[]; function: { oid: number; md5: string; xmin: string } | undefined; filenode: string };

  async function triggerState(client: pg.Client, table: Relation, names: string[], fnSql: string): Promise<TriggerState> {
    return triggerStateOf((await client.query(triggerStateSql(table, names, fnSql))).rows[0]);
  }

  /**
   * The triggers, the function and the table's relfilenode, in one statement (values as literals, so that it can ride
   * in a batch with other statements).
   */
  function triggerStateSql(table: Relation, names: string[], fnSql: string): string {
    return `SELECT (SELECT coalesce(json_agg(json_build_object('name', t.tgname, 'oid', t.oid::int, 'enabled', t.tgenabled::text, 'fnOid', t.tgfoid::int, 'xmin', t.xmin::text) ORDER BY t.tgname), '[]')
                 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = ${Number(table.oid)} AND t.tgname = ANY(ARRAY[${names.map((n) => literal(n)).join(', ')}]::text[])) AS triggers,
              (SELECT json_build_object('oid', p.oid::int, 'md5', md5(p.prosrc), 'xmin', p.xmin::text)
                 FROM pg_catalog.pg_proc p WHERE p.oid = pg_catalog.to_regprocedure(nullif(${literal(fnSql)}, '') || '()')) AS fn,
              pg_catalog.pg_relation_filenode(${Number(table.oid)}::oid::regclass)::text AS filenode`;
  }

  function triggerStateOf(row: unknown): TriggerState {
    const r = row as { triggers: TriggerState['triggers']; fn: TriggerState['function'] | null; filenode: string } | undefined;
    return { triggers: r?.triggers ?? [], function: r?.fn ?? undefined, filenode: r?.filenode ?? '' };
  }

  /** The `catalog` record of the triggers and function as they are now (see CowMeta.catalog). */
  function catalogOf(state: TriggerState): NonNullable<CowMeta['catalog']> {
    return {
      triggers: state.triggers.map((x) => ({ name: x.name, oid: x.oid, xmin: x.xmin })),
      function: { oid: state.function?.oid ?? 0, xmin: state.function?.xmin ?? '' },
    };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Preflight and the window check

  /** What fusedRestoreSql planned (per action) and wrote. */
  interface FusedCounts {
    planned_r: string;
    planned_o: string;
    planned_m: string;
    deleted: string;
    updated: string;
    updated_same: string;
    inserted: string;
    inserted_same: string;
    kept: string;
  }

  interface Prepared {
    live: Relation;
    undo: Relation;
    meta: CowMeta;
    scope: Scope;
    inScope: (alias: string) => string;
    /** Captured, non-generated columns (what INSERT writes) and those of them outside the key (what UPDATE writes). */
    write: string[];
    update: string[];
    overriding: boolean;
    schema: Awaited<ReturnType<typeof planSchemaRestore>>;
    /** What went wrong in the window (empty: nothing seen). */
    bypass: string[];
    recorded: { preImages: number; inserted: number; preImagesInScope: number };
    /**
     * Every row written since the capture is in the log (the triggers proven intact by the catalog, or check 2 ran
     * and found nothing), so the rows the log does not name are as captured and their number is right.
     */
    untouchedProven: boolean;
    /** The live table's columns, read under the restore's lock. */
    columns: PostgresColumn[];
    /** The table has rewrite rules (a written row may not be what was written). */
    rules: boolean;
    /** pg_class.reltuples of the table (the planner's row estimate) and the session's work_mem, in bytes. */
    tableRows: number;
    workMem: number;
    /** The table's user triggers, read with the rest (prepare's `userTriggers` option). */
    userTriggers?: UserTriggers;
    notes: string[];
  }

  /**
   * `scan: false`: without the catalog proof, do not read the table for writes the triggers missed (checks 2 and 3);
   * `untouchedProven` is then the catalog proof alone. For a caller that has a cheaper way out than that pass.
   * `userTriggers`: read the table's user triggers too (Prepared.userTriggers), in the same round trip.
   */
  async function prepare(client: pg.Client, unit: PostgresTableUnit, point: RestorePoint<CowDetails>, ctx: AdapterContext, options: { scan?: boolean; userTriggers?: boolean } = {}): Promise<Prepared> {
    const d = point.details;
    // One round trip for the catalog: both relations, their comments, the live table's columns and key.
    const [undo, found] = await tableFacts(client, [d.shadowTable, d.table]);
    if (!undo) {
      throw new RestorePointMissingError(`unit "${unit.id}": the undo table ${d.shadowTable} of the copy-on-write restore point is gone (released or dropped); this point cannot be restored.`);
    }
    const meta = metaOf(undo.comment);
    if (!meta || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || meta.checksum !== point.checksum || meta.count !== point.count) {
      throw new RestorePointMissingError(`unit "${unit.id}": ${undo.display} is not the sealed undo table this restore point describes; refusing to restore from it.`);
    }
    const fail = (cause: string) =>
      new VerificationFailedError(
        `unit "${unit.id}": copy-on-write restore point of ${meta.sourceTable} cannot be trusted: ${cause}. Nothing was written. ` +
          `The undo log may miss changes, so this restore point cannot put the table back; ${BACKSTOP}.`,
      );
    const live = found;
    if (!live || !isTable(live)) throw fail(`table ${d.table} ${live ? 'is no longer a table' : 'no longer exists'}`);
    if (live.oid !== meta.tableOid) throw fail(`table ${live.display} was dropped and made again since the capture (another oid), taking the triggers with it`);

    const { columns, primaryKey } = live;
    if (primaryKey.join('\u0000') !== meta.primaryKey.join('\u0000')) {
      throw new PreflightError(`unit "${unit.id}": cannot restore ${live.display}: primary key changed from (${meta.primaryKey.join(', ')}) to (${primaryKey.join(', ') || 'none'}); put the captured key back by hand, then rerun. Nothing was written.`);
    }
    const schema = await planSchemaRestore(client, live, meta.columns, columns, { sameTable: true, primaryKey: meta.primaryKey });
    if (schema.refusals.length > 0) throw new PreflightError(`unit "${unit.id}": cannot restore ${live.display}: ${schema.refusals.join('; ')}. Nothing was written.`);
    // Same table (same oid), so a captured column is the live column with its attnum: gone or retyped, its values in
    // the rows the deploy did not touch are gone (or were rewritten without triggers).
    const lost = meta.columns.filter((c) => !columns.some((l) => l.attnum === c.attnum && l.type === c.type));
    if (lost.length > 0) {
      throw fail(
        `the deploy dropped or retyped captured column(s) ${lost.map((c) => `"${c.name}" (${c.type})`).join(', ')}; copy-on-write keeps only the rows the deploy changed, so the values of the others are gone`,
      );
    }
    const { scope } = await resolveScope(client, live, meta.scope, unit.id);
    if (schema.changes.length > 0 && scope.kind !== 'table') {
      throw new PreflightError(`unit "${unit.id}": the deploy altered ${live.display} (${schema.changes.join(', ')}), but this unit covers only ${scope.describe}; restore the table with an unscoped unit, or revert the schema change first. Nothing was written.`);
    }
    const names = meta.columns.map((c) => c.name);
    const inScope = inScopeOf(scope, names);
    const generated = new Set(meta.columns.filter((c) => c.generated).map((c) => c.name));
    const write = names.filter((n) => !generated.has(n));
    const update = write.filter((n) => !meta.primaryKey.includes(n));
    const overriding = meta.columns.some((c) => c.identity === 'always');

    // 1. The triggers and the function, as installed at capture.
    const bypass: string[] = [];
    const expected = cowTriggerNames(meta.pipeline, meta.deploymentId, meta.unitId);
    // A record (undoRecord) has no triggers: only the pass over the table below can show it still holds.
    // One round trip: the triggers and function (check 1), the table's facts and the undo log's tallies (below), and,
    // for a restore that disables user triggers, those triggers (triggerSuspension), all under the caller's lock.
    const key = meta.primaryKey;
    const facts = await batch(client, [
      triggerStateSql(live, Object.values(expected), meta.record ? '' : meta.function.name),
      `SELECT c.relhasrules AS rules, greatest(c.reltuples, 0)::bigint::text AS n,
              pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text AS b,
              EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid) AS children,
              pg_catalog.pg_size_bytes(pg_catalog.current_setting('work_mem'))::text AS wm,
              (SELECT json_build_object('p', count(*) FILTER (WHERE u.${ident(KIND)} = 'p'), 'i', count(*) FILTER (WHERE u.${ident(KIND)} = 'i'),
                                        'pin', count(*) FILTER (WHERE u.${ident(KIND)} = 'p' AND ${inScope('u')}))
                 FROM ${undo.sql} AS u) AS rec
         FROM pg_catalog.pg_class c WHERE c.oid = ${Number(live.oid)}`,
      ...(options.userTriggers ? [userTriggersSql(live.oid)] : []),
    ]);
    const state = triggerStateOf(facts[0]?.rows[0]);
    const rel = (facts[1]?.rows ?? []) as { rules: boolean; children: boolean; n: string; wm: string; b: string; rec: { p: number; i: number; pin: number } | null }[];
    for (const want of meta.triggers) {
      const now = state.triggers.find((x) => x.name === want.name);
      if (!now) bypass.push(`trigger ${want.name} on ${live.display} was dropped`);
      else if (now.oid !== want.oid) bypass.push(`trigger ${want.name} was dropped and created again (oid ${want.oid} -> ${now.oid}): writes in between were not recorded`);
      else if (now.enabled !== 'A') bypass.push(`trigger ${want.name} is ${now.enabled === 'D' ? 'disabled' : `no longer ENABLE ALWAYS (tgenabled ${now.enabled})`}`);
    }
    if (meta.record) {
      // no function to check
    } else if (!state.function) bypass.push(`trigger function ${meta.function.name} was dropped`);
    else if (state.function.oid !== meta.function.oid || state.function.md5 !== meta.function.md5) bypass.push(`trigger function ${meta.function.name} was replaced`);

    // Proof that the triggers saw every write since the capture, without reading the table: the catalog rows of the
    // triggers and the function unchanged since the capture (or the last verified restore) — same oids and xmins, so
    // never disabled, re-enabled, replaced or dropped in between, even for a moment — and ENABLE ALWAYS (so
    // session_replication_role = replica does not silence them); the table's relfilenode unchanged (no TRUNCATE, no
    // rewrite by ALTER TABLE … TYPE, VACUUM FULL or CLUSTER, which write rows without DML triggers); no schema change.
    // Every INSERT, UPDATE, DELETE, MERGE, COPY and TRUNCATE on the table fires them, in the writer's transaction.
    // Then checks 2 and 3 cannot find anything and are skipped: the restore costs the rows logged, not the table.
    // Anything else (a changed catalog row, even from a harmless VACUUM FREEZE of pg_trigger or pg_proc; a restore
    // point older than this record) falls back to the pass over the table, which decides row by row. What no check
    // before the writes can see (an extension writing heap pages directly) the stage's gate still catches: it counts
    // and sums the whole scope after every restore, against the capture.
    const rewritten = state.filenode !== meta.filenode;
    // A write addressed to an inheritance child fires the child's triggers, not the parent's.
    if (rel[0]?.children === true) bypass.push(`${live.display} has inheritance children now: writes addressed to them do not fire its triggers`);
    const catalog = meta.catalog;
    const intact =
      !meta.record &&
      bypass.length === 0 &&
      !rewritten &&
      schema.changes.length === 0 &&
      catalog !== undefined &&
      catalog.triggers.length === meta.triggers.length &&
      catalog.triggers.every((want) => state.triggers.some((x) => x.name === want.name && x.oid === want.oid && x.xmin === want.xmin && x.enabled === 'A')) &&
      state.function !== undefined &&
      state.function.oid === catalog.function.oid &&
      state.function.xmin === catalog.function.xmin;

    // 2 and 3 in one pass over the table (only without that proof): its rows in scope, and the rows written since the
    // capture whose key the undo log lacks. age(xmin) is a cheap first filter (it is INT_MAX for frozen and special
    // xids): only the few rows whose xmin is as recent as the capture snapshot's get the exact test (their xid mapped
    // to 64 bits against the bound, see changes.ts, then not visible in the capture snapshot) and the lookup in the
    // undo log; CASE keeps both from running for the rest.
    const bound = BigInt(rel[0]?.b ?? '0');
    const since = BigInt(meta.snapshot.split(':')[0] || meta.snapshotXmax);
    const span = bound - since;
    const xminCheck = span >= 0n && span < 2n ** 31n;
    const rec = rel[0]?.rec;
    const recorded = { preImages: Number(rec?.p ?? 0), inserted: Number(rec?.i ?? 0), preImagesInScope: Number(rec?.pin ?? 0) };
    const scan = !intact && options.scan !== false;
    if (scan) {
      const b32 = bound & 0xffffffffn;
      const exact = `NOT pg_catalog.pg_visible_in_snapshot((${bound} - ((${b32} - l.xmin::text::bigint) & 4294967295))::text::xid8, ${literal(meta.snapshot)}::pg_snapshot)`;
      const unlogged = `NOT EXISTS (SELECT 1 FROM ${undo.sql} AS u WHERE ${keyMatch(key, 'u', 'l')})`;
      // The limit as an InitPlan (evaluated once); both ages are taken against the same reference within the query.
      const writtenUnlogged = xminCheck
        ? `CASE WHEN pg_catalog.age(l.xmin) <= (SELECT pg_catalog.age('${since & 0xffffffffn}'::xid)) THEN ${exact} AND ${unlogged} ELSE false END`
        : 'false';
      const { rows: scan } = await client.query<{ inscope: string; unrecorded: string }>(
        `SELECT count(*) FILTER (WHERE ${inScope('l')})::text AS inscope, count(*) FILTER (WHERE ${writtenUnlogged})::text AS unrecorded FROM ${live.sql} AS l`,
      );
      const sample =
        Number(scan[0]?.unrecorded ?? 0) > 0
          ? (await client.query<{ k: string }>(`SELECT ${rowText(key, 'l')} AS k FROM ${live.sql} AS l WHERE ${writtenUnlogged} LIMIT 1`)).rows[0]?.k
          : undefined;
      const { rows: lg } = await client.query<{ logged: string }>(
        `SELECT count(*)::text AS logged FROM ${undo.sql} AS u JOIN ${live.sql} AS l ON ${keyMatch(key, 'u', 'l')} WHERE ${inScope('l')}`,
      );
      const unrecorded = Number(scan[0]?.unrecorded ?? 0);
      if (unrecorded > 0) {
        bypass.push(
          meta.record
            ? `${unrecorded} row(s) were written after the record without it holding them (first key ${sample ?? '?'}): putting back what run ${meta.record.runId} replaced would leave them as they are now`
            : `${unrecorded} row(s) were written after the capture without the triggers recording them (first key ${sample ?? '?'}): ` +
            (rewritten ? 'the table was also rewritten since the capture (an ALTER TABLE that rewrites rows, or TRUNCATE with the triggers off)' : 'the triggers were disabled, or bypassed, while they were written'),
        );
      }
      const untouched = Number(scan[0]?.inscope ?? 0) - Number(lg[0]?.logged ?? 0);
      const wantUntouched = meta.count - recorded.preImagesInScope;
      if (untouched !== wantUntouched) {
        bypass.push(`${untouched} rows in scope are untouched according to the undo log, but the capture's ${meta.count} rows minus the ${recorded.preImagesInScope} recorded pre-images leave ${wantUntouched}: rows were deleted (or truncated) without the triggers recording them`);
      }
    }
    const notes = [
      meta.record
        ? `the record of what run ${meta.record.runId} replaced: the rows at the keys its copy-on-write restore point had logged, in ${undo.display}`
        : `capture: copy-on-write (${meta.why ?? 'the unit sets capture: copy-on-write'}): undo table ${undo.display}`,
    ];
    if (meta.record && xminCheck) notes.push('a record has no triggers: every row was checked for writes since the record');
    else if (intact) notes.push('the triggers are as the capture left them (catalog rows unchanged, table not rewritten): the table was not read to look for unrecorded writes');
    else if (!xminCheck) notes.push(`the check for unrecorded writes by transaction id was skipped: the capture is ${span} transactions old (beyond 2^31); the count and checksum checks remain`);
    else notes.push('the triggers or the table changed in the catalog since the capture: every row was checked for writes the triggers did not record');
    if (scope.kind !== 'table') notes.push(`scope: ${scope.describe}`);
    return {
      live,
      undo,
      meta,
      scope,
      inScope,
      write,
      update,
      overriding,
      schema,
      bypass,
      recorded,
      untouchedProven: bypass.length === 0 && (intact || (scan && xminCheck)) && schema.changes.length === 0,
      columns,
      rules: rel[0]?.rules === true,
      tableRows: Number(rel[0]?.n ?? 0),
      workMem: Number(rel[0]?.wm ?? 0),
      ...(options.userTriggers ? { userTriggers: userTriggersOf(facts[2]?.rows[0]) } : {}),
      notes,
    };
  }

  /**
   * SQL pieces of the writes, over live alias `l` and undo alias `u`. Before the schema is put back (`afterSchema`
   * false), a renamed column is read under its live name (the schema plan's `compare`).
   */
  function writeSql(p: Prepared, afterSchema = false) {
    const key = p.meta.primaryKey;
    const kind = `u.${ident(KIND)}`;
    const liveOf = (n: string) => (afterSchema ? `l.${ident(n)}` : (p.schema.compare.get(n)?.live ?? `l.${ident(n)}`));
    // Byte-for-byte, as in fusedRestoreSql (the captured columns keep their types: prepare refuses a retyped one).
    const differs = p.update.length === 0 ? 'FALSE' : `NOT (ROW(${p.update.map(liveOf).join(', ')})::record *= ROW(${cols(p.update, 'u')})::record)`;
    return {
      /** Live rows that must go: their key was not in scope at capture (inserted, or moved into scope). */
      remove: `(${kind} = 'i' OR NOT ${p.inScope('u')}) AND ${p.inScope('l')}`,
      /** Live rows to overwrite with their pre-image. */
      overwrite: `${kind} = 'p' AND ${p.inScope('u')} AND ${differs}`,
      /** Pre-images whose row is missing. */
      missing: `${kind} = 'p' AND ${p.inScope('u')} AND NOT EXISTS (SELECT 1 FROM ${p.live.sql} AS l WHERE ${keyMatch(key, 'l', 'u')})`,
      join: keyMatch(key, 'l', 'u'),
    };
  }

  /**
   * The restore's writes, one statement (no schema change to put back). A plan first, materialized once: each logged
   * key looked up once in the table by its primary key, in key order (neighbouring keys share index pages), giving the live row's version (ctid), what to do with it —
   * `r` delete it (its key was not in scope at capture: inserted since, or moved into scope), `o` overwrite it with its
   * pre-image (its bytes differ from the pre-image's), `m` re-insert the missing pre-image, nothing when the live row
   * already is its pre-image — and, for `r` and `o`, the live row's values. Then four data-modifying CTEs over the
   * plan, on disjoint keys: DELETE and UPDATE reach their row version by ctid (a TID scan, no second descent of the
   * index), INSERT adds the missing pre-images, and the quarantine receives every row deleted or overwritten, as the
   * plan read it. All of it in the statement's one snapshot, the table locked against writers: the rows kept are
   * exactly the rows replaced, which the caller checks by the counts (planned against written). `ONLY`: a ctid names
   * a row version within one relation; the table has no inheritance children (prepare refuses them).
   *
   * Equal means byte-for-byte (record_image_eq, `*=`): a row overwritten is one whose stored values differ from the
   * pre-image's; a restored row holds the undo row's values, so a rerun finds every row equal and writes nothing.
   * `sameAs`: with `verbatim` false, each row as written is compared with its pre-image in the checksum's text.
   */
  function fusedRestoreSql(p: Prepared, quarantine: string, all: string[], verbatim: boolean): string {
    const key = p.meta.primaryKey;
    const names = p.meta.columns.map((c) => c.name);
    const kind = `u.${ident(KIND)}`;
    const at = ident('etl_rollback$at');
    const act = ident('etl_rollback$act');
    const old = (i: number) => ident(`etl_rollback$old${i}`);
    const differs = p.update.length === 0 ? 'FALSE' : `NOT (ROW(${cols(p.update, 'l')})::record *= ROW(${cols(p.update, 'u')})::record)`;
    const plan = `SELECT ${cols(names, 'u')}, l.ctid AS ${at},
             CASE WHEN l.${ident(key[0]!)} IS NULL THEN CASE WHEN ${kind} = 'p' AND ${p.inScope('u')} THEN 'm' END
                  WHEN (${kind} = 'i' OR NOT ${p.inScope('u')}) AND ${p.inScope('l')} THEN 'r'
                  WHEN ${kind} = 'p' AND ${p.inScope('u')} AND ${differs} THEN 'o' END AS ${act},
             ${all.map((c, i) => `l.${ident(c)} AS ${old(i)}`).join(', ')}
        FROM (SELECT * FROM ${p.undo.sql} ORDER BY ${cols(key)}) AS u LEFT JOIN ONLY ${p.live.sql} AS l ON ${keyMatch(key, 'l', 'u')}`;
    const sameAs = (alias: string) => (verbatim ? 'true' : `${rowText(names, alias)} = ${rowText(names, 'p')}`);
    const set = p.update.map((c) => `${ident(c)} = p.${ident(c)}`).join(', ');
    const same = ident('etl_rollback$same');
    return `WITH plan AS MATERIALIZED (${plan}),
      gone AS (DELETE FROM ONLY ${p.live.sql} AS l USING plan AS p WHERE p.${act} = 'r' AND l.ctid = p.${at} RETURNING 1),
      ${
        p.update.length === 0
          ? `changed AS (SELECT true AS ${same} WHERE false),`
          : `changed AS (UPDATE ONLY ${p.live.sql} AS l SET ${set} FROM plan AS p WHERE p.${act} = 'o' AND l.ctid = p.${at} RETURNING ${sameAs('l')} AS ${same}),`
      }
      added AS (INSERT INTO ${p.live.sql} (${cols(p.write)})${p.overriding ? ' OVERRIDING SYSTEM VALUE' : ''} SELECT ${cols(p.write)} FROM plan WHERE ${act} = 'm' RETURNING ${verbatim ? cols(key) : cols(names)}),
      kept AS (INSERT INTO ${quarantine} (${cols(all)}) SELECT ${all.map((_, i) => old(i)).join(', ')} FROM plan WHERE ${act} IN ('r', 'o') RETURNING 1),
      tally AS (SELECT count(*) FILTER (WHERE ${act} = 'r') AS r, count(*) FILTER (WHERE ${act} = 'o') AS o, count(*) FILTER (WHERE ${act} = 'm') AS m FROM plan)
    SELECT t.r::text AS planned_r, t.o::text AS planned_o, t.m::text AS planned_m,
           (SELECT count(*) FROM gone)::text AS deleted, (SELECT count(*) FROM changed)::text AS updated,
           (SELECT count(*) FILTER (WHERE ${same}) FROM changed)::text AS updated_same,
           (SELECT count(*) FROM added)::text AS inserted,
           ${
             verbatim
               ? '(SELECT count(*) FROM added)::text AS inserted_same'
               : `(SELECT count(*) FILTER (WHERE ${sameAs('a')}) FROM added AS a JOIN plan AS p ON p.${act} = 'm' AND ${keyMatch(key, 'p', 'a')})::text AS inserted_same`
           },
           (SELECT count(*) FROM kept)::text AS kept
      FROM tally AS t`;
  }

  /** What the writes will do, in one pass over the undo log (each logged key looked up once in the table). */
  async function counts(client: pg.Client, p: Prepared): Promise<{ rowsDeleted: number; rowsUpdated: number; rowsInserted: number }> {
    const w = writeSql(p);
    const present = `l.${ident(p.meta.primaryKey[0]!)} IS NOT NULL`;
    const { rows } = await client.query<{ d: string; u: string; i: string }>(
      `SELECT count(*) FILTER (WHERE ${present} AND ${w.remove})::text AS d,
              count(*) FILTER (WHERE ${present} AND ${w.overwrite})::text AS u,
              count(*) FILTER (WHERE NOT ${present} AND u.${ident(KIND)} = 'p' AND ${p.inScope('u')})::text AS i
         FROM ${p.undo.sql} AS u LEFT JOIN ${p.live.sql} AS l ON ${w.join}`,
    );
    return { rowsDeleted: Number(rows[0]?.d ?? 0), rowsUpdated: Number(rows[0]?.u ?? 0), rowsInserted: Number(rows[0]?.i ?? 0) };
  }

  /**
   * Joins driven by the undo log. The log is usually a sliver of the table (the rows one deploy touched), and every
   * statement of the restore looks its keys up in the table. The planner does not know that: the undo table is never
   * analyzed (its size is guessed from its pages), and with the default random_page_cost (4, a spinning disk) it prices
   * key lookups above one (parallel) scan of the whole table, so it hashes the table to find 1% of it: the restore
   * would cost the table again. For the restore's own transaction only (SET LOCAL), and only when the log holds under
   * 5% of the table's rows, hash and merge joins are off: each logged key is looked up once through the primary key
   * (nested loops), and the restore costs the rows logged. Above 5% the planner chooses as usual.
   */
  async function preferKeyLookups(client: pg.Client, p: Prepared): Promise<void> {
    const settings = keyLookupSettings(p);
    if (settings.length > 0) await client.query(settings.join('; '));
  }

  function keyLookupSettings(p: Prepared): string[] {
    if (!fewOf(p.recorded.preImages + p.recorded.inserted, p.tableRows)) return [];
    // The restore's plan (fusedRestoreSql) holds a row per logged key: in memory, not spilled to a temporary file.
    return ['SET LOCAL enable_hashjoin = off', 'SET LOCAL enable_mergejoin = off', ...(p.workMem < 64 * 1024 ** 2 ? ["SET LOCAL work_mem = '64MB'"] : [])];
  }

  // -------------------------------------------------------------------------------------------------------------
  // Diff

  async function diff(unit: PostgresTableUnit, point: RestorePoint<CowDetails>, ctx: AdapterContext): Promise<Diff> {
    return withClient(ctx, point.details.connection, (client) =>
      inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async () => {
        const p = await prepare(client, unit, point, ctx);
        const notes = [...p.notes, `undo log: ${p.recorded.preImages} pre-image(s), ${p.recorded.inserted} inserted key(s) recorded since the capture`];
        if (p.bypass.length > 0) {
          notes.push(`copy-on-write check FAILED, the restore will fail and write nothing: ${p.bypass.join('; ')}; ${BACKSTOP}`);
        }
        const c = await counts(client, p);
        const sequences = p.scope.kind === 'table' ? await sequencesToReset(client, p.meta.sequences) : [];
        const rowsQuarantined = c.rowsDeleted + c.rowsUpdated;
        const changes = changesOf(c, { rowsQuarantined, schemaChanges: p.schema.changes.length, sequencesReset: sequences.length });
        if (p.schema.changes.length > 0) notes.push(`schema will be restored: ${p.schema.changes.join(', ')}`);
        if (sequences.length > 0) notes.push(`sequences will be set back: ${sequences.map((s) => `${s.name} to ${s.lastValue}`).join(', ')}`);
        return { changes, writes: total(changes), notes };
      }),
    );
  }

  // -------------------------------------------------------------------------------------------------------------
  // Restore

  /**
   * Overwrites the rows `update` (an UPDATE over live alias `l` and undo alias `u`) names; returns how many. A value
   * of a unique key the deploy moved between rows is put back one row at a time (updateInPasses), each row named by
   * its undo row; rows that swapped values (no order of updates works) are deleted and inserted again
   * (deleteAndInsert), unless rows of another table that reference them would be acted on by the delete: then the
   * restore fails, naming the rows.
   */
  async function overwriteInPasses(client: pg.Client, p: Prepared, unitId: string, update: string): Promise<number> {
    const w = writeSql(p, true);
    return updateInPasses(
      client,
      update,
      {
        pending: async () => (await client.query<{ t: string }>(`SELECT u.ctid::text AS t FROM ${p.undo.sql} AS u JOIN ${p.live.sql} AS l ON ${w.join} WHERE ${w.overwrite} ORDER BY ${cols(p.meta.primaryKey, 'u')}`)).rows.map((r) => r.t),
        one: 'u.ctid = $1::tid',
      },
      (tids) =>
        deleteAndInsert(
          client,
          p.live,
          p.meta.primaryKey,
          tids,
          { sql: p.undo.sql, alias: 'u', columns: p.write, overriding: p.overriding, only: true },
          (why, keys) =>
            new VerificationFailedError(
              `unit "${unitId}": copy-on-write restore of ${p.live.display} cannot put back ${tids.length} row(s) (keys ${keys}): the deploy swapped values of a unique key between them, ` +
                `so no order of updates can put them back, and ${why}. The restore was rolled back; nothing was written. ` +
                `Put those rows back by hand (the undo table ${p.undo.display} holds their pre-images), then rerun; or ${BACKSTOP}.`,
            ),
        ),
    );
  }

  /**
   * The restore. Its one statement (fusedRestoreSql) overwrites rows in key order, and PostgreSQL checks a unique
   * constraint row by row: when the deploy moved a value of a unique (non-primary) key from one row to another, the
   * row whose pre-image holds it may come before the row that holds it now, and the statement fails. Then (nothing
   * written: the transaction rolled back) the restore runs again `careful`: its writes one statement each, the
   * overwrites in passes (overwriteInPasses), and the whole scope counted and summed before the commit.
   */
  async function restore(unit: PostgresTableUnit, point: RestorePoint<CowDetails>, ctx: AdapterContext): Promise<Outcome> {
    return restoreOnce(unit, point, ctx, false).catch((error: unknown) => {
      if (!isUniqueViolation(error)) throw error;
      ctx.log.warn('postgres-table copy-on-write restore: a unique key collided between rows it overwrites; restoring again, one row at a time where they collide', { unit: unit.id });
      return restoreOnce(unit, point, ctx, true);
    });
  }

  async function restoreOnce(unit: PostgresTableUnit, point: RestorePoint<CowDetails>, ctx: AdapterContext, careful: boolean): Promise<Outcome> {
    const runId = ctx.runId;
    if (!runId) throw new PreflightError(`restore of unit "${unit.id}" needs the rollback run id (it names the quarantine table); none was given`);
    const d = point.details;
    return withClient(ctx, d.connection, (client) =>
      withRestoreLock(client, restoreLock, unit.id, d.table, () => inTransaction(client, 'BEGIN ISOLATION LEVEL READ COMMITTED', async () => {
        const [target] = await tableFacts(client, [d.table]);
        if (target && isTable(target)) {
          const live = target.columns;
          const drift = live.length !== d.columns.length || d.columns.some((c) => !live.some((l) => l.name === c.name && l.type === c.type));
          await lockTableWithin(client, target.sql, drift ? 'ACCESS EXCLUSIVE' : 'SHARE ROW EXCLUSIVE', restoreLock.timeoutMs);
        }
        const p = await prepare(client, unit, point, ctx, { userTriggers: parts.triggerMode === 'disable' });
        if (p.bypass.length > 0) {
          throw new VerificationFailedError(
            `unit "${unit.id}": copy-on-write restore point of ${p.live.display} cannot be trusted: ${p.bypass.join('; ')}. Nothing was written. ` +
              `The undo log misses changes, so this restore point cannot put the table back; ${BACKSTOP}.`,
          );
        }
        const notes = [...p.notes];
        const sequences = p.scope.kind === 'table' ? await sequencesToReset(client, p.meta.sequences) : [];
        const quarantineSpec = {
          runId,
          unitId: unit.id,
          live: p.live,
          scope: p.scope.describe,
          restorePoint: { deploymentId: p.meta.deploymentId, capturedAt: p.meta.capturedAt, undoTable: p.undo.display, capture: 'copy-on-write' },
        };
        const quarantine = () => ensureQuarantine(client, ctx, quarantineSpec);
        const all = p.columns.map((c) => c.name);
        const rowCount = async (sql: string) => (await client.query(sql)).rowCount ?? 0;
        const setFromUndo = p.update.map((c) => `${ident(c)} = u.${ident(c)}`).join(', ');
        const insertMissing = (ws: ReturnType<typeof writeSql>) =>
          `INSERT INTO ${p.live.sql} (${cols(p.write)})${p.overriding ? ' OVERRIDING SYSTEM VALUE' : ''} SELECT ${cols(p.write, 'u')} FROM ${p.undo.sql} AS u WHERE ${ws.missing}`;
        let keptAt: string | undefined;
        const names = p.meta.columns.map((c) => c.name);
        let rows: { rowsDeleted: number; rowsUpdated: number; rowsInserted: number; rowsQuarantined: number };
        /** The rows the fused writes wrote, and how many of them equal their pre-image. */
        let written: { updated: { n: number; same: number }; inserted: { n: number; same: number } } | undefined;
        /** The triggers and function as the fused writes left them (read in the same round trip). */
        let after: TriggerState | undefined;
        if (p.schema.changes.length === 0 && !careful) {
          // The usual case: one statement (see fusedRestoreSql). The restore's own writes are not business writes: user
          // triggers off (ours included: their undo inserts would all be conflicts anyway), put back before commit.
          const q = quarantineStatements(ctx, quarantineSpec);
          const triggers = parts.triggerMode === 'disable' ? await triggerSuspension(client, p.live, unit.id, p.userTriggers) : { disable: [], resume: [] };
          // Each row written is the undo row's values, verbatim, unless something on the table can rewrite it on the
          // way in: a user trigger left firing (triggers: 'fire'), a rule, a generated column. Then each row written is
          // compared, as written, with its pre-image in the text the checksum hashes. See the end-to-end check below.
          const verbatim = parts.triggerMode === 'disable' && !p.rules && !p.meta.columns.some((c) => c.generated);
          // One round trip: the quarantine table, the planner settings, the triggers off, the writes, the triggers
          // back as they were, and the catalog as that leaves it (recorded below). A failed check below rolls all of
          // it back.
          const settings = [...q.statements, ...keyLookupSettings(p)];
          const results = await batch(client, [
            ...settings,
            ...triggers.disable,
            fusedRestoreSql(p, q.sql, all, verbatim),
            ...triggers.resume,
            ...(p.meta.record ? [] : [triggerStateSql(p.live, p.meta.triggers.map((t) => t.name), p.meta.function.name)]),
          ]);
          const c = results[settings.length + triggers.disable.length]?.rows[0] as FusedCounts | undefined;
          if (!p.meta.record) after = triggerStateOf(results.at(-1)?.rows[0]);
          const n = (v: string | undefined) => Number(v ?? 0);
          const planned = { r: n(c?.planned_r), o: n(c?.planned_o), m: n(c?.planned_m) };
          const done = { d: n(c?.deleted), u: n(c?.updated), i: n(c?.inserted), k: n(c?.kept) };
          // Under the lock nothing else writes the table, so every planned write finds its row version. If one did
          // not (a BEFORE trigger left firing that skips rows), the table is not the capture: fail, write nothing.
          if (done.d !== planned.r || done.u !== planned.o || done.i !== planned.m || done.k !== planned.r + planned.o) {
            throw new VerificationFailedError(
              `unit "${unit.id}": copy-on-write restore of ${p.live.display} wrote other rows than it planned (deleted ${done.d} of ${planned.r}, overwrote ${done.u} of ${planned.o}, ` +
                `re-inserted ${done.i} of ${planned.m}, kept ${done.k} of ${planned.r + planned.o}): something on the table skipped or redirected the restore's writes. ` +
                `The restore was rolled back; nothing was written. ${BACKSTOP[0]!.toUpperCase()}${BACKSTOP.slice(1)}.`,
            );
          }
          const updated = { n: done.u, same: n(c?.updated_same) };
          const inserted = { n: done.i, same: n(c?.inserted_same) };
          const rowsDeleted = done.d;
          written = { updated, inserted };
          await resetSequences(client, sequences);
          rows = { rowsDeleted, rowsUpdated: updated.n, rowsInserted: inserted.n, rowsQuarantined: rowsDeleted + updated.n };
          // Nothing replaced (a rerun over a restored table): no quarantine table of this run is left behind.
          if (rowsDeleted + updated.n === 0 && !quarantineExisted(results[0])) await client.query(`DROP TABLE ${q.sql}`);
          else keptAt = q.display;
        } else {
          // The schema is put back too: keep what is about to be deleted or overwritten first, under the live columns,
          // then alter, then write. Dropping a column the deploy added changes every row: then every row is kept (as
          // in copy mode).
          await preferKeyLookups(client, p);
          const estimate = await counts(client, p);
          const w = writeSql(p);
          let rowsQuarantined = 0;
          if (estimate.rowsDeleted + estimate.rowsUpdated > 0 || p.schema.rewritesData) {
            const q = await quarantine();
            rowsQuarantined = await rowCount(
              p.schema.rewritesData
                ? `INSERT INTO ${q.sql} (${cols(all)}) SELECT ${cols(all, 'l')} FROM ${p.live.sql} AS l`
                : `INSERT INTO ${q.sql} (${cols(all)}) SELECT ${cols(all, 'l')} FROM ${p.live.sql} AS l JOIN ${p.undo.sql} AS u ON ${w.join} WHERE (${w.remove}) OR (${w.overwrite})`,
            );
            keptAt = q.display;
          }
          for (const step of p.schema.before) await client.query(step.sql);
          const saved = parts.triggerMode === 'disable' ? await suspendUserTriggers(client, p.live, unit.id) : [];
          const ws = writeSql(p, true);
          const rowsDeleted = await rowCount(`DELETE FROM ${p.live.sql} AS l USING ${p.undo.sql} AS u WHERE ${ws.join} AND ${ws.remove}`);
          const rowsUpdated = p.update.length === 0 ? 0 : await overwriteInPasses(client, p, unit.id, `UPDATE ${p.live.sql} AS l SET ${setFromUndo} FROM ${p.undo.sql} AS u WHERE ${ws.join} AND ${ws.overwrite}`);
          const rowsInserted = await rowCount(insertMissing(ws)).catch((error: unknown) => {
            if (!isUniqueViolation(error)) throw error;
            throw new VerificationFailedError(
              `unit "${unit.id}": copy-on-write restore of ${p.live.display} cannot re-insert a pre-image: ${(error as Error).message}${(error as { detail?: string }).detail ? ` (${(error as { detail?: string }).detail})` : ''}; ` +
                `a row the restore does not write holds that value now. The restore was rolled back; nothing was written. Free the value by hand, then rerun; or ${BACKSTOP}.`,
            );
          });
          await resumeUserTriggers(client, saved);
          for (const step of p.schema.after) await client.query(step.sql);
          await resetSequences(client, sequences);
          rows = { rowsDeleted, rowsUpdated, rowsInserted, rowsQuarantined };
        }
        const { rowsDeleted, rowsUpdated, rowsInserted, rowsQuarantined } = rows;

        // The end-to-end check: commit only a table equal to the capture. When the untouched rows are proven as
        // captured (the triggers intact by the catalog, or the pass over the table), the table is the capture exactly
        // when every logged key in scope holds its pre-image and no other logged key holds a row in scope. The fused
        // statement makes that so by construction, in one snapshot and under the lock, and its counts prove it was
        // carried out as planned: its DELETE removes every row at a logged key that must go; its UPDATE overwrites
        // every row whose bytes differ from its pre-image (so the rows it leaves are equal, compared in that same
        // statement); its INSERT adds every missing one. What remains is that each row written reads back as its pre-image: with nothing on the table that can
        // rewrite a row on its way in, the written values are the undo row's; otherwise (a BEFORE trigger left firing,
        // a rule, a generated column) every row is compared as it is written. Otherwise (no proof, or a schema
        // restore) the whole scope is counted and summed. Either way the stage's gate then counts and sums the whole
        // scope again, as for every unit.
        let now: { count: number; checksum: string };
        if (p.untouchedProven && written) {
          const bad = written.updated.n - written.updated.same + (written.inserted.n - written.inserted.same);
          now =
            bad === 0
              ? { count: p.meta.count, checksum: p.meta.checksum }
              : { count: p.meta.count, checksum: `not the capture's: ${written.updated.n - written.updated.same} overwritten and ${written.inserted.n - written.inserted.same} re-inserted row(s) do not read back as their pre-image` };
        } else {
          now = await countAndChecksum(client, p.scope.select(names), names);
        }
        if (now.count !== p.meta.count || now.checksum !== p.meta.checksum) {
          throw new VerificationFailedError(
            `unit "${unit.id}": copy-on-write restore of ${p.live.display} did not reproduce the restore point (count ${now.count}, expected ${p.meta.count}; ` +
              `checksum ${now.checksum}, expected ${p.meta.checksum}): changes were made that the triggers did not record. The restore was rolled back; nothing was written. ${BACKSTOP[0]!.toUpperCase()}${BACKSTOP.slice(1)}.`,
          );
        }
        await recordCatalog(client, p, after);
        if (p.schema.changes.length > 0) notes.push(`schema restored: ${p.schema.changes.join(', ')}`);
        if (sequences.length > 0) notes.push(`sequences set back: ${sequences.map((s) => `${s.name} to ${s.lastValue}`).join(', ')}`);
        notes.push(
          p.untouchedProven
            ? `verified in the restore transaction: ${now.count} rows (the restored rows equal their pre-images; the others are unchanged since the capture)`
            : `verified in the restore transaction: ${now.count} rows, checksum equal to the capture's`,
        );
        const changes = changesOf({ rowsInserted, rowsUpdated, rowsDeleted }, { rowsQuarantined, schemaChanges: p.schema.changes.length, sequencesReset: sequences.length });
        ctx.log.info('postgres-table restored from copy-on-write undo log', { unit: unit.id, table: p.live.display, ...changes, keptAt });
        return { changes, writes: total(changes), notes, ...(keptAt ? { keptAt } : {}) };
      })),
    );
  }

  /**
   * After a verified restore, still holding the table against writers: the restore's own disable and enable of the
   * triggers (and a rewrite the pass over the table found harmless) wrote new catalog rows. They are recorded as the
   * new reference, so that a later restore of this point can again prove the triggers intact without reading the table.
   * Nothing else can have changed them in between: ALTER TABLE … TRIGGER needs the lock this transaction holds.
   */
  async function recordCatalog(client: pg.Client, p: Prepared, read?: TriggerState): Promise<void> {
    if (p.meta.record) return;
    const state = read ?? (await triggerState(client, p.live, p.meta.triggers.map((t) => t.name), p.meta.function.name));
    const catalog = catalogOf(state);
    const filenode = state.filenode || p.meta.filenode;
    if (filenode === p.meta.filenode && JSON.stringify(catalog) === JSON.stringify(p.meta.catalog)) return;
    await client.query(`COMMENT ON TABLE ${p.undo.sql} IS ${literal(JSON.stringify({ ...p.meta, catalog, filenode }))}`);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Release

  async function release(unit: PostgresTableUnit, point: RestorePoint<CowDetails>, ctx: AdapterContext): Promise<void> {
    const d = point.details;
    await withClient(ctx, d.connection, (client) =>
      inTransaction(client, 'BEGIN', async () => {
        const undo = await findRelation(client, d.shadowTable);
        const meta = undo ? await readMeta(client, undo) : undefined;
        if (undo && (undo.schema !== ROLLBACK_SCHEMA || !meta || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || meta.checksum !== point.checksum)) {
          throw new PreflightError(`unit "${unit.id}": refusing to drop ${undo.display}: it is not the sealed undo table of this restore point. Inspect it and drop it by hand if it is not needed.`);
        }
        const deploymentId = meta?.deploymentId ?? ctx.deploymentId;
        const names = cowTriggerNames(ctx.pipeline, deploymentId, unit.id);
        const table = await findRelation(client, d.table);
        if (table && (!meta || table.oid === meta.tableOid)) {
          for (const name of Object.values(names)) await client.query(`DROP TRIGGER IF EXISTS ${ident(name)} ON ${table.sql}`);
        }
        const fn = meta?.function.name ?? `${ident(ROLLBACK_SCHEMA)}.${ident(`${undoTableName(ctx.pipeline, deploymentId, unit.id)}_fn`)}`;
        if (!meta?.record) await client.query(`DROP FUNCTION IF EXISTS ${fn}()`);
        if (undo) await client.query(`DROP TABLE ${undo.sql}`);
        ctx.log.info('postgres-table copy-on-write restore point released', { unit: unit.id, undoTable: d.shadowTable });
      }),
    );
  }

  return { capture, install, chooseDefault, diff, restore, release, undoRecord };
}

function changesOf(rows: { rowsInserted: number; rowsUpdated: number; rowsDeleted: number }, extra: { rowsQuarantined: number; schemaChanges: number; sequencesReset: number }): Changes {
  const changes: Changes = { rowsInserted: rows.rowsInserted, rowsUpdated: rows.rowsUpdated, rowsDeleted: rows.rowsDeleted };
  for (const [k, v] of Object.entries(extra)) if (v > 0) changes[k] = v;
  return changes;
}

const total = (c: Changes): number =>
  Object.entries(c)
    .filter(([k]) => k !== 'rowsQuarantined')
    .reduce((a, [, b]) => a + b, 0);
