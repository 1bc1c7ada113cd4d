import { createHash } from 'node:crypto';
import pg from 'pg';
import { EtlRollbackError, InputError, PreflightError, RestorePointMissingError } from '../errors.ts';
import type { PostgresTableUnit } from '../manifest/schema.ts';
import type { AdapterContext, Changes, Check, Diff, Outcome, RestorePoint, UnitAdapter } from './types.ts';

/**
 * A PostgreSQL table as a rollback unit.
 *
 * Capture (copy mode) copies the table into a shadow table in the `etl_rollback` schema, in one REPEATABLE READ
 * transaction, and seals it with a COMMENT holding the restore point's metadata. Restore writes, in one transaction
 * under a SHARE ROW EXCLUSIVE lock, only the difference by primary key (delete, update, insert), after keeping the
 * live rows it replaces in a quarantine table. The source table is never dropped or truncated, so views, grants and
 * foreign keys keep pointing at it.
 */

/** The schema holding shadow copies (`rp_…`) and quarantine tables (`q_…`). */
export const ROLLBACK_SCHEMA = 'etl_rollback';

export type PostgresColumn = {
  name: string;
  /** `format_type()` of the column at capture, e.g. `numeric(12,2)`, `timestamp with time zone`. */
  type: string;
};

export type PostgresTableDetails = {
  /** Connection name from the manifest. */
  connection: string;
  /** The captured table, schema-qualified and quoted where needed (`public.orders`, `sales."Orders"`). */
  table: string;
  /** The shadow copy, `etl_rollback.rp_…`. */
  shadowTable: string;
  /** Primary key columns in key order; empty when the table has none (restore then reloads the whole table). */
  primaryKey: string[];
  /** All columns in table order at capture. Restore refuses when the live table's columns differ. */
  columns: PostgresColumn[];
  /** Transaction id of the capture transaction. */
  captureTxid?: string;
};

/** Metadata written as JSON in the shadow table's COMMENT; its presence is what makes the copy sealed. */
type ShadowMeta = {
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
  columns: PostgresColumn[];
  captureTxid: string;
  sealed: true;
};

const { escapeIdentifier: ident, escapeLiteral: literal } = pg;

/**
 * Session settings that make a value's text form independent of who reads it: the checksum hashes row text, so a
 * timestamptz must print the same at capture (one session) and at verify (another, perhaps with another TimeZone).
 */
const STABLE_TEXT_SETTINGS = [
  "SET LOCAL TimeZone = 'UTC'",
  "SET LOCAL DateStyle = 'ISO, YMD'",
  "SET LOCAL IntervalStyle = 'postgres'",
  'SET LOCAL extra_float_digits = 1',
  "SET LOCAL bytea_output = 'hex'",
  "SET LOCAL lc_monetary = 'C'",
];

// ---------------------------------------------------------------------------------------------------------------
// Names

function readable(text: string, max: number): string {
  const cleaned = text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, max)
    .replace(/_+$/, '');
  return cleaned || 'x';
}

function shortHash(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 16);
}

/**
 * Shadow table name: deterministic from (pipeline, deployment, unit), so a retried capture finds its own copy.
 * `rp_` + 18 + `_` + 18 + `_` + 16 hex = at most 57 characters, under PostgreSQL's 63-byte identifier limit;
 * the readable part is for people, the hash for uniqueness.
 */
export function shadowTableName(pipeline: string, deploymentId: string, unitId: string): string {
  return `rp_${readable(pipeline, 18)}_${readable(unitId, 18)}_${shortHash('shadow', pipeline, deploymentId, unitId)}`;
}

/** Quarantine table name for one rollback run of one unit: `q_` + 24 + `_` + 16 hex (at most 43 characters). */
export function quarantineTableName(pipeline: string, runId: string, unitId: string): string {
  return `q_${readable(unitId, 24)}_${shortHash('quarantine', pipeline, runId, unitId)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Catalog helpers

interface Relation {
  oid: number;
  schema: string;
  name: string;
  kind: string;
  /** Quoted, schema-qualified: safe to splice into SQL. */
  sql: string;
  /** Same as `sql`, for messages. */
  display: string;
}

interface LiveColumn extends PostgresColumn {
  /** Stored generated column (cannot be written). */
  generated: boolean;
  /** `GENERATED ALWAYS AS IDENTITY` (written only with OVERRIDING SYSTEM VALUE on INSERT, never by UPDATE). */
  identityAlways: boolean;
}

/** Resolves `table` / `schema.table` the way SQL would (unquoted names fold to lower case; search_path applies). */
async function findRelation(client: pg.Client, name: string): Promise<Relation | undefined> {
  const { rows } = await client.query<{ oid: number; schema: string; name: string; kind: string }>(
    `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = pg_catalog.to_regclass($1)`,
    [name],
  );
  const row = rows[0];
  if (!row) return undefined;
  const { rows: q } = await client.query<{ display: string }>(
    'SELECT pg_catalog.quote_ident($1) || \'.\' || pg_catalog.quote_ident($2) AS display',
    [row.schema, row.name],
  );
  return { ...row, sql: `${ident(row.schema)}.${ident(row.name)}`, display: q[0]?.display ?? `${row.schema}.${row.name}` };
}

async function findShadow(client: pg.Client, name: string): Promise<Relation | undefined> {
  return findRelation(client, `${ROLLBACK_SCHEMA}.${name}`);
}

function isTable(rel: Relation): boolean {
  return rel.kind === 'r' || rel.kind === 'p';
}

async function liveColumns(client: pg.Client, oid: number): Promise<LiveColumn[]> {
  const { rows } = await client.query<{ name: string; type: string; generated: string; identity: string }>(
    `SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
            a.attgenerated::text AS generated, a.attidentity::text AS identity
       FROM pg_catalog.pg_attribute a
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [oid],
  );
  return rows.map((r) => ({ name: r.name, type: r.type, generated: r.generated !== '', identityAlways: r.identity === 'a' }));
}

async function primaryKeyOf(client: pg.Client, oid: number): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT a.attname AS name
       FROM pg_catalog.pg_index i
       CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE i.indrelid = $1 AND i.indisprimary
      ORDER BY k.ord`,
    [oid],
  );
  return rows.map((r) => r.name);
}

async function readShadowMeta(client: pg.Client, shadow: Relation): Promise<ShadowMeta | undefined> {
  const { rows } = await client.query<{ comment: string | null }>(
    "SELECT pg_catalog.obj_description($1::oid, 'pg_class') AS comment",
    [shadow.oid],
  );
  const text = rows[0]?.comment;
  if (!text) return undefined;
  try {
    const meta = JSON.parse(text) as Partial<ShadowMeta>;
    return meta.tool === 'etl-rollback' && meta.kind === 'restore-point' && meta.sealed === true ? (meta as ShadowMeta) : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// SQL builders

const cols = (names: string[], alias?: string): string => names.map((n) => (alias ? `${alias}.${ident(n)}` : ident(n))).join(', ');

/** Text of a row over the given columns; never NULL (a NULL field prints as nothing, `''` as `""`). */
const rowText = (names: string[], alias?: string): string => `ROW(${cols(names, alias)})::text`;

const keyMatch = (key: string[], a: string, b: string): string => key.map((k) => `${a}.${ident(k)} = ${b}.${ident(k)}`).join(' AND ');

/**
 * Count and checksum of a table over `columns` (in that order).
 *
 * The checksum is the SUM over rows of the first 64 bits of md5(row text), as a signed bigint summed in numeric
 * (exact, no overflow). A sum does not depend on the order rows are read in (tables have none), and unlike XOR it
 * counts duplicates: two equal rows add their hash twice instead of cancelling out, so a duplicated row changes it.
 */
async function countAndChecksum(client: pg.Client, table: string, columns: string[]): Promise<{ count: number; checksum: string }> {
  const { rows } = await client.query<{ n: string; checksum: string }>(
    `SELECT count(*)::text AS n,
            coalesce(sum(('x' || substr(md5(${rowText(columns, 't')}), 1, 16))::bit(64)::bigint::numeric), 0)::text AS checksum
       FROM ${table} AS t`,
  );
  const row = rows[0];
  return { count: Number(row?.n ?? 0), checksum: row?.checksum ?? '0' };
}

// ---------------------------------------------------------------------------------------------------------------
// Connections and transactions

async function withClient<T>(ctx: AdapterContext, connection: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await ctx.postgres.connect(connection);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function inTransaction<T>(client: pg.Client, begin: string, fn: () => Promise<T>): Promise<T> {
  await client.query(begin);
  try {
    for (const setting of STABLE_TEXT_SETTINGS) await client.query(setting);
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** Advisory lock key for one shadow table (serialises concurrent captures of the same point). */
const lockKey = (name: string): string => `etl_rollback:${name}`;

async function ensureRollbackSchema(client: pg.Client): Promise<void> {
  // Its own short transaction, serialised: two units captured in parallel on one database would otherwise race on
  // CREATE SCHEMA IF NOT EXISTS (a unique violation on pg_namespace).
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKey('schema')]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(ROLLBACK_SCHEMA)}`);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------------------
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
    },
  };
}

async function capture(unit: PostgresTableUnit, ctx: AdapterContext): Promise<RestorePoint<PostgresTableDetails>> {
  if (unit.partition !== undefined || unit.where !== undefined) {
    // Never widen a scoped unit to the whole table: refuse until scoped capture and restore exist.
    throw new PreflightError(`unit "${unit.id}": "partition" and "where" scopes are not supported yet; remove them to protect the whole table ${unit.table}`);
  }
  const shadowName = shadowTableName(ctx.pipeline, ctx.deploymentId, unit.id);
  return withClient(ctx, unit.connection, async (client) => {
    await ensureRollbackSchema(client);
    // Session lock, taken before the snapshot: a concurrent capture of the same point waits, then finds it sealed.
    await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [lockKey(shadowName)]);
    try {
      return await inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ', async () => {
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
        const primaryKey = await primaryKeyOf(client, source.oid);
        const names = columns.map((c) => c.name);
        const shadowSql = `${ident(ROLLBACK_SCHEMA)}.${ident(shadowName)}`;

        // LIKE without INCLUDING GENERATED/IDENTITY/DEFAULTS/CONSTRAINTS: plain columns of the same types (NOT NULL
        // kept), so generated and identity values are copied verbatim and nothing in the copy can reject a row.
        await client.query(`CREATE TABLE ${shadowSql} (LIKE ${source.sql})`);
        await client.query(`INSERT INTO ${shadowSql} (${cols(names)}) SELECT ${cols(names)} FROM ${source.sql}`);
        await client.query(`ANALYZE ${shadowSql}`);
        const { count, checksum } = await countAndChecksum(client, shadowSql, names);
        const { rows: tx } = await client.query<{ txid: string }>('SELECT txid_current()::text AS txid');

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
          columns: columns.map(({ name, type }) => ({ name, type })),
          captureTxid: tx[0]?.txid ?? '',
          sealed: true,
        };
        // Written last, in the same transaction: a shadow table without this comment cannot exist.
        await client.query(`COMMENT ON TABLE ${shadowSql} IS ${literal(JSON.stringify(meta))}`);
        const shadow = await findShadow(client, shadowName);
        if (!shadow) throw new Error(`shadow table ${ROLLBACK_SCHEMA}.${shadowName} vanished inside its own capture transaction`);
        ctx.log.info('postgres-table restore point captured', { unit: unit.id, table: source.display, shadowTable: shadow.display, count });
        return pointFromMeta(unit, meta, shadow);
      });
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [lockKey(shadowName)]).catch(() => undefined);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Preflight shared by diff and restore

interface Prepared {
  live: Relation;
  shadow: Relation;
  columns: LiveColumn[];
  primaryKey: string[];
  meta: ShadowMeta;
}

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

async function prepare(client: pg.Client, unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<Prepared> {
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
  const columns = await liveColumns(client, live.oid);
  const problems = describeDrift(d.columns, columns);
  const primaryKey = await primaryKeyOf(client, live.oid);
  if (primaryKey.join('\u0000') !== d.primaryKey.join('\u0000')) {
    const show = (k: string[]) => (k.length ? `(${k.join(', ')})` : 'none');
    problems.push(`primary key changed from ${show(d.primaryKey)} to ${show(primaryKey)}`);
  }
  if (problems.length > 0) {
    throw new PreflightError(
      `unit "${unit.id}": table ${live.display} no longer has the schema captured in its restore point: ${problems.join('; ')}. ` +
        'Nothing was written. Restoring a table schema is not supported yet: revert the schema change first, then rerun the rollback.',
    );
  }
  return { live, shadow, columns, primaryKey, meta };
}

// ---------------------------------------------------------------------------------------------------------------
// Diff

interface Plan {
  rowsInserted: number;
  rowsUpdated: number;
  rowsDeleted: number;
  /** Rows whose GENERATED ALWAYS identity (non-key) column differs: UPDATE cannot write those. */
  identityConflicts: number;
  fullReload: boolean;
}

/** Columns a restore writes: not generated (computed by the table) ... */
const writable = (p: Prepared) => p.columns.filter((c) => !c.generated);
/** ... and, for UPDATE, also not key columns (equal by the join) nor GENERATED ALWAYS identity columns. */
const updatable = (p: Prepared) => writable(p).filter((c) => !c.identityAlways && !p.primaryKey.includes(c.name));

async function plan(client: pg.Client, p: Prepared): Promise<Plan> {
  const live = p.live.sql;
  const shadow = p.shadow.sql;
  const write = writable(p).map((c) => c.name);
  const count = async (sql: string): Promise<number> => {
    const { rows } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM (${sql}) AS x`);
    return Number(rows[0]?.n ?? 0);
  };

  if (p.primaryKey.length === 0) {
    // Multiset comparison of row text: equal tables (duplicates included) write nothing.
    const extra = await count(`SELECT ${rowText(write)} FROM ${live} EXCEPT ALL SELECT ${rowText(write)} FROM ${shadow}`);
    const missing = await count(`SELECT ${rowText(write)} FROM ${shadow} EXCEPT ALL SELECT ${rowText(write)} FROM ${live}`);
    if (extra === 0 && missing === 0) return { rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 0, identityConflicts: 0, fullReload: true };
    return {
      rowsDeleted: await count(`SELECT 1 FROM ${live}`),
      rowsInserted: await count(`SELECT 1 FROM ${shadow}`),
      rowsUpdated: 0,
      identityConflicts: 0,
      fullReload: true,
    };
  }

  const key = p.primaryKey;
  const upd = updatable(p).map((c) => c.name);
  const alwaysNonKey = writable(p).filter((c) => c.identityAlways && !key.includes(c.name)).map((c) => c.name);
  return {
    rowsDeleted: await count(`SELECT 1 FROM ${live} AS l WHERE NOT EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(key, 's', 'l')})`),
    rowsInserted: await count(`SELECT 1 FROM ${shadow} AS s WHERE NOT EXISTS (SELECT 1 FROM ${live} AS l WHERE ${keyMatch(key, 'l', 's')})`),
    rowsUpdated:
      upd.length === 0
        ? 0
        : await count(`SELECT 1 FROM ${live} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')} WHERE ${rowText(upd, 'l')} IS DISTINCT FROM ${rowText(upd, 's')}`),
    identityConflicts:
      alwaysNonKey.length === 0
        ? 0
        : await count(`SELECT 1 FROM ${live} AS l JOIN ${shadow} AS s ON ${keyMatch(key, 'l', 's')} WHERE ${rowText(alwaysNonKey, 'l')} IS DISTINCT FROM ${rowText(alwaysNonKey, 's')}`),
    fullReload: false,
  };
}

const changesOf = (p: Pick<Plan, 'rowsInserted' | 'rowsUpdated' | 'rowsDeleted'>): Changes => ({
  rowsInserted: p.rowsInserted,
  rowsUpdated: p.rowsUpdated,
  rowsDeleted: p.rowsDeleted,
});

const total = (c: Changes): number => Object.values(c).reduce((a, b) => a + b, 0);

function identityConflictError(unit: PostgresTableUnit, p: Prepared, n: number): PreflightError {
  return new PreflightError(
    `unit "${unit.id}": ${n} row(s) of ${p.live.display} differ from the restore point in a GENERATED ALWAYS identity column ` +
      'that is not the primary key; UPDATE cannot write such a column, so nothing was written. ' +
      'Change the column to GENERATED BY DEFAULT (ALTER TABLE … ALTER COLUMN … SET GENERATED BY DEFAULT), then rerun.',
  );
}

function noPkNote(p: Prepared, plan: Plan): string {
  return plan.rowsDeleted + plan.rowsInserted === 0
    ? `no primary key on ${p.live.display}: compared whole rows; the table already equals its restore point`
    : `no primary key on ${p.live.display}: full reload (all ${plan.rowsDeleted} live rows replaced by the ${plan.rowsInserted} captured rows)`;
}

async function diff(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<Diff> {
  return withClient(ctx, point.details.connection, (client) =>
    inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async () => {
      const p = await prepare(client, unit, point, ctx);
      const result = await plan(client, p);
      if (result.identityConflicts > 0) throw identityConflictError(unit, p, result.identityConflicts);
      const changes = changesOf(result);
      return { changes, writes: total(changes), notes: result.fullReload ? [noPkNote(p, result)] : [] };
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Restore

async function restore(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<Outcome> {
  if (!ctx.runId) {
    throw new InputError(`restore of unit "${unit.id}" needs the rollback run id (it names the quarantine table); none was given`);
  }
  const runId = ctx.runId;
  const d = point.details;
  return withClient(ctx, d.connection, async (client) => {
    try {
      return await inTransaction(client, 'BEGIN ISOLATION LEVEL READ COMMITTED', async () => {
        const target = await findRelation(client, d.table);
        // Blocks writers (and other restores of this table) until commit; readers go on reading the old rows.
        if (target && isTable(target)) await client.query(`LOCK TABLE ${target.sql} IN SHARE ROW EXCLUSIVE MODE`);
        const p = await prepare(client, unit, point, ctx);
        const planned = await plan(client, p);
        if (planned.identityConflicts > 0) throw identityConflictError(unit, p, planned.identityConflicts);
        const notes = planned.fullReload ? [noPkNote(p, planned)] : [];
        if (total(changesOf(planned)) === 0) {
          ctx.log.info('postgres-table already equals its restore point; nothing written', { unit: unit.id, table: p.live.display });
          return { changes: changesOf(planned), writes: 0, notes };
        }

        const live = p.live.sql;
        const shadow = p.shadow.sql;
        const key = p.primaryKey;
        const all = p.columns.map((c) => c.name);
        const write = writable(p).map((c) => c.name);
        const upd = updatable(p).map((c) => c.name);
        const overriding = writable(p).some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';

        // 1. Keep the rows about to be replaced.
        const qName = quarantineTableName(ctx.pipeline, runId, unit.id);
        const qSql = `${ident(ROLLBACK_SCHEMA)}.${ident(qName)}`;
        await client.query(`CREATE TABLE IF NOT EXISTS ${qSql} (LIKE ${live})`);
        const note = {
          tool: 'etl-rollback',
          kind: 'quarantine',
          pipeline: ctx.pipeline,
          runId,
          unitId: unit.id,
          table: p.live.display,
          restorePoint: { deploymentId: p.meta.deploymentId, capturedAt: p.meta.capturedAt, shadowTable: p.shadow.display },
          at: ctx.now().toISOString(),
          reason: 'live rows deleted or overwritten by the rollback restore',
        };
        await client.query(`COMMENT ON TABLE ${qSql} IS ${literal(JSON.stringify(note))}`);
        const replaced =
          key.length === 0
            ? 'TRUE'
            : `NOT EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(key, 's', 'l')})` +
              (upd.length === 0
                ? ''
                : ` OR EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(key, 's', 'l')} AND ${rowText(upd, 'l')} IS DISTINCT FROM ${rowText(upd, 's')})`);
        await client.query(`INSERT INTO ${qSql} (${cols(all)}) SELECT ${cols(all, 'l')} FROM ${live} AS l WHERE ${replaced}`);

        // 2. Write the difference. DELETE first frees unique values the UPDATE or INSERT may need.
        let rowsDeleted: number;
        let rowsUpdated = 0;
        let rowsInserted: number;
        if (key.length === 0) {
          // Not TRUNCATE: that would need an ACCESS EXCLUSIVE lock and bypass row-level FK checks and triggers.
          rowsDeleted = (await client.query(`DELETE FROM ${live}`)).rowCount ?? 0;
          rowsInserted = (await client.query(`INSERT INTO ${live} (${cols(write)})${overriding} SELECT ${cols(write)} FROM ${shadow}`)).rowCount ?? 0;
        } else {
          rowsDeleted =
            (await client.query(`DELETE FROM ${live} AS l WHERE NOT EXISTS (SELECT 1 FROM ${shadow} AS s WHERE ${keyMatch(key, 's', 'l')})`)).rowCount ?? 0;
          if (upd.length > 0) {
            rowsUpdated =
              (
                await client.query(
                  `UPDATE ${live} AS l SET ${upd.map((c) => `${ident(c)} = s.${ident(c)}`).join(', ')}
                     FROM ${shadow} AS s
                    WHERE ${keyMatch(key, 'l', 's')} AND ${rowText(upd, 'l')} IS DISTINCT FROM ${rowText(upd, 's')}`,
                )
              ).rowCount ?? 0;
          }
          rowsInserted =
            (
              await client.query(
                `INSERT INTO ${live} (${cols(write)})${overriding}
                 SELECT ${cols(write, 's')} FROM ${shadow} AS s
                  WHERE NOT EXISTS (SELECT 1 FROM ${live} AS l WHERE ${keyMatch(key, 'l', 's')})`,
              )
            ).rowCount ?? 0;
        }
        const changes: Changes = { rowsInserted, rowsUpdated, rowsDeleted };
        ctx.log.info('postgres-table restored', { unit: unit.id, table: p.live.display, ...changes, keptAt: `${ROLLBACK_SCHEMA}.${qName}` });
        return { changes, writes: total(changes), notes, keptAt: `${ROLLBACK_SCHEMA}.${qName}` };
      });
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

// ---------------------------------------------------------------------------------------------------------------
// Verify

async function verify(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<Check[]> {
  const d = point.details;
  const wantCount = unit.checks.count;
  const wantChecksum = unit.checks.checksum;
  if (!wantCount && !wantChecksum) return [];
  return withClient(ctx, d.connection, (client) =>
    inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async () => {
      const checks: Check[] = [];
      const live = await findRelation(client, d.table);
      if (!live || !isTable(live)) {
        const detail = `table ${d.table} ${live ? 'is not a table' : 'does not exist'}`;
        if (wantCount) checks.push({ name: 'rowCount', ok: false, expected: point.count, actual: 'missing', detail });
        if (wantChecksum) checks.push({ name: 'checksum', ok: false, expected: point.checksum, actual: 'missing', detail });
        return checks;
      }
      const problems = describeDrift(d.columns, await liveColumns(client, live.oid));
      if (problems.length > 0 || !wantChecksum) {
        const { rows } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${live.sql}`);
        const actual = Number(rows[0]?.n ?? 0);
        if (wantCount) checks.push({ name: 'rowCount', ok: actual === point.count, expected: point.count, actual });
        if (wantChecksum) {
          checks.push({ name: 'checksum', ok: false, expected: point.checksum, actual: 'not computed', detail: `columns differ from the restore point: ${problems.join('; ')}` });
        }
        return checks;
      }
      const { count, checksum } = await countAndChecksum(client, live.sql, d.columns.map((c) => c.name));
      if (wantCount) checks.push({ name: 'rowCount', ok: count === point.count, expected: point.count, actual: count });
      checks.push({ name: 'checksum', ok: checksum === point.checksum, expected: point.checksum, actual: checksum });
      return checks;
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Release

async function release(unit: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, ctx: AdapterContext): Promise<void> {
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

export const postgresTableAdapter: UnitAdapter<PostgresTableUnit, PostgresTableDetails> = {
  type: 'postgres-table',
  capture,
  diff,
  restore,
  verify,
  release,
};
