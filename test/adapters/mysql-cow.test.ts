import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type mysql from 'mysql2/promise';
import { mysqlTable as adapter, type MysqlTableDetails } from '../../core/adapters/mysql-table.ts';
import { holdWriters, mysqlCopyOnWrite } from '../../core/adapters/mysql/copy-on-write.ts';
import type { AdapterContext, RestorePoint } from '../../core/adapters/types.ts';
import { PreflightError, TableBusyError, VerificationFailedError } from '../../core/errors.ts';
import type { MysqlTableUnit } from '../../core/manifest/schema.ts';
import { mysqlConnector, type MysqlConnector } from '../../core/runtime/connections.ts';
import { createTableReader, createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlRows, mysqlUnit } from '../support/mysql-adapter.ts';

let db: TestMysqlDatabase;
let sql: mysql.Connection;
let connector: MysqlConnector;

beforeAll(async () => {
  db = await createTestMysqlDatabase('mycow');
  sql = await db.connection();
  connector = mysqlConnector({ warehouse: { engine: 'mysql', url: db.url } });
});

afterAll(async () => {
  await db?.drop();
});

const ctx = (deploymentId: string, runId = `run-${deploymentId}`): AdapterContext => mysqlAdapterContext({ pipeline: 'shop', deploymentId, runId, mysql: connector });
const cow = (id: string, table: string, extra: Record<string, unknown> = {}): MysqlTableUnit => mysqlUnit(id, table, { capture: 'copy-on-write', ...extra });
const rowsOf = (table: string, where = 'TRUE') => mysqlRows(sql, db.name, table, where);

async function one<T>(text: string, values?: unknown[]): Promise<T> {
  const [rows] = await sql.query<mysql.RowDataPacket[]>(text, values);
  return Object.values(rows[0] ?? {})[0] as T;
}

async function ourTriggers(table: string): Promise<string[]> {
  const [rows] = await sql.query<mysql.RowDataPacket[]>(
    "SELECT TRIGGER_NAME AS n FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? AND TRIGGER_NAME LIKE 'etlrb\\_cw\\_%' ORDER BY 1",
    [db.name, table],
  );
  return rows.map((r) => String(r.n));
}

async function checksOk(u: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, c: AdapterContext): Promise<boolean> {
  const checks = await adapter.verify(u, point, c);
  return checks.length > 0 && checks.every((ch) => ch.ok);
}

/** Rows a statement wrote, by kind, from an audit trigger set (MySQL has no per-row transaction id to read). */
async function audit(table: string): Promise<() => Promise<Record<string, number>>> {
  await sql.query(`CREATE TABLE IF NOT EXISTS audit_log (seq INT AUTO_INCREMENT PRIMARY KEY, tbl VARCHAR(64), op VARCHAR(8))`);
  for (const op of ['INSERT', 'UPDATE', 'DELETE']) {
    await sql.query(`CREATE TRIGGER \`${table}_audit_${op.toLowerCase()}\` AFTER ${op} ON \`${table}\` FOR EACH ROW INSERT INTO audit_log (tbl, op) VALUES ('${table}', '${op}')`);
  }
  return async () => {
    const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT op, COUNT(*) AS n FROM audit_log WHERE tbl = ? GROUP BY op`, [table]);
    await sql.query(`DELETE FROM audit_log WHERE tbl = ?`, [table]);
    return Object.fromEntries(rows.map((r) => [String(r.op).toLowerCase(), Number(r.n)]));
  };
}

describe('mysql-table copy-on-write: capture and restore (MariaDB)', () => {
  it('copies nothing; restore puts back inserts, updates (of the key too), deletes and a row changed many times; TRUNCATE is stopped; dependents keep working', async () => {
    await sql.query(`CREATE TABLE cw_orders (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL, amount DECIMAL(12,2), note TEXT, at DATETIME(3) DEFAULT '2024-01-01 00:00:00.000') ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_orders (id, customer, amount, note) SELECT seq, CONCAT('c', seq % 7), seq * 1.25, IF(seq % 5 = 0, NULL, REPEAT('n', seq % 11)) FROM seq_1_to_500`);
    await sql.query(`CREATE TABLE cw_lines (id INT PRIMARY KEY, order_id INT NOT NULL, qty INT, FOREIGN KEY (order_id) REFERENCES cw_orders (id)) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_lines SELECT seq, seq, 1 FROM seq_1_to_20`);
    await sql.query(`CREATE VIEW cw_by_customer AS SELECT customer, SUM(amount) AS total FROM cw_orders GROUP BY customer`);
    const reader = await createTableReader(db.name, 'cw_orders');
    const u = cow('orders', 'cw_orders');
    const c = ctx('d-cw');
    const captured = await rowsOf('cw_orders');
    const view = await rowsOf('cw_by_customer');

    const point = await adapter.capture(u, c);
    expect(point).toMatchObject({ count: 500, details: { capture: 'copy-on-write', primaryKey: ['id'] } });
    expect(point.details.shadowTable).toMatch(/^etl_rollback\.cw_shop_orders_[0-9a-f]{16}$/);
    expect(Number(await one<string>(`SELECT COUNT(*) FROM ${point.details.shadowTable}`))).toBe(0);
    expect(await ourTriggers('cw_orders')).toHaveLength(3);
    // Idempotent: the same point again, nothing new.
    expect(await adapter.capture(u, { ...c, now: () => new Date('2031-01-01T00:00:00Z') })).toEqual(point);

    // The bad deploy.
    const deploy = await audit('cw_orders');
    await sql.query(`INSERT INTO cw_orders (id, customer, amount) SELECT seq, 'bad', 0 FROM seq_501_to_510`);
    await sql.query(`UPDATE cw_orders SET amount = -1 WHERE id BETWEEN 30 AND 39`);
    for (let i = 0; i < 5; i++) await sql.query(`UPDATE cw_orders SET amount = amount + 1000, customer = 'many' WHERE id = 100`);
    await sql.query(`DELETE FROM cw_orders WHERE id BETWEEN 200 AND 204`);
    await sql.query(`UPDATE cw_orders SET id = id + 10000 WHERE id BETWEEN 300 AND 302 ORDER BY id DESC`); // key update
    await sql.query(`UPDATE cw_orders SET id = 200 WHERE id = 410`); // a key moved onto a captured key the deploy deleted
    await sql.query(`START TRANSACTION`);
    await sql.query(`UPDATE cw_orders SET amount = 123 WHERE id = 450`);
    await sql.query(`ROLLBACK`); // aborted: not recorded
    expect(Number(await one<string>(`SELECT COUNT(*) FROM ${point.details.shadowTable} WHERE id = 450`))).toBe(0);
    // TRUNCATE is stopped by the guard: the deploy gets an error instead of an unrecorded loss.
    await expect(sql.query(`TRUNCATE cw_orders`)).rejects.toThrow(/Cannot truncate a table referenced in a foreign key constraint/);
    await deploy();
    const deployed = await rowsOf('cw_orders');

    const plan = await adapter.diff(u, point, c);
    expect(plan.notes[0]).toMatch(/^capture: copy-on-write \(the unit sets capture: copy-on-write\): undo table etl_rollback\.cw_/);
    expect(plan.notes.join('\n')).not.toMatch(/FAILED/);
    // Deleted: 501-510, 10300-10302. Updated: 30-39, 100, 200 (holding 410's row). Inserted: 201-204, 300-302, 410.
    expect(plan.changes).toMatchObject({ rowsDeleted: 13, rowsUpdated: 12, rowsInserted: 8 });

    const out = await adapter.restore(u, point, c);
    expect(out.changes).toMatchObject({ rowsDeleted: 13, rowsUpdated: 12, rowsInserted: 8, rowsQuarantined: 25 });
    expect(await deploy()).toEqual({ delete: 13, update: 12, insert: 8 }); // written: exactly the difference
    expect(out.notes.at(-1)).toMatch(/verified in the restore transaction: 500 rows \(the restored rows equal their pre-images; the others are unchanged since the capture\)/);
    expect(out.notes.join('\n')).toMatch(/same InnoDB table id, no foreign key actions on it\): the table was not read to look for unrecorded writes/);
    expect(out.notes.join('\n')).toMatch(/writers held off by locking the undo log's rows and gaps \(\d+ rows; every write of the table waits in its trigger\), not the table's rows/);
    expect(await rowsOf('cw_orders')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);
    expect(await rowsOf('cw_by_customer')).toEqual(view);
    await expect(sql.query(`INSERT INTO cw_lines VALUES (99, 99999, 1)`)).rejects.toThrow(/foreign key constraint fails/);
    expect(await reader.count()).toBe(500); // the grant on the table still holds: the same table, rows written in place
    await reader.drop();
    expect(Number(await one<string>(`SELECT COUNT(*) FROM ${out.keptAt!}`))).toBe(25);
    // The quarantine holds exactly the rows the restore replaced: the deployed rows that are not captured rows.
    const replaced = deployed.filter((r) => !captured.includes(r));
    expect(await mysqlRows(sql, 'etl_rollback', out.keptAt!.split('.')[1]!)).toEqual(replaced);

    // A rerun writes nothing.
    const again = await adapter.restore(u, point, ctx('d-cw', 'run-2'));
    expect(again.writes).toBe(0);
    expect(await deploy()).toEqual({});

    // Release drops the triggers, the guard and the undo table; twice is fine; TRUNCATE works again.
    await adapter.release(u, point, c);
    await adapter.release(u, point, c);
    expect(await ourTriggers('cw_orders')).toEqual([]);
    expect(Number(await one<string>(`SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'etl_rollback' AND TABLE_NAME LIKE 'c%\\_shop\\_orders\\_%'`))).toBe(0);
    await sql.query(`DELETE FROM cw_lines`);
    await sql.query(`SET foreign_key_checks = 0`);
    await sql.query(`TRUNCATE cw_lines`);
    await sql.query(`SET foreign_key_checks = 1`);
  });

  it('a proven restore holds writers off by locking the undo log, not the table: every kind of write waits in its trigger, in either isolation level; reads go on; the rows locked are the log\'s', async () => {
    await sql.query(`CREATE TABLE cw_hold (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_hold SELECT seq, CONCAT('v', seq) FROM seq_1_to_300`);
    const u = cow('hold', 'cw_hold');
    const c = ctx('d-hold');
    const point = await adapter.capture(u, c);
    await sql.query(`UPDATE cw_hold SET v = 'bad' WHERE id <= 5`);
    await sql.query(`DELETE FROM cw_hold WHERE id = 10`);
    await sql.query(`INSERT INTO cw_hold VALUES (301, 'new')`);
    const undo = point.details.shadowTable.split('.').map((n) => `\`${n}\``).join('.');
    const live = { sql: `\`${db.name}\`.\`cw_hold\`` };

    const locked = async (by: 'log' | 'table'): Promise<{ rowsLocked: number; writes: Record<string, string>; reads: number }> => {
      const holder = await db.connection();
      const writer = await db.connection();
      try {
        await holder.query('START TRANSACTION');
        await holdWriters(holder, live, undo, by);
        // INNODB_TRX is a cache InnoDB refreshes when it is over 0.1 s old.
        await new Promise((r) => setTimeout(r, 150));
        const [trx] = await holder.query<mysql.RowDataPacket[]>('SELECT trx_rows_locked AS n FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = CONNECTION_ID()');
        // MariaDB: 0 fails a lock wait at once ("Lock wait timeout exceeded").
        await writer.query('SET SESSION innodb_lock_wait_timeout = 0');
        const writes: Record<string, string> = {};
        for (const isolation of ['REPEATABLE READ', 'READ COMMITTED']) {
          await writer.query(`SET SESSION TRANSACTION ISOLATION LEVEL ${isolation}`);
          for (const [what, statement] of [
            ['update of a logged row', `UPDATE cw_hold SET v = 'w' WHERE id = 1`],
            ['update of an unlogged row', `UPDATE cw_hold SET v = 'w' WHERE id = 100`],
            ['insert', `INSERT INTO cw_hold VALUES (500, 'w')`],
            ['delete', `DELETE FROM cw_hold WHERE id = 200`],
          ] as const) {
            const outcome = await writer.query(statement).then(
              () => 'written',
              (e: Error) => e.message,
            );
            writes[`${isolation}: ${what}`] = outcome;
          }
        }
        const [[read]] = (await writer.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM cw_hold')) as unknown as [[{ n: number }]];
        return { rowsLocked: Number(trx[0]?.n ?? -1), writes, reads: Number(read.n) };
      } finally {
        await holder.query('ROLLBACK');
        await holder.end();
        await writer.end();
      }
    };
    for (const by of ['log', 'table'] as const) {
      const r = await locked(by);
      expect(Object.values(r.writes).every((w) => /Lock wait timeout exceeded/.test(w)), JSON.stringify(r.writes)).toBe(true);
      expect(r.reads).toBe(300);
      // The log: its 7 rows (5 pre-images, 1 deleted, 1 inserted key); the table: every row of it.
      if (by === 'log') expect(r.rowsLocked).toBeLessThanOrEqual(8);
      else expect(r.rowsLocked).toBeGreaterThanOrEqual(300);
    }
    expect(await rowsOf('cw_hold', 'id = 100')).toEqual(["'100','v100'"]);

    const out = await adapter.restore(u, point, c);
    expect(out.notes.join('\n')).toMatch(/writers held off by locking the undo log's rows and gaps \(7 rows;/);
    expect(await rowsOf('cw_hold', 'id IN (1, 10, 301)')).toEqual(["'1','v1'", "'10','v10'"]);
    await adapter.release(u, point, c);
  });

  it('install puts the triggers in place without reading the table (the deploy may start); the seal, read while the deploy writes (one of its transactions open), is the table as installed; the restore is exact', async () => {
    await sql.query(`CREATE TABLE cw_inplace (id INT PRIMARY KEY, v VARCHAR(20), n DECIMAL(10,2)) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_inplace SELECT seq, CONCAT('v', seq), seq / 4 FROM seq_1_to_300`);
    const captured = await rowsOf('cw_inplace');
    const refUnit = mysqlUnit('inplace-ref', 'cw_inplace');
    const reference = await adapter.capture(refUnit, ctx('d-inplace-ref'));
    const u = cow('inplace', 'cw_inplace');
    const c = ctx('d-inplace');
    const inPlace = await adapter.install(u, c);
    expect(inPlace?.status).toMatch(/^in place, seal to follow: triggers on \S*cw_inplace\S* log every change since \S+ into \S*etl_rollback\S*cw_shop_inplace_/);
    expect(await ourTriggers('cw_inplace')).toHaveLength(3);
    // Installing again (a retried task) finds it in place.
    expect((await adapter.install(u, c))?.status).toMatch(/^in place, seal to follow/);

    // The deploy writes before the seal; one of its transactions is open while the seal is read.
    await sql.query(`UPDATE cw_inplace SET v = 'bad' WHERE id <= 30`);
    await sql.query(`DELETE FROM cw_inplace WHERE id > 290`);
    await sql.query(`UPDATE cw_inplace SET id = id + 1000 WHERE id BETWEEN 100 AND 102 ORDER BY id DESC`);
    const writer = await db.connection();
    try {
      await writer.query(`START TRANSACTION`);
      await writer.query(`INSERT INTO cw_inplace SELECT seq, 'new', 0 FROM seq_2000_to_2004`);
      await writer.query(`UPDATE cw_inplace SET v = 'bad again' WHERE id BETWEEN 25 AND 40`);
      const sealed = await adapter.capture(u, c); // not held up by the open transaction
      await writer.query(`COMMIT`);
      expect({ count: sealed.count, checksum: sealed.checksum }).toEqual({ count: reference.count, checksum: reference.checksum });
      // Sealed: install leaves it to the capture, which answers it at once.
      expect(await adapter.install(u, c)).toBeUndefined();
      expect(await adapter.capture(u, c)).toEqual(sealed);
      const out = await adapter.restore(u, sealed, c);
      expect(out.changes).toMatchObject({ rowsUpdated: 40, rowsDeleted: 8, rowsInserted: 13 });
      expect(await rowsOf('cw_inplace')).toEqual(captured);
      expect(await checksOk(u, sealed, c)).toBe(true);
      await adapter.release(u, sealed, c);
    } finally {
      await writer.end();
    }
    await adapter.release(refUnit, reference, ctx('d-inplace-ref'));
    // A copy unit cannot stop half-way: no install, the caller captures it whole.
    expect(await adapter.install(refUnit, ctx('d-inplace-ref-2'))).toBeUndefined();
  });

  it('an install that cannot lock the table within its wait (a write transaction left open) tries again, then fails naming it; later writers are not held; once it ends, the install goes through', async () => {
    await sql.query(`CREATE TABLE cw_locked (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_locked SELECT seq, CONCAT('v', seq) FROM seq_1_to_20`);
    const u = cow('locked', 'cw_locked');
    const c = ctx('d-locked');
    const quick = { timeoutMs: 1000, tries: 2, pauseMs: 100 };
    const blocker = await db.connection();
    try {
      await blocker.query('START TRANSACTION');
      await blocker.query(`UPDATE cw_locked SET v = 'open' WHERE id = 1`);
      const error = await mysqlCopyOnWrite.install(u, c, quick).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TableBusyError);
      expect((error as Error).message).toMatch(/could not lock .*cw_locked.* to install its triggers: 2 tries of 1 s each, and open transactions held it \(the oldest: thread \d+ \(a transaction open since /);
      // The install gave up its place in the lock queue: another writer goes on.
      await sql.query(`UPDATE cw_locked SET v = 'other' WHERE id = 2`);
      await blocker.query('COMMIT');
    } finally {
      await blocker.end();
    }
    // The half-made install is made again, then sealed.
    expect((await mysqlCopyOnWrite.install(u, c, quick))?.status).toMatch(/^in place, seal to follow/);
    const point = await adapter.capture(u, c);
    expect(point.count).toBe(20);
    await adapter.release(u, point, c);
  });

  it('a column the deploy changed, or a TRUNCATE, before the seal fails the seal, naming it and the backstop; an installed point whose undo log was dropped is never installed again', async () => {
    await sql.query(`CREATE TABLE cw_sealfail (id INT PRIMARY KEY, amount DECIMAL(12,2)) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_sealfail SELECT seq, seq / 4 FROM seq_1_to_30`);
    const u = cow('sealfail', 'cw_sealfail');
    await adapter.install(u, ctx('d-sealfail-1'));
    await sql.query(`ALTER TABLE cw_sealfail MODIFY amount DECIMAL(12,4)`);
    await expect(adapter.capture(u, ctx('d-sealfail-1'))).rejects.toThrow(/the seal of .*cw_sealfail.* cannot be read: its columns changed after its triggers went in \(amount\).*This restore point cannot be sealed; the backstop is/);
    await sql.query(`ALTER TABLE cw_sealfail MODIFY amount DECIMAL(12,2)`);
    // An installed point whose undo table was dropped: never installed again (that would take the table as it is now).
    const inPlace = await adapter.install(u, ctx('d-sealfail-2'));
    const undo = /into (\S+)$/.exec(inPlace!.status)![1]!;
    await sql.query(`DROP TABLE ${undo}`);
    await expect(adapter.capture(u, ctx('d-sealfail-2'))).rejects.toThrow(/was installed, but its undo table .* is gone \(dropped\).*installing it again would take the table as it is now/);
    await expect(adapter.install(u, ctx('d-sealfail-2'))).rejects.toThrow(/was installed, but its undo table/);
    // TRUNCATE between install and seal, the guard outrun with foreign_key_checks off: no trigger saw the rows go,
    // and the table has a new InnoDB id.
    const c3 = ctx('d-sealfail-3');
    await adapter.install(u, c3);
    await sql.query(`SET foreign_key_checks = 0`);
    await sql.query(`TRUNCATE cw_sealfail`);
    await sql.query(`SET foreign_key_checks = 1`);
    await expect(adapter.capture(u, c3)).rejects.toThrow(/cannot be read: it was truncated or rebuilt after its triggers went in \(its InnoDB table id changed\).*backstop/);
  });

  it('rows changed by a foreign key action (no trigger fires) are not taken on trust: the table is read, the restore fails naming the backstop, and writes nothing', async () => {
    await sql.query(`CREATE TABLE cw_codes (code VARCHAR(8) PRIMARY KEY) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_codes VALUES ('a'), ('b')`);
    await sql.query(
      `CREATE TABLE cw_coded (id INT PRIMARY KEY, code VARCHAR(8) NOT NULL, v INT, FOREIGN KEY (code) REFERENCES cw_codes (code) ON UPDATE CASCADE) ENGINE=InnoDB`,
    );
    await sql.query(`INSERT INTO cw_coded SELECT seq, IF(seq % 2 = 0, 'a', 'b'), seq FROM seq_1_to_40`);
    const u = cow('coded', 'cw_coded');
    const c = ctx('d-coded');
    const point = await adapter.capture(u, c);
    // The deploy: one logged update, and a change of the parent's key that InnoDB cascades into 20 rows, unlogged.
    await sql.query(`UPDATE cw_coded SET v = -1 WHERE id = 1`);
    await sql.query(`UPDATE cw_codes SET code = 'a2' WHERE code = 'a'`);
    const deployed = await rowsOf('cw_coded');
    const plan = await adapter.diff(u, point, c);
    expect(plan.notes.join('\n')).toMatch(/every row in scope was counted for writes the triggers did not record: its rows can change by foreign key actions, which fire no trigger \(.*ON UPDATE CASCADE\)/);
    const err = await adapter.restore(u, point, c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationFailedError);
    expect((err as Error).message).toMatch(/did not reproduce the restore point.*nothing was written.*point-in-time restore/i);
    expect(await rowsOf('cw_coded')).toEqual(deployed);
    await adapter.release(u, point, c);
  });

  it('a deploy that bypasses the triggers makes the restore fail, name the cause and the backstop, and write nothing', async () => {
    await sql.query(`CREATE TABLE cw_by (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_by SELECT seq, CONCAT('v', seq) FROM seq_1_to_100`);
    const u = cow('by', 'cw_by');
    const c = ctx('d-by');
    const point = await adapter.capture(u, c);

    // TRUNCATE with foreign_key_checks off (the guard outrun), then rows written again: the untouched count tells.
    await sql.query(`SET foreign_key_checks = 0`);
    await sql.query(`TRUNCATE cw_by`);
    await sql.query(`SET foreign_key_checks = 1`);
    await sql.query(`INSERT INTO cw_by SELECT seq, 'after' FROM seq_1_to_10`);
    const bad = await rowsOf('cw_by');
    const plan = await adapter.diff(u, point, c);
    expect(plan.notes.join('\n')).toMatch(/copy-on-write check FAILED.*rows were deleted \(or truncated, with foreign_key_checks off\) without the triggers.*backstop.*snapshot.*point-in-time restore/);
    expect(plan.notes.join('\n')).toMatch(/every row in scope was counted for writes the triggers did not record: the table was truncated or rebuilt since the capture \(InnoDB table id \d+, now \d+\)/);
    const err = await adapter.restore(u, point, c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationFailedError);
    expect((err as Error).message).toMatch(/without the triggers recording them.*Nothing was written.*point-in-time restore/);
    expect(await rowsOf('cw_by')).toEqual(bad);
    await adapter.release(u, point, c);

    // A trigger dropped and made again (an update in between went unrecorded): named, by its creation time.
    await sql.query(`DELETE FROM cw_by`);
    await sql.query(`INSERT INTO cw_by SELECT seq, CONCAT('v', seq) FROM seq_1_to_100`);
    const c2 = ctx('d-by-2');
    const p2 = await adapter.capture(u, c2);
    const update = (await ourTriggers('cw_by')).find((t) => t.endsWith('_au'))!;
    const [shown] = await sql.query<mysql.RowDataPacket[]>(`SHOW CREATE TRIGGER \`${update}\``);
    await sql.query(`DROP TRIGGER \`${update}\``);
    await sql.query(`UPDATE cw_by SET v = 'unseen' WHERE id = 2`);
    await new Promise((r) => setTimeout(r, 30)); // CREATED is kept in hundredths of a second
    await sql.query(String(shown[0]!['SQL Original Statement']));
    const unseen = await rowsOf('cw_by');
    await expect(adapter.restore(u, p2, c2)).rejects.toThrow(new RegExp(`trigger ${update} was dropped and created again.*Nothing was written.*backstop`));
    expect(await rowsOf('cw_by')).toEqual(unseen);
    await adapter.release(u, p2, c2);

    // The guard dropped: TRUNCATE was possible, so the log cannot be trusted even if the counts still agree.
    const c3 = ctx('d-by-3');
    const p3 = await adapter.capture(u, c3);
    const guard = p3.details.shadowTable.replace('etl_rollback.cw_', 'etl_rollback.cg_');
    await sql.query(`DROP TABLE ${guard}`);
    await expect(adapter.restore(u, p3, c3)).rejects.toThrow(/the guard foreign key .* was dropped, so TRUNCATE was no longer stopped.*backstop/);
    await adapter.release(u, p3, c3);
    expect(await ourTriggers('cw_by')).toEqual([]);
  });

  it('refuses what it cannot protect, with the reason: no key, partitioned, a predicate on a generated column; a schema change fails with the backstop', async () => {
    await sql.query(`CREATE TABLE cw_nokey (a INT, b TEXT) ENGINE=InnoDB`);
    await expect(adapter.capture(cow('nokey', 'cw_nokey'), ctx('d-nk'))).rejects.toThrow(/no primary key.*Use capture: copy/);
    await sql.query(`CREATE TABLE cw_parted (id INT, d DATE, PRIMARY KEY (id, d)) ENGINE=InnoDB PARTITION BY RANGE (YEAR(d)) (PARTITION p0 VALUES LESS THAN (2025), PARTITION p1 VALUES LESS THAN MAXVALUE)`);
    await expect(adapter.capture(cow('parted', 'cw_parted'), ctx('d-pt'))).rejects.toThrow(/partitioned.*no foreign key/);
    await sql.query(`CREATE TABLE cw_gen (id INT PRIMARY KEY, a INT, twice INT AS (a * 2) VIRTUAL) ENGINE=InnoDB`);
    await expect(adapter.capture(cow('gen', 'cw_gen', { where: 'twice > 4' }), ctx('d-gen'))).rejects.toThrow(PreflightError);
    // Refused captures leave nothing behind (their leftovers are dropped by the next capture of the point).
    await adapter.release(cow('gen', 'cw_gen', { where: 'twice > 4' }), { unitId: 'gen', type: 'mysql-table', capturedAt: '', count: 0, checksum: '', details: { connection: 'warehouse', table: `${db.name}.cw_gen`, shadowTable: 'etl_rollback.cw_shop_gen_x', primaryKey: ['id'], columns: [], autoIncrement: null, capture: 'copy-on-write' } }, ctx('d-gen'));

    await sql.query(`CREATE TABLE cw_sch (id INT PRIMARY KEY, a VARCHAR(20), b INT) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_sch SELECT seq, CONCAT('a', seq), seq FROM seq_1_to_30`);
    const u = cow('sch', 'cw_sch');
    const point = await adapter.capture(u, ctx('d-sch'));
    await sql.query(`ALTER TABLE cw_sch ADD COLUMN extra VARCHAR(10) DEFAULT 'x'`);
    const plan = adapter.diff(u, point, ctx('d-sch'));
    await expect(plan).rejects.toThrow(/changed the columns of .*cw_sch \(now: extra varchar\(10\).*revert the DDL by hand.*backstop/);
    await expect(adapter.restore(u, point, ctx('d-sch'))).rejects.toThrow(PreflightError);
    // A dropped column: the triggers' column list no longer fits, so the deploy's next write fails instead of going unrecorded.
    await sql.query(`ALTER TABLE cw_sch DROP COLUMN extra, DROP COLUMN b`);
    await expect(sql.query(`UPDATE cw_sch SET a = 'changed' WHERE id = 1`)).rejects.toThrow(/Unknown column 'b'/);
    await adapter.release(u, point, ctx('d-sch'));
    await sql.query(`UPDATE cw_sch SET a = 'changed' WHERE id = 1`);
  });

  it('a `where` unit restores only its scope: a row moved out is put back, one moved in is removed, the rest of the table is left as the deploy made it', async () => {
    await sql.query(`CREATE TABLE cw_sc (id INT PRIMARY KEY, region VARCHAR(4) NOT NULL, v INT) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_sc SELECT seq, IF(seq % 2 = 0, 'eu', 'us'), seq FROM seq_1_to_40`);
    const u = cow('sc', 'cw_sc', { where: `region = 'eu'` });
    const point = await adapter.capture(u, ctx('d-sc'));
    expect(point.count).toBe(20);
    const euBefore = await rowsOf('cw_sc', `region = 'eu'`);
    await sql.query(`UPDATE cw_sc SET v = -v`); // everything, both regions
    await sql.query(`UPDATE cw_sc SET region = 'us' WHERE id = 2`); // out of scope
    await sql.query(`UPDATE cw_sc SET region = 'eu' WHERE id = 3`); // into scope
    await sql.query(`INSERT INTO cw_sc VALUES (100, 'eu', 1), (101, 'us', 1)`);
    const usAfterDeploy = await rowsOf('cw_sc', `region = 'us' AND id <> 2`);
    const out = await adapter.restore(u, point, ctx('d-sc'));
    expect(out.notes).toContain(`scope: rows where region = 'eu'`);
    expect(await rowsOf('cw_sc', `region = 'eu'`)).toEqual(euBefore);
    expect(await rowsOf('cw_sc', `region = 'us'`)).toEqual(usAfterDeploy);
    expect(await checksOk(u, point, ctx('d-sc'))).toBe(true);
    await adapter.release(u, point, ctx('d-sc'));
  });
});

describe('mysql-table copy-on-write: what a rollback replaces (undo)', () => {
  it('is recorded at the keys the undo log names, not by copying the table; the record puts it back, and refuses a write made since at another key', async () => {
    await sql.query(`CREATE TABLE cw_undo (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL, n INT) ENGINE=InnoDB`);
    await sql.query(`INSERT INTO cw_undo SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_500`);
    const u = cow('undo', 'cw_undo');
    const c = ctx('d-undo');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('cw_undo');
    await sql.query(`UPDATE cw_undo SET v = 'bad' WHERE id <= 10`);
    await sql.query(`DELETE FROM cw_undo WHERE id BETWEEN 11 AND 13`);
    await sql.query(`INSERT INTO cw_undo VALUES (900, 'new', 0)`);
    await sql.query(`UPDATE cw_undo SET id = 950 WHERE id = 14`);
    const found = await rowsOf('cw_undo');

    const logged: Record<string, unknown>[] = [];
    const rc: AdapterContext = { ...ctx('undo-r1', 'r1'), log: { info: (_m: string, data?: Record<string, unknown>) => void logged.push(data ?? {}), warn: () => undefined } };
    const record = await adapter.undoRecord(u, rc, point);
    // The log proven whole: the record's count and checksum carried from the capture's at the logged keys (checked
    // against the table just below), the table not read.
    expect(logged).toContainEqual(expect.objectContaining({ countedBy: 'carried from the capture at the logged keys' }));
    expect(record.details.capture).toBe('copy-on-write');
    // 10 updated + 3 deleted + 1 inserted + the key moved (14 and 950): 16 rows kept, not the table's 498.
    expect(Number(await one<number>(`SELECT COUNT(*) FROM etl_rollback.${record.details.shadowTable.split('.')[1]}`))).toBe(16);
    expect(await one<string>(`SELECT GROUP_CONCAT(CONCAT(k, ':', n) ORDER BY k) FROM (SELECT etlrb_kind AS k, COUNT(*) AS n FROM etl_rollback.${record.details.shadowTable.split('.')[1]} GROUP BY 1) x`)).toBe('i:4,p:12');
    expect(record.count).toBe(found.length);
    expect(await checksOk(u, record, rc)).toBe(true);
    expect(await adapter.undoRecord(u, rc, point)).toEqual(record); // a retry: the same record

    await adapter.restore(u, point, c);
    expect(await rowsOf('cw_undo')).toEqual(captured);
    const uc = ctx('undo-r1', 'u1');
    const plan = await adapter.diff(u, record, uc);
    expect(plan.notes[0]).toMatch(/^the record of what run r1 replaced/);
    // A record has no triggers: nothing proves its log whole, so the restore locks every row of the table.
    const undone = await adapter.restore(u, record, uc);
    expect(undone.notes.join('\n')).toMatch(/writers held off by locking every row and gap of \S*cw_undo/);
    expect(await rowsOf('cw_undo')).toEqual(found);

    // Rolled back again, then a write at a key the record does not hold: undoing again would not give the table the
    // run found. The end-to-end check fails it, and nothing is written.
    await adapter.restore(u, point, ctx('d-undo', 'again'));
    await sql.query(`UPDATE cw_undo SET v = 'later' WHERE id = 300`);
    const before = await rowsOf('cw_undo');
    await expect(adapter.restore(u, record, ctx('undo-r1', 'u2'))).rejects.toThrow(VerificationFailedError);
    expect(await rowsOf('cw_undo')).toEqual(before);
    await adapter.release(u, record, rc);
    expect(Number(await one<number>(`SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'etl_rollback' AND TABLE_NAME = ?`, [record.details.shadowTable.split('.')[1]]))).toBe(0);
    await adapter.release(u, point, c);
  });
});

describe('mysql-table copy-on-write: property (MariaDB)', () => {
  it('any sequence of inserts, upserts, updates (of the key too), key swaps and deletes is undone exactly, the point captured whole or installed first and sealed while they run', async () => {
    await sql.query(`CREATE TABLE cw_prop (id INT PRIMARY KEY, v VARCHAR(200), n INT, UNIQUE KEY uv (v)) ENGINE=InnoDB`);
    let run = 0;
    const op = fc.oneof(
      fc.record({ kind: fc.constant('insert' as const), id: fc.integer({ min: 1, max: 60 }), n: fc.integer({ min: -5, max: 5 }) }),
      fc.record({ kind: fc.constant('update' as const), lo: fc.integer({ min: 1, max: 60 }), span: fc.integer({ min: 0, max: 10 }), n: fc.integer({ min: -5, max: 5 }) }),
      fc.record({ kind: fc.constant('rekey' as const), lo: fc.integer({ min: 1, max: 60 }), span: fc.integer({ min: 0, max: 5 }), by: fc.integer({ min: 1, max: 80 }) }),
      fc.record({ kind: fc.constant('delete' as const), lo: fc.integer({ min: 1, max: 60 }), span: fc.integer({ min: 0, max: 10 }) }),
      // Two rows trade keys (through an unused one), their unique `v` with them: a swap of `v` between the two keys.
      fc.record({ kind: fc.constant('swap' as const), a: fc.integer({ min: 1, max: 45 }), b: fc.integer({ min: 1, max: 45 }) }),
    );
    await fc.assert(
      // `sealAfter`: undefined, the whole capture before the deploy; a number, the snapshot machine's way: installed
      // before the deploy, sealed after that many of its statements (the seal is read while it writes).
      fc.asyncProperty(fc.array(op, { maxLength: 12 }), fc.option(fc.nat({ max: 12 }), { nil: undefined }), async (ops, sealAfter) => {
        run += 1;
        await sql.query(`DELETE FROM cw_prop`);
        await sql.query(`INSERT INTO cw_prop SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_40`);
        const u = cow('prop', 'cw_prop');
        const c = ctx(`d-prop-${run}`);
        const captured = await rowsOf('cw_prop');
        if (sealAfter !== undefined) expect((await adapter.install(u, c))?.status).toMatch(/^in place, seal to follow/);
        let point = sealAfter === undefined || sealAfter === 0 ? await adapter.capture(u, c) : undefined;
        for (const [index, o] of ops.entries()) {
          if (index === sealAfter && index > 0) point = await adapter.capture(u, c);
          if (o.kind === 'insert') await sql.query(`INSERT INTO cw_prop VALUES (?, CONCAT('ins', ?), ?) ON DUPLICATE KEY UPDATE v = CONCAT('upsert', id), n = VALUES(n)`, [o.id, o.id, o.n]);
          else if (o.kind === 'update') await sql.query(`UPDATE cw_prop SET n = n + ?, v = CONCAT(v, '!') WHERE id BETWEEN ? AND ?`, [o.n, o.lo, o.lo + o.span]);
          else if (o.kind === 'rekey') {
            // Row by row, highest key first (InnoDB checks the key per row); skipped where a target key is taken.
            const [taken] = await sql.query<mysql.RowDataPacket[]>(`SELECT COUNT(*) AS n FROM cw_prop WHERE id BETWEEN ? AND ?`, [o.lo + o.by, o.lo + o.span + o.by]);
            if (Number(taken[0]!.n) === 0) await sql.query(`UPDATE cw_prop SET id = id + ? WHERE id BETWEEN ? AND ? ORDER BY id DESC`, [o.by, o.lo, o.lo + o.span]);
          } else if (o.kind === 'swap') {
            for (const [from, to] of [[o.a, -1], [o.b, o.a], [-1, o.b]]) {
              const [taken] = await sql.query<mysql.RowDataPacket[]>(`SELECT COUNT(*) AS n FROM cw_prop WHERE id = ?`, [to]);
              if (Number(taken[0]!.n) === 0) await sql.query(`UPDATE cw_prop SET id = ? WHERE id = ?`, [to, from]);
            }
          } else await sql.query(`DELETE FROM cw_prop WHERE id BETWEEN ? AND ?`, [o.lo, o.lo + o.span]);
        }
        point ??= await adapter.capture(u, c);
        // What the rollback replaces, recorded first at the logged keys: restoring the record puts it back exactly.
        const found = await rowsOf('cw_prop');
        const rc = ctx(`undo-r-prop-${run}`, `r-prop-${run}`);
        const record = await adapter.undoRecord(u, rc, point);
        await adapter.restore(u, point, c);
        expect(await rowsOf('cw_prop')).toEqual(captured);
        expect((await adapter.restore(u, point, ctx(`d-prop-${run}`, 'again'))).writes).toBe(0);
        await adapter.restore(u, record, ctx(`undo-r-prop-${run}`, `u-prop-${run}`));
        expect(await rowsOf('cw_prop')).toEqual(found);
        await adapter.release(u, record, rc);
        await adapter.release(u, point, c);
      }),
      { numRuns: 30 },
    );
  }, 180_000);
});
