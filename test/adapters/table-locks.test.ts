import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type mysql from 'mysql2/promise';
import { mysqlTable, quarantineTableName as mysqlQuarantineName } from '../../core/adapters/mysql-table.ts';
import { mysqlCopyOnWrite } from '../../core/adapters/mysql/copy-on-write.ts';
import { createPostgresTableAdapter } from '../../core/adapters/postgres-table.ts';
import { quarantineTableName } from '../../core/adapters/postgres/names.ts';
import { EXIT, exitCodeOf, TableBusyError } from '../../core/errors.ts';
import { mysqlConnector } from '../../core/runtime/connections.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlRows, mysqlUnit } from '../support/mysql-adapter.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

/**
 * A restore's table lock is waited for in bounded tries (RESTORE_LOCK): a session that keeps the table makes the
 * restore fail with TableBusyError, naming it, with nothing written and nobody left queued behind the restore; once
 * it ends, the same restore goes through. Real PostgreSQL and MariaDB, real sessions holding real locks.
 */

const quickPg = { timeoutMs: 150, tries: 3, pauseMs: 50 };
/** MySQL waits whole seconds. */
const quickMysql = { timeoutMs: 1000, tries: 2, pauseMs: 100 };

let h: PgHarness;
let my: TestMysqlDatabase;
let mysqlSql: mysql.Connection;

beforeAll(async () => {
  h = await pgHarness('pglock');
  my = await createTestMysqlDatabase('mylock');
  mysqlSql = await my.connection();
});

afterAll(async () => {
  await h?.sql.end();
  await h?.db.drop();
  await my?.drop();
});

const pgQuarantine = async (runId: string, unitId: string): Promise<string | null> =>
  (await h.sql.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [`etl_rollback.${quarantineTableName('sales', runId, unitId)}`])).rows[0]!.t;

describe('PostgreSQL: a restore that cannot lock its table', () => {
  const adapter = createPostgresTableAdapter({ restoreLock: quickPg });

  it('copy-on-write: a write transaction left open makes the restore fail with TableBusyError naming that session; nothing written, later writers not held; once it ends, the restore puts the table back', async () => {
    await h.sql.query(`CREATE TABLE lk_cow (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO lk_cow SELECT g, 'v' || g FROM generate_series(1, 50) g`);
    const u = h.unit({ id: 'lkcow', table: 'lk_cow', capture: 'copy-on-write' });
    const c = h.ctx('d-lkcow', 'run-lkcow');
    const captured = await h.rowsOf('lk_cow');
    const point = await adapter.capture(u, c);
    await h.sql.query(`UPDATE lk_cow SET v = 'bad' WHERE id <= 5`);
    await h.sql.query(`DELETE FROM lk_cow WHERE id = 50`);
    const deployed = await h.rowsOf('lk_cow');

    const blocker = await h.db.client();
    try {
      await blocker.query(`SET application_name = 'nightly-load'`);
      await blocker.query('BEGIN');
      await blocker.query(`UPDATE lk_cow SET v = 'still loading' WHERE id = 10`);
      const error = await adapter.restore(u, point, c).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TableBusyError);
      expect(exitCodeOf(error)).toBe(EXIT.failed);
      expect((error as Error).message).toMatch(
        /^unit "lkcow": the restore could not lock public\.lk_cow: 3 tries of 150 ms each, and other sessions held it \(pid \d+ \(postgres, nightly-load, idle in transaction, in a transaction open since [-\d: ]+: UPDATE lk_cow SET v = 'still loading'.*\)\)\. Nothing was written\./,
      );
      // Nothing written, no quarantine made; the restore is not waiting in the queue: another writer goes on.
      expect(await h.rowsOf('lk_cow')).toEqual(deployed);
      expect(await pgQuarantine('run-lkcow', 'lkcow')).toBeNull();
      await h.sql.query(`UPDATE lk_cow SET v = 'other' WHERE id = 20`);
      await blocker.query('COMMIT');
    } finally {
      await blocker.end();
    }
    // The triggers logged the writes made meanwhile too: the restore puts all of it back.
    const out = await adapter.restore(u, point, c);
    expect(out.changes).toMatchObject({ rowsUpdated: 7, rowsInserted: 1 });
    expect(await h.rowsOf('lk_cow')).toEqual(captured);
    await adapter.release(u, point, c);
  });

  it('copy, with a column to drop again (ACCESS EXCLUSIVE, which queues readers too): a reader left open makes the restore fail naming it; the readers after it are not held; once it ends, the restore goes through', async () => {
    await h.sql.query(`CREATE TABLE lk_copy (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO lk_copy SELECT g, 'v' || g FROM generate_series(1, 30) g`);
    const u = h.unit({ id: 'lkcopy', table: 'lk_copy', capture: 'copy' });
    const c = h.ctx('d-lkcopy', 'run-lkcopy');
    const captured = await h.rowsOf('lk_copy');
    const point = await adapter.capture(u, c);
    await h.sql.query(`ALTER TABLE lk_copy ADD COLUMN extra int DEFAULT 7`);
    await h.sql.query(`UPDATE lk_copy SET v = 'bad' WHERE id = 3`);

    const reader = await h.db.client();
    try {
      await reader.query('BEGIN');
      await reader.query(`SELECT count(*) FROM lk_copy`);
      const error = await adapter.restore(u, point, c).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TableBusyError);
      expect((error as Error).message).toMatch(/the restore could not lock public\.lk_copy: 3 tries of 150 ms each, and other sessions held it \(pid \d+ \(postgres, idle in transaction, .*SELECT count\(\*\) FROM lk_copy/);
      // A later reader is not queued behind a waiting ACCESS EXCLUSIVE request: it reads the deploy's table.
      const { rows } = await h.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM lk_copy WHERE extra = 7`);
      expect(rows[0]!.n).toBe(30);
      await reader.query('COMMIT');
    } finally {
      await reader.end();
    }
    await adapter.restore(u, point, c);
    expect(await h.rowsOf('lk_copy')).toEqual(captured);
    await adapter.release(u, point, c);
  });
});

describe('MySQL/MariaDB: a restore that cannot lock its rows', () => {
  const connector = () => mysqlConnector({ warehouse: { engine: 'mysql', url: my.url } });
  const ctx = (deploymentId: string, runId: string) => mysqlAdapterContext({ pipeline: 'shop', deploymentId, runId, mysql: connector() });
  const rowsOf = (table: string) => mysqlRows(mysqlSql, my.name, table);
  const quarantineExists = async (runId: string, unitId: string): Promise<boolean> => {
    const [rows] = await mysqlSql.query<mysql.RowDataPacket[]>('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [
      'etl_rollback',
      mysqlQuarantineName('shop', runId, unitId),
    ]);
    return rows.length > 0;
  };

  // Copy-on-write holds writers off by the undo log's rows (a row the deploy wrote: its log row; another: a new one).
  for (const [capture, row] of [['copy-on-write', 2], ['copy-on-write', 20], ['copy', 2]] as const) {
    it(`${capture}: a transaction holding a row lock (row ${row}${row === 2 ? ', one the deploy wrote' : ', one it did not'}) makes the restore fail with TableBusyError naming it; nothing written; once it ends, the restore puts the table back`, async () => {
      const table = `lk_${capture === 'copy' ? 'copy' : 'cow'}${row}`;
      const id = `my${capture === 'copy' ? 'copy' : 'cow'}${row}`;
      await mysqlSql.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB`);
      await mysqlSql.query(`INSERT INTO ${table} SELECT seq, CONCAT('v', seq) FROM seq_1_to_40`);
      const u = mysqlUnit(id, table, { capture });
      const c = ctx(`d-${id}`, `run-${id}`);
      const captured = await rowsOf(table);
      const point = await mysqlTable.capture(u, c);
      await mysqlSql.query(`UPDATE ${table} SET v = 'bad' WHERE id <= 4`);
      await mysqlSql.query(`DELETE FROM ${table} WHERE id = 40`);
      const deployed = await rowsOf(table);

      const blocker = await my.connection();
      try {
        await blocker.query('START TRANSACTION');
        await blocker.query(`UPDATE ${table} SET v = 'still loading' WHERE id = ${row}`);
        const error = await mysqlTable.restore(u, point, c, quickMysql).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(TableBusyError);
        expect((error as Error).message).toMatch(
          new RegExp(`^unit "${id}": the restore could not lock .*${table}.*: 2 tries of 1 s each, and open transactions held it \\(the oldest: thread \\d+ \\(a transaction open since .*\\)\\)\\. Nothing was written\\.`),
        );
        expect(await rowsOf(table)).toEqual(deployed);
        expect(await quarantineExists(`run-${id}`, id)).toBe(false);
        await blocker.query('COMMIT');
      } finally {
        await blocker.end();
      }
      await mysqlTable.restore(u, point, c, quickMysql);
      expect(await rowsOf(table)).toEqual(captured);
      await mysqlTable.release(u, point, c);
    });
  }

  it('copy-on-write captured whole (no install first): a transaction holding a row lock makes the capture fail with TableBusyError; once it ends, the capture goes through', async () => {
    await mysqlSql.query(`CREATE TABLE lk_whole (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB`);
    await mysqlSql.query(`INSERT INTO lk_whole SELECT seq, CONCAT('v', seq) FROM seq_1_to_25`);
    const u = mysqlUnit('mywhole', 'lk_whole', { capture: 'copy-on-write' });
    const c = ctx('d-mywhole', 'run-mywhole');
    const blocker = await my.connection();
    try {
      await blocker.query('START TRANSACTION');
      await blocker.query(`UPDATE lk_whole SET v = 'still loading' WHERE id = 3`);
      const error = await mysqlCopyOnWrite.capture(u, c, quickMysql).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TableBusyError);
      expect((error as Error).message).toMatch(/could not lock .*lk_whole.* to install its triggers: 2 tries of 1 s each, and open transactions held it \(the oldest: thread \d+/);
      // The writer that held it goes on (its row was not locked by the capture meanwhile).
      await blocker.query(`UPDATE lk_whole SET v = 'loaded' WHERE id = 4`);
      await blocker.query('COMMIT');
    } finally {
      await blocker.end();
    }
    const point = await mysqlCopyOnWrite.capture(u, c, quickMysql);
    expect(point.count).toBe(25);
    await mysqlSql.query(`UPDATE lk_whole SET v = 'bad' WHERE id <= 5`);
    await mysqlTable.restore(u, point, c, quickMysql);
    expect((await rowsOf('lk_whole')).filter((r) => r.includes("'bad'"))).toEqual([]);
    await mysqlTable.release(u, point, c);
  });
});
