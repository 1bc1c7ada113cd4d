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

export async function liveColumns(client: pg.Client, oid: number): Promise<LiveColumn[]> {
  const { rows } = await client.query<{ name: string; type: string; attnum: number; notnull: boolean; def: string | null; generated: string; identity: string }>(
    `SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnum::int AS attnum,
            a.attnotnull AS notnull, a.attgenerated::text AS generated, a.attidentity::text AS identity,
            pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS def
       FROM pg_catalog.pg_attribute a
       LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [oid],
  );
  return rows.map((r) => {
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
  });
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

export async function primaryKeyOf(client: pg.Client, oid: number): Promise<string[]> {
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

/** User (not constraint-internal) triggers on the table and its partitions, parents first. */
export async function userTriggers(client: pg.Client, oid: number): Promise<{ triggers: UserTrigger[]; owner: boolean }> {
  // One round trip: the triggers, and whether this session may ALTER them (owns the table, or is a member of its owner).
  const { rows } = await client.query<{ triggers: UserTrigger[]; owner: boolean }>(
    `SELECT coalesce((SELECT json_agg(json_build_object('relation', x.relation, 'name', x.name, 'enabled', x.enabled, 'level', x.level) ORDER BY x.level, x.relation, x.name)
                        FROM (SELECT t.tgrelid::regclass::text AS relation, t.tgname::text AS name, t.tgenabled::text AS enabled, p.level
                                FROM pg_catalog.pg_trigger t
                                JOIN (SELECT relid, level FROM pg_catalog.pg_partition_tree($1::oid::regclass) UNION SELECT $1::oid, 0) p ON p.relid = t.tgrelid
                               WHERE NOT t.tgisinternal) x), '[]') AS triggers,
            coalesce((SELECT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = $1), false) AS owner`,
    [oid],
  );
  return { triggers: rows[0]?.triggers ?? [], owner: rows[0]?.owner === true };
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

