import type pg from 'pg';
import { ident } from './sql.ts';

/** Catalog reads: what a table is, its columns, key, sequences, triggers, partitions and what depends on it. */

export interface Relation {
  oid: number;
  schema: string;
  name: string;
  kind: string;
  /** Quoted, schema-qualified: safe to splice into SQL. */
  sql: string;
  /** `quote_ident(schema).quote_ident(name)`, for messages and restore point details. */
  display: string;
}

/**
 * A column's definition as captured: enough to put it back with ALTER TABLE. The fields after `type` are absent in
 * restore points made before schema restore existed; an absent field is not compared and not restored.
 */
export type PostgresColumn = {
  name: string;
  /** `format_type()` of the column at capture, e.g. `numeric(12,2)`, `timestamp with time zone`. */
  type: string;
  /** attnum at capture: a live column with this number and another name was renamed by the deploy. */
  attnum?: number;
  notNull?: boolean;
  /** `pg_get_expr` of the default, or null. */
  default?: string | null;
  /** Expression of a STORED generated column, or null. */
  generated?: string | null;
  /** Identity kind, or null. */
  identity?: 'always' | 'by-default' | null;
};

export interface LiveColumn extends Required<PostgresColumn> {
  /** Stored generated column (cannot be written). */
  isGenerated: boolean;
  /** `GENERATED ALWAYS AS IDENTITY` (written only with OVERRIDING SYSTEM VALUE on INSERT, never by UPDATE). */
  identityAlways: boolean;
}

/** Resolves `table` / `schema.table` the way SQL would (unquoted names fold to lower case; search_path applies). */
export async function findRelation(client: pg.Client, name: string): Promise<Relation | undefined> {
  const { rows } = await client.query<{ oid: number; schema: string; name: string; kind: string; display: string }>(
    `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
            pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS display
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = pg_catalog.to_regclass($1)`,
    [name],
  );
  const row = rows[0];
  if (!row) return undefined;
  return { ...row, sql: `${ident(row.schema)}.${ident(row.name)}` };
}

export const isTable = (rel: Relation): boolean => rel.kind === 'r' || rel.kind === 'p';

/** The table's live columns (relid: an SQL expression of the table's oid), in attnum order. */
const columnsSql = (relid: string) =>
  `SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnum::int AS attnum,
          a.attnotnull AS notnull, a.attgenerated::text AS generated, a.attidentity::text AS identity,
          pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS def
     FROM pg_catalog.pg_attribute a
     LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = ${relid} AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum`;

type ColumnRow = { name: string; type: string; attnum: number; notnull: boolean; def: string | null; generated: string; identity: string };

function liveColumnOf(r: ColumnRow): LiveColumn {
  const isGenerated = r.generated !== '';
  return {
    name: r.name,
    type: r.type,
    attnum: r.attnum,
    notNull: r.notnull,
    default: isGenerated ? null : r.def,
    generated: isGenerated ? r.def : null,
    identity: r.identity === 'a' ? 'always' : r.identity === 'd' ? 'by-default' : null,
    isGenerated,
    identityAlways: r.identity === 'a',
  };
}

export async function liveColumns(client: pg.Client, oid: number): Promise<LiveColumn[]> {
  const { rows } = await client.query<ColumnRow>(columnsSql('$1'), [oid]);
  return rows.map(liveColumnOf);
}

/** The definition recorded at capture (no live-only flags). */
export const definitionOf = ({ name, type, attnum, notNull, default: def, generated, identity }: LiveColumn): PostgresColumn => ({
  name,
  type,
  attnum,
  notNull,
  default: def,
  generated,
  identity,
});

/** The primary key's columns in key order (relid: an SQL expression of the table's oid). */
const primaryKeySql = (relid: string) =>
  `SELECT a.attname AS name, k.ord
     FROM pg_catalog.pg_index i
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = ${relid} AND i.indisprimary
    ORDER BY k.ord`;

export async function primaryKeyOf(client: pg.Client, oid: number): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(primaryKeySql('$1'), [oid]);
  return rows.map((r) => r.name);
}

/** A relation with what a restore reads of it before writing: its live columns, primary key and comment. */
export interface TableFacts extends Relation {
  columns: LiveColumn[];
  primaryKey: string[];
  /** obj_description of the relation, or null. */
  comment: string | null;
}

/**
 * findRelation, liveColumns, primaryKeyOf and the comment, for several names in one round trip (each a separate
 * query otherwise, and the catalog a round trip away from a Lambda). `undefined` where a name resolves to nothing.
 */
export async function tableFacts(client: pg.Client, names: string[]): Promise<(TableFacts | undefined)[]> {
  const { rows } = await client.query<{ ord: string; oid: number; schema: string; name: string; kind: string; display: string; comment: string | null; columns: ColumnRow[]; pk: string[] }>(
    `SELECT x.ord::text AS ord, c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
            pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS display,
            pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
            (SELECT coalesce(json_agg(col ORDER BY col.attnum), '[]') FROM (${columnsSql('c.oid')}) col) AS columns,
            (SELECT coalesce(json_agg(k.name ORDER BY k.ord), '[]') FROM (${primaryKeySql('c.oid')}) k) AS pk
       FROM unnest($1::text[]) WITH ORDINALITY AS x(name, ord)
       JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(x.name)
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`,
    [names],
  );
  return names.map((_, i) => {
    const row = rows.find((r) => Number(r.ord) === i + 1);
    if (!row) return undefined;
    const { ord: _ord, columns, pk, ...rel } = row;
    return { ...rel, sql: `${ident(rel.schema)}.${ident(rel.name)}`, columns: columns.map(liveColumnOf), primaryKey: pk };
  });
}

/** The table and, for a partitioned table, every partition below it (parents before children). */
export async function partitionTree(client: pg.Client, rel: Relation): Promise<{ oid: number; sql: string; isLeaf: boolean; level: number }[]> {
  const { rows } = await client.query<{ oid: number; sql: string; isleaf: boolean; level: number }>(
    `SELECT t.relid::oid::int AS oid, t.relid::regclass::text AS sql, t.isleaf, t.level
       FROM pg_catalog.pg_partition_tree($1::oid::regclass) t ORDER BY t.level, t.relid::regclass::text`,
    [rel.oid],
  );
  // A table that is not partitioned has no tree: it is its own only leaf.
  if (rows.length === 0) return [{ oid: rel.oid, sql: rel.sql, isLeaf: true, level: 0 }];
  return rows.map((r) => ({ oid: r.oid, sql: r.sql, isLeaf: r.isleaf, level: r.level }));
}

/** Foreign keys of other tables (or of the table itself) that reference the table or one of its partitions. */
export async function inboundForeignKeys(client: pg.Client, oid: number): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT DISTINCT c.conname || ' on ' || c.conrelid::regclass::text AS name
       FROM pg_catalog.pg_constraint c
      WHERE c.contype = 'f' AND c.conparentid = 0
        AND c.confrelid IN (SELECT relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) UNION SELECT $1::oid)
      ORDER BY 1`,
    [oid],
  );
  return rows.map((r) => r.name);
}

export interface OwnedSequence {
  /** Quoted, schema-qualified sequence name. */
  name: string;
  column: string;
  /** bigint as text. */
  lastValue: string;
  isCalled: boolean;
}

/** Sequences owned by the table's columns (serial and identity columns), with their positions now. */
export async function ownedSequences(client: pg.Client, oid: number): Promise<OwnedSequence[]> {
  const { rows } = await client.query<{ name: string; column: string }>(
    `SELECT s.oid::regclass::text AS name, a.attname AS column
       FROM pg_catalog.pg_depend d
       JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
        AND d.refobjid = $1 AND d.deptype IN ('a', 'i')
      ORDER BY a.attnum`,
    [oid],
  );
  const out: OwnedSequence[] = [];
  for (const r of rows) out.push({ ...r, ...(await sequencePosition(client, r.name)) });
  return out;
}

export async function sequencePosition(client: pg.Client, name: string): Promise<{ lastValue: string; isCalled: boolean }> {
  // `name` comes from regclass::text (already quoted); reading a sequence relation is not transactional.
  const { rows } = await client.query<{ last_value: string; is_called: boolean }>(`SELECT last_value::text, is_called FROM ${name}`);
  return { lastValue: rows[0]?.last_value ?? '1', isCalled: rows[0]?.is_called ?? false };
}

export interface UserTrigger {
  relation: string;
  name: string;
  /** pg_trigger.tgenabled: O (origin), D (disabled), R (replica), A (always). */
  enabled: string;
  level: number;
}

/**
 * User (not constraint-internal) triggers on the table and its partitions, parents first, and whether this session may
 * ALTER them (owns the table, or is a member of its owner): one statement, the oid as a literal, so that it can ride
 * in a batch with others (userTriggersOf reads its row).
 */
export const userTriggersSql = (oid: number): string =>
  `SELECT coalesce((SELECT json_agg(json_build_object('relation', x.relation, 'name', x.name, 'enabled', x.enabled, 'level', x.level) ORDER BY x.level, x.relation, x.name)
                      FROM (SELECT t.tgrelid::regclass::text AS relation, t.tgname::text AS name, t.tgenabled::text AS enabled, p.level
                              FROM pg_catalog.pg_trigger t
                              JOIN (SELECT relid, level FROM pg_catalog.pg_partition_tree(${Number(oid)}::oid::regclass) UNION SELECT ${Number(oid)}::oid, 0) p ON p.relid = t.tgrelid
                             WHERE NOT t.tgisinternal) x), '[]') AS triggers,
          coalesce((SELECT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = ${Number(oid)}), false) AS owner`;

export type UserTriggers = { triggers: UserTrigger[]; owner: boolean };

export const userTriggersOf = (row: unknown): UserTriggers => {
  const r = row as Partial<UserTriggers> | undefined;
  return { triggers: r?.triggers ?? [], owner: r?.owner === true };
};

export async function userTriggers(client: pg.Client, oid: number): Promise<UserTriggers> {
  return userTriggersOf((await client.query(userTriggersSql(oid))).rows[0]);
}

/**
 * Objects that a DROP COLUMN or ALTER COLUMN TYPE would have to drop or could not rewrite: views and rules, foreign
 * keys of other tables, triggers naming the column (normal dependencies). Indexes and constraints of the table's own
 * that use only the column go with it (auto dependencies) and are not listed.
 */
export async function columnDependents(client: pg.Client, oid: number, attnum: number): Promise<string[]> {
  const { rows } = await client.query<{ what: string }>(
    `SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, 0) AS what
       FROM pg_catalog.pg_depend d
      WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2 AND d.deptype = 'n'
      ORDER BY 1`,
    [oid, attnum],
  );
  // A view's dependency is its rewrite rule: name the view.
  return rows.map((r) => r.what.replace(/^rule _RETURN on /, ''));
}

