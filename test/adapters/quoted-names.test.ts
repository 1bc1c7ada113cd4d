import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type mysql from 'mysql2/promise';
import { mysqlTable } from '../../core/adapters/mysql-table.ts';
import { postgresTableAdapter } from '../../core/adapters/postgres-table.ts';
import { tableName, tableNameParts } from '../../core/manifest/schema.ts';
import { mysqlConnector } from '../../core/runtime/connections.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlRows, mysqlUnit } from '../support/mysql-adapter.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

/** Table names with spaces, quotes and other scripts, quoted as each database quotes them, in both capture modes. */

let h: PgHarness;
let my: TestMysqlDatabase;
let mySql: mysql.Connection;

beforeAll(async () => {
  h = await pgHarness('quoted');
  my = await createTestMysqlDatabase('quoted');
  mySql = await my.connection();
});

afterAll(async () => {
  await h?.sql.end();
  await h?.db.drop();
  await my?.drop();
});

describe('quoted table names', () => {
  it('the manifest takes them, and reads their parts', () => {
    for (const ok of ['"Sales Data"."Orders ü"', 'sales."it""s"', '`shop db`.`cart lines`', 'public.orders', '"注文"']) expect(tableName.safeParse(ok).success, ok).toBe(true);
    for (const bad of ['"unclosed', 'a.b.c', '"a"b"', 'x; drop table y', '"' + 'x'.repeat(64) + '"', '"tab\there"']) expect(tableName.safeParse(bad).success, bad).toBe(false);
    expect(tableNameParts('"Sales Data"."it""s"')).toEqual(['Sales Data', 'it"s']);
    expect(tableNameParts('`shop db`.`a``b`')).toEqual(['shop db', 'a`b']);
    expect(tableNameParts('public.orders')).toEqual(['public', 'orders']);
  });

  for (const capture of ['copy', 'copy-on-write'] as const) {
    it(`PostgreSQL, capture: ${capture}: a schema and a table with spaces, a quote and other scripts`, async () => {
      const schema = `Sales Data ${capture}`;
      await h.sql.query(`CREATE SCHEMA "${schema}"`);
      await h.sql.query(`CREATE TABLE "${schema}"."Orders ü ""q""" (id int PRIMARY KEY, "Note é" text)`);
      const sqlName = `"${schema}"."Orders ü ""q"""`;
      await h.sql.query(`INSERT INTO ${sqlName} SELECT g, 'n' || g FROM generate_series(1, 30) g`);
      const before = await h.rowsOf(sqlName);
      const u = h.unit({ id: 'orders', table: sqlName, capture });
      const c = h.ctx(`d-q-${capture}`);
      const point = await postgresTableAdapter.capture(u, c);
      expect(point.count).toBe(30);
      await h.sql.query(`UPDATE ${sqlName} SET "Note é" = 'bad' WHERE id <= 3`);
      await h.sql.query(`DELETE FROM ${sqlName} WHERE id = 10`);
      await h.sql.query(`INSERT INTO ${sqlName} VALUES (99, 'bad')`);
      const out = await postgresTableAdapter.restore(u, point, c);
      expect(out.changes).toMatchObject({ rowsUpdated: 3, rowsInserted: 1, rowsDeleted: 1 });
      expect(await h.rowsOf(sqlName)).toEqual(before);
      expect(await h.checksOk(postgresTableAdapter, u, point, c)).toBe(true);
      await postgresTableAdapter.release(u, point, c);
    });

    it(`MySQL, capture: ${capture}: a table with spaces, a backtick and other scripts`, async () => {
      const table = `cart lines ü \`${capture}\``;
      const sqlName = `\`${my.name}\`.\`${table.replace(/`/g, '``')}\``;
      await mySql.query(`CREATE TABLE ${sqlName} (id INT PRIMARY KEY, \`Note é\` VARCHAR(20)) ENGINE=InnoDB`);
      await mySql.query(`INSERT INTO ${sqlName} SELECT seq, CONCAT('n', seq) FROM seq_1_to_30`);
      const before = await mysqlRows(mySql, my.name, table);
      const u = mysqlUnit('carts', sqlName, { capture });
      const c = mysqlAdapterContext({ pipeline: 'shop', deploymentId: `d-q-${capture}`, mysql: mysqlConnector({ warehouse: { engine: 'mysql', url: my.url } }) });
      const point = await mysqlTable.capture(u, c);
      expect(point.count).toBe(30);
      expect(point.details.table).toBe(`${my.name}.\`${table.replace(/`/g, '``')}\``);
      await mySql.query(`UPDATE ${sqlName} SET \`Note é\` = 'bad' WHERE id <= 3`);
      await mySql.query(`DELETE FROM ${sqlName} WHERE id = 10`);
      await mySql.query(`INSERT INTO ${sqlName} VALUES (99, 'bad')`);
      const out = await mysqlTable.restore(u, point, c);
      expect(out.changes).toMatchObject({ rowsUpdated: 3, rowsInserted: 1, rowsDeleted: 1 });
      expect(await mysqlRows(mySql, my.name, table)).toEqual(before);
      const checks = await mysqlTable.verify(u, point, c);
      expect(checks.every((ch) => ch.ok)).toBe(true);
      await mysqlTable.release(u, point, c);
    });
  }
});
