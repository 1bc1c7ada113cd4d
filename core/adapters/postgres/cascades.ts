import type pg from 'pg';
import { PreflightError } from '../../errors.ts';
import type { RowPlan, RowSet } from './rows.ts';
import { countOf, ident, keyMatch } from './sql.ts';

/** A foreign key into the restored table whose action changes rows of another table. */
interface ActiveForeignKey {
  name: string;
  child: string;
  columns: string[];
  referenced: string[];
  onDelete: string;
  onUpdate: string;
}

/** pg_constraint's action codes that change the referencing rows (cascade, set null, set default). */
const ACTIVE = new Set(['c', 'n', 'd']);
const ACTION_NAMES: Record<string, string> = { c: 'CASCADE', n: 'SET NULL', d: 'SET DEFAULT' };

async function activeForeignKeys(client: pg.Client, tableOid: number): Promise<ActiveForeignKey[]> {
  const { rows } = await client.query<{ name: string; child: string; on_delete: string; on_update: string; cols: string[]; refs: string[] }>(
    `SELECT con.conname AS name, con.conrelid::regclass::text AS child, con.confdeltype AS on_delete, con.confupdtype AS on_update,
            array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
            array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(n, i)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) AS refs
       FROM pg_catalog.pg_constraint con
      WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conparentid = 0
        AND (con.confdeltype IN ('c', 'n', 'd') OR con.confupdtype IN ('c', 'n', 'd'))`,
    [tableOid],
  );
  return rows.map((r) => ({ name: r.name, child: r.child, columns: r.cols, referenced: r.refs, onDelete: r.on_delete, onUpdate: r.on_update }));
}

/**
 * Nothing is deleted that was not first kept: the restore quarantines the rows of its own table, but an
 * `ON DELETE CASCADE` / `SET NULL` / `SET DEFAULT` (or the same `ON UPDATE`) foreign key from another table would
 * change that table's rows too, unseen. Refuse, inside the restore's transaction and before its row writes, when a
 * row of another table references a row the restore would delete, or whose referenced columns it would change.
 * NO ACTION / RESTRICT keys need no check: the write fails and the transaction rolls back. In a well-formed manifest
 * the referencing table is a consumer unit, restored in an earlier stage, so nothing references the rows removed.
 */
export async function refuseCascades(client: pg.Client, r: RowSet, plan: RowPlan, unitId: string): Promise<void> {
  if (r.key.length === 0 || plan.strategy !== 'diff') return; // a reload is never chosen while a foreign key references the table
  const fks = await activeForeignKeys(client, r.live.oid);
  for (const fk of fks) {
    const join = fk.columns.map((c, i) => `c.${ident(c)} = l.${ident(fk.referenced[i]!)}`).join(' AND ');
    const checks: { what: string; rule: string; where: string }[] = [];
    if (ACTIVE.has(fk.onDelete)) {
      checks.push({
        what: 'delete',
        rule: `ON DELETE ${ACTION_NAMES[fk.onDelete]}`,
        where: `${r.scope.predicate} AND NOT EXISTS (SELECT 1 FROM ${r.shadow} AS s WHERE ${keyMatch(r.key, 's', 'l')})`,
      });
    }
    if (ACTIVE.has(fk.onUpdate)) {
      const changed = fk.referenced.map((c) => `l.${ident(c)} IS DISTINCT FROM s.${ident(c)}`).join(' OR ');
      checks.push({
        what: 'change the referenced columns of',
        rule: `ON UPDATE ${ACTION_NAMES[fk.onUpdate]}`,
        where: `EXISTS (SELECT 1 FROM ${r.shadow} AS s WHERE ${keyMatch(r.key, 's', 'l')} AND (${changed}))`,
      });
    }
    for (const check of checks) {
      const referencing = await countOf(client, `SELECT 1 FROM ${r.live.sql} AS l JOIN ${fk.child} AS c ON ${join} WHERE ${check.where}`);
      if (referencing > 0) {
        throw new PreflightError(
          `unit "${unitId}": the restore would ${check.what} rows of ${r.live.display} that ${referencing} row(s) of ${fk.child} reference ` +
            `through foreign key ${fk.name} (${check.rule}); the database would change those rows without their being kept. ` +
            `Add ${fk.child} as a unit that dependsOn "${unitId}" (it is then restored first), or resolve those rows, then rerun. Nothing was written.`,
        );
      }
    }
  }
}
