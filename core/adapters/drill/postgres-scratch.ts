import type pg from 'pg';
import { PreflightError, RestorePointMissingError } from '../../errors.ts';
import type { PostgresTableUnit } from '../../manifest/schema.ts';
import type { PostgresTableDetails } from '../postgres-table.ts';
import { postgresTableAdapter } from '../postgres-table.ts';
import { findRelation, isTable } from '../postgres/catalog.ts';
import { KIND } from '../postgres/copy-on-write.ts';
import { cols, ident, inTransaction, keyMatch, literal, withClient } from '../postgres/sql.ts';
import type { AdapterContext, RestorePoint } from '../types.ts';
import { pointCheckAt } from './check-target.ts';
import { drillMarker, isMarkerOf, scratchSchemaName } from './names.ts';
import type { DrillScratch, ScratchTarget } from './types.ts';

/**
 * A postgres-table unit rehearsed into table `etl_rollback_drill_<short>.<unit id>` on the unit's connection, built from
 * the restore point in one transaction: a copy-mode point from its shadow copy; a copy-on-write point from the live
 * table with the undo table applied (live rows whose key the undo table does not name, plus the pre-images), read in
 * one snapshot. The production table is only read. The gate is the adapter's own verify, pointed at the scratch table.
 */

const scratchTableSql = (scratch: DrillScratch, unit: PostgresTableUnit) => `${ident(scratchSchemaName(scratch.short))}.${ident(unit.id)}`;

async function schemaComment(client: pg.Client, schema: string): Promise<string | null | undefined> {
  const { rows } = await client.query<{ comment: string | null }>(
    "SELECT pg_catalog.obj_description(n.oid, 'pg_namespace') AS comment FROM pg_catalog.pg_namespace n WHERE n.nspname = $1",
    [schema],
  );
  return rows.length === 0 ? undefined : rows[0]!.comment;
}

/** Creates the drill's schema, or checks that the one there is this drill's; refuses anyone else's. */
async function ensureScratchSchema(client: pg.Client, ctx: AdapterContext, scratch: DrillScratch): Promise<void> {
  const schema = scratchSchemaName(scratch.short);
  const comment = await schemaComment(client, schema);
  if (comment === undefined) {
    await client.query(`CREATE SCHEMA ${ident(schema)}`);
    await client.query(`COMMENT ON SCHEMA ${ident(schema)} IS ${literal(JSON.stringify(drillMarker(scratch.runId, ctx.pipeline)))}`);
    return;
  }
  if (!isMarkerOf(comment, scratch.runId)) {
    throw new PreflightError(`schema ${schema} exists and is not the scratch schema of drill ${scratch.runId}; the drill does not write into it. Inspect it.`);
  }
}

export const postgresScratch: ScratchTarget<PostgresTableUnit, PostgresTableDetails> = {
  async restore(unit, point, ctx, scratch) {
    const d = point.details;
    const target = scratchTableSql(scratch, unit);
    const names = d.columns.map((c) => c.name);
    const rows = await withClient(ctx, d.connection, (client) =>
      inTransaction(client, 'BEGIN ISOLATION LEVEL REPEATABLE READ', async () => {
        await ensureScratchSchema(client, ctx, scratch);
        // A rerun starts the copy again: the table is the drill's (its schema is), and the copy is cheap to remake.
        await client.query(`DROP TABLE IF EXISTS ${target}`);
        let source: string;
        let like: string;
        if (d.capture === 'copy-on-write') {
          const [live, undo] = [await findRelation(client, d.table), await findRelation(client, d.shadowTable)];
          if (!live || !isTable(live)) throw new RestorePointMissingError(`unit "${unit.id}": table ${d.table} is gone; a copy-on-write restore point needs it (use the backstop)`);
          if (!undo) throw new RestorePointMissingError(`unit "${unit.id}": its undo table ${d.shadowTable} is gone (released?)`);
          like = live.sql;
          source =
            `SELECT ${cols(names, 'l')} FROM ${live.sql} AS l WHERE NOT EXISTS (SELECT 1 FROM ${undo.sql} AS u WHERE ${keyMatch(d.primaryKey, 'u', 'l')}) ` +
            `UNION ALL SELECT ${cols(names, 'u')} FROM ${undo.sql} AS u WHERE u.${ident(KIND)} = 'p'`;
        } else {
          const shadow = await findRelation(client, d.shadowTable);
          if (!shadow) throw new RestorePointMissingError(`unit "${unit.id}": its shadow copy ${d.shadowTable} is gone (released?)`);
          like = shadow.sql;
          source = `SELECT ${cols(names)} FROM ${shadow.sql}`;
        }
        // Plain columns of the same types (no defaults, identity or constraints): values are copied as they are.
        await client.query(`CREATE TABLE ${target} (LIKE ${like})`);
        const inserted = await client.query(`INSERT INTO ${target} (${cols(names)}) ${source}`);
        await client.query(`COMMENT ON TABLE ${target} IS ${literal(JSON.stringify(drillMarker(scratch.runId, ctx.pipeline)))}`);
        return inserted.rowCount ?? 0;
      }),
    );
    ctx.log.info('drill: postgres-table rehearsed', { unit: unit.id, at: target, rows });
    return { target: `postgres ${d.connection}: ${target}`, changes: { rowsCopied: rows }, notes: [] };
  },

  async verify(unit, point, ctx, scratch) {
    const d = point.details;
    const target = scratchTableSql(scratch, unit);
    const notes: string[] = [];
    const assertions = (unit.assertions ?? []).flatMap((a) => {
      const pointed = pointCheckAt(a.sql, unit.table, target, '"', 'public');
      if ('sql' in pointed) return [{ ...a, sql: pointed.sql }];
      notes.push(`user check "${a.name}" not run: ${pointed.reason}`);
      return [];
    });
    // A copy-mode scratch table holds only the rows in scope; a copy-on-write one the whole table, scoped as captured.
    const scope = d.capture === 'copy-on-write' ? (d.scope ?? {}) : {};
    const scratchPoint: RestorePoint<PostgresTableDetails> = { ...point, details: { ...d, table: target, scope } };
    const scratchUnit: PostgresTableUnit = { ...unit, table: target, assertions, partition: undefined, where: undefined };
    const checks = await postgresTableAdapter.verify(scratchUnit, scratchPoint, ctx);
    return { checks, notes };
  },

  async cleanup(unit, ctx, scratch) {
    const schema = scratchSchemaName(scratch.short);
    return withClient(ctx, unit.connection, (client) =>
      inTransaction(client, 'BEGIN', async () => {
        const comment = await schemaComment(client, schema);
        if (comment === undefined) return { removed: [] };
        if (!isMarkerOf(comment, scratch.runId)) {
          throw new PreflightError(`schema ${schema} is not the scratch schema of drill ${scratch.runId} (its comment says otherwise); not dropped. Inspect it.`);
        }
        const { rows } = await client.query<{ name: string; comment: string | null }>(
          `SELECT c.relname AS name, pg_catalog.obj_description(c.oid, 'pg_class') AS comment
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`,
          [schema],
        );
        const removed: string[] = [];
        for (const t of rows) {
          if (!isMarkerOf(t.comment, scratch.runId)) continue;
          // No CASCADE anywhere: what someone built on a scratch table makes the cleanup fail and say so.
          await client.query(`DROP TABLE ${ident(schema)}.${ident(t.name)}`);
          removed.push(`postgres ${unit.connection}: ${schema}.${t.name}`);
        }
        await client.query(`DROP SCHEMA ${ident(schema)}`).catch((error: Error) => {
          throw new PreflightError(`scratch schema ${schema} holds objects the drill did not make, so it was left in place: ${error.message}`);
        });
        removed.push(`postgres ${unit.connection}: schema ${schema}`);
        return { removed };
      }),
    );
  },
};
