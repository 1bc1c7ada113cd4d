import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type mysql from 'mysql2/promise';
import { mysqlTable as adapter, type MysqlTableDetails } from '../../core/adapters/mysql-table.ts';
import type { AdapterContext, RestorePoint } from '../../core/adapters/types.ts';
import { PreflightError } from '../../core/errors.ts';
import type { MysqlTableUnit } from '../../core/manifest/schema.ts';
import { mysqlConnector, type MysqlConnector } from '../../core/runtime/connections.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlUnit } from '../support/mysql-adapter.ts';

/** `where` and `partition` scopes, and a restore whose connection is killed midway. */

let db: TestMysqlDatabase;
let sql: mysql.Connection;
let connector: MysqlConnector;

beforeAll(async () => {
  db = await createTestMysqlDatabase('myscope');
  sql = await db.connection();
  connector = mysqlConnector({ warehouse: { engine: 'mysql', url: db.url } });
});

afterAll(async () => {
  await db?.drop();
});

const unit = mysqlUnit;

function ctx(deploymentId: string, runId = `run-${deploymentId}`): AdapterContext {
  return mysqlAdapterContext({ pipeline: 'shop-scope', deploymentId, runId, mysql: connector });
}

async function q<T = mysql.RowDataPacket>(text: string, values?: unknown[]): Promise<T[]> {
  const [rows] = await sql.query(text, values);
  return rows as T[];
}

/** Rows as text, sorted, optionally narrowed by a predicate. */
async function rowsOf(table: string, where = 'TRUE'): Promise<string[]> {
  const [schema, name] = table.includes('.') ? table.split('.') : [db.name, table];
  const cols = await q<{ c: string }>('SELECT COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION', [schema, name]);
  const rows = await q<{ r: string }>(
    `SELECT CONCAT_WS(',', ${cols.map(({ c }) => `QUOTE(\`${c}\`)`).join(', ')}) AS r FROM \`${schema}\`.\`${name}\` WHERE ${where} ORDER BY CAST(r AS BINARY)`,
  );
  return rows.map((r) => r.r);
}

async function checksOk(u: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, c: AdapterContext): Promise<boolean> {
  const checks = await adapter.verify(u, point, c);
  return checks.length > 0 && checks.every((ch) => ch.ok);
}

describe('mysql-table adapter: where scope', () => {
  it('captures and restores only the rows in scope; rows outside it are left as the deploy left them', async () => {
    await sql.query('CREATE TABLE events (id INT AUTO_INCREMENT PRIMARY KEY, day DATE NOT NULL, v VARCHAR(10))');
    await sql.query(`INSERT INTO events (day, v) VALUES ${Array.from({ length: 10 }, (_, i) => `('2024-01-${String(i + 1).padStart(2, '0')}', 'v${i + 1}')`).join(', ')}`);
    const where = "day >= '2024-01-06'";
    const u = unit('events', 'events', { where });
    const c = ctx('d-events');
    const point = await adapter.capture(u, c);
    expect(point.count).toBe(5);
    expect(point.details).toMatchObject({ where, autoIncrement: null });
    const capturedScope = await rowsOf('events', where);

    // In scope: one changed, one deleted, one added.
    await sql.query(`UPDATE events SET v = 'bad' WHERE id = 6`);
    await sql.query('DELETE FROM events WHERE id = 7');
    await sql.query(`INSERT INTO events (id, day, v) VALUES (50, '2024-01-20', 'new')`);
    // Outside: changed, deleted, added — all kept.
    await sql.query(`UPDATE events SET v = 'out' WHERE id = 1`);
    await sql.query('DELETE FROM events WHERE id = 2');
    await sql.query(`INSERT INTO events (id, day, v) VALUES (60, '2023-06-01', 'old')`);
    // Moved out of the scope (was in it at capture: comes back) and into it (was not: treated as added).
    await sql.query(`UPDATE events SET day = '2023-12-31' WHERE id = 8`);
    await sql.query(`UPDATE events SET day = '2024-02-01' WHERE id = 3`);
    const outsideAfterDeploy = await rowsOf('events', `NOT (${where}) AND id <> 8`);

    const plan = await adapter.diff(u, point, c);
    expect(plan).toEqual({ changes: { rowsInserted: 1, rowsUpdated: 2, rowsDeleted: 2 }, writes: 5, notes: [expect.stringMatching(/^capture: copy \(the default/)] });
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual(plan.changes);
    expect(await rowsOf('events', where)).toEqual(capturedScope);
    expect(await rowsOf('events', `NOT (${where})`)).toEqual(outsideAfterDeploy);
    expect(await rowsOf(outcome.keptAt!)).toEqual(["'3','2024-02-01','v3'", "'50','2024-01-20','new'", "'6','2024-01-06','bad'", "'8','2023-12-31','v8'"]);
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);
  });

  it('reloads only the scope of a table without a primary key', async () => {
    await sql.query('CREATE TABLE raw_log (day DATE, msg VARCHAR(20))');
    await sql.query(`INSERT INTO raw_log VALUES ('2024-01-01', 'a'), ('2024-01-02', 'b'), ('2024-01-02', 'b'), ('2024-01-03', 'c')`);
    const where = "day >= '2024-01-02'";
    const u = unit('raw-log', 'raw_log', { where });
    const c = ctx('d-raw-log');
    const point = await adapter.capture(u, c);
    expect(point.count).toBe(3);
    await sql.query(`DELETE FROM raw_log WHERE msg = 'b' LIMIT 1`);
    await sql.query(`INSERT INTO raw_log VALUES ('2024-01-04', 'bad'), ('2023-01-01', 'outside')`);
    await sql.query(`UPDATE raw_log SET msg = 'A' WHERE msg = 'a'`);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 3, rowsUpdated: 0, rowsDeleted: 3 });
    expect(outcome.notes).toEqual([expect.stringMatching(/full reload of .*raw_log \(where day >= '2024-01-02'\)/)]);
    expect(await rowsOf('raw_log')).toEqual(["'2023-01-01','outside'", "'2024-01-01','A'", "'2024-01-02','b'", "'2024-01-02','b'", "'2024-01-03','c'"]);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);
  });
});

describe('mysql-table adapter: partition scope', () => {
  const create = async (table: string) => {
    await sql.query(`CREATE TABLE ${table} (id INT NOT NULL, yr INT NOT NULL, v VARCHAR(10), PRIMARY KEY (id, yr))
      PARTITION BY RANGE (yr) (PARTITION p2023 VALUES LESS THAN (2024), PARTITION p2024 VALUES LESS THAN (2025), PARTITION pmax VALUES LESS THAN MAXVALUE)`);
    await sql.query(`INSERT INTO ${table} SELECT seq, 2023 + seq % 3, CONCAT('v', seq) FROM seq_1_to_30`);
  };

  it('captures and restores the named partitions only', async () => {
    await create('sales');
    const u = unit('sales', 'sales', { partition: 'p2024' });
    const c = ctx('d-sales');
    const point = await adapter.capture(u, c);
    expect(point.count).toBe(10);
    expect(point.details.partitions).toEqual(['p2024']);
    const captured = await rowsOf('sales', 'yr = 2024');

    await sql.query(`UPDATE sales SET v = 'bad' WHERE id IN (1, 2, 3)`); // one row in each partition
    await sql.query('DELETE FROM sales WHERE id IN (4, 5, 6)');
    await sql.query(`INSERT INTO sales VALUES (100, 2023, 'x'), (101, 2024, 'x'), (102, 2025, 'x')`);
    const othersAfterDeploy = await rowsOf('sales', 'yr <> 2024');

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 1, rowsUpdated: 1, rowsDeleted: 1 });
    expect(await rowsOf('sales', 'yr = 2024')).toEqual(captured);
    expect(await rowsOf('sales', 'yr <> 2024')).toEqual(othersAfterDeploy);
    expect(await checksOk(u, point, c)).toBe(true);
  });

  it('combines partitions with a predicate', async () => {
    await create('sales2');
    const u = unit('sales2', 'sales2', { partition: ['p2023', 'pmax'], where: 'id <= 15' });
    const c = ctx('d-sales2');
    const point = await adapter.capture(u, c);
    expect(point.count).toBe(10);
    const scope = '(yr <> 2024 AND id <= 15)';
    const captured = await rowsOf('sales2', scope);
    await sql.query(`UPDATE sales2 SET v = 'bad'`);
    const outside = await rowsOf('sales2', `NOT ${scope}`);
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 10, rowsDeleted: 0 });
    expect(await rowsOf('sales2', scope)).toEqual(captured);
    expect(await rowsOf('sales2', `NOT ${scope}`)).toEqual(outside);
  });

  it('refuses unknown partitions and an unpartitioned table', async () => {
    await create('sales3');
    const error = await adapter.capture(unit('sales3', 'sales3', { partition: ['p2024', 'p1999'] }), ctx('d-sales3')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toMatch(/has no partition "p1999" \(known: p2023, p2024, pmax\)/);
    await sql.query('CREATE TABLE flat (id INT PRIMARY KEY)');
    await expect(adapter.capture(unit('flat', 'flat', { partition: 'p1' }), ctx('d-flat'))).rejects.toThrow(/is not partitioned/);
  });
});

describe('mysql-table adapter: a killed restore', () => {
  it('leaves the table unchanged when its connection is killed midway, and a rerun converges', async () => {
    await sql.query('CREATE TABLE slow (id INT PRIMARY KEY, v INT NOT NULL)');
    await sql.query('INSERT INTO slow SELECT seq, seq FROM seq_1_to_400');
    const u = unit('slow', 'slow');
    const c = ctx('d-slow');
    const point = await adapter.capture(u, c);
    await sql.query('INSERT INTO slow SELECT seq, 0 FROM seq_1001_to_1050'); // the restore deletes these first ...
    await sql.query('UPDATE slow SET v = -v'); // ... then updates 400 rows, slowly:
    await sql.query('CREATE TRIGGER slow_update BEFORE UPDATE ON slow FOR EACH ROW SET @slept = SLEEP(0.02)');
    const before = await rowsOf('slow');

    const running = adapter.restore(u, point, c).then(
      () => 'finished',
      (e: unknown) => e as Error,
    );
    let killed = false;
    for (let i = 0; i < 200 && !killed; i++) {
      await new Promise((r) => setTimeout(r, 25));
      // Inside the UPDATE (after the DELETE of the same transaction), the process list shows the trigger's statement.
      const [victim] = await q<{ id: string }>(
        "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE '%SLEEP(0.02)%' AND ID <> CONNECTION_ID()",
        [db.name],
      );
      if (victim) {
        await sql.query(`KILL ${Number(victim.id)}`);
        killed = true;
      }
    }
    expect(killed).toBe(true);
    const result = await running;
    expect(result).toBeInstanceOf(Error);
    expect((result as Error).message).toMatch(/restore of unit "slow" .* failed and was rolled back/);
    expect(await rowsOf('slow')).toEqual(before);

    await sql.query('DROP TRIGGER slow_update');
    const rerun = await adapter.restore(u, point, c);
    expect(rerun.changes).toEqual({ rowsInserted: 0, rowsUpdated: 400, rowsDeleted: 50 });
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);
  });
});
