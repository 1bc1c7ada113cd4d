import type pg from 'pg';
import { columnDependents, type LiveColumn, type PostgresColumn, type Relation } from './catalog.ts';
import { ident } from './sql.ts';

/**
 * Putting back a table's captured definition when the deploy altered it: columns added, dropped, renamed, retyped,
 * defaults, NOT NULL, generated expressions, identity kind. All by ALTER TABLE on the same table, in the restore's
 * transaction: the table keeps its oid, so views, grants, triggers, indexes and foreign keys stay attached.
 *
 * Refused (before anything is written) rather than forced:
 * - dropping or retyping a column that other objects depend on (a view built on a column the deploy added, a foreign
 *   key of another table, a trigger naming it): ALTER would have to drop them (CASCADE) or cannot rewrite them;
 * - re-adding an identity column (it would get a new sequence with other values), or making a column an identity again;
 * - two columns that swapped names.
 * A re-added column goes to the end of the table (PostgreSQL cannot insert a column in place); checks compare by name.
 */

export interface SchemaStep {
  sql: string;
  /** Run instead when `sql` fails (e.g. a cast that some live value cannot take): a savepoint undoes the failed try. */
  fallback?: string;
}

export interface SchemaPlan {
  /** "column \"b\" re-added (text)", …: what the restore changes, for notes. Empty: the definition is as captured. */
  changes: string[];
  refusals: string[];
  /** Run before the rows are written: drops, renames, retypes, re-adds, relaxed constraints. */
  before: SchemaStep[];
  /** Run after the rows are written: defaults, NOT NULL, identity kind. */
  after: SchemaStep[];
  /** A column is dropped, re-added or retyped: every live row's stored data changes. */
  rewritesData: boolean;
  /**
   * Per captured, non-generated column, how a dry run (which cannot run the DDL) compares the live row (alias `l`)
   * with the captured one (alias `s`): the column itself, its renamed self, both as text for a retyped one, NULL
   * against the captured value for one that will be re-added.
   */
  compare: Map<string, { live: string; shadow: string }>;
}

const quote = (name: string) => `"${name}"`;

export async function planSchemaRestore(
  client: pg.Client,
  table: Relation,
  captured: PostgresColumn[],
  live: LiveColumn[],
  options: { sameTable: boolean; primaryKey: string[] },
): Promise<SchemaPlan> {
  const t = table.sql;
  const plan: SchemaPlan = { changes: [], refusals: [], before: [], after: [], rewritesData: false, compare: new Map() };
  const relax: SchemaStep[] = [];
  const drops: SchemaStep[] = [];
  const renames: SchemaStep[] = [];
  const retypes: SchemaStep[] = [];
  const adds: SchemaStep[] = [];

  // Match captured columns to live ones: by attnum first (same table: a renamed column keeps its number), then by name.
  const unmatched = new Map(live.map((l) => [l.attnum, l]));
  const match = new Map<string, LiveColumn>();
  if (options.sameTable) {
    for (const c of captured) {
      const l = c.attnum === undefined ? undefined : unmatched.get(c.attnum);
      if (l) {
        match.set(c.name, l);
        unmatched.delete(l.attnum);
      }
    }
  }
  for (const c of captured) {
    if (match.has(c.name)) continue;
    const l = [...unmatched.values()].find((u) => u.name === c.name);
    if (l) {
      match.set(c.name, l);
      unmatched.delete(l.attnum);
    }
  }

  const blockers = async (l: LiveColumn, what: string): Promise<boolean> => {
    const deps = await columnDependents(client, table.oid, l.attnum);
    if (deps.length === 0) return false;
    plan.refusals.push(`column ${quote(l.name)} ${what}, but ${deps.join(', ')} depend${deps.length === 1 ? 's' : ''} on it; change or drop ${deps.length === 1 ? 'it' : 'them'} first`);
    return true;
  };

  // Live columns the deploy added: dropped (their data is kept in the quarantine table first).
  for (const l of unmatched.values()) {
    if (await blockers(l, 'was added by the deploy and must be dropped')) continue;
    drops.push({ sql: `ALTER TABLE ${t} DROP COLUMN ${ident(l.name)}` });
    plan.changes.push(`column ${quote(l.name)} dropped`);
    plan.rewritesData = true;
  }

  for (const c of captured) {
    const l = match.get(c.name);
    if (!l) {
      // Dropped by the deploy: added again (at the end of the table), its values come back with the rows.
      if (c.identity) {
        plan.refusals.push(`column ${quote(c.name)} was an identity column and was dropped; re-adding it would draw new values from a new sequence. Re-add it by hand (ALTER TABLE … ADD COLUMN … GENERATED … AS IDENTITY), then rerun`);
        continue;
      }
      adds.push({ sql: `ALTER TABLE ${t} ADD COLUMN ${ident(c.name)} ${c.type}${c.generated ? ` GENERATED ALWAYS AS (${c.generated}) STORED` : ''}` });
      if (c.default) plan.after.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${ident(c.name)} SET DEFAULT ${c.default}` });
      if (c.notNull) plan.after.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${ident(c.name)} SET NOT NULL` });
      plan.changes.push(`column ${quote(c.name)} re-added (${c.type})`);
      plan.rewritesData = true;
      if (!c.generated) plan.compare.set(c.name, { live: 'NULL', shadow: `s.${ident(c.name)}` });
      continue;
    }

    let name = l.name;
    if (l.name !== c.name) {
      const holder = live.find((o) => o.name === c.name && o !== l);
      if (holder && [...match.values()].includes(holder)) {
        plan.refusals.push(`columns ${quote(c.name)} and ${quote(l.name)} swapped names; rename them back by hand, then rerun`);
        continue;
      }
      renames.push({ sql: `ALTER TABLE ${t} RENAME COLUMN ${ident(l.name)} TO ${ident(c.name)}` });
      plan.changes.push(`column ${quote(l.name)} renamed back to ${quote(c.name)}`);
      name = c.name;
    }
    const col = ident(name);
    const isKey = options.primaryKey.includes(c.name);

    // Generated expression (known only for points that recorded it).
    if (c.generated !== undefined && (c.generated ?? null) !== (l.generated ?? null)) {
      if (c.generated === null) {
        // Generated now, plain at capture: keep the values, drop the expression.
        renames.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${col} DROP EXPRESSION` });
        plan.changes.push(`column ${quote(c.name)} made a plain column again`);
      } else {
        // Another expression now (or plain): PostgreSQL 15 cannot change it in place; drop and add it again.
        if (await blockers(l, 'has another generation expression than at capture and must be dropped and re-added')) continue;
        drops.push({ sql: `ALTER TABLE ${t} DROP COLUMN ${ident(l.name)}` });
        adds.push({ sql: `ALTER TABLE ${t} ADD COLUMN ${col} ${c.type} GENERATED ALWAYS AS (${c.generated}) STORED` });
        if (c.notNull) plan.after.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${col} SET NOT NULL` });
        plan.changes.push(`column ${quote(c.name)} re-made as GENERATED ALWAYS AS (${c.generated}) STORED`);
        plan.rewritesData = true;
        continue;
      }
    }

    // Identity kind.
    if (c.identity !== undefined && (c.identity ?? null) !== (l.identity ?? null)) {
      if (c.identity === null) {
        relax.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${ident(l.name)} DROP IDENTITY` });
        plan.changes.push(`identity of column ${quote(c.name)} removed`);
      } else if (l.identity === null) {
        plan.refusals.push(`column ${quote(c.name)} was an identity column at capture and is not one now; making it one again needs a new sequence. Do it by hand, then rerun`);
        continue;
      } else {
        plan.after.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${col} SET GENERATED ${c.identity === 'always' ? 'ALWAYS' : 'BY DEFAULT'}` });
        plan.changes.push(`column ${quote(c.name)} made GENERATED ${c.identity === 'always' ? 'ALWAYS' : 'BY DEFAULT'} again`);
      }
    }

    const retyped = l.type !== c.type;
    if (retyped) {
      if (await blockers(l, `was retyped from ${c.type} to ${l.type} and must be retyped back`)) continue;
      if (l.default !== null) relax.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${ident(l.name)} DROP DEFAULT` });
      if (l.notNull && !isKey) relax.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${ident(l.name)} DROP NOT NULL` });
      // Cast what can be cast (most rows then need no rewrite); if any value cannot, start from NULL: every row's
      // value is written from the restore point anyway, and the live values are in the quarantine table.
      retypes.push({
        sql: `ALTER TABLE ${t} ALTER COLUMN ${col} TYPE ${c.type} USING ${col}::${c.type}`,
        fallback: `ALTER TABLE ${t} ALTER COLUMN ${col} TYPE ${c.type} USING NULL::${c.type}`,
      });
      plan.changes.push(`column ${quote(c.name)} retyped from ${l.type} back to ${c.type}`);
      plan.rewritesData = true;
      if (c.default) plan.after.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${col} SET DEFAULT ${c.default}` });
      if ((c.notNull ?? l.notNull) && !isKey) plan.after.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${col} SET NOT NULL` });
    } else {
      if (c.default !== undefined && !c.generated && !c.identity && (c.default ?? null) !== (l.default ?? null)) {
        plan.after.push({ sql: c.default === null ? `ALTER TABLE ${t} ALTER COLUMN ${col} DROP DEFAULT` : `ALTER TABLE ${t} ALTER COLUMN ${col} SET DEFAULT ${c.default}` });
        plan.changes.push(c.default === null ? `default of column ${quote(c.name)} removed` : `default of column ${quote(c.name)} restored to ${c.default}`);
      }
      if (c.notNull !== undefined && c.notNull !== l.notNull && !isKey) {
        if (c.notNull) plan.after.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${col} SET NOT NULL` });
        else relax.push({ sql: `ALTER TABLE ${t} ALTER COLUMN ${ident(l.name)} DROP NOT NULL` });
        plan.changes.push(`column ${quote(c.name)} made ${c.notNull ? 'NOT NULL' : 'nullable'} again`);
      }
    }
    if (!c.generated) {
      const s = `s.${ident(c.name)}`;
      plan.compare.set(c.name, retyped ? { live: `l.${ident(l.name)}::text`, shadow: `${s}::text` } : { live: `l.${ident(l.name)}`, shadow: s });
    }
  }
  plan.before = [...relax, ...drops, ...renames, ...retypes, ...adds];
  return plan;
}
