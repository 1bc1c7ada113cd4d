import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type mysql from 'mysql2/promise';
import { mysqlTable } from '../../core/adapters/mysql-table.ts';
import { postgresTableAdapter } from '../../core/adapters/postgres-table.ts';
import type { AdapterContext, Outcome, RestorePoint } from '../../core/adapters/types.ts';
import { mysqlConnector } from '../../core/runtime/connections.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlRows, mysqlUnit } from '../support/mysql-adapter.ts';
import { uniqueMoves } from '../support/unique-moves.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

/**
 * Values of a unique (non-primary) key that the deploy moved from one row to another. PostgreSQL and InnoDB check a
 * unique key row by row, so the row whose restored values hold a value may come before the row that holds it now:
 * the restore puts such chains back one row at a time, in passes (updateInPasses). Rows that swapped values, which no
 * order of updates can undo, are deleted and inserted again (deleteAndInsert): in PostgreSQL unless rows of another
 * table reference them through a foreign key that would act on the delete (then the restore fails naming the rows
 * and why, and nothing is written); in MySQL with the foreign key checks off for the delete, so the rows that
 * reference them stay, unless the table has DELETE or INSERT triggers of its own (MySQL cannot switch them off:
 * refused, naming them). Each engine, each capture mode, and the undo of each restore (the record of what it
 * replaced), on the real servers.
 */

let h: PgHarness;
let my: TestMysqlDatabase;
let mysqlSql: mysql.Connection;

beforeAll(async () => {
  h = await pgHarness('pguniq');
  my = await createTestMysqlDatabase('myuniq');
  mysqlSql = await my.connection();
});

afterAll(async () => {
  await h?.sql.end();
  await h?.db.drop();
  await my?.drop();
});

interface Engine {
  name: 'postgres' | 'mysql';
  exec(sql: string): Promise<unknown>;
  rows(table: string): Promise<string[]>;
  ctx(deploymentId: string, runId: string): AdapterContext;
  adapter: {
    capture(u: never, c: AdapterContext): Promise<RestorePoint>;
    undoRecord(u: never, c: AdapterContext, from: RestorePoint): Promise<RestorePoint>;
    restore(u: never, p: RestorePoint, c: AdapterContext): Promise<Outcome>;
    release(u: never, p: RestorePoint, c: AdapterContext): Promise<void>;
  };
  unit(id: string, table: string, capture: 'copy' | 'copy-on-write'): never;
}

const engines: Record<Engine['name'], () => Engine> = {
  postgres: () => ({
    name: 'postgres',
    exec: (q) => h.sql.query(q),
    rows: (t) => h.rowsOf(t),
    ctx: (d, r) => h.ctx(d, r),
    adapter: postgresTableAdapter as unknown as Engine['adapter'],
    unit: (id, table, capture) => h.unit({ id, table, capture }) as never,
  }),
  mysql: () => ({
    name: 'mysql',
    exec: (q) => mysqlSql.query(q),
    rows: (t) => mysqlRows(mysqlSql, my.name, t),
    ctx: (d, r) => mysqlAdapterContext({ pipeline: 'sales', deploymentId: d, runId: r, mysql: mysqlConnector({ warehouse: { engine: 'mysql', url: my.url } }) }),
    adapter: mysqlTable as unknown as Engine['adapter'],
    unit: (id, table, capture) => mysqlUnit(id, table, { capture }) as never,
  }),
};

describe('unique values that move between rows', () => {
  for (const engine of ['postgres', 'mysql'] as const) {
    for (const capture of ['copy', 'copy-on-write'] as const) {
      it(`${engine}, capture: ${capture}: moved values are put back whatever the order of the rows, and again by the undo; a swap too, unless rows a foreign key would act on reference the two`, async () => {
        const e = engines[engine]();
        const table = `uq_${capture === 'copy' ? 'copy' : 'cow'}`;
        const u = e.unit(`uq-${capture}`, table, capture);
        const c = e.ctx(`d-${table}`, `run-${table}`);
        const rc = e.ctx(`undo-run-${table}`, `run-${table}`);
        for (const q of uniqueMoves.create(table, engine)) await e.exec(q);
        const point = await e.adapter.capture(u, c);
        const captured = await e.rows(table);
        for (const q of uniqueMoves.chains(table)) await e.exec(q);
        const found = await e.rows(table);
        const record = await e.adapter.undoRecord(u, rc, point);

        const out = await e.adapter.restore(u, point, c);
        expect(out.changes).toMatchObject({ rowsUpdated: 5, rowsDeleted: 0, rowsInserted: 0 });
        expect(await e.rows(table)).toEqual(captured);
        // The undo moves the values again, the other way; then the point once more.
        await e.adapter.restore(u, record, e.ctx(`undo-run-${table}`, `u-${table}`));
        expect(await e.rows(table)).toEqual(found);
        await e.adapter.restore(u, point, e.ctx(`d-${table}`, `again-${table}`));
        expect(await e.rows(table)).toEqual(captured);

        // A swap: no order of updates works; the two rows are deleted and inserted again.
        for (const q of uniqueMoves.swap(table)) await e.exec(q);
        const swapped = await e.rows(table);
        expect((await e.adapter.restore(u, point, e.ctx(`d-${table}`, `swap-${table}`))).changes).toMatchObject({ rowsUpdated: 2 });
        expect(await e.rows(table)).toEqual(captured);

        // Again, with a table whose foreign key would act on a delete (ON DELETE CASCADE): first with rows that
        // reference other rows only (nothing to act on: the swap goes through), then with rows that reference the two.
        const child = `${table}_child`;
        await e.exec(`CREATE TABLE ${child} (id int PRIMARY KEY, parent int NOT NULL REFERENCES ${table} (id) ON DELETE CASCADE)${engine === 'mysql' ? ' ENGINE=InnoDB' : ''}`);
        if (engine === 'mysql') await e.exec(`ALTER TABLE ${child} ADD FOREIGN KEY (parent) REFERENCES ${table} (id) ON DELETE CASCADE`);
        await e.exec(`INSERT INTO ${child} VALUES (3, 7)`);
        for (const q of uniqueMoves.swap(table)) await e.exec(q);
        await e.adapter.restore(u, point, e.ctx(`d-${table}`, `swap1-${table}`));
        expect(await e.rows(table)).toEqual(captured);
        await e.exec(`INSERT INTO ${child} VALUES (1, 5), (2, 6)`);
        const children = await e.rows(child);
        for (const q of uniqueMoves.swap(table)) await e.exec(q);
        const error = await e.adapter.restore(u, point, e.ctx(`d-${table}`, `swap2-${table}`)).then(() => undefined, (x: unknown) => x);
        if (engine === 'postgres') {
          // The delete would take the child rows with it: refused, naming the rows and the foreign key.
          expect((error as Error).message).toMatch(/cannot (?:get|put) back 2 row\(s\) \(keys \(5\), \(6\)\): the deploy swapped values of a unique key between them, so no order of updates can put them back, and deleting and inserting them again would act on 2 row\(s\) of \S*_child \(foreign key \S+, ON DELETE CASCADE\) that reference them/);
          expect((error as Error).message).toMatch(/nothing was written/i);
          expect(await e.rows(table)).toEqual(swapped);
        } else {
          // InnoDB deletes with the foreign key checks off: no cascade; the same keys are back before the commit.
          expect(error).toBeUndefined();
          expect(await e.rows(table)).toEqual(captured);
        }
        expect(await e.rows(child)).toEqual(children);
        await e.exec(`DROP TABLE ${child}`);
        if (engine === 'postgres') await e.adapter.restore(u, point, e.ctx(`d-${table}`, `swap3-${table}`));
        expect(await e.rows(table)).toEqual(captured);

        // A trigger of the table's own on DELETE: PostgreSQL switches it off for the restore (the swap goes through and
        // it does not fire); MySQL cannot, so the swap is refused, naming it, until it is gone.
        const log = `${table}_log`;
        await e.exec(`CREATE TABLE ${log} (id int)`);
        await e.exec(
          engine === 'postgres'
            ? `CREATE FUNCTION ${log}_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ${log} VALUES (OLD.id); RETURN OLD; END $$`
            : `SELECT 1`,
        );
        await e.exec(
          engine === 'postgres'
            ? `CREATE TRIGGER ${log}_del AFTER DELETE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${log}_fn()`
            : `CREATE TRIGGER ${log}_del AFTER DELETE ON ${table} FOR EACH ROW INSERT INTO ${log} VALUES (OLD.id)`,
        );
        for (const q of uniqueMoves.swap(table)) await e.exec(q);
        const swappedAgain = await e.rows(table);
        const refused = await e.adapter.restore(u, point, e.ctx(`d-${table}`, `swap4-${table}`)).then(() => undefined, (x: unknown) => x);
        if (engine === 'postgres') {
          expect(refused).toBeUndefined();
          expect(await e.rows(table)).toEqual(captured);
        } else {
          expect((refused as Error).message).toContain(`deleting and inserting them again would fire the table's own triggers ${log}_del (DELETE), which MySQL cannot switch off`);
          expect((refused as Error).message).toMatch(/nothing was written/i);
          expect(await e.rows(table)).toEqual(swappedAgain);
          await e.exec(`DROP TRIGGER ${log}_del`);
          await e.adapter.restore(u, point, e.ctx(`d-${table}`, `swap5-${table}`));
          expect(await e.rows(table)).toEqual(captured);
        }
        expect(await e.rows(log)).toEqual([]);
        if (engine === 'postgres') await e.exec(`DROP TRIGGER ${log}_del ON ${table}`);
        await e.exec(`DROP TABLE ${log}`);
        await e.adapter.release(u, record, rc);
        await e.adapter.release(u, point, c);
      });
    }
  }
});
