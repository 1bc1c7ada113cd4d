import type pg from 'pg';
import { PreflightError } from '../../errors.ts';
import { findRelation, partitionTree, type Relation } from './catalog.ts';
import { cols } from './sql.ts';

/**
 * The rows of a table a unit covers: all of them, those of some partitions, those matching a `where` predicate, or
 * (both given, as for MySQL units) the rows of those partitions that match it.
 *
 * `predicate` is SQL over the table's columns, unqualified: it is only ever spliced where the table is the single
 * relation of its FROM (so `event_date` cannot mean another table's column). `select` lists the rows in scope; for
 * partitions it reads the partitions themselves rather than filtering the parent.
 */
export interface Scope {
  kind: 'table' | 'partition' | 'where';
  predicate: string;
  select(columns: string[]): string;
  /** "rows of partitions public.e_2024_01", "rows where (day >= '2024-01-01')", "the whole table". */
  describe: string;
}

/** The scope as recorded in a restore point: the partitions resolved to their names at capture. */
export type ScopeSpec = { partition?: string[]; where?: string };

export function wholeTable(table: Relation): Scope {
  return { kind: 'table', predicate: 'TRUE', select: (c) => `SELECT ${cols(c)} FROM ${table.sql}`, describe: 'the whole table' };
}

/** Resolves a unit's (or restore point's) scope against the live table; refuses partitions that are not the table's. */
export async function resolveScope(client: pg.Client, table: Relation, spec: ScopeSpec, unitId: string): Promise<{ scope: Scope; recorded: ScopeSpec }> {
  const { where, partition } = spec;
  if (partition === undefined) {
    if (where === undefined) return { scope: wholeTable(table), recorded: {} };
    return {
      scope: { kind: 'where', predicate: `(${where})`, select: (c) => `SELECT ${cols(c)} FROM ${table.sql} WHERE (${where})`, describe: `rows where (${where})` },
      recorded: { where },
    };
  }
  if (table.kind !== 'p') {
    throw new PreflightError(`unit "${unitId}": ${table.display} is not a partitioned table, so "partition" cannot narrow it; use "where" instead, or remove the scope.`);
  }
  const tree = await partitionTree(client, table);
  const leaves = new Map<number, string>();
  const names: string[] = [];
  for (const name of partition) {
    const part = await findRelation(client, name);
    if (!part || !tree.some((t) => t.oid === part.oid) || part.oid === table.oid) {
      const known = tree.filter((t) => t.level > 0).map((t) => t.sql);
      throw new PreflightError(
        `unit "${unitId}": "${name}" is not a partition of ${table.display} (its partitions: ${known.join(', ') || 'none'}). ` +
          'Name partitions as "schema.table" or as this list shows them.',
      );
    }
    names.push(part.display);
    for (const leaf of await partitionTree(client, part)) if (leaf.isLeaf) leaves.set(leaf.oid, leaf.sql);
  }
  const oids = [...leaves.keys()];
  const leafSql = [...leaves.values()];
  const filter = where === undefined ? '' : ` WHERE (${where})`;
  // tableoid of a row read through the parent is its leaf partition.
  const inPartitions = oids.length === 0 ? 'FALSE' : `tableoid = ANY ('{${oids.join(',')}}'::oid[])`;
  const describe = `rows of partition${names.length > 1 ? 's' : ''} ${names.join(', ')}${where === undefined ? '' : ` where (${where})`}`;
  return {
    scope: {
      kind: 'partition',
      predicate: where === undefined ? inPartitions : `(${inPartitions} AND (${where}))`,
      select: (c) => (leafSql.length === 0 ? `SELECT ${cols(c)} FROM ${table.sql} WHERE FALSE` : leafSql.map((l) => `SELECT ${cols(c)} FROM ${l}${filter}`).join(' UNION ALL ')),
      describe,
    },
    recorded: where === undefined ? { partition: names } : { partition: names, where },
  };
}

/** The scope a unit asks for, as a spec (a single partition name becomes a list). */
export function scopeOfUnit(unit: { partition?: string | string[] | undefined; where?: string | undefined }): ScopeSpec {
  return {
    ...(unit.partition !== undefined ? { partition: Array.isArray(unit.partition) ? unit.partition : [unit.partition] } : {}),
    ...(unit.where !== undefined ? { where: unit.where } : {}),
  };
}

export const sameScope = (a: ScopeSpec, b: ScopeSpec): boolean => JSON.stringify(a) === JSON.stringify(b);
