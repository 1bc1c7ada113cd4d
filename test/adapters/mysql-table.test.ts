import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type mysql from 'mysql2/promise';
import { mysqlTable as adapter, type MysqlTableDetails } from '../../core/adapters/mysql-table.ts';
import type { AdapterContext, RestorePoint } from '../../core/adapters/types.ts';
import { PreflightError, RestorePointMissingError } from '../../core/errors.ts';
import type { MysqlTableUnit } from '../../core/manifest/schema.ts';
import { mysqlConnector, type MysqlConnector } from '../../core/runtime/connections.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlUnit } from '../support/mysql-adapter.ts';

let db: TestMysqlDatabase;
let sql: mysql.Connection;
let connector: MysqlConnector;

beforeAll(async () => {
  db = await createTestMysqlDatabase('mytable');
  sql = await db.connection();
  connector = mysqlConnector({ warehouse: { engine: 'mysql', url: db.url } });
});

afterAll(async () => {
  await db?.drop();
});

const PIPELINE = 'shop';

const unit = mysqlUnit;

function ctx(deploymentId: string, runId = `run-${deploymentId}`, mysqlConn: MysqlConnector = connector): AdapterContext {
  return mysqlAdapterContext({ pipeline: PIPELINE, deploymentId, runId, mysql: mysqlConn });
}

async function q<T = mysql.RowDataPacket>(text: string, values?: unknown[]): Promise<T[]> {
  const [rows] = await sql.query(text, values);
  return rows as T[];
}

/** Every row as text (binary values in hex, NULL unquoted), sorted: equal arrays mean equal tables, duplicates included. */
async function rowsOf(table: string): Promise<string[]> {
  const [dbName, name] = table.includes('.') ? table.split('.') : [db.name, table];
  const cols = await q<{ c: string; t: string }>(
    'SELECT COLUMN_NAME AS c, DATA_TYPE AS t FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
    [dbName, name],
  );
  const binary = /binary|blob|bit|geometry/i;
  const fields = cols.map(({ c, t }) => (binary.test(t) ? `IFNULL(CONCAT('0x', HEX(\`${c}\`)), 'NULL')` : `QUOTE(\`${c}\`)`));
  const rows = await q<{ r: string }>(`SELECT CONCAT_WS(',', ${fields.join(', ')}) AS r FROM \`${dbName}\`.\`${name}\` ORDER BY CAST(r AS BINARY)`);
  return rows.map((r) => r.r);
}

async function quarantineTables(unitId: string): Promise<string[]> {
  const rows = await q<{ t: string }>(
    `SELECT TABLE_NAME AS t FROM information_schema.TABLES
      WHERE TABLE_SCHEMA = 'etl_rollback' AND TABLE_NAME LIKE ? AND TABLE_COMMENT LIKE ? ORDER BY 1`,
    [`q\\_${unitId.replace(/-/g, '\\_')}\\_%`, `%"table":"${db.name}.%`],
  );
  return rows.map((r) => `etl_rollback.${r.t}`);
}

async function exists(qualified: string): Promise<boolean> {
  const [schema, name] = qualified.split('.');
  return (await q('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [schema, name])).length > 0;
}

async function checksOk(u: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, c: AdapterContext): Promise<boolean> {
  const checks = await adapter.verify(u, point, c);
  return checks.length > 0 && checks.every((ch) => ch.ok);
}

/** An audit trigger set: which rows a restore really wrote (MySQL has no xmin). */
async function audit(table: string, key = 'id'): Promise<() => Promise<string[]>> {
  await sql.query(`CREATE TABLE IF NOT EXISTS audit_log (seq INT AUTO_INCREMENT PRIMARY KEY, tbl VARCHAR(64), op VARCHAR(8), k VARCHAR(200))`);
  for (const [op, row] of [['INSERT', 'NEW'], ['UPDATE', 'NEW'], ['DELETE', 'OLD']] as const) {
    await sql.query(
      `CREATE TRIGGER \`${table}_audit_${op.toLowerCase()}\` AFTER ${op} ON \`${table}\` FOR EACH ROW INSERT INTO audit_log (tbl, op, k) VALUES ('${table}', '${op}', ${row}.\`${key}\`)`,
    );
  }
  const [start] = await q<{ s: number | null }>('SELECT MAX(seq) AS s FROM audit_log');
  const from = Number(start?.s ?? 0);
  return async () => (await q<{ e: string }>(`SELECT CONCAT(op, ' ', k) AS e FROM audit_log WHERE tbl = ? AND seq > ? ORDER BY seq`, [table, from])).map((r) => r.e);
}

describe('mysql-table adapter: capture', () => {
  it('copies the table into a sealed shadow table with count, checksum, key and columns', async () => {
    await sql.query('CREATE TABLE cap_basic (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, amount DECIMAL(12,2))');
    await sql.query(`INSERT INTO cap_basic SELECT seq, CONCAT('n', seq), seq * 1.5 FROM seq_1_to_50`);
    const point = await adapter.capture(unit('cap-basic', 'cap_basic'), ctx('d-cap-basic'));

    expect(point).toMatchObject({ unitId: 'cap-basic', type: 'mysql-table', count: 50, capturedAt: '2024-05-01T12:00:00.000Z' });
    expect(point.checksum).toMatch(/^\d+$/);
    expect(point.details).toMatchObject({
      connection: 'warehouse',
      table: `${db.name}.cap_basic`,
      primaryKey: ['id'],
      autoIncrement: null,
      columns: [
        { name: 'id', type: 'int(11)', generated: false },
        { name: 'name', type: 'varchar(40)', collation: 'utf8mb4_general_ci', generated: false },
        { name: 'amount', type: 'decimal(12,2)', generated: false },
      ],
    });
    expect(point.details.shadowTable).toMatch(/^etl_rollback\.rp_shop_cap_basic_[0-9a-f]{16}$/);
    expect(point.details.shadowTable.split('.')[1]!.length).toBeLessThanOrEqual(64);
    expect(await rowsOf(point.details.shadowTable)).toEqual(await rowsOf('cap_basic'));

    const [row] = await q<{ state: string; meta: string }>('SELECT state, meta FROM etl_rollback.restore_points WHERE shadow_table = ?', [
      point.details.shadowTable.split('.')[1],
    ]);
    expect(row!.state).toBe('sealed');
    expect(JSON.parse(row!.meta)).toMatchObject({ pipeline: PIPELINE, deploymentId: 'd-cap-basic', unitId: 'cap-basic', sourceTable: `${db.name}.cap_basic`, count: 50, checksum: point.checksum, sealed: true });
    expect(await checksOk(unit('cap-basic', 'cap_basic'), point, ctx('d-cap-basic'))).toBe(true);
  });

  it('is idempotent: a second capture of the same deployment returns the same point without copying again', async () => {
    await sql.query('CREATE TABLE cap_idem (id INT PRIMARY KEY, v TEXT)');
    await sql.query(`INSERT INTO cap_idem SELECT seq, CONCAT('v', seq) FROM seq_1_to_10`);
    const u = unit('cap-idem', 'cap_idem');
    const first = await adapter.capture(u, ctx('d-idem'));
    await sql.query(`INSERT INTO cap_idem VALUES (11, 'late')`);
    const second = await adapter.capture(u, { ...ctx('d-idem'), now: () => new Date('2030-01-01T00:00:00Z') });
    expect(second).toEqual(first);
    expect(await rowsOf(first.details.shadowTable)).toHaveLength(10);

    const other = await adapter.capture(u, ctx('d-idem-2'));
    expect(other.details.shadowTable).not.toBe(first.details.shadowTable);
    expect(other.count).toBe(11);
  });

  it('concurrent captures of the same point and of sibling units do not race', async () => {
    await sql.query('CREATE TABLE cap_conc_a (id INT PRIMARY KEY)');
    await sql.query('CREATE TABLE cap_conc_b (id INT PRIMARY KEY)');
    await sql.query('INSERT INTO cap_conc_a SELECT seq FROM seq_1_to_2000');
    await sql.query('INSERT INTO cap_conc_b SELECT seq FROM seq_1_to_100');
    const points = await Promise.all([
      adapter.capture(unit('cap-conc-a', 'cap_conc_a'), ctx('d-conc')),
      adapter.capture(unit('cap-conc-a', 'cap_conc_a'), ctx('d-conc')),
      adapter.capture(unit('cap-conc-b', 'cap_conc_b'), ctx('d-conc')),
    ]);
    expect(points[0]).toEqual(points[1]);
    expect(points.map((p) => p.count)).toEqual([2000, 2000, 100]);
  });

  it('refuses a table that does not exist, naming it, and leaves nothing behind', async () => {
    const error = await adapter.capture(unit('cap-missing', `${db.name}.no_such_table`), ctx('d-missing')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toContain(`${db.name}.no_such_table`);
    expect((error as Error).message).toContain('warehouse');
    expect(await q("SELECT 1 FROM etl_rollback.restore_points WHERE unit_id = 'cap-missing'")).toEqual([]);
    expect(await q("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'etl_rollback' AND TABLE_NAME LIKE 'rp\\_shop\\_cap\\_missing\\_%'")).toEqual([]);
  });

  it('refuses a view and a table that is not InnoDB', async () => {
    await sql.query('CREATE TABLE cap_view_base (id INT PRIMARY KEY)');
    await sql.query('CREATE VIEW cap_view AS SELECT * FROM cap_view_base');
    await expect(adapter.capture(unit('cap-view', 'cap_view'), ctx('d-view'))).rejects.toThrow(/is not a table \(VIEW\)/);
    await sql.query('CREATE TABLE cap_myisam (id INT PRIMARY KEY) ENGINE=MyISAM');
    const error = await adapter.capture(unit('cap-myisam', 'cap_myisam'), ctx('d-myisam')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toMatch(/MyISAM storage engine; only InnoDB/);
  });

  it('redoes a half-made shadow copy, and refuses a table in etl_rollback it did not make', async () => {
    await sql.query('CREATE TABLE cap_half (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO cap_half SELECT seq, seq FROM seq_1_to_20');
    // A predicate that fails at run time: the empty shadow exists, its record stays `pending`, nothing is sealed.
    const bad = unit('cap-half', 'cap_half', { where: 'no_such_column > 0' });
    await expect(adapter.capture(bad, ctx('d-half'))).rejects.toThrow(/where no_such_column > 0 failed.*no_such_column/);
    const [pending] = await q<{ state: string; shadow_table: string }>("SELECT state, shadow_table FROM etl_rollback.restore_points WHERE unit_id = 'cap-half' AND deployment_id = 'd-half'");
    expect(pending!.state).toBe('pending');
    expect(await exists(`etl_rollback.${pending!.shadow_table}`)).toBe(true);

    // The same point captured again (predicate fixed): the half-made copy is dropped and redone.
    const point = await adapter.capture(unit('cap-half', 'cap_half', { where: 'v > 5' }), ctx('d-half'));
    expect(point.count).toBe(15);
    expect(point.details.where).toBe('v > 5');
    expect(await rowsOf(point.details.shadowTable)).toHaveLength(15);

    // A table under the shadow's name with no record is not ours.
    const foreign = (await import('../../core/adapters/mysql-table.ts')).shadowTableName(PIPELINE, 'd-foreign', 'cap-half');
    await sql.query(`CREATE TABLE etl_rollback.\`${foreign}\` (x INT)`);
    try {
      await expect(adapter.capture(unit('cap-half', 'cap_half'), ctx('d-foreign'))).rejects.toThrow(/not recorded in etl_rollback.restore_points/);
    } finally {
      await sql.query(`DROP TABLE etl_rollback.\`${foreign}\``);
    }
  });

  it('gives the same checksum whatever the row order, and sees duplicates', async () => {
    await sql.query('CREATE TABLE sum_a (v TEXT)');
    await sql.query('CREATE TABLE sum_b (v TEXT)');
    await sql.query(`INSERT INTO sum_a VALUES ('a'), ('b'), ('c')`);
    await sql.query(`INSERT INTO sum_b VALUES ('c'), ('a'), ('b')`);
    const a = await adapter.capture(unit('sum-a', 'sum_a'), ctx('d-sum'));
    const b = await adapter.capture(unit('sum-b', 'sum_b'), ctx('d-sum'));
    expect(a.checksum).toBe(b.checksum);

    await sql.query(`DELETE FROM sum_a WHERE v = 'c'`);
    await sql.query(`INSERT INTO sum_a VALUES ('a')`);
    const checks = await adapter.verify(unit('sum-a', 'sum_a'), a, ctx('d-sum'));
    expect(checks.find((c) => c.name === 'rowCount')).toMatchObject({ ok: true, expected: 3, actual: 3 });
    expect(checks.find((c) => c.name === 'checksum')).toMatchObject({ ok: false, expected: a.checksum });
  });

  it('the checksum tells NULL from empty and from the text "N", and values apart across columns', async () => {
    await sql.query('CREATE TABLE sum_n (a VARCHAR(5), b VARCHAR(5))');
    await sql.query(`INSERT INTO sum_n VALUES (NULL, 'x')`);
    const point = await adapter.capture(unit('sum-n', 'sum_n'), ctx('d-sum-n'));
    for (const [a, b] of [["''", "'x'"], ["'N'", "'x'"], ["'x'", 'NULL'], ["'|x'", "''"]]) {
      await sql.query(`UPDATE sum_n SET a = ${a}, b = ${b}`);
      const checks = await adapter.verify(unit('sum-n', 'sum_n'), point, ctx('d-sum-n'));
      expect(checks.find((c) => c.name === 'checksum')?.ok, `${a}, ${b}`).toBe(false);
    }
  });
});

describe('mysql-table adapter: restore by primary key', () => {
  it('puts inserted, updated and deleted rows back, row for row, and keeps the bad rows', async () => {
    await sql.query('CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20) NOT NULL, amount DECIMAL(12,2), placed_at DATETIME(6) NOT NULL)');
    await sql.query(`INSERT INTO orders SELECT seq, CONCAT('c', seq % 17), seq * 2.25, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq HOUR FROM seq_1_to_1000`);
    const u = unit('orders', 'orders');
    const c = ctx('d-orders', 'run-orders-1');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('orders');

    await sql.query(`INSERT INTO orders SELECT seq, 'bad', 0, NOW(6) FROM seq_2001_to_2004`);
    await sql.query('UPDATE orders SET amount = -1 WHERE id IN (10, 20, 30)');
    await sql.query('DELETE FROM orders WHERE id BETWEEN 500 AND 504');
    await sql.query('CREATE TABLE orders_bad AS SELECT * FROM orders WHERE id > 2000 OR id IN (10, 20, 30)');
    const bad = await rowsOf('orders_bad');
    expect(await checksOk(u, point, c)).toBe(false);

    const plan = await adapter.diff(u, point, c);
    expect(plan).toEqual({ changes: { rowsInserted: 5, rowsUpdated: 3, rowsDeleted: 4 }, writes: 12, notes: [expect.stringMatching(/^capture: copy \(the default/)] });
    expect(await quarantineTables('orders')).toEqual([]);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 5, rowsUpdated: 3, rowsDeleted: 4 });
    expect(outcome.writes).toBe(12);
    expect(outcome.keptAt).toMatch(/^etl_rollback\.q_orders_[0-9a-f]{16}$/);
    expect(await rowsOf('orders')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);

    expect(await rowsOf(outcome.keptAt!)).toEqual(bad);
    const [meta] = await q<{ c: string }>(
      'SELECT TABLE_COMMENT AS c FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
      outcome.keptAt!.split('.'),
    );
    expect(JSON.parse(meta!.c)).toMatchObject({ runId: 'run-orders-1', unitId: 'orders', table: `${db.name}.orders`, at: '2024-05-01T12:00:00.000Z' });

    const quarantinesBefore = await quarantineTables('orders');
    const again = await adapter.restore(u, point, c);
    expect(again).toEqual({ changes: { rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 0 }, writes: 0, notes: [] });
    expect(await quarantineTables('orders')).toEqual(quarantinesBefore);
    expect((await adapter.restore(u, point, ctx('d-orders', 'run-orders-2'))).writes).toBe(0);
    expect(await quarantineTables('orders')).toEqual(quarantinesBefore);
    expect((await adapter.diff(u, point, c)).writes).toBe(0);
  });

  it('writes only the rows that changed (1000 rows, 3 changed: 3 updates, nothing else touched)', async () => {
    await sql.query('CREATE TABLE wide (id INT PRIMARY KEY, a TEXT, b INT)');
    await sql.query(`INSERT INTO wide SELECT seq, CONCAT('a', seq), seq FROM seq_1_to_1000`);
    const u = unit('wide', 'wide');
    const c = ctx('d-wide');
    const point = await adapter.capture(u, c);
    await sql.query('UPDATE wide SET b = b + 1 WHERE id IN (7, 400, 999)');
    const written = await audit('wide');

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 3, rowsDeleted: 0 });
    expect((await written()).sort()).toEqual(['UPDATE 400', 'UPDATE 7', 'UPDATE 999']);
    expect(await checksOk(u, point, c)).toBe(true);
  });

  it('diff writes nothing', async () => {
    await sql.query('CREATE TABLE diffro (id INT PRIMARY KEY, v TEXT)');
    await sql.query(`INSERT INTO diffro SELECT seq, 'v' FROM seq_1_to_20`);
    const u = unit('diffro', 'diffro');
    const point = await adapter.capture(u, ctx('d-diffro'));
    await sql.query(`UPDATE diffro SET v = 'x' WHERE id = 1`);
    await sql.query('DELETE FROM diffro WHERE id = 2');
    const rows = await rowsOf('diffro');
    const written = await audit('diffro');
    const plan = await adapter.diff(u, point, ctx('d-diffro'));
    expect(plan.changes).toEqual({ rowsInserted: 1, rowsUpdated: 1, rowsDeleted: 0 });
    expect(await rowsOf('diffro')).toEqual(rows);
    expect(await written()).toEqual([]);
    expect(await quarantineTables('diffro')).toEqual([]);
  });

  it('keeps NULLs, JSON, BLOB/VARBINARY, DECIMAL, DATETIME(6)/TIMESTAMP(6), utf8mb4, BIT, ENUM, DOUBLE, and byte-level changes', async () => {
    await sql.query(`CREATE TABLE typed (
      id BIGINT PRIMARY KEY, j JSON, bl BLOB, vb VARBINARY(16), n DECIMAL(40,10), dt DATETIME(6), ts TIMESTAMP(6) NULL,
      t VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci, f DOUBLE, bt BIT(5), e ENUM('x','y','z'), lt LONGTEXT)`);
    await sql.query(`INSERT INTO typed VALUES
      (1, '{"a": [1, 2, {"b": null}]}', 0xDEADBEEF00, 0x0001, 123456789012345678901234567890.0000000001, '2024-02-29 23:59:59.123456', '2024-03-10 01:30:00.654321', 'plain 😀 ünïcödé', 0.1, b'10101', 'y', REPEAT('long ', 1000)),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, 'null', '', X'', 0, '1000-01-01 00:00:00', '1970-01-01 00:00:01', '', -1e300, b'0', 'x', ''),
      (4, '"str"', 0x00, 0x00, -0.5, '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', 'with ''quote'' and , comma and \\\\ backslash', 1.7976931348623157e308, b'11111', 'z', 'NULL')`);
    const u = unit('typed', 'typed');
    const c = ctx('d-typed');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('typed');

    // Changes that are easy to miss: JSON whitespace, a trailing zero byte, a microsecond, case and emoji under a
    // case-insensitive collation, trailing spaces, one bit, NULL vs empty.
    await sql.query(`UPDATE typed SET j = '{"a":[1,2,{"b":null}]}', bl = 0xDEADBEEF, n = n + 0.0000000001, dt = dt + INTERVAL 1 MICROSECOND,
      t = 'PLAIN 😀 ünïcödé', f = 0.1000000000000001, bt = b'10100', lt = CONCAT(lt, ' ') WHERE id = 1`);
    await sql.query(`UPDATE typed SET j = NULL, bl = NULL, vb = NULL, t = NULL, lt = NULL WHERE id = 3`);
    await sql.query(`UPDATE typed SET t = '', vb = X'' WHERE id = 2`);
    await sql.query(`UPDATE typed SET t = 'with ''quote'' and , comma and \\\\ backslash ', ts = ts - INTERVAL 1 SECOND, e = 'x' WHERE id = 4`);
    expect(await checksOk(u, point, c)).toBe(false);

    const plan = await adapter.diff(u, point, c);
    expect(plan.changes).toEqual({ rowsInserted: 0, rowsUpdated: 4, rowsDeleted: 0 });
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 4, rowsDeleted: 0 });
    expect(await rowsOf('typed')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);

    // Deleted and re-inserted from the shadow: values survive the round trip through INSERT … SELECT too.
    await sql.query('DELETE FROM typed');
    expect((await adapter.restore(u, point, c)).changes).toEqual({ rowsInserted: 4, rowsUpdated: 0, rowsDeleted: 0 });
    expect(await rowsOf('typed')).toEqual(captured);
  });

  it('restores a composite primary key, and a key changed only in letter case', async () => {
    await sql.query('CREATE TABLE daily (region VARCHAR(8), day DATE, sku INT, qty INT NOT NULL, PRIMARY KEY (region, day, sku))');
    await sql.query(
      `INSERT INTO daily SELECT r.r, DATE '2024-01-01' + INTERVAL d.seq DAY, s.seq, d.seq * s.seq
         FROM (SELECT 'eu' AS r UNION ALL SELECT 'us') r, seq_0_to_9 d, seq_1_to_5 s`,
    );
    const u = unit('daily', 'daily');
    const c = ctx('d-daily');
    const point = await adapter.capture(u, c);
    expect(point.details.primaryKey).toEqual(['region', 'day', 'sku']);
    const captured = await rowsOf('daily');

    await sql.query(`DELETE FROM daily WHERE region = 'eu' AND day = '2024-01-03'`); // 5 rows
    await sql.query(`UPDATE daily SET qty = -1 WHERE region = 'us' AND sku = 1`); // 10 rows
    await sql.query(`UPDATE daily SET region = 'EU' WHERE region = 'eu' AND day = '2024-01-05' AND sku = 2`); // same key by collation
    await sql.query(`INSERT INTO daily VALUES ('apac', '2024-01-01', 1, 1), ('eu', '2024-01-01', 99, 1)`);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 5, rowsUpdated: 11, rowsDeleted: 2 });
    expect(await rowsOf('daily')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);
  });

  it('keeps a view over the table and a foreign key into it working', async () => {
    await sql.query('CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)');
    await sql.query('CREATE TABLE invoices (id INT PRIMARY KEY, customer_id INT NOT NULL, FOREIGN KEY (customer_id) REFERENCES customers (id))');
    await sql.query('CREATE VIEW customer_names AS SELECT id, UPPER(name) AS name FROM customers');
    await sql.query(`INSERT INTO customers SELECT seq, CONCAT('cust', seq) FROM seq_1_to_10`);
    await sql.query('INSERT INTO invoices SELECT seq, seq FROM seq_1_to_5');
    const u = unit('customers', 'customers');
    const c = ctx('d-customers');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('customers');

    await sql.query(`UPDATE customers SET name = 'renamed' WHERE id IN (1, 9)`);
    await sql.query(`INSERT INTO customers VALUES (11, 'new')`);
    await sql.query('DELETE FROM customers WHERE id = 10');

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 1, rowsUpdated: 2, rowsDeleted: 1 });
    expect(await rowsOf('customers')).toEqual(captured);

    const viewRows = await q<{ name: string }>('SELECT name FROM customer_names WHERE id IN (1, 10) ORDER BY id');
    expect(viewRows.map((r) => r.name)).toEqual(['CUST1', 'CUST10']);
    const [joined] = await q<{ n: string }>('SELECT COUNT(*) AS n FROM invoices i JOIN customers c ON c.id = i.customer_id');
    expect(String(joined!.n)).toBe('5');
    await expect(sql.query('INSERT INTO invoices VALUES (100, 11)')).rejects.toThrow(/foreign key constraint fails/);
    await sql.query('INSERT INTO invoices VALUES (100, 10)');
  });

  it('refuses, before writing, a restore whose deletes would cascade into rows of another table; restoring that consumer first clears the way', async () => {
    await sql.query('CREATE TABLE ledger_accounts (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)');
    await sql.query('CREATE TABLE postings (id INT PRIMARY KEY, account_id INT NOT NULL, FOREIGN KEY (account_id) REFERENCES ledger_accounts (id) ON DELETE CASCADE)');
    await sql.query(`INSERT INTO ledger_accounts SELECT seq, CONCAT('acct', seq) FROM seq_1_to_5`);
    await sql.query('INSERT INTO postings SELECT seq, seq FROM seq_1_to_5');
    const accounts = unit('ledger-accounts', 'ledger_accounts');
    const postings = unit('postings', 'postings');
    const c = ctx('d-cascade');
    const accountsPoint = await adapter.capture(accounts, c);
    const postingsPoint = await adapter.capture(postings, c);
    const capturedAccounts = await rowsOf('ledger_accounts');
    const capturedPostings = await rowsOf('postings');

    // The deploy adds an account and postings against it.
    await sql.query(`INSERT INTO ledger_accounts VALUES (6, 'acct6')`);
    await sql.query('INSERT INTO postings VALUES (6, 6), (7, 6)');
    const before = { accounts: await rowsOf('ledger_accounts'), postings: await rowsOf('postings') };

    // Restoring accounts alone would delete account 6, and the cascade would delete postings 6 and 7 unseen.
    await expect(adapter.restore(accounts, accountsPoint, c)).rejects.toThrow(PreflightError);
    await expect(adapter.restore(accounts, accountsPoint, c)).rejects.toThrow(/2 row\(s\) of .*postings reference through foreign key .*ON DELETE CASCADE/);
    expect(await rowsOf('ledger_accounts')).toEqual(before.accounts);
    expect(await rowsOf('postings')).toEqual(before.postings);
    expect(await quarantineTables('ledger-accounts')).toEqual([]);

    // In plan order (the consumer first), both restore, and the postings removed are kept in quarantine.
    expect((await adapter.restore(postings, postingsPoint, c)).changes).toEqual({ rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 2 });
    expect((await adapter.restore(accounts, accountsPoint, c)).changes).toEqual({ rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 1 });
    expect(await rowsOf('ledger_accounts')).toEqual(capturedAccounts);
    expect(await rowsOf('postings')).toEqual(capturedPostings);
  });

  it('restores a table with generated columns and an AUTO_INCREMENT key, and puts the counter back', async () => {
    await sql.query(`CREATE TABLE order_lines (
      id INT AUTO_INCREMENT PRIMARY KEY, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL,
      total DECIMAL(20,2) AS (qty * price) STORED, label VARCHAR(40) AS (CONCAT('line ', id)) VIRTUAL)`);
    // A simple multi-row INSERT allocates exactly 20 ids (INSERT … SELECT may reserve a batch more).
    await sql.query(`INSERT INTO order_lines (qty, price) VALUES ${Array.from({ length: 20 }, (_, i) => `(${i + 1}, ${i + 1.5})`).join(', ')}`);
    const u = unit('order-lines', 'order_lines');
    const c = ctx('d-order-lines');
    const point = await adapter.capture(u, c);
    expect(point.details.columns.map((col) => [col.name, col.generated])).toEqual([
      ['id', false],
      ['qty', false],
      ['price', false],
      ['total', true],
      ['label', true],
    ]);
    expect(point.details.autoIncrement).toBe('21');
    const captured = await rowsOf('order_lines');

    await sql.query('UPDATE order_lines SET qty = qty * 10 WHERE id <= 3');
    await sql.query('DELETE FROM order_lines WHERE id IN (19, 20)');
    await sql.query('INSERT INTO order_lines (qty, price) VALUES (1, 1), (2, 2)'); // ids 21, 22

    const plan = await adapter.diff(u, point, c);
    expect(plan.notes).toEqual([expect.stringMatching(/^capture: copy \(the default/), 'AUTO_INCREMENT of ' + `${db.name}.order_lines would be reset from 23 to 21`]);
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 2, rowsUpdated: 3, rowsDeleted: 2 });
    expect(outcome.notes).toEqual([`AUTO_INCREMENT of ${db.name}.order_lines reset from 23 to 21`]);
    expect(await rowsOf('order_lines')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);
    expect(await rowsOf(outcome.keptAt!)).toEqual([
      "'1','10','1.50','15.00','line 1'",
      "'2','20','2.50','50.00','line 2'",
      "'21','1','1.00','1.00','line 21'",
      "'22','2','2.00','4.00','line 22'",
      "'3','30','3.50','105.00','line 3'",
    ]);
    expect(await adapter.restore(u, point, c)).toEqual({ changes: { rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 0 }, writes: 0, notes: [] });

    // The next row gets the id it would have had without the deploy.
    await sql.query('INSERT INTO order_lines (qty, price) VALUES (5, 5)');
    const [next] = await q<{ id: number }>('SELECT MAX(id) AS id FROM order_lines');
    expect(Number(next!.id)).toBe(21);
  });

  it('writes back a captured id 0 as 0 (NO_AUTO_VALUE_ON_ZERO)', async () => {
    await sql.query('CREATE TABLE zero_id (id INT AUTO_INCREMENT PRIMARY KEY, v INT)');
    await sql.query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')");
    await sql.query('INSERT INTO zero_id VALUES (0, 0), (1, 1)');
    const u = unit('zero-id', 'zero_id');
    const point = await adapter.capture(u, ctx('d-zero'));
    await sql.query('DELETE FROM zero_id');
    expect((await adapter.restore(u, point, ctx('d-zero'))).changes.rowsInserted).toBe(2);
    expect(await rowsOf('zero_id')).toEqual(["'0','0'", "'1','1'"]);
    await sql.query("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_AUTO_VALUE_ON_ZERO', '')");
  });
});

describe('mysql-table adapter: restore without a primary key', () => {
  it('reloads the whole table, keeps every live row, and notes it', async () => {
    await sql.query('CREATE TABLE log_lines (at DATE, msg TEXT)');
    await sql.query(`INSERT INTO log_lines VALUES ('2024-01-01', 'a'), ('2024-01-01', 'a'), ('2024-01-02', 'b'), ('2024-01-03', NULL)`);
    const u = unit('log-lines', 'log_lines');
    const c = ctx('d-log');
    const point = await adapter.capture(u, c);
    expect(point.details.primaryKey).toEqual([]);
    const captured = await rowsOf('log_lines');

    await sql.query(`DELETE FROM log_lines WHERE msg = 'a' LIMIT 1`);
    await sql.query(`INSERT INTO log_lines VALUES ('2024-01-04', 'bad')`);
    const live = await rowsOf('log_lines');

    const plan = await adapter.diff(u, point, c);
    expect(plan.changes).toEqual({ rowsInserted: 4, rowsUpdated: 0, rowsDeleted: 4 });
    expect(plan.notes).toEqual([expect.stringMatching(/^capture: copy \(the default/), expect.stringMatching(new RegExp(`no primary key on ${db.name}\\.log_lines: full reload`))]);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 4, rowsUpdated: 0, rowsDeleted: 4 });
    expect(outcome.notes).toEqual(plan.notes.slice(1));
    expect(await rowsOf('log_lines')).toEqual(captured);
    expect(await rowsOf(outcome.keptAt!)).toEqual(live);

    const again = await adapter.restore(u, point, c);
    expect(again.writes).toBe(0);
    expect(again.keptAt).toBeUndefined();
    expect(again.notes).toEqual([expect.stringMatching(/already equals its restore point/)]);
  });
});

describe('mysql-table adapter: refusals and failures', () => {
  it('restores the captured columns when the deploy changed them (added, retyped, dropped), then the rows; verify names the drift before', async () => {
    await sql.query('CREATE TABLE drift (id INT PRIMARY KEY, a INT, b TEXT)');
    await sql.query(`INSERT INTO drift SELECT seq, seq, 'b' FROM seq_1_to_10`);
    const u = unit('drift', 'drift');
    const c = ctx('d-drift');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('drift');
    await sql.query('DELETE FROM drift WHERE id = 1');
    await sql.query('ALTER TABLE drift ADD COLUMN c JSON, MODIFY COLUMN a BIGINT, DROP COLUMN b');

    const checks = await adapter.verify(u, point, c);
    expect(checks.find((ch) => ch.name === 'checksum')).toMatchObject({ ok: false, detail: expect.stringContaining('was added') });
    const dry = await adapter.diff(u, point, c);
    expect(dry.notes[1]).toContain('schema will be restored: ');
    expect(dry.notes[1]).toContain('column "c" (longtext), added by the deploy, dropped');
    expect(dry.notes[1]).toContain('column "b" re-added as text');
    expect(dry.notes[1]).toContain('column "a" changed back from bigint(20) DEFAULT NULL to int(11) DEFAULT NULL');

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 1, rowsUpdated: 9, rowsDeleted: 0 });
    expect(await rowsOf('drift')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);
  });

  it('refuses a restore when the primary key changed', async () => {
    await sql.query('CREATE TABLE pkchange (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO pkchange VALUES (1, 1)');
    const u = unit('pkchange', 'pkchange');
    const point = await adapter.capture(u, ctx('d-pk'));
    await sql.query('ALTER TABLE pkchange DROP PRIMARY KEY');
    await expect(adapter.restore(u, point, ctx('d-pk'))).rejects.toThrow(/primary key changed from \(id\) to none/);
  });

  it('rolls everything back when a write fails mid-restore (CHECK constraint added after capture)', async () => {
    await sql.query('CREATE TABLE accounts (id INT PRIMARY KEY, status VARCHAR(10) NOT NULL)');
    await sql.query(`INSERT INTO accounts SELECT seq, IF(seq <= 2, 'legacy', 'active') FROM seq_1_to_10`);
    const u = unit('accounts', 'accounts');
    const c = ctx('d-accounts');
    const point = await adapter.capture(u, c);

    await sql.query('DELETE FROM accounts WHERE id = 10');
    await sql.query(`INSERT INTO accounts VALUES (11, 'active')`);
    await sql.query(`UPDATE accounts SET status = 'active' WHERE status = 'legacy'`);
    await sql.query(`ALTER TABLE accounts ADD CONSTRAINT no_legacy CHECK (status <> 'legacy')`);
    const rows = await rowsOf('accounts');
    const written = await audit('accounts');

    const error = await adapter.restore(u, point, c).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(new RegExp(`restore of unit "accounts" \\(table ${db.name}\\.accounts\\) failed and was rolled back.*no_legacy`));
    expect(await rowsOf('accounts')).toEqual(rows);
    expect(await written()).toEqual([]); // the audit rows of the rolled-back DELETE went with it
    expect(await quarantineTables('accounts')).toEqual([]);
  });

  it('rolls everything back when a trigger SIGNALs on one value during the INSERT', async () => {
    await sql.query('CREATE TABLE guarded (id INT PRIMARY KEY, v VARCHAR(10))');
    await sql.query(`INSERT INTO guarded SELECT seq, CONCAT('v', seq) FROM seq_1_to_5`);
    const u = unit('guarded', 'guarded');
    const c = ctx('d-guarded');
    const point = await adapter.capture(u, c);
    await sql.query(`UPDATE guarded SET v = 'x' WHERE id = 1`);
    await sql.query('DELETE FROM guarded WHERE id = 5');
    await sql.query(`INSERT INTO guarded VALUES (6, 'new')`);
    await sql.query(
      `CREATE TRIGGER guarded_no_v5 BEFORE INSERT ON guarded FOR EACH ROW
         IF NEW.v = 'v5' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'v5 is frozen'; END IF`,
    );
    const rows = await rowsOf('guarded');

    await expect(adapter.restore(u, point, c)).rejects.toThrow(/rolled back.*v5 is frozen/);
    expect(await rowsOf('guarded')).toEqual(rows);
    expect(await quarantineTables('guarded')).toEqual([]);

    await sql.query('DROP TRIGGER guarded_no_v5');
    expect((await adapter.restore(u, point, c)).changes).toEqual({ rowsInserted: 1, rowsUpdated: 1, rowsDeleted: 1 });
    expect(await checksOk(u, point, c)).toBe(true);
  });

  it('needs a run id to restore', async () => {
    await sql.query('CREATE TABLE norun (id INT PRIMARY KEY)');
    const u = unit('norun', 'norun');
    const point = await adapter.capture(u, ctx('d-norun'));
    await expect(adapter.restore(u, point, { ...ctx('d-norun'), runId: undefined })).rejects.toThrow(/needs the rollback run id/);
  });

  it('never puts connection secrets in its errors', async () => {
    const secret = 'S3cr3t-Pa55word';
    let failures = 0;
    for (const url of [`mysql://root:${secret}@127.0.0.1:1/${db.name}`, `mysql://no_such_user:${secret}@127.0.0.1:3306/${db.name}`]) {
      const leaky = mysqlConnector({ warehouse: { engine: 'mysql', url } });
      for (const op of [() => adapter.capture(unit('secret', 'cap_basic'), ctx('d-secret', 'run-secret', leaky)), () => adapter.verify(unit('secret', 'cap_basic'), { unitId: 'secret', type: 'mysql-table', capturedAt: '', count: 0, checksum: '0', details: { connection: 'warehouse', table: 'cap_basic', shadowTable: 'etl_rollback.x', primaryKey: [], columns: [], autoIncrement: null } }, ctx('d-secret', 'run-secret', leaky))]) {
        const error = await op().catch((e: unknown) => e);
        expect(error).toBeInstanceOf(Error);
        failures += 1;
        const e = error as Error;
        expect(`${e.message}\n${e.stack ?? ''}\n${JSON.stringify(e)}\n${String(e.cause ?? '')}`).not.toContain(secret);
      }
    }
    expect(failures).toBe(4);
  });
});

describe('mysql-table adapter: verify and release', () => {
  it('honours the unit checks flags', async () => {
    await sql.query('CREATE TABLE flags (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO flags SELECT seq, seq FROM seq_1_to_5');
    const point = await adapter.capture(unit('flags', 'flags'), ctx('d-flags'));
    await sql.query('UPDATE flags SET v = 0 WHERE id = 1');

    const both = await adapter.verify(unit('flags', 'flags'), point, ctx('d-flags'));
    expect(both.map((ch) => [ch.name, ch.ok])).toEqual([
      ['rowCount', true],
      ['checksum', false],
    ]);
    expect(await adapter.verify(unit('flags', 'flags', { checks: { checksum: false } }), point, ctx('d-flags'))).toEqual([{ name: 'rowCount', ok: true, expected: 5, actual: 5 }]);
    expect((await adapter.verify(unit('flags', 'flags', { checks: { count: false } }), point, ctx('d-flags'))).map((ch) => ch.name)).toEqual(['checksum']);
    expect(await adapter.verify(unit('flags', 'flags', { checks: { count: false, checksum: false } }), point, ctx('d-flags'))).toEqual([]);
  });

  it('runs SQL assertions read-only with a timeout, reporting true, false, errors and timeouts as checks', async () => {
    await sql.query('CREATE TABLE asserted (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO asserted SELECT seq, seq FROM seq_1_to_5');
    const u = unit('asserted', 'asserted', {
      checks: { count: false, checksum: false },
      assertions: [
        { name: 'five rows', sql: 'SELECT COUNT(*) = 5 FROM asserted' },
        { name: 'none negative', sql: 'SELECT COUNT(*) = 0 FROM asserted WHERE v < 0' },
        { name: 'bad sql', sql: 'SELECT nope FROM asserted' },
        { name: 'no writes', sql: 'DELETE FROM asserted' },
        { name: 'slow', sql: 'SELECT SLEEP(5) = 0', timeoutSeconds: 1 },
      ],
    });
    const point = await adapter.capture(u, ctx('d-asserted'));
    await sql.query('UPDATE asserted SET v = -1 WHERE id = 1');
    const started = Date.now();
    const checks = await adapter.verify(u, point, ctx('d-asserted'));
    expect(Date.now() - started).toBeLessThan(4000);
    expect(checks.map((ch) => [ch.name, ch.ok])).toEqual([
      ['assertion:five rows', true],
      ['assertion:none negative', false],
      ['assertion:bad sql', false],
      ['assertion:no writes', false],
      ['assertion:slow', false],
    ]);
    expect(checks[1]).toMatchObject({ expected: 'true', actual: '0' });
    expect(checks[2]!.actual).toMatch(/error: .*nope/);
    expect(checks[3]!.actual).toMatch(/error: .*READ ONLY/i);
    expect(checks[4]!.detail).toMatch(/after 1 s/);
    expect(await rowsOf('asserted')).toHaveLength(5);
  });

  it('computes the same checksum whatever the session time zone and sql_mode', async () => {
    await sql.query('CREATE TABLE tz (id INT PRIMARY KEY, at TIMESTAMP(6) NULL, d DATE, c CHAR(5))');
    await sql.query(`INSERT INTO tz VALUES (1, '2024-03-10 01:30:00.5', '2024-03-10', 'ab')`);
    const u = unit('tz', 'tz');
    const point = await adapter.capture(u, ctx('d-tz'));
    const exotic: MysqlConnector = {
      async connect(name) {
        const conn = await connector.connect(name);
        await conn.query("SET SESSION time_zone = '+13:00', SESSION sql_mode = 'PAD_CHAR_TO_FULL_LENGTH,ANSI_QUOTES'");
        return conn;
      },
    };
    expect(await checksOk(u, point, ctx('d-tz', 'run-tz', exotic))).toBe(true);
  });

  it('fails verification when the table is gone', async () => {
    await sql.query('CREATE TABLE gone (id INT PRIMARY KEY)');
    const u = unit('gone', 'gone');
    const point = await adapter.capture(u, ctx('d-gone'));
    await sql.query('DROP TABLE gone');
    expect(await adapter.verify(u, point, ctx('d-gone'))).toEqual([
      { name: 'rowCount', ok: false, expected: 0, actual: 'missing', detail: `table ${db.name}.gone does not exist` },
      { name: 'checksum', ok: false, expected: '0', actual: 'missing', detail: `table ${db.name}.gone does not exist` },
    ]);
    await expect(adapter.restore(u, point, ctx('d-gone'))).rejects.toThrow(new RegExp(`${db.name}\\.gone no longer exists`));
  });

  it('release drops the shadow table and only it; restoring a released point is refused', async () => {
    await sql.query('CREATE TABLE rel (id INT PRIMARY KEY, v INT)');
    await sql.query('INSERT INTO rel VALUES (1, 1), (2, 2)');
    const u = unit('rel', 'rel');
    const c = ctx('d-rel');
    const point = await adapter.capture(u, c);
    const sibling = await adapter.capture(u, ctx('d-rel-next'));
    await sql.query('UPDATE rel SET v = 9');
    const outcome = await adapter.restore(u, point, c);

    await adapter.release(u, point, c);
    expect(await exists(point.details.shadowTable)).toBe(false);
    expect(await q("SELECT 1 FROM etl_rollback.restore_points WHERE shadow_table = ?", [point.details.shadowTable.split('.')[1]])).toEqual([]);
    expect(await exists(sibling.details.shadowTable)).toBe(true);
    expect(await exists(outcome.keptAt!)).toBe(true);
    expect(await rowsOf('rel')).toEqual(["'1','1'", "'2','2'"]);
    await adapter.release(u, point, c); // already gone: nothing to do

    await expect(adapter.restore(u, point, c)).rejects.toBeInstanceOf(RestorePointMissingError);
    // Released means gone: the same deployment can be captured afresh (as with postgres-table).
    await expect(adapter.capture(u, c)).resolves.toMatchObject({ count: 2 });
  });

  it('release refuses to drop a table that is not this sealed point', async () => {
    await sql.query('CREATE TABLE relx (id INT PRIMARY KEY)');
    const u = unit('relx', 'relx');
    const point = await adapter.capture(u, ctx('d-relx'));
    await sql.query("UPDATE etl_rollback.restore_points SET meta = JSON_SET(meta, '$.checksum', '42') WHERE shadow_table = ?", [point.details.shadowTable.split('.')[1]]);
    await expect(adapter.release(u, point, ctx('d-relx'))).rejects.toThrow(/refusing to drop/);
    expect(await exists(point.details.shadowTable)).toBe(true);
    await expect(adapter.restore(u, point, ctx('d-relx'))).rejects.toThrow(/not the sealed copy this restore point describes/);
  });
});

describe('mysql-table adapter: property', () => {
  type Op = { kind: 'insert' | 'update' | 'delete'; k: number; v: string | null; n: number };
  const op: fc.Arbitrary<Op> = fc.record({
    kind: fc.constantFrom('insert', 'update', 'delete'),
    k: fc.integer({ min: 1, max: 12 }),
    v: fc.option(fc.string({ maxLength: 6, unit: 'grapheme' }), { nil: null }),
    n: fc.integer({ min: -3, max: 3 }),
  });

  it('after any mutations over a small key space, restore makes the table equal the captured rows', async () => {
    await sql.query('CREATE TABLE prop (k INT PRIMARY KEY, v VARCHAR(40) COLLATE utf8mb4_general_ci, n INT)');
    const u = unit('prop', 'prop');
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.integer({ min: 1, max: 12 }), { maxLength: 10 }), fc.array(op, { maxLength: 25 }), async (keys, ops) => {
        run += 1;
        const c = ctx(`d-prop-${run}`, `run-prop-${run}`);
        await sql.query('DELETE FROM prop');
        for (const k of keys) await sql.query('INSERT INTO prop VALUES (?, ?, ?)', [k, `v${k}`, k]);
        const point = await adapter.capture(u, c);
        const captured = await rowsOf('prop');
        try {
          for (const o of ops) {
            if (o.kind === 'insert') await sql.query('INSERT IGNORE INTO prop VALUES (?, ?, ?)', [o.k, o.v, o.n]);
            else if (o.kind === 'update') await sql.query('UPDATE prop SET v = ?, n = n + ? WHERE k = ?', [o.v, o.n, o.k]);
            else await sql.query('DELETE FROM prop WHERE k = ?', [o.k]);
          }
          const planned = await adapter.diff(u, point, c);
          const outcome = await adapter.restore(u, point, c);
          expect(outcome.changes).toEqual(planned.changes);
          expect(await rowsOf('prop')).toEqual(captured);
          expect(await checksOk(u, point, c)).toBe(true);
          expect((await adapter.restore(u, point, c)).writes).toBe(0);
        } finally {
          await adapter.release(u, point, c);
        }
      }),
      { numRuns: 20 },
    );
  });
});

describe('mysql-table adapter: connections', () => {
  it('ends every connection it opened (run last)', async () => {
    let open = -1;
    for (let i = 0; i < 40 && open !== 0; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 50));
      const [row] = await q<{ n: string }>('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()', [db.name]);
      open = Number(row!.n);
    }
    expect(open).toBe(0);
  });
});
