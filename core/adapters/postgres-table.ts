import type pg from 'pg';
import { EtlRollbackError, InputError, PreflightError, RestorePointMissingError, VerificationFailedError } from '../errors.ts';
import type { PostgresTableUnit } from '../manifest/schema.ts';
import type { AdapterContext, CaptureResult, Changes, Check, Diff, InPlace, Outcome, RestorePoint, UnitAdapter } from './types.ts';
import type { Endpoint } from '../runtime/connections.ts';
import {
  checkSourceWindow,
  describeRds,
  tableAtTime,
  type PointInTimeSource,
} from './rds/temporary-copy.ts';
import { isoUtc } from './rds/window.ts';
import { runAssertions } from './postgres/assertions.ts';
import {
  definitionOf,
  findRelation,
  inboundForeignKeys,
  isTable,
  liveColumns,
  ownedSequences,
  primaryKeyOf,
  type LiveColumn,
  type OwnedSequence,
  type PostgresColumn,
  type Relation,
} from './postgres/catalog.ts';
import { captureTracking, changeDetection, type ChangeTracking } from './postgres/changes.ts';
import { countAndChecksum } from './postgres/checksum.ts';
import { COPY_ON_WRITE_ABOVE_BYTES, gib, RESTORE_LOCK, type TableLockWait } from './capture-modes.ts';
import { copyOnWrite, type CowDetails, type SealSlicing } from './postgres/copy-on-write.ts';
import { lockKey, ROLLBACK_SCHEMA, shadowTableName } from './postgres/names.ts';
import { refuseCascades } from './postgres/cascades.ts';
import { fewOf, keyLookups, planRows, replacedRows, replacedRowsJoined, withJoinsOff, writeRows, type ReloadPolicy, type RowPlan, type RowSet } from './postgres/rows.ts';
import { planSchemaRestore, type SchemaPlan } from './postgres/schema-restore.ts';
import { resolveScope, sameScope, scopeOfUnit, type Scope, type ScopeSpec } from './postgres/scope.ts';
import { resetSequences, sequencesToReset } from './postgres/sequences.ts';
import { cols, countOf, ensureQuarantine, ensureRollbackSchema, ident, inTransaction, keyMatch, literal, lockTableWithin, withClient, withFallback, withRestoreLock } from './postgres/sql.ts';
import { resumeUserTriggers, suspendUserTriggers, type TriggerMode } from './postgres/triggers.ts';

/**
 * A PostgreSQL table (or the part of it a `partition` / `where` scope names) as a rollback unit.
 *
 * Capture (copy mode) copies the rows in scope into a shadow table in the `etl_rollback` schema, in one REPEATABLE
 * READ transaction, with the table's definition (columns, defaults, NOT NULL, generated and identity columns, key)
 * and its owned sequences' positions, and seals it with a COMMENT holding that metadata.
 *
 * Restore, in one transaction: puts the captured definition back if the deploy altered it (ALTER TABLE, never a drop
 * or rename of the table, so views, grants, triggers, indexes and foreign keys stay attached), keeps every live row it
 * will replace in a quarantine table, writes the difference by primary key (or reloads the scope when most rows
 * differ), with the table's user triggers disabled (see postgres/triggers.ts), and sets the sequences back last.
 * Verify compares count and checksum over the scope and runs the unit's SQL assertions.
 */

export { ROLLBACK_SCHEMA, quarantineTableName, shadowTableName } from './postgres/names.ts';
export type { PostgresColumn } from './postgres/catalog.ts';
export type { TriggerMode } from './postgres/triggers.ts';

export type PostgresTableDetails = {
  /** Connection name from the manifest. */
  connection: string;
  /** The captured table, schema-qualified and quoted where needed (`public.orders`, `sales."Orders"`). */
  table: string;
  /** The shadow copy, `etl_rollback.rp_…`. */
  shadowTable: string;
  /** Primary key columns in key order; empty when the table has none (restore then reloads the scope). */
  primaryKey: string[];
  /** All columns in table order at capture, with their definitions: restore puts them back if the deploy altered them. */
  columns: PostgresColumn[];
  /** Transaction id of the capture transaction. */
  captureTxid?: string;
  /** The rows covered: `{}` the whole table, `{partition: [...]}` (resolved names) or `{where}`. */
  scope?: ScopeSpec;
  /** Owned sequences and their positions at capture (whole-table units only). */
  sequences?: OwnedSequence[];
  /**
   * How the point was taken; absent means `copy`. For `copy-on-write`, `shadowTable` names the undo table. For
   * `point-in-time` (a `--to` rollback), nothing was taken: `shadowTable` names the copy the restore fills with the
   * rows in scope read from a point-in-time copy of the database (see `pointInTime`), then restores from as a `copy`.
   */
  capture?: 'copy' | 'copy-on-write' | 'point-in-time';
  /** Set with `capture: 'point-in-time'`: the RDS instance or cluster and the time the rows are read at. */
  pointInTime?: PointInTimeSource;
};

/** Metadata written as JSON in the shadow table's COMMENT; its presence is what makes the copy sealed. */
type ShadowMeta = {
  tool: 'etl-rollback';
  kind: 'restore-point';
  /** 1: names and types only; 2: full column definitions, scope, sequences, table oid. */
  version: 1 | 2;
  pipeline: string;
  deploymentId: string;
  unitId: string;
  sourceTable: string;
  /** oid of the table at capture: tells a renamed column (same attnum) from a table dropped and made again. */
  tableOid?: number;
  capturedAt: string;
  count: number;
  checksum: string;
  primaryKey: string[];
  columns: PostgresColumn[];
  scope?: ScopeSpec;
  sequences?: OwnedSequence[];
  captureTxid: string;
  /** Capture snapshot's xmin (xid8) and relfilenodes, for change detection at restore (postgres/changes.ts). */
  tracking?: ChangeTracking;
  sealed: true;
};

export interface PostgresTableOptions {
  /** User triggers during a restore: `'disable'` (default) or `'fire'`. See postgres/triggers.ts. */
  triggers?: TriggerMode;
  /** When a restore reloads the scope instead of writing the difference. */
  reload?: Partial<ReloadPolicy>;
  /** A unit without `capture` is captured copy-on-write when its table is at least this large (bytes) and eligible. */
  copyOnWriteAbove?: number;
  /** How long a copy-on-write install waits for its table lock, and how often it tries (default INSTALL_LOCK). */
  installLock?: TableLockWait;
  /** The same for a restore's table lock, in either mode (default RESTORE_LOCK). */
  restoreLock?: TableLockWait;
}

/** Default reload policy: more than half of at least 1,000 rows in scope differ. */
export const DEFAULT_RELOAD_POLICY: ReloadPolicy = { fraction: 0.5, minRows: 1000, truncate: true };

async function findShadow(client: pg.Client, name: string): Promise<Relation | undefined> {
  return findRelation(client, `${ROLLBACK_SCHEMA}.${name}`);
}

async function readShadowMeta(client: pg.Client, shadow: Relation): Promise<ShadowMeta | undefined> {
  const { rows } = await client.query<{ comment: string | null }>("SELECT pg_catalog.obj_description($1::oid, 'pg_class') AS comment", [shadow.oid]);
  const text = rows[0]?.comment;
  if (!text) return undefined;
  try {
    const meta = JSON.parse(text) as Partial<ShadowMeta>;
    return meta.tool === 'etl-rollback' && meta.kind === 'restore-point' && meta.sealed === true ? (meta as ShadowMeta) : undefined;
  } catch {
    return undefined;
  }
}

const total = (c: Changes): number =>
  Object.entries(c)
    .filter(([k]) => k !== 'rowsQuarantined')
    .reduce((a, [, b]) => a + b, 0);

function describeDrift(captured: PostgresColumn[], live: PostgresColumn[]): string[] {
  const problems: string[] = [];
  const liveByName = new Map(live.map((c) => [c.name, c]));
  const capturedByName = new Map(captured.map((c) => [c.name, c]));
  for (const c of captured) {
    const now = liveByName.get(c.name);
    if (!now) problems.push(`column "${c.name}" (${c.type}) was dropped`);
    else if (now.type !== c.type) problems.push(`column "${c.name}" changed type from ${c.type} to ${now.type}`);
  }
  for (const c of live) if (!capturedByName.has(c.name)) problems.push(`column "${c.name}" (${c.type}) was added`);
  return problems;
}

/** Does the live definition differ from the captured one in anything a restore would ALTER? */
function definitionDrift(captured: PostgresColumn[], live: LiveColumn[]): boolean {
  if (captured.length !== live.length) return true;
  const byName = new Map(live.map((l) => [l.name, definitionOf(l)]));
  return captured.some((c) => {
    const l = byName.get(c.name);
    if (!l) return true;
    return (Object.keys(c) as (keyof PostgresColumn)[]).some((k) => k !== 'attnum' && c[k] !== l[k]);
  });
}

/** Rows read from the point-in-time copy per round trip (a cursor on the copy, one INSERT per batch in production). */
const EXTRACT_BATCH_ROWS = 5000;

/** The adapter's own type: its capture never pends (a shadow copy is made in one transaction). */
export type PostgresTableAdapter = Omit<UnitAdapter<PostgresTableUnit, PostgresTableDetails>, 'capture' | 'install' | 'undoRecord'> & {
  capture(unit: PostgresTableUnit, ctx: AdapterContext): Promise<RestorePoint<PostgresTableDetails>>;
  install(unit: PostgresTableUnit, ctx: AdapterContext): Promise<InPlace | undefined>;
  undoRecord(unit: PostgresTableUnit, ctx: AdapterContext, restoring?: RestorePoint<PostgresTableDetails>): Promise<RestorePoint<PostgresTableDetails>>;
  /**
   * The data path of a point-in-time restore alone, against a database already standing at `endpoint` (the temporary
   * copy, or any database holding the table as it was): extract the unit's rows, merge them, verify. What `restore`
   * does once the copy is available; exported for the benchmark.
   */
  mergeFromCopy(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext, endpoint: Endpoint): Promise<Outcome>;
};

function postgresTable(options: PostgresTableOptions & { sealing?: SealSlicing }) {
  const triggerMode: TriggerMode = options.triggers ?? 'disable';
  const policy: ReloadPolicy = { ...DEFAULT_RELOAD_POLICY, ...options.reload };
  const restoreLock = options.restoreLock ?? RESTORE_LOCK;
  const cow = copyOnWrite({
    triggerMode,
    restoreLock,
    ...(options.sealing ? { slicing: options.sealing } : {}),
    ...(options.installLock ? { installLock: options.installLock } : {}),
  });
  const copyOnWriteAbove = options.copyOnWriteAbove ?? COPY_ON_WRITE_ABOVE_BYTES;
  const isCow = (point: RestorePoint<PostgresTableDetails>): point is RestorePoint<PostgresTableDetails & CowDetails> => point.details.capture === 'copy-on-write';
  const isPitr = (point: RestorePoint<PostgresTableDetails>): boolean => point.details.capture === 'point-in-time';
  /** Why this mode: the plan and the dry run say it. */
  const modeNote = (unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>): string[] => {
    // Without `capture` the mode follows the table's size at capture: either is as asked.
    if (unit.capture === undefined) return [];
    const used = point.details.capture ?? 'copy';
    return unit.capture === used ? [] : [`the unit now asks for capture: ${unit.capture}, but this restore point was taken with capture: ${used}; it is restored as taken`];
  };

  // -------------------------------------------------------------------------------------------------------------
  // Capture

  function pointFromMeta(unit: PostgresTableUnit, meta: ShadowMeta, shadow: Relation): RestorePoint<PostgresTableDetails> {
    return {
      unitId: unit.id,
      type: 'postgres-table',
      capturedAt: meta.capturedAt,
      count: meta.count,
      checksum: meta.checksum,
      details: {
        connection: unit.connection,
        table: meta.sourceTable,
        shadowTable: shadow.display,
        primaryKey: meta.primaryKey,
        columns: meta.columns,
        captureTxid: meta.captureTxid,
        ...(meta.scope ? { scope: meta.scope } : {}),
        ...(meta.sequences ? { sequences: meta.sequences } : {}),
      },
    };
  }

  /** Copy-on-write units only (explicit, or the default for a large table): the triggers in place, the seal to follow. */
  async function install(unit: PostgresTableUnit, ctx: AdapterContext): Promise<InPlace | undefined> {
    if (unit.capture === 'copy-on-write') return cow.install(unit, ctx);
    if (unit.capture !== undefined) return undefined;
    const chosen = await cow.chooseDefault(unit, ctx, copyOnWriteAbove);
    return chosen ? cow.install(unit, ctx, chosen) : undefined;
  }

  /** A restore point; pending only between the slices of a sliced copy-on-write seal (`sealing`). */
  async function capture(unit: PostgresTableUnit, ctx: AdapterContext): Promise<CaptureResult<PostgresTableDetails>> {
    if (unit.capture === 'copy-on-write') return cow.capture(unit, ctx);
    if (unit.capture === undefined) {
      const chosen = await cow.chooseDefault(unit, ctx, copyOnWriteAbove);
      if (chosen) return cow.capture(unit, ctx, chosen);
    }
    return copy(unit, ctx);
  }

  /** The copy mode's capture: a sealed shadow copy, in one transaction. */
  async function copy(unit: PostgresTableUnit, ctx: AdapterContext): Promise<RestorePoint<PostgresTableDetails>> {
    const shadowName = shadowTableName(ctx.pipeline, ctx.deploymentId, unit.id);
    return withClient(ctx, unit.connection, async (client) => {
      await ensureRollbackSchema(client);
      // Session lock, taken before the snapshot: a concurrent capture of the same point waits, then finds it sealed.
      await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [lockKey(shadowName)]);
      try {
        const point = await inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ', async () => {
          const existing = await findShadow(client, shadowName);
          if (existing) {
            const meta = await readShadowMeta(client, existing);
            if (!meta || meta.pipeline !== ctx.pipeline || meta.deploymentId !== ctx.deploymentId || meta.unitId !== unit.id) {
              throw new PreflightError(
                `${existing.display} exists but is not the sealed restore point of unit "${unit.id}" in deployment ` +
                  `"${ctx.deploymentId}" of pipeline "${ctx.pipeline}"; it was not made by etl-rollback or was altered. ` +
                  'Inspect it, drop it if it is not needed, and capture again.',
              );
            }
            ctx.log.info('postgres-table restore point already sealed; not copying again', { unit: unit.id, shadowTable: existing.display });
            return pointFromMeta(unit, meta, existing);
          }

          const source = await findRelation(client, unit.table);
          if (!source || !isTable(source)) {
            throw new PreflightError(
              source
                ? `unit "${unit.id}": ${source.display} is not a table (relkind ${source.kind}); only tables can be captured. Point the unit at the underlying table.`
                : `unit "${unit.id}": table "${unit.table}" does not exist on connection "${unit.connection}". Check the unit's table name (schema.table) and the connection's database.`,
            );
          }
          const columns = await liveColumns(client, source.oid);
          if (columns.length === 0) {
            throw new PreflightError(`unit "${unit.id}": table ${source.display} has no columns; there is nothing to capture.`);
          }
          const { scope, recorded } = await resolveScope(client, source, scopeOfUnit(unit), unit.id);
          const primaryKey = await primaryKeyOf(client, source.oid);
          const names = columns.map((c) => c.name);
          const shadowSql = `${ident(ROLLBACK_SCHEMA)}.${ident(shadowName)}`;

          // LIKE without INCLUDING GENERATED/IDENTITY/DEFAULTS/CONSTRAINTS: plain columns of the same types (NOT NULL
          // kept), so generated and identity values are copied verbatim and nothing in the copy can reject a row.
          await client.query(`CREATE TABLE ${shadowSql} (LIKE ${source.sql})`);
          try {
            await client.query(`INSERT INTO ${shadowSql} (${cols(names)}) ${scope.select(names)}`);
          } catch (error) {
            if (unit.where === undefined) throw error;
            const reason = error instanceof Error ? error.message : String(error);
            throw new PreflightError(`unit "${unit.id}": its "where" predicate (${unit.where}) fails on ${source.display}: ${reason}. Nothing was captured; fix the predicate.`);
          }
          // Index the copy by the table's key: every restore and diff looks rows up by key in it, and without an
          // index those lookups are nested scans (quadratic in the table's size: minutes at 20,000 rows).
          if (primaryKey.length > 0) await client.query(`CREATE UNIQUE INDEX ON ${shadowSql} (${cols(primaryKey)})`);
          await client.query(`ANALYZE ${shadowSql}`);
          const { count, checksum } = await countAndChecksum(client, `SELECT * FROM ${shadowSql}`, names);
          const { rows: tx } = await client.query<{ txid: string }>('SELECT txid_current()::text AS txid');
          const tracking = await captureTracking(client, source);
          // Sequence positions only for a whole-table unit: a part of a table shares its sequences with the rest,
          // whose rows may hold values issued after the capture (restore must not hand them out again).
          const sequences = scope.kind === 'table' ? await ownedSequences(client, source.oid) : [];

          const meta: ShadowMeta = {
            tool: 'etl-rollback',
            kind: 'restore-point',
            version: 2,
            pipeline: ctx.pipeline,
            deploymentId: ctx.deploymentId,
            unitId: unit.id,
            sourceTable: source.display,
            tableOid: source.oid,
            capturedAt: ctx.now().toISOString(),
            count,
            checksum,
            primaryKey,
            columns: columns.map(definitionOf),
            scope: recorded,
            sequences,
            captureTxid: tx[0]?.txid ?? '',
            tracking,
            sealed: true,
          };
          // Written last, in the same transaction: a shadow table without this comment cannot exist.
          await client.query(`COMMENT ON TABLE ${shadowSql} IS ${literal(JSON.stringify(meta))}`);
          const shadow = await findShadow(client, shadowName);
          if (!shadow) throw new Error(`shadow table ${ROLLBACK_SCHEMA}.${shadowName} vanished inside its own capture transaction`);
          ctx.log.info('postgres-table restore point captured', { unit: unit.id, table: source.display, shadowTable: shadow.display, count, scope: scope.describe });
          return pointFromMeta(unit, meta, shadow);
        });
        // The copy's first reader after its commit would set the hint bit of every row (writing every page again), and
        // without a visibility map its index-only scans fetch every heap page: let that reader be the capture, not
        // the restore on the day it is needed. VACUUM (outside the transaction, idempotent) does both; the restore's
        // merge of the copy's key index against the table's (the deleted keys) then reads only the two indexes. Best
        // effort: a VACUUM that cannot run (a lock, a cancel) costs the restore time, never correctness.
        await client.query(`VACUUM ${point.details.shadowTable}`).catch((error: unknown) => {
          ctx.log.warn('postgres-table restore point not vacuumed; its first restore sets its hint bits instead', {
            unit: unit.id,
            shadowTable: point.details.shadowTable,
            reason: error instanceof Error ? error.message : String(error),
          });
        });
        return point;
      } finally {
        await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [lockKey(shadowName)]).catch(() => undefined);
      }
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Preflight shared by diff and restore

  interface Prepared {
    live: Relation;
    shadow: Relation;
    meta: ShadowMeta;
    columns: LiveColumn[];
    scope: Scope;
    schema: SchemaPlan;
    /** Why a reload is impossible (foreign keys reference the table, triggers fire), or undefined. */
    reloadBlockedBy: string | undefined;
    /** Change detection's predicate when valid (postgres/changes.ts); absent: every row is compared. */
    changed?: (alias: string) => string;
    notes: string[];
  }

  async function prepare(
    client: pg.Client,
    unit: PostgresTableUnit,
    point: RestorePoint<PostgresTableDetails>,
    ctx: AdapterContext,
    bound: 'own' | 'snapshot',
  ): Promise<Prepared> {
    const d = point.details;
    const shadow = await findRelation(client, d.shadowTable);
    if (!shadow) {
      throw new RestorePointMissingError(
        `unit "${unit.id}": the shadow copy ${d.shadowTable} of the restore point is gone (released or dropped); ` +
          'this point cannot be restored. Pick another deployment\'s restore point.',
      );
    }
    const meta = await readShadowMeta(client, shadow);
    if (!meta || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || meta.checksum !== point.checksum || meta.count !== point.count) {
      throw new RestorePointMissingError(
        `unit "${unit.id}": ${shadow.display} is not the sealed copy this restore point describes ` +
          `(expected ${point.count} rows, checksum ${point.checksum}); refusing to restore from it.`,
      );
    }
    const live = await findRelation(client, d.table);
    if (!live || !isTable(live)) {
      throw new PreflightError(
        `unit "${unit.id}": table ${d.table} ${live ? 'is no longer a table' : 'no longer exists'} on connection "${d.connection}". ` +
          'Restoring a dropped or replaced table is not supported yet: recreate it with the captured columns, then rerun.',
      );
    }
    const notes: string[] = [];
    const columns = await liveColumns(client, live.oid);
    const primaryKey = await primaryKeyOf(client, live.oid);
    const problems: string[] = [];
    if (primaryKey.join('\u0000') !== meta.primaryKey.join('\u0000')) {
      const show = (k: string[]) => (k.length ? `(${k.join(', ')})` : 'none');
      problems.push(`primary key changed from ${show(meta.primaryKey)} to ${show(primaryKey)}; put the captured key back by hand, then rerun`);
    }
    // The restore point's scope is what the shadow copy holds: it, not the unit as edited since, is restored.
    const spec = meta.scope ?? {};
    const { scope } = await resolveScope(client, live, spec, unit.id);
    const asked = await resolveScope(client, live, scopeOfUnit(unit), unit.id).catch(() => undefined);
    if (asked && !sameScope(asked.recorded, spec)) notes.push(`the unit's scope changed since the capture; restoring the captured scope: ${scope.describe}`);
    if (scope.kind !== 'table') notes.push(`scope: ${scope.describe}`);

    const schema = await planSchemaRestore(client, live, meta.columns, columns, { sameTable: meta.tableOid === live.oid, primaryKey: meta.primaryKey });
    problems.push(...schema.refusals);
    if (schema.changes.length > 0 && scope.kind !== 'table') {
      problems.push(
        `the deploy altered the table (${schema.changes.join(', ')}), but this unit covers only ${scope.describe}: a table's columns are shared by ` +
          'all its rows, so restoring them would change rows outside the scope. Restore the table with an unscoped unit, or revert the schema change first',
      );
    }
    if (problems.length > 0) {
      throw new PreflightError(`unit "${unit.id}": cannot restore ${live.display}: ${problems.join('; ')}. Nothing was written.`);
    }

    const inbound = await inboundForeignKeys(client, live.oid);
    const reloadBlockedBy =
      inbound.length > 0 ? `referenced by foreign key ${inbound.join(', ')}` : triggerMode === 'fire' ? 'user triggers are set to fire, and a reload would fire them for every row' : undefined;
    if (scope.kind !== 'table' && (await ownedSequences(client, live.oid)).length > 0) {
      notes.push('sequence positions are left as they are: the unit covers part of the table, whose other rows may hold values issued since the capture');
    }
    let changed: ((alias: string) => string) | undefined;
    if (meta.primaryKey.length > 0) {
      const detection = await changeDetection(client, live, meta.tracking, { sameTable: meta.tableOid === live.oid, schemaChanged: schema.changes.length > 0, bound });
      if (detection.ok) changed = detection.predicate;
      notes.push(detection.note);
    }
    return { live, shadow, meta, columns, scope, schema, reloadBlockedBy, notes, ...(changed ? { changed } : {}) };
  }

  /** The rows to compare and write. Before the schema is restored, `schema.compare` says how to compare; after, by name. */
  function rowSet(p: Prepared, afterSchema: LiveColumn[] | undefined): RowSet {
    const captured = p.meta.columns;
    const key = p.meta.primaryKey;
    const now = new Map((afterSchema ?? p.columns).map((c) => [c.name, c]));
    const generated = (c: PostgresColumn) => (c.generated !== undefined ? c.generated !== null : (now.get(c.name)?.isGenerated ?? false));
    const always = (c: PostgresColumn) => (afterSchema ? (now.get(c.name)?.identityAlways ?? false) : c.identity === 'always' || (now.get(c.name)?.identityAlways ?? false));
    const pair = (name: string) =>
      afterSchema ? { live: `l.${ident(name)}`, shadow: `s.${ident(name)}` } : (p.schema.compare.get(name) ?? { live: `l.${ident(name)}`, shadow: `s.${ident(name)}` });
    const writable = captured.filter((c) => !generated(c));
    return {
      live: p.live,
      shadow: p.shadow.sql,
      key,
      scope: p.scope,
      write: writable.map((c) => c.name),
      update: writable.filter((c) => !key.includes(c.name) && !always(c)).map((c) => ({ name: c.name, ...pair(c.name) })),
      alwaysIdentity: writable.filter((c) => !key.includes(c.name) && always(c)).map((c) => pair(c.name)),
      overriding: writable.some((c) => always(c)),
      allReplaced: p.schema.rewritesData,
      sameTypes: afterSchema !== undefined || p.schema.changes.length === 0,
      ...(p.changed ? { changed: p.changed } : {}),
    };
  }

  function strategyNote(plan: RowPlan): string {
    const how = plan.strategy === 'diff' ? 'the rows that differ are written by primary key' : plan.truncate ? 'TRUNCATE, then the captured rows inserted' : 'the rows in scope deleted, then the captured rows inserted';
    return `strategy: ${plan.strategy} (${plan.reason}; ${how})`;
  }

  function changesOf(rows: { rowsInserted: number; rowsUpdated: number; rowsDeleted: number }, extra: { rowsQuarantined: number; schemaChanges: number; sequencesReset: number }): Changes {
    // The three row counters always; the others only when not zero (absent means none).
    const changes: Changes = { rowsInserted: rows.rowsInserted, rowsUpdated: rows.rowsUpdated, rowsDeleted: rows.rowsDeleted };
    for (const [k, v] of Object.entries(extra)) if (v > 0) changes[k] = v;
    return changes;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Diff

  async function diff(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<Diff> {
    if (isPitr(point)) return atTime.diff(unit, point, ctx);
    if (isCow(point)) {
      const out = await cow.diff(unit, point, ctx);
      return { ...out, notes: [...modeNote(unit, point), ...out.notes] };
    }
    return withClient(ctx, point.details.connection, (client) =>
      inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async () => {
        const p = await prepare(client, unit, point, ctx, 'snapshot');
        const plan = await planRows(client, rowSet(p, undefined), point.count, policy, p.reloadBlockedBy);
        if (plan.refusal) throw identityConflictError(unit, p, plan.refusal);
        const sequences = p.scope.kind === 'table' ? await sequencesToReset(client, p.meta.sequences ?? []) : [];
        const changes = changesOf(plan, { rowsQuarantined: plan.rowsQuarantined, schemaChanges: p.schema.changes.length, sequencesReset: sequences.length });
        const writes = total(changes);
        const why = unit.capture === 'copy' ? 'the unit sets capture: copy' : `the default for a table under ${gib(copyOnWriteAbove)}, or one copy-on-write cannot protect; the unit does not set capture`;
        const notes = [`capture: copy (${why}): shadow copy ${p.shadow.display}`, ...modeNote(unit, point), ...p.notes];
        if (p.schema.changes.length > 0) {
          notes.push(`schema will be restored: ${p.schema.changes.join(', ')}`);
          notes.push('row counts are estimated: they are measured exactly once the schema is restored');
        }
        if (p.meta.primaryKey.length === 0) notes.push(noPkNote(p, plan));
        if (plan.rowsInserted + plan.rowsUpdated + plan.rowsDeleted > 0) notes.push(strategyNote(plan));
        if (sequences.length > 0) notes.push(`sequences will be set back: ${sequences.map((s) => `${s.name} to ${s.lastValue}`).join(', ')}`);
        return { changes, writes, notes };
      }),
    );
  }

  function noPkNote(p: Prepared, plan: RowPlan): string {
    return plan.rowsDeleted + plan.rowsInserted === 0
      ? `no primary key on ${p.live.display}: compared whole rows; the table already equals its restore point`
      : `no primary key on ${p.live.display}: full reload (all ${plan.rowsDeleted} live rows in scope replaced by the ${plan.rowsInserted} captured rows)`;
  }

  function identityConflictError(unit: PostgresTableUnit, p: Prepared, refusal: string): PreflightError {
    return new PreflightError(
      `unit "${unit.id}": ${p.live.display}: ${refusal}; nothing was written. ` +
        'Change the column to GENERATED BY DEFAULT (ALTER TABLE … ALTER COLUMN … SET GENERATED BY DEFAULT), then rerun.',
    );
  }

  // -------------------------------------------------------------------------------------------------------------
  // Restore

  async function restore(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<Outcome> {
    if (!ctx.runId) {
      throw new InputError(`restore of unit "${unit.id}" needs the rollback run id (it names the quarantine table); none was given`);
    }
    if (isPitr(point)) return atTime.restore(unit, point, ctx);
    if (isCow(point)) return cow.restore(unit, point, ctx);
    const runId = ctx.runId;
    const d = point.details;
    return withClient(ctx, d.connection, async (client) => {
      try {
        return await withRestoreLock(client, restoreLock, unit.id, d.table, () => inTransaction(client, 'BEGIN ISOLATION LEVEL READ COMMITTED', async () => {
          const target = await findRelation(client, d.table);
          if (target && isTable(target)) {
            // SHARE ROW EXCLUSIVE blocks writers (and other restores of this table) until commit; readers go on
            // reading the old rows. Altering columns needs ACCESS EXCLUSIVE: taken up front, never upgraded later.
            const drift = definitionDrift(d.columns, await liveColumns(client, target.oid));
            await lockTableWithin(client, target.sql, drift ? 'ACCESS EXCLUSIVE' : 'SHARE ROW EXCLUSIVE', restoreLock.timeoutMs);
          }
          const p = await prepare(client, unit, point, ctx, 'own');
          const notes = [...p.notes];

          // 1. What the rows look like against the definition as it is now (the quarantine keeps them so). With
          // change detection, the flagged rows and the missing keys are found once, here, for every statement below.
          // The table is locked against writers (and VACUUM), so the flagged rows keep their ctids until this
          // transaction's own UPDATE, the last statement that reads them.
          let before = rowSet(p, undefined);
          if (p.changed && p.schema.changes.length === 0 && p.meta.primaryKey.length > 0) {
            const key = p.meta.primaryKey;
            await client.query(`CREATE TEMPORARY TABLE etlrb_flagged ON COMMIT DROP AS SELECT l.ctid AS t FROM ${p.live.sql} AS l WHERE ${p.changed('l')}`);
            // Both sides are whole-key indexes in the same order: a merge anti-join reads each once, in order (the copy
            // is vacuumed at capture, so index-only), where the planner would rather hash a million keys.
            await withJoinsOff(client, ['hashjoin'], () =>
              client.query(
                `CREATE TEMPORARY TABLE etlrb_missing ON COMMIT DROP AS SELECT ${cols(key, 's')} FROM ${p.shadow.sql} AS s WHERE NOT EXISTS (SELECT 1 FROM ${p.live.sql} AS l WHERE ${keyMatch(key, 'l', 's')})`,
              ),
            );
            await client.query('ANALYZE etlrb_missing');
            const flaggedTids = 'ARRAY(SELECT t FROM etlrb_flagged)';
            const { rows: flagged } = await client.query<{ n: number; live: number }>(
              // The planner's row count of the table, or a count where it has none (never analyzed).
              `SELECT (SELECT count(*)::int FROM etlrb_flagged) AS n,
                      (SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE (SELECT count(*) FROM ${p.live.sql}) END FROM pg_catalog.pg_class c WHERE c.oid = $1)::int AS live`,
              [p.live.oid],
            );
            const flaggedCount = flagged[0]?.n ?? 0;
            // A few flagged rows: each reached by its ctid and looked up by key. Most of the table (a deploy that
            // rewrote it): the transaction-id test again in each statement, whose joins then hash or merge both sides.
            before =
              fewOf(flaggedCount, flagged[0]?.live ?? 1)
                ? { ...before, changed: (a: string) => `${a}.ctid = ANY (${flaggedTids})`, flaggedTids, missing: 'etlrb_missing', flaggedCount }
                : { ...before, missing: 'etlrb_missing', flaggedCount };
          }
          const estimate = await planRows(client, before, point.count, policy, p.reloadBlockedBy, { countQuarantine: false });
          // Without schema changes the estimate is the plan: refuse now, before anything is written.
          if (estimate.refusal && p.schema.changes.length === 0) throw identityConflictError(unit, p, estimate.refusal);
          const sequences = p.scope.kind === 'table' ? await sequencesToReset(client, p.meta.sequences ?? []) : [];
          if (!estimate.refusal && estimate.rowsInserted + estimate.rowsUpdated + estimate.rowsDeleted === 0 && p.schema.changes.length === 0 && sequences.length === 0) {
            ctx.log.info('postgres-table already equals its restore point; nothing written', { unit: unit.id, table: p.live.display });
            if (p.meta.primaryKey.length === 0) notes.push(noPkNote(p, estimate));
            return { changes: changesOf(estimate, { rowsQuarantined: 0, schemaChanges: 0, sequencesReset: 0 }), writes: 0, notes };
          }

          // 2. Keep the rows about to be replaced, with the columns they have now.
          let keptAt: string | undefined;
          let rowsQuarantined = 0;
          // Rows go (deleted, or all of the scope for a reload) or are overwritten: keep them, counting as it keeps.
          if (estimate.rowsDeleted + estimate.rowsUpdated > 0 || before.allReplaced) {
            const q = await ensureQuarantine(client, ctx, {
              runId,
              unitId: unit.id,
              live: p.live,
              scope: p.scope.describe,
              restorePoint: { deploymentId: p.meta.deploymentId, capturedAt: p.meta.capturedAt, shadowTable: p.shadow.display },
            });
            const all = p.columns.map((c) => c.name);
            const replaced = keyLookups(before, estimate.inScope) ? `FROM ${p.live.sql} AS l WHERE ${replacedRows(before)}` : replacedRowsJoined(before);
            rowsQuarantined = (await client.query(`INSERT INTO ${q.sql} (${cols(all)}) SELECT ${cols(all, 'l')} ${replaced}`)).rowCount ?? 0;
            // Nothing replaced after all (a reload whose rows all equal the capture's): no empty quarantine left behind.
            if (rowsQuarantined === 0 && !q.existed) await client.query(`DROP TABLE ${q.sql}`);
            else keptAt = q.display;
          }

          // 3. The captured definition, if the deploy altered it.
          let plan = estimate;
          let rows = before;
          if (p.schema.changes.length > 0) {
            const fellBack: string[] = [];
            for (const step of p.schema.before) {
              if (step.fallback) {
                if ((await withFallback(client, step.sql, step.fallback)) === 'fallback') fellBack.push(step.sql);
              } else {
                await client.query(step.sql);
              }
            }
            if (fellBack.length > 0) notes.push(`some live values could not be cast back (${fellBack.length} column(s)); those columns were rewritten from the restore point`);
            rows = { ...rowSet(p, await liveColumns(client, p.live.oid)), allReplaced: false };
            plan = await planRows(client, rows, point.count, policy, p.reloadBlockedBy);
          }
          if (plan.refusal) throw identityConflictError(unit, p, plan.refusal);
          await refuseCascades(client, rows, plan, unit.id);

          // 4. The rows, with the table's user triggers off (a restore is not a business write).
          const saved = triggerMode === 'disable' ? await suspendUserTriggers(client, p.live, unit.id) : [];
          const written = await writeRows(client, rows, plan);
          await resumeUserTriggers(client, saved);
          for (const step of p.schema.after) await client.query(step.sql);

          // 5. Sequences last: setval is not transactional (see postgres/sequences.ts).
          await resetSequences(client, sequences);

          if (p.schema.changes.length > 0) notes.push(`schema restored: ${p.schema.changes.join(', ')}`);
          if (p.meta.primaryKey.length === 0) notes.push(noPkNote(p, plan));
          if (written.rowsInserted + written.rowsUpdated + written.rowsDeleted > 0) notes.push(strategyNote(plan));
          if (sequences.length > 0) notes.push(`sequences set back: ${sequences.map((s) => `${s.name} to ${s.lastValue}`).join(', ')}`);
          const changes = changesOf(written, { rowsQuarantined, schemaChanges: p.schema.changes.length, sequencesReset: sequences.length });
          ctx.log.info('postgres-table restored', { unit: unit.id, table: p.live.display, strategy: plan.strategy, ...changes, keptAt });
          return { changes, writes: total(changes), notes, ...(keptAt ? { keptAt } : {}) };
        }));
      } catch (error) {
        if (error instanceof EtlRollbackError) throw error;
        const reason = error instanceof Error ? error.message : String(error);
        throw new Error(
          `restore of unit "${unit.id}" (table ${d.table}) failed and was rolled back, nothing was written: ${reason}. ` +
            'Fix the cause (a constraint, trigger or foreign key added since the capture, or a lock timeout), then rerun the rollback.',
          { cause: error },
        );
      }
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Verify

  async function verify(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<Check[]> {
    if (isPitr(point)) {
      const copy = await sealedCopyOf(unit, point, ctx);
      if (copy) return verify(unit, copy, ctx);
      const detail = `the rows as of ${point.details.pointInTime?.time ?? point.capturedAt} were never read: no restore of this point ran`;
      return [{ name: 'rowsAtTime', ok: false, expected: `rows read into ${point.details.shadowTable}`, actual: 'absent', detail }];
    }
    const d = point.details;
    const wantCount = unit.checks.count;
    const wantChecksum = unit.checks.checksum;
    const assertions = unit.assertions ?? [];
    if (!wantCount && !wantChecksum && assertions.length === 0) return [];
    return withClient(ctx, d.connection, async (client) => {
      const checks = !wantCount && !wantChecksum ? [] : await inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', () => verifyContent(client, unit, point));
      return [...checks, ...(await runAssertions(client, assertions))];
    });
  }

  async function verifyContent(client: pg.Client, unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>): Promise<Check[]> {
    const d = point.details;
    const wantCount = unit.checks.count;
    const wantChecksum = unit.checks.checksum;
    const checks: Check[] = [];
    const live = await findRelation(client, d.table);
    if (!live || !isTable(live)) {
      const detail = `table ${d.table} ${live ? 'is not a table' : 'does not exist'}`;
      if (wantCount) checks.push({ name: 'rowCount', ok: false, expected: point.count, actual: 'missing', detail });
      if (wantChecksum) checks.push({ name: 'checksum', ok: false, expected: point.checksum, actual: 'missing', detail });
      return checks;
    }
    let scope: Scope;
    try {
      scope = (await resolveScope(client, live, d.scope ?? {}, unit.id)).scope;
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      if (wantCount) checks.push({ name: 'rowCount', ok: false, expected: point.count, actual: 'not computed', detail });
      if (wantChecksum) checks.push({ name: 'checksum', ok: false, expected: point.checksum, actual: 'not computed', detail });
      return checks;
    }
    const problems = describeDrift(d.columns, await liveColumns(client, live.oid));
    if (problems.length > 0 || !wantChecksum) {
      const { rows } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${live.sql} WHERE ${scope.predicate}`);
      const actual = Number(rows[0]?.n ?? 0);
      if (wantCount) checks.push({ name: 'rowCount', ok: actual === point.count, expected: point.count, actual });
      if (wantChecksum) {
        checks.push({ name: 'checksum', ok: false, expected: point.checksum, actual: 'not computed', detail: `columns differ from the restore point: ${problems.join('; ')}` });
      }
      return checks;
    }
    const names = d.columns.map((c) => c.name);
    const { count, checksum } = await countAndChecksum(client, scope.select(names), names);
    if (wantCount) checks.push({ name: 'rowCount', ok: count === point.count, expected: point.count, actual: count });
    checks.push({ name: 'checksum', ok: checksum === point.checksum, expected: point.checksum, actual: checksum });
    return checks;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Release

  async function release(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<void> {
    if (isPitr(point)) return atTime.release(unit, point, ctx);
    if (isCow(point)) return cow.release(unit, point, ctx);
    const d = point.details;
    await withClient(ctx, d.connection, (client) =>
      inTransaction(client, 'BEGIN', async () => {
        const shadow = await findRelation(client, d.shadowTable);
        if (!shadow) {
          ctx.log.info('postgres-table shadow copy already gone', { unit: unit.id, shadowTable: d.shadowTable });
          return;
        }
        const meta = await readShadowMeta(client, shadow);
        if (shadow.schema !== ROLLBACK_SCHEMA || !meta || meta.unitId !== unit.id || meta.pipeline !== ctx.pipeline || meta.checksum !== point.checksum) {
          throw new PreflightError(
            `unit "${unit.id}": refusing to drop ${shadow.display}: it is not the sealed shadow copy of this restore point. ` +
              'Inspect it and drop it by hand if it is not needed.',
          );
        }
        // No CASCADE: if someone built objects on the copy, fail rather than drop them silently.
        await client.query(`DROP TABLE ${shadow.sql}`);
        ctx.log.info('postgres-table shadow copy dropped', { unit: unit.id, shadowTable: shadow.display });
      }),
    );
  }

  // -------------------------------------------------------------------------------------------------------------
  // Rollback to a time (`--to`): no restore point was taken, the database's own backups hold the state at T.
  //
  //   asOf     the time checked against the restorable window of the connection's RDS instance or cluster; the point
  //            records the source, the time, the table and its scope (nothing is copied yet: it cannot be, at plan time)
  //   restore  (a) point-in-time copy `<source>-pitr-<hash>` → pending until available (rds/temporary-copy.ts)
  //            (b) the unit's rows read from the copy, in one snapshot, into the shadow table this point names, sealed
  //                with the same COMMENT a capture writes (count and checksum of the rows at T, checked against the
  //                copy's own): from here on the point is an ordinary `copy` restore point
  //            (c) the ordinary copy restore: one transaction, only differing rows written, each replaced row kept in
  //                the run's quarantine table first; then count and checksum of the scope compared with the rows at T
  //            (d) only then the temporary copy deleted, if its tags prove it ours
  //   Each step is found done on a rerun (the copy exists, the shadow table is sealed, the merge writes nothing).

  /** The point as the `copy` point its sealed shadow table makes it, once the rows at T were read; else undefined. */
  async function sealedCopyOf(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<RestorePoint<PostgresTableDetails> | undefined> {
    return withClient(ctx, point.details.connection, (client) => sealedIn(client, unit, point, ctx));
  }

  async function sealedIn(client: pg.Client, unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<RestorePoint<PostgresTableDetails> | undefined> {
    const shadow = await findRelation(client, point.details.shadowTable);
    if (!shadow) return undefined;
    const meta = await readShadowMeta(client, shadow);
    if (!meta || meta.pipeline !== ctx.pipeline || meta.deploymentId !== ctx.deploymentId || meta.unitId !== unit.id) {
      throw new PreflightError(
        `unit "${unit.id}": ${shadow.display} exists but is not the sealed copy of the rows as of ${point.capturedAt} for deployment "${ctx.deploymentId}"; ` +
          'inspect it, drop it if it is not needed, and rerun.',
      );
    }
    return pointFromMeta(unit, meta, shadow);
  }

  async function asOf(unit: PostgresTableUnit, at: Date, ctx: AdapterContext): Promise<{ point: RestorePoint<PostgresTableDetails>; shows: string[] }> {
    const what = `postgres-table unit "${unit.id}"`;
    const rds = ctx.postgres.rdsOf?.(unit.connection);
    if (!rds) {
      throw new PreflightError(
        `${what}: a rollback to a time reads the table from a point-in-time restore of the RDS instance or Aurora cluster holding it, ` +
          `but connection "${unit.connection}" does not name one. Add "rds": { "instanceId": "…" } or { "clusterId": "…" } to connections.${unit.connection} in the manifest, ` +
          'or roll back to a deployment\'s restore point instead.',
      );
    }
    const window = await checkSourceWindow(ctx, what, rds, at);
    const time = isoUtc(at);
    return withClient(ctx, unit.connection, (client) =>
      inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async () => {
        const live = await findRelation(client, unit.table);
        if (!live || !isTable(live)) {
          throw new PreflightError(`${what}: table "${unit.table}" ${live ? 'is not a table' : 'does not exist'} on connection "${unit.connection}"; a rollback to a time merges rows into the table as it is now.`);
        }
        const columns = await liveColumns(client, live.oid);
        const { scope, recorded } = await resolveScope(client, live, scopeOfUnit(unit), unit.id);
        const count = await countOf(client, `SELECT 1 FROM ${live.sql} WHERE ${scope.predicate}`);
        const point: RestorePoint<PostgresTableDetails> = {
          unitId: unit.id,
          type: 'postgres-table',
          capturedAt: time,
          // Not known before the copy is read: the rows in scope now, as the size of the work; the checksum names the
          // source and time. The restore seals the real count and checksum at T in the shadow table and verifies those.
          count,
          checksum: `point-in-time:${describeRds(rds)}@${time}`,
          details: {
            connection: unit.connection,
            table: live.display,
            shadowTable: `${ROLLBACK_SCHEMA}.${shadowTableName(ctx.pipeline, ctx.deploymentId, unit.id)}`,
            primaryKey: await primaryKeyOf(client, live.oid),
            columns: columns.map(definitionOf),
            scope: recorded,
            capture: 'point-in-time',
            pointInTime: { rds, time },
          },
        };
        const shows = [
          `${live.display}, ${scope.describe}: as of ${time}, read from a point-in-time copy of ${describeRds(rds)} ` +
            `(restorable window [${isoUtc(window.earliest)}, ${isoUtc(window.latest)}]), merged back writing only the rows that differ (${count} rows in scope now)`,
        ];
        return { point, shows };
      }),
    );
  }

  /**
   * (b): the rows in scope at T, read from the copy at `endpoint` in one REPEATABLE READ snapshot, into the shadow
   * table, sealed in the same production transaction. A rerun finds it sealed and reads nothing.
   */
  async function extractAtTime(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext, endpoint: Endpoint): Promise<{ copy: RestorePoint<PostgresTableDetails>; rows: number }> {
    const d = point.details;
    const time = d.pointInTime?.time ?? point.capturedAt;
    const connectTo = ctx.postgres.connectTo?.bind(ctx.postgres);
    if (!connectTo) throw new PreflightError(`unit "${unit.id}": this runtime cannot open a connection to the point-in-time copy (its connector has no connectTo)`);
    const shadowName = d.shadowTable.slice(ROLLBACK_SCHEMA.length + 1);
    return withClient(ctx, d.connection, async (prod) => {
      await ensureRollbackSchema(prod);
      return inTransaction(prod, 'BEGIN ISOLATION LEVEL READ COMMITTED', async () => {
        await prod.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKey(shadowName)]);
        const existing = await sealedIn(prod, unit, point, ctx);
        if (existing) return { copy: existing, rows: 0 };
        const live = await findRelation(prod, d.table);
        if (!live || !isTable(live)) throw new PreflightError(`unit "${unit.id}": table ${d.table} no longer exists on connection "${d.connection}"; nothing was written.`);
        const liveCols = await liveColumns(prod, live.oid);
        const source = await connectTo(d.connection, endpoint);
        try {
          return await inTransaction(source, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async () => {
            const then = await findRelation(source, d.table);
            if (!then || !isTable(then)) {
              throw new PreflightError(`unit "${unit.id}": table ${d.table} did not exist as a table at ${time} (read from the point-in-time copy); there are no rows to roll back to. Nothing was written.`);
            }
            const problems = describeDrift((await liveColumns(source, then.oid)).map(definitionOf), liveCols.map(definitionOf));
            if (problems.length > 0) {
              throw new PreflightError(
                `unit "${unit.id}": the columns of ${d.table} changed since ${time} (${problems.join('; ')}); a rollback to a time merges rows into the table ` +
                  'as it is now and does not change its definition. Revert the schema change first, then rerun. Nothing was written.',
              );
            }
            const { scope } = await resolveScope(source, then, d.scope ?? {}, unit.id);
            const names = liveCols.map((c) => c.name);
            const staging = `${ident(ROLLBACK_SCHEMA)}.${ident(shadowName)}`;
            await prod.query(`CREATE TABLE ${staging} (LIKE ${live.sql})`);
            // Each row travels as its record text (the form the checksum hashes, read with the same session settings
            // on both sides), put back as a row of the copy's own type: an array of them, unnested. The staging table
            // has the live columns in order, which the copy's columns were just checked to equal.
            await source.query(`DECLARE etlrb_at_time NO SCROLL CURSOR FOR SELECT t::text AS r FROM (${scope.select(names)}) AS t`);
            let rows = 0;
            for (;;) {
              const { rows: batch } = await source.query<{ r: string }>(`FETCH ${EXTRACT_BATCH_ROWS} FROM etlrb_at_time`);
              if (batch.length === 0) break;
              await prod.query(`INSERT INTO ${staging} SELECT * FROM unnest($1::${staging}[])`, [batch.map((b) => b.r)]);
              rows += batch.length;
            }
            await source.query('CLOSE etlrb_at_time');
            const primaryKey = await primaryKeyOf(prod, live.oid);
            if (primaryKey.length > 0) await prod.query(`CREATE UNIQUE INDEX ON ${staging} (${cols(primaryKey)})`);
            await prod.query(`ANALYZE ${staging}`);
            const { count, checksum } = await countAndChecksum(prod, `SELECT * FROM ${staging}`, names);
            const atSource = await countAndChecksum(source, scope.select(names), names);
            if (atSource.count !== count || atSource.checksum !== checksum) {
              throw new VerificationFailedError(
                `unit "${unit.id}": the rows read from the point-in-time copy (${atSource.count}, checksum ${atSource.checksum}) differ from those written ` +
                  `to ${ROLLBACK_SCHEMA}.${shadowName} (${count}, checksum ${checksum}); nothing was written. Rerun the rollback.`,
              );
            }
            const meta: ShadowMeta = {
              tool: 'etl-rollback',
              kind: 'restore-point',
              version: 2,
              pipeline: ctx.pipeline,
              deploymentId: ctx.deploymentId,
              unitId: unit.id,
              sourceTable: live.display,
              tableOid: live.oid,
              capturedAt: time,
              count,
              checksum,
              primaryKey,
              columns: liveCols.map(definitionOf),
              scope: d.scope ?? {},
              // Sequences stay where they are: rows issued since T keep their values out of reuse.
              sequences: [],
              captureTxid: '',
              sealed: true,
            };
            await prod.query(`COMMENT ON TABLE ${staging} IS ${literal(JSON.stringify(meta))}`);
            const shadow = await findShadow(prod, shadowName);
            if (!shadow) throw new Error(`shadow table ${ROLLBACK_SCHEMA}.${shadowName} vanished inside its own transaction`);
            ctx.log.info('postgres-table rows as of a time read from the point-in-time copy', { unit: unit.id, table: live.display, time, rows, shadowTable: shadow.display });
            return { copy: pointFromMeta(unit, meta, shadow), rows };
          });
        } finally {
          await source.end().catch(() => undefined);
        }
      });
    });
  }

  const atTime = tableAtTime<PostgresTableUnit, RestorePoint<PostgresTableDetails>>({
    sealedCopyOf,
    extractAtTime,
    restore,
    diff,
    release,
    verifyScope: (unit, copy, ctx) =>
      withClient(ctx, copy.details.connection, (client) =>
        inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', () => verifyContent(client, { ...unit, checks: { count: true, checksum: true } }, copy)),
      ),
  });
  const mergeFromCopy = atTime.mergeFromCopy;

  /**
   * What a rollback run is about to replace (core/workflow/undo.ts): restoring a copy-on-write point, the rows at the
   * keys its undo log names (cow.undoRecord: the restore writes nowhere else), when it can prove the rest of the table
   * as captured; otherwise, and for the other modes, a shadow copy of the unit's scope (`unit` asks for capture: copy).
   */
  async function undoRecord(unit: PostgresTableUnit, ctx: AdapterContext, restoring?: RestorePoint<PostgresTableDetails>): Promise<RestorePoint<PostgresTableDetails>> {
    const record = restoring && isCow(restoring) ? await cow.undoRecord(unit, restoring, ctx) : undefined;
    return record ?? copy(unit, ctx);
  }

  return { type: 'postgres-table', capture, install, diff, restore, verify, release, asOf, mergeFromCopy, undoRecord };
}

/**
 * Without `sealing`, a capture never pends (every seal is one read): the adapter as the CLI's commands, the benchmark
 * and the tests call it. With it, a first copy-on-write seal of a large table is read in slices, and a capture answers
 * pending between them: the adapter the snapshot's capture function runs (registry.ts), within its timeout.
 */
export function createPostgresTableAdapter(options?: PostgresTableOptions & { sealing?: undefined }): PostgresTableAdapter;
export function createPostgresTableAdapter(options: PostgresTableOptions & { sealing: SealSlicing }): SlicedPostgresTableAdapter;
export function createPostgresTableAdapter(options: PostgresTableOptions = {}): PostgresTableAdapter | SlicedPostgresTableAdapter {
  return postgresTable(options) as PostgresTableAdapter | SlicedPostgresTableAdapter;
}

/** The adapter whose capture may answer pending (a sliced seal). */
export type SlicedPostgresTableAdapter = Omit<PostgresTableAdapter, 'capture'> & {
  capture(unit: PostgresTableUnit, ctx: AdapterContext): Promise<CaptureResult<PostgresTableDetails>>;
};

/** The adapter with the defaults: user triggers disabled during a restore, reload above 50% of at least 1,000 rows. */
export const postgresTableAdapter: PostgresTableAdapter = createPostgresTableAdapter();
