import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import pg from 'pg';
import { S3Client } from '@aws-sdk/client-s3';
import { GlueClient } from '@aws-sdk/client-glue';
import { RDSClient } from '@aws-sdk/client-rds';
import { createPostgresTableAdapter, postgresTableAdapter as adapter, type PostgresTableDetails } from '../../core/adapters/postgres-table.ts';
import type { AdapterContext, RestorePoint } from '../../core/adapters/types.ts';
import { PreflightError, RestorePointMissingError } from '../../core/errors.ts';
import { postgresTableUnitSchema, type PostgresTableUnit } from '../../core/manifest/schema.ts';
import { postgresConnector, type PostgresConnector } from '../../core/runtime/connections.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';

let db: TestDatabase;
let sql: pg.Client;
let connector: PostgresConnector;

beforeAll(async () => {
  db = await createTestDatabase('pgtable');
  sql = await db.client();
  connector = postgresConnector({ warehouse: { engine: 'postgres', url: db.url } });
});

afterAll(async () => {
  await db?.drop();
});

function unit(id: string, table: string, checks?: { count?: boolean; checksum?: boolean }): PostgresTableUnit {
  return postgresTableUnitSchema.parse({ id, type: 'postgres-table', connection: 'warehouse', table, ...(checks ? { checks } : {}) });
}

function ctx(deploymentId: string, runId = `run-${deploymentId}`, postgres: PostgresConnector = connector): AdapterContext {
  return {
    pipeline: 'sales',
    deploymentId,
    runId,
    s3: new S3Client({ region: 'us-east-1' }),
    rds: new RDSClient({ region: 'us-east-1' }),
    glue: new GlueClient({ region: 'us-east-1' }),
    stateBucket: 'unused-by-postgres-table',
    postgres,
    mysql: { connect: () => Promise.reject(new Error('this adapter must not open MySQL connections')) },
    retentionDays: 14,
    now: () => new Date('2024-05-01T12:00:00.000Z'),
    log: { info: () => undefined, warn: () => undefined },
  };
}

/** Every row as PostgreSQL prints it, sorted: equal arrays mean equal tables, row for row (duplicates included). */
async function rowsOf(table: string): Promise<string[]> {
  const { rows } = await sql.query<{ r: string }>(`SELECT t::text AS r FROM ${table} AS t ORDER BY 1`);
  return rows.map((r) => r.r);
}

async function xminById(table: string, key = 'id'): Promise<Map<string, string>> {
  const { rows } = await sql.query<{ k: string; x: string }>(`SELECT ${key}::text AS k, xmin::text AS x FROM ${table}`);
  return new Map(rows.map((r) => [r.k, r.x]));
}

async function quarantineTables(unitId: string): Promise<string[]> {
  const { rows } = await sql.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'etl_rollback' AND c.relname LIKE $1 ORDER BY 1`,
    [`q\\_${unitId.replace(/-/g, '\\_')}\\_%`],
  );
  return rows.map((r) => r.name);
}

async function exists(relation: string): Promise<boolean> {
  const { rows } = await sql.query<{ oid: string | null }>('SELECT to_regclass($1)::text AS oid', [relation]);
  return rows[0]?.oid != null;
}

async function checksOk(u: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, c: AdapterContext): Promise<boolean> {
  const checks = await adapter.verify(u, point, c);
  return checks.length > 0 && checks.every((ch) => ch.ok);
}

describe('postgres-table adapter: capture', () => {
  it('copies the table into a sealed shadow table with count, checksum, key and columns', async () => {
    await sql.query(`CREATE TABLE cap_basic (id int PRIMARY KEY, name text NOT NULL, amount numeric(12,2))`);
    await sql.query(`INSERT INTO cap_basic SELECT g, 'n' || g, g * 1.5 FROM generate_series(1, 50) g`);
    const point = await adapter.capture(unit('cap-basic', 'cap_basic'), ctx('d-cap-basic'));

    expect(point).toMatchObject({ unitId: 'cap-basic', type: 'postgres-table', count: 50, capturedAt: '2024-05-01T12:00:00.000Z' });
    expect(point.checksum).toMatch(/^-?\d+$/);
    expect(point.details).toMatchObject({
      connection: 'warehouse',
      table: 'public.cap_basic',
      primaryKey: ['id'],
      columns: [
        { name: 'id', type: 'integer' },
        { name: 'name', type: 'text' },
        { name: 'amount', type: 'numeric(12,2)' },
      ],
    });
    expect(point.details.shadowTable).toMatch(/^etl_rollback\.rp_sales_cap_basic_[0-9a-f]{16}$/);
    expect(point.details.shadowTable.split('.')[1]!.length).toBeLessThanOrEqual(63);
    expect(await rowsOf(point.details.shadowTable)).toEqual(await rowsOf('cap_basic'));

    const { rows } = await sql.query<{ c: string }>(`SELECT obj_description($1::regclass, 'pg_class') AS c`, [point.details.shadowTable]);
    expect(JSON.parse(rows[0]!.c)).toMatchObject({ pipeline: 'sales', deploymentId: 'd-cap-basic', unitId: 'cap-basic', sourceTable: 'public.cap_basic', count: 50, checksum: point.checksum, sealed: true });
    expect(await checksOk(unit('cap-basic', 'cap_basic'), point, ctx('d-cap-basic'))).toBe(true);
  });

  it('is idempotent: a second capture of the same deployment returns the same point without copying again', async () => {
    await sql.query(`CREATE TABLE cap_idem (id int PRIMARY KEY, v text)`);
    await sql.query(`INSERT INTO cap_idem SELECT g, 'v' || g FROM generate_series(1, 10) g`);
    const u = unit('cap-idem', 'cap_idem');
    const first = await adapter.capture(u, ctx('d-idem'));
    await sql.query(`INSERT INTO cap_idem VALUES (11, 'late')`);
    const second = await adapter.capture(u, { ...ctx('d-idem'), now: () => new Date('2030-01-01T00:00:00Z') });

    expect(second).toEqual(first);
    expect(await rowsOf(first.details.shadowTable)).toHaveLength(10);
    const { rows } = await sql.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE c.relkind = 'r' AND ns.nspname = 'etl_rollback' AND c.relname LIKE 'rp\\_sales\\_cap\\_idem\\_%'`,
    );
    expect(rows[0]!.n).toBe('1');

    // Another deployment is another point.
    const other = await adapter.capture(u, ctx('d-idem-2'));
    expect(other.details.shadowTable).not.toBe(first.details.shadowTable);
    expect(other.count).toBe(11);
  });

  it('concurrent captures of the same point and of sibling units do not race', async () => {
    await sql.query(`CREATE TABLE cap_conc_a (id int PRIMARY KEY)`);
    await sql.query(`CREATE TABLE cap_conc_b (id int PRIMARY KEY)`);
    await sql.query(`INSERT INTO cap_conc_a SELECT generate_series(1, 2000)`);
    await sql.query(`INSERT INTO cap_conc_b SELECT generate_series(1, 100)`);
    const points = await Promise.all([
      adapter.capture(unit('cap-conc-a', 'cap_conc_a'), ctx('d-conc')),
      adapter.capture(unit('cap-conc-a', 'cap_conc_a'), ctx('d-conc')),
      adapter.capture(unit('cap-conc-b', 'cap_conc_b'), ctx('d-conc')),
    ]);
    expect(points[0]).toEqual(points[1]);
    expect(points.map((p) => p.count)).toEqual([2000, 2000, 100]);
  });

  it('refuses a table that does not exist, naming it', async () => {
    const error = await adapter.capture(unit('cap-missing', 'public.no_such_table'), ctx('d-missing')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toContain('public.no_such_table');
    expect((error as Error).message).toContain('warehouse');
    const { rows } = await sql.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM pg_class WHERE relname LIKE 'rp\\_sales\\_cap\\_missing\\_%'`,
    );
    expect(rows[0]!.n).toBe('0');
  });

  it('refuses a view', async () => {
    await sql.query(`CREATE TABLE cap_view_base (id int PRIMARY KEY)`);
    await sql.query(`CREATE VIEW cap_view AS SELECT * FROM cap_view_base`);
    await expect(adapter.capture(unit('cap-view', 'cap_view'), ctx('d-view'))).rejects.toThrow(/is not a table/);
  });

  it('resolves names like SQL does: schema-qualified, unquoted names fold to lower case', async () => {
    await sql.query(`CREATE SCHEMA mart`);
    await sql.query(`CREATE TABLE mart.facts (id int PRIMARY KEY, v int)`);
    await sql.query(`INSERT INTO mart.facts VALUES (1, 1)`);
    const point = await adapter.capture(unit('cap-schema', 'Mart.Facts'), ctx('d-schema'));
    expect(point.details.table).toBe('mart.facts');
    expect(point.count).toBe(1);
  });

  it('gives the same checksum whatever the row order, and sees duplicates', async () => {
    await sql.query(`CREATE TABLE sum_a (v text)`);
    await sql.query(`CREATE TABLE sum_b (v text)`);
    await sql.query(`INSERT INTO sum_a VALUES ('a'), ('b'), ('c')`);
    await sql.query(`INSERT INTO sum_b VALUES ('c'), ('a'), ('b')`);
    const a = await adapter.capture(unit('sum-a', 'sum_a'), ctx('d-sum'));
    const b = await adapter.capture(unit('sum-b', 'sum_b'), ctx('d-sum'));
    expect(a.checksum).toBe(b.checksum);

    // {a, b, c} -> {a, a, b, c} minus c plus ... : same count, different multiset.
    await sql.query(`DELETE FROM sum_a WHERE v = 'c'`);
    await sql.query(`INSERT INTO sum_a VALUES ('a')`);
    const checks = await adapter.verify(unit('sum-a', 'sum_a'), a, ctx('d-sum'));
    expect(checks.find((c) => c.name === 'rowCount')).toMatchObject({ ok: true, expected: 3, actual: 3 });
    expect(checks.find((c) => c.name === 'checksum')).toMatchObject({ ok: false, expected: a.checksum });
  });

});

describe('postgres-table adapter: restore by primary key', () => {
  it('puts inserted, updated and deleted rows back, row for row, and keeps the bad rows', async () => {
    await sql.query(`CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), placed_at timestamptz NOT NULL)`);
    await sql.query(`INSERT INTO orders SELECT g, 'c' || (g % 17), g * 2.25, timestamptz '2024-01-01 00:00Z' + g * interval '1 hour' FROM generate_series(1, 1000) g`);
    const u = unit('orders', 'orders');
    const c = ctx('d-orders', 'run-orders-1');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('orders');

    // The bad deploy: 4 new rows, 3 changed, 5 removed.
    await sql.query(`INSERT INTO orders SELECT g, 'bad', 0, now() FROM generate_series(2001, 2004) g`);
    await sql.query(`UPDATE orders SET amount = -1 WHERE id IN (10, 20, 30)`);
    await sql.query(`DELETE FROM orders WHERE id BETWEEN 500 AND 504`);
    const bad = await rowsOf(`(SELECT * FROM orders WHERE id > 2000 OR id IN (10, 20, 30))`);
    expect(await checksOk(u, point, c)).toBe(false);

    const plan = await adapter.diff(u, point, c);
    expect(plan).toEqual({
      changes: { rowsInserted: 5, rowsUpdated: 3, rowsDeleted: 4, rowsQuarantined: 7 },
      writes: 12,
      notes: [expect.stringMatching(/^capture: copy \(the default/), expect.stringMatching(/^change detection: xmin since \d+$/), expect.stringMatching(/^strategy: diff \(12 of 1000 rows in scope differ \(1%\)/)],
    });
    expect(await quarantineTables('orders')).toEqual([]);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 5, rowsUpdated: 3, rowsDeleted: 4, rowsQuarantined: 7 });
    expect(outcome.writes).toBe(12);
    expect(outcome.keptAt).toMatch(/^etl_rollback\.q_orders_[0-9a-f]{16}$/);
    expect(await rowsOf('orders')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);

    // The quarantine table holds exactly the rows the restore replaced, as they were.
    expect(await rowsOf(outcome.keptAt!)).toEqual(bad);
    const { rows } = await sql.query<{ c: string }>(`SELECT obj_description($1::regclass, 'pg_class') AS c`, [outcome.keptAt]);
    expect(JSON.parse(rows[0]!.c)).toMatchObject({ runId: 'run-orders-1', unitId: 'orders', table: 'public.orders', at: '2024-05-01T12:00:00.000Z' });

    // A rerun writes nothing and makes no new quarantine table.
    const quarantinesBefore = await quarantineTables('orders');
    const again = await adapter.restore(u, point, c);
    expect(again).toEqual({ changes: { rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 0 }, writes: 0, notes: [expect.stringMatching(/^change detection: xmin since \d+$/)] });
    expect(await quarantineTables('orders')).toEqual(quarantinesBefore);
    const rerunOtherRun = await adapter.restore(u, point, ctx('d-orders', 'run-orders-2'));
    expect(rerunOtherRun.writes).toBe(0);
    expect(await quarantineTables('orders')).toEqual(quarantinesBefore);
    expect((await adapter.diff(u, point, c)).writes).toBe(0);
  });

  it('writes only the rows that changed (1000 rows, 3 changed: 3 updates; untouched rows keep their xmin)', async () => {
    await sql.query(`CREATE TABLE wide (id int PRIMARY KEY, a text, b int)`);
    await sql.query(`INSERT INTO wide SELECT g, 'a' || g, g FROM generate_series(1, 1000) g`);
    const u = unit('wide', 'wide');
    const c = ctx('d-wide');
    const point = await adapter.capture(u, c);
    await sql.query(`UPDATE wide SET b = b + 1 WHERE id IN (7, 400, 999)`);
    const before = await xminById('wide');

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 3, rowsDeleted: 0, rowsQuarantined: 3 });
    const after = await xminById('wide');
    expect(after.size).toBe(1000);
    for (const [id, xmin] of before) {
      if (['7', '400', '999'].includes(id)) expect(after.get(id), `row ${id} was rewritten`).not.toBe(xmin);
      else expect(after.get(id), `untouched row ${id} was rewritten`).toBe(xmin);
    }
    expect(await checksOk(u, point, c)).toBe(true);
  });

  it('diff writes nothing', async () => {
    await sql.query(`CREATE TABLE diffro (id int PRIMARY KEY, v text)`);
    await sql.query(`INSERT INTO diffro SELECT g, 'v' FROM generate_series(1, 20) g`);
    const u = unit('diffro', 'diffro');
    const point = await adapter.capture(u, ctx('d-diffro'));
    await sql.query(`UPDATE diffro SET v = 'x' WHERE id = 1`);
    await sql.query(`DELETE FROM diffro WHERE id = 2`);
    const rows = await rowsOf('diffro');
    const xmins = await xminById('diffro');
    const plan = await adapter.diff(u, point, ctx('d-diffro'));
    expect(plan.changes).toEqual({ rowsInserted: 1, rowsUpdated: 1, rowsDeleted: 0, rowsQuarantined: 1 });
    expect(await rowsOf('diffro')).toEqual(rows);
    expect(await xminById('diffro')).toEqual(xmins);
    expect(await quarantineTables('diffro')).toEqual([]);
  });

  it('keeps NULLs, jsonb, json, numeric, timestamptz, bytea, arrays and types without equality', async () => {
    await sql.query(`CREATE TABLE typed (
      id bigint PRIMARY KEY, j jsonb, js json, n numeric, ts timestamptz, b bytea, arr text[], iarr int[], p point, f float8, t text, iv interval, m money)`);
    await sql.query(`INSERT INTO typed VALUES
      (1, '{"a": [1, 2, {"b": null}]}', '{"x":  1,"x": 2}', 123456789012345678901234567890.000001, '2024-02-29 23:59:59.123456+05:30', '\\xdeadbeef00', '{a,"b c",NULL}', '{1,2,3}', '(1.5,2)', 0.1, 'plain', '1 day 2 hours', 12.34),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, 'null', '[]', 'NaN', 'infinity', '\\x', '{}', '{}', '(0,0)', 'NaN', '', '-1 mons', 0),
      (4, '"str"', '"a,b"', -0.5, '1999-12-31 23:59:59Z', '\\x00', '{"{}", "\\"q\\""}', '{NULL}', '(-1,-1)', -0, 'with ''quote'' and , comma', '0', -1)`);
    const u = unit('typed', 'typed');
    const c = ctx('d-typed');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('typed');

    // Change every column of row 1 and 3 in ways that are subtle as text: json key order, NULL vs empty, scale.
    await sql.query(`UPDATE typed SET j = '{"a": [1, 2, {"b": 0}]}', js = '{"x": 1, "x": 2}', n = 123456789012345678901234567890.000002,
      ts = ts + interval '1 microsecond', b = '\\xdeadbeef', arr = '{a,"b c"}', p = '(1.5,2.0000001)', f = 0.10000000000000002, m = 12.35 WHERE id = 1`);
    await sql.query(`UPDATE typed SET t = NULL, arr = NULL, b = NULL WHERE id = 3`);
    await sql.query(`UPDATE typed SET t = '' WHERE id = 2`);
    await sql.query(`UPDATE typed SET n = -0.50 WHERE id = 4`);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 4, rowsDeleted: 0, rowsQuarantined: 4 });
    expect(await rowsOf('typed')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);
  });

  it('restores a table with a composite primary key', async () => {
    await sql.query(`CREATE TABLE daily (region text, day date, sku int, qty int NOT NULL, PRIMARY KEY (region, day, sku))`);
    await sql.query(`INSERT INTO daily SELECT r, date '2024-01-01' + d, s, d * s FROM unnest(array['eu','us']) r, generate_series(0, 9) d, generate_series(1, 5) s`);
    const u = unit('daily', 'daily');
    const c = ctx('d-daily');
    const point = await adapter.capture(u, c);
    expect(point.details.primaryKey).toEqual(['region', 'day', 'sku']);
    const captured = await rowsOf('daily');

    await sql.query(`DELETE FROM daily WHERE region = 'eu' AND day = '2024-01-03'`); // 5 rows
    await sql.query(`UPDATE daily SET qty = -1 WHERE region = 'us' AND sku = 1`); // 10 rows
    await sql.query(`INSERT INTO daily VALUES ('apac', '2024-01-01', 1, 1), ('eu', '2024-01-01', 99, 1)`); // same day/sku as others, different key

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 5, rowsUpdated: 10, rowsDeleted: 2, rowsQuarantined: 12 });
    expect(await rowsOf('daily')).toEqual(captured);
  });

  it('keeps views and foreign keys pointing at the same table', async () => {
    await sql.query(`CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)`);
    await sql.query(`CREATE TABLE invoices (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers (id))`);
    await sql.query(`CREATE VIEW customer_names AS SELECT id, upper(name) AS name FROM customers`);
    await sql.query(`INSERT INTO customers SELECT g, 'cust' || g FROM generate_series(1, 10) g`);
    await sql.query(`INSERT INTO invoices SELECT g, g FROM generate_series(1, 5) g`);
    const { rows: oidBefore } = await sql.query<{ oid: string }>(`SELECT 'customers'::regclass::oid::text AS oid`);
    const u = unit('customers', 'customers');
    const c = ctx('d-customers');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('customers');

    await sql.query(`UPDATE customers SET name = 'renamed' WHERE id IN (1, 9)`);
    await sql.query(`INSERT INTO customers VALUES (11, 'new')`);
    await sql.query(`DELETE FROM customers WHERE id = 10`);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 1, rowsUpdated: 2, rowsDeleted: 1, rowsQuarantined: 3 });
    expect(await rowsOf('customers')).toEqual(captured);
    const { rows: oidAfter } = await sql.query<{ oid: string }>(`SELECT 'customers'::regclass::oid::text AS oid`);
    expect(oidAfter).toEqual(oidBefore);

    const { rows: viewRows } = await sql.query<{ name: string }>(`SELECT name FROM customer_names WHERE id IN (1, 10) ORDER BY id`);
    expect(viewRows.map((r) => r.name)).toEqual(['CUST1', 'CUST10']);
    const { rows: joined } = await sql.query<{ n: string }>(`SELECT count(*)::text AS n FROM invoices i JOIN customers c ON c.id = i.customer_id`);
    expect(joined[0]!.n).toBe('5');
    await expect(sql.query(`INSERT INTO invoices VALUES (100, 11)`)).rejects.toThrow(/foreign key/);
    await sql.query(`INSERT INTO invoices VALUES (100, 10)`);
  });

  it('refuses, before writing, a restore whose deletes would cascade into rows of another table; restoring that consumer first clears the way', async () => {
    await sql.query(`CREATE TABLE ledger_accounts (id int PRIMARY KEY, name text NOT NULL)`);
    await sql.query(`CREATE TABLE postings (id int PRIMARY KEY, account_id int REFERENCES ledger_accounts (id) ON DELETE SET NULL)`);
    await sql.query(`INSERT INTO ledger_accounts SELECT g, 'acct' || g FROM generate_series(1, 5) g`);
    await sql.query(`INSERT INTO postings SELECT g, g FROM generate_series(1, 5) g`);
    const accounts = unit('ledger-accounts', 'ledger_accounts');
    const postings = unit('postings', 'postings');
    const c = ctx('d-cascade');
    const accountsPoint = await adapter.capture(accounts, c);
    const postingsPoint = await adapter.capture(postings, c);
    const captured = { accounts: await rowsOf('ledger_accounts'), postings: await rowsOf('postings') };

    // The deploy adds an account and postings against it.
    await sql.query(`INSERT INTO ledger_accounts VALUES (6, 'acct6')`);
    await sql.query(`INSERT INTO postings VALUES (6, 6), (7, 6)`);
    const before = { accounts: await rowsOf('ledger_accounts'), postings: await rowsOf('postings') };

    // Restoring the accounts alone would delete account 6, and SET NULL would rewrite postings 6 and 7 unseen.
    const error = await adapter.restore(accounts, accountsPoint, c).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toMatch(/2 row\(s\) of postings reference through foreign key .* \(ON DELETE SET NULL\).*Nothing was written/);
    expect(await rowsOf('ledger_accounts')).toEqual(before.accounts);
    expect(await rowsOf('postings')).toEqual(before.postings);
    expect(await quarantineTables('ledger-accounts')).toEqual([]);

    // In plan order (the consumer first) both restore, and the removed postings are kept in quarantine.
    expect((await adapter.restore(postings, postingsPoint, c)).changes).toMatchObject({ rowsDeleted: 2, rowsQuarantined: 2 });
    expect((await adapter.restore(accounts, accountsPoint, c)).changes).toMatchObject({ rowsDeleted: 1, rowsQuarantined: 1 });
    expect(await rowsOf('ledger_accounts')).toEqual(captured.accounts);
    expect(await rowsOf('postings')).toEqual(captured.postings);
  });

  it('restores tables with a generated column and a GENERATED ALWAYS identity key', async () => {
    await sql.query(`CREATE TABLE lines (
      id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, qty int NOT NULL, price numeric(10,2) NOT NULL,
      total numeric GENERATED ALWAYS AS (qty * price) STORED)`);
    await sql.query(`INSERT INTO lines (qty, price) SELECT g, g + 0.5 FROM generate_series(1, 20) g`);
    const u = unit('lines', 'lines');
    const c = ctx('d-lines');
    const point = await adapter.capture(u, c);
    expect(point.details.columns.map((col) => col.name)).toEqual(['id', 'qty', 'price', 'total']);
    const captured = await rowsOf('lines');

    await sql.query(`UPDATE lines SET qty = qty * 10 WHERE id <= 3`);
    await sql.query(`DELETE FROM lines WHERE id IN (19, 20)`);
    await sql.query(`INSERT INTO lines (qty, price) VALUES (1, 1), (2, 2)`);

    const outcome = await adapter.restore(u, point, c);
    // The identity sequence is set back too: the two inserts had advanced it.
    expect(outcome.changes).toEqual({ rowsInserted: 2, rowsUpdated: 3, rowsDeleted: 2, rowsQuarantined: 5, sequencesReset: 1 });
    expect(await rowsOf('lines')).toEqual(captured);
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, c)).writes).toBe(0);
  });

  it('restores a table with a GENERATED BY DEFAULT identity and a GENERATED ALWAYS identity outside the key', async () => {
    await sql.query(`CREATE TABLE events (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY, kind text)`);
    await sql.query(`INSERT INTO events (kind) SELECT 'k' || g FROM generate_series(1, 10) g`);
    const u = unit('events', 'events');
    const c = ctx('d-events');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('events');

    await sql.query(`DELETE FROM events WHERE id IN (2, 3)`);
    await sql.query(`UPDATE events SET kind = 'changed' WHERE id = 4`);
    await sql.query(`INSERT INTO events (kind) VALUES ('new')`);
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 2, rowsUpdated: 1, rowsDeleted: 1, rowsQuarantined: 2, sequencesReset: 2 });
    expect(await rowsOf('events')).toEqual(captured);

    // A non-key GENERATED ALWAYS identity value that differs cannot be written by UPDATE. When a reload is possible
    // (nothing references the table, triggers are disabled), the restore reloads; otherwise it refuses before writing.
    await sql.query(`ALTER TABLE events ALTER COLUMN seq SET GENERATED BY DEFAULT`);
    await sql.query(`UPDATE events SET seq = seq + 100 WHERE id = 5`);
    await sql.query(`ALTER TABLE events ALTER COLUMN seq SET GENERATED ALWAYS`);
    const changed = await rowsOf('events');
    const firing = createPostgresTableAdapter({ triggers: 'fire' });
    const error = await firing.restore(u, point, ctx('d-events', 'run-events-2')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toMatch(/GENERATED ALWAYS identity column.*a reload is not possible \(user triggers are set to fire/);
    expect(await rowsOf('events')).toEqual(changed);

    const reloaded = await adapter.restore(u, point, ctx('d-events', 'run-events-3'));
    expect(reloaded.changes).toEqual({ rowsInserted: 10, rowsUpdated: 0, rowsDeleted: 10, rowsQuarantined: 1 });
    expect(reloaded.notes).toEqual([expect.stringMatching(/^change detection: xmin since \d+$/), expect.stringMatching(/^strategy: reload \(1 row\(s\) differ in a GENERATED ALWAYS identity column.*TRUNCATE/)]);
    expect(await rowsOf('events')).toEqual(captured);
    expect(await rowsOf(reloaded.keptAt!)).toEqual(changed.filter((r) => r.startsWith('(5,')));
  });
});

describe('postgres-table adapter: restore without a primary key', () => {
  it('reloads the whole table, keeps every live row, and notes it', async () => {
    await sql.query(`CREATE TABLE log_lines (at date, msg text)`);
    await sql.query(`INSERT INTO log_lines VALUES ('2024-01-01', 'a'), ('2024-01-01', 'a'), ('2024-01-02', 'b'), ('2024-01-03', NULL)`);
    const u = unit('log-lines', 'log_lines');
    const c = ctx('d-log');
    const point = await adapter.capture(u, c);
    expect(point.details.primaryKey).toEqual([]);
    const captured = await rowsOf('log_lines');

    // Remove one of the duplicates, add a row: a multiset change.
    await sql.query(`DELETE FROM log_lines WHERE ctid = (SELECT min(ctid) FROM log_lines WHERE msg = 'a')`);
    await sql.query(`INSERT INTO log_lines VALUES ('2024-01-04', 'bad')`);
    const live = await rowsOf('log_lines');

    const plan = await adapter.diff(u, point, c);
    expect(plan.changes).toEqual({ rowsInserted: 4, rowsUpdated: 0, rowsDeleted: 4, rowsQuarantined: 4 });
    expect(plan.notes).toEqual([expect.stringMatching(/^capture: copy \(the default/), expect.stringMatching(/no primary key on public\.log_lines: full reload/), expect.stringMatching(/^strategy: reload \(no primary key/)]);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 4, rowsUpdated: 0, rowsDeleted: 4, rowsQuarantined: 4 });
    expect(outcome.notes).toEqual(plan.notes.slice(1));
    expect(await rowsOf('log_lines')).toEqual(captured);
    expect(await rowsOf(outcome.keptAt!)).toEqual(live);

    const again = await adapter.restore(u, point, c);
    expect(again.writes).toBe(0);
    expect(again.keptAt).toBeUndefined();
    expect(again.notes).toEqual([expect.stringMatching(/already equals its restore point/)]);
  });
});

describe('postgres-table adapter: refusals and failures', () => {
  it('restores the captured schema with the rows when the deploy changed the columns, keeping the live columns in quarantine', async () => {
    await sql.query(`CREATE TABLE drift (id int PRIMARY KEY, a int, b text)`);
    await sql.query(`INSERT INTO drift SELECT g, g, 'b' || g FROM generate_series(1, 10) g`);
    const u = unit('drift', 'drift');
    const c = ctx('d-drift');
    const point = await adapter.capture(u, c);
    const captured = await rowsOf('(SELECT id, a, b FROM drift)');
    await sql.query(`DELETE FROM drift WHERE id = 1`);
    await sql.query(`ALTER TABLE drift ADD COLUMN c jsonb, ALTER COLUMN a TYPE bigint, DROP COLUMN b`);
    await sql.query(`UPDATE drift SET c = '{"bad": true}', a = a * 1000 WHERE id <= 3`);
    const live = await rowsOf('drift');

    const plan = await adapter.diff(u, point, c);
    expect(plan.notes).toContain('schema will be restored: column "c" dropped, column "a" retyped from bigint back to integer, column "b" re-added (text)');
    expect(plan.changes).toMatchObject({ schemaChanges: 3, rowsInserted: 1, rowsQuarantined: 9 });
    expect(await rowsOf('drift')).toEqual(live);

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.notes).toContain('schema restored: column "c" dropped, column "a" retyped from bigint back to integer, column "b" re-added (text)');
    // Every row gets "b" back (re-added empty), rows 2 and 3 get "a" back, row 1 comes back.
    expect(outcome.changes).toEqual({ rowsInserted: 1, rowsUpdated: 9, rowsDeleted: 0, rowsQuarantined: 9, schemaChanges: 3 });
    expect(await rowsOf('(SELECT id, a, b FROM drift)')).toEqual(captured);
    const { rows: types } = await sql.query<{ name: string; type: string }>(
      `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = 'drift'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attname`,
    );
    expect(types).toEqual([
      { name: 'a', type: 'integer' },
      { name: 'b', type: 'text' },
      { name: 'id', type: 'integer' },
    ]);
    // The quarantine holds the live rows with the live columns (c included), as they were.
    expect(await rowsOf(outcome.keptAt!)).toEqual(live);
    expect(await checksOk(u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, ctx('d-drift', 'run-drift-2'))).writes).toBe(0);
  });

  it('refuses a restore when the primary key changed', async () => {
    await sql.query(`CREATE TABLE pkchange (id int PRIMARY KEY, v int)`);
    await sql.query(`INSERT INTO pkchange VALUES (1, 1)`);
    const u = unit('pkchange', 'pkchange');
    const point = await adapter.capture(u, ctx('d-pk'));
    await sql.query(`ALTER TABLE pkchange DROP CONSTRAINT pkchange_pkey`);
    await expect(adapter.restore(u, point, ctx('d-pk'))).rejects.toThrow(/primary key changed from \(id\) to none/);
  });

  it('rolls everything back when a write fails mid-restore (CHECK constraint added after capture)', async () => {
    await sql.query(`CREATE TABLE accounts (id int PRIMARY KEY, status text NOT NULL)`);
    await sql.query(`INSERT INTO accounts SELECT g, CASE WHEN g <= 2 THEN 'legacy' ELSE 'active' END FROM generate_series(1, 10) g`);
    const u = unit('accounts', 'accounts');
    const c = ctx('d-accounts');
    const point = await adapter.capture(u, c);

    await sql.query(`DELETE FROM accounts WHERE id = 10`);
    await sql.query(`INSERT INTO accounts VALUES (11, 'active')`);
    await sql.query(`UPDATE accounts SET status = 'active' WHERE status = 'legacy'`);
    await sql.query(`ALTER TABLE accounts ADD CONSTRAINT no_legacy CHECK (status <> 'legacy')`);
    const rows = await rowsOf('accounts');
    const xmins = await xminById('accounts');

    const error = await adapter.restore(u, point, c).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/restore of unit "accounts" \(table public\.accounts\) failed and was rolled back.*no_legacy/);
    expect(await rowsOf('accounts')).toEqual(rows);
    expect(await xminById('accounts')).toEqual(xmins);
    expect(await quarantineTables('accounts')).toEqual([]);
  });

  it('rolls everything back when a trigger raises during the INSERT', async () => {
    await sql.query(`CREATE TABLE guarded (id int PRIMARY KEY, v text)`);
    await sql.query(`INSERT INTO guarded SELECT g, 'v' || g FROM generate_series(1, 5) g`);
    const u = unit('guarded', 'guarded');
    const c = ctx('d-guarded');
    const point = await adapter.capture(u, c);
    await sql.query(`UPDATE guarded SET v = 'x' WHERE id = 1`);
    await sql.query(`DELETE FROM guarded WHERE id = 5`);
    await sql.query(`CREATE FUNCTION guarded_no_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'inserts are frozen'; END $$`);
    await sql.query(`CREATE TRIGGER guarded_no_insert BEFORE INSERT ON guarded FOR EACH ROW EXECUTE FUNCTION guarded_no_insert()`);
    const rows = await rowsOf('guarded');

    // By default user triggers do not fire for a restore; a unit whose triggers must fire sees their errors.
    await expect(createPostgresTableAdapter({ triggers: 'fire' }).restore(u, point, c)).rejects.toThrow(/rolled back.*inserts are frozen/);
    expect(await rowsOf('guarded')).toEqual(rows);
    expect(await quarantineTables('guarded')).toEqual([]);
  });

  it('needs a run id to restore', async () => {
    await sql.query(`CREATE TABLE norun (id int PRIMARY KEY)`);
    const u = unit('norun', 'norun');
    const point = await adapter.capture(u, ctx('d-norun'));
    await expect(adapter.restore(u, point, { ...ctx('d-norun'), runId: undefined })).rejects.toThrow(/needs the rollback run id/);
  });
});

describe('postgres-table adapter: verify and release', () => {
  it('honours the unit checks flags', async () => {
    await sql.query(`CREATE TABLE flags (id int PRIMARY KEY, v int)`);
    await sql.query(`INSERT INTO flags SELECT g, g FROM generate_series(1, 5) g`);
    const point = await adapter.capture(unit('flags', 'flags'), ctx('d-flags'));
    await sql.query(`UPDATE flags SET v = 0 WHERE id = 1`);

    const both = await adapter.verify(unit('flags', 'flags'), point, ctx('d-flags'));
    expect(both.map((ch) => [ch.name, ch.ok])).toEqual([
      ['rowCount', true],
      ['checksum', false],
    ]);
    const countOnly = await adapter.verify(unit('flags', 'flags', { checksum: false }), point, ctx('d-flags'));
    expect(countOnly).toEqual([{ name: 'rowCount', ok: true, expected: 5, actual: 5 }]);
    const checksumOnly = await adapter.verify(unit('flags', 'flags', { count: false }), point, ctx('d-flags'));
    expect(checksumOnly.map((ch) => ch.name)).toEqual(['checksum']);
    expect(await adapter.verify(unit('flags', 'flags', { count: false, checksum: false }), point, ctx('d-flags'))).toEqual([]);
  });

  it('computes the same checksum whatever the session time zone and date style', async () => {
    await sql.query(`CREATE TABLE tz (id int PRIMARY KEY, at timestamptz, d date, t timestamp)`);
    await sql.query(`INSERT INTO tz VALUES (1, '2024-03-10 01:30:00Z', '2024-03-10', '2024-03-10 01:30:00')`);
    const u = unit('tz', 'tz');
    const point = await adapter.capture(u, ctx('d-tz'));
    const exotic: PostgresConnector = {
      async connect() {
        const client = new pg.Client({ connectionString: db.url, options: '-c TimeZone=Pacific/Auckland -c DateStyle=SQL,DMY -c extra_float_digits=-3' });
        await client.connect();
        return client;
      },
    };
    expect(await checksOk(u, point, ctx('d-tz', 'run-tz', exotic))).toBe(true);
  });

  it('fails verification when the table is gone', async () => {
    await sql.query(`CREATE TABLE gone (id int PRIMARY KEY)`);
    const u = unit('gone', 'gone');
    const point = await adapter.capture(u, ctx('d-gone'));
    await sql.query(`DROP TABLE gone`);
    const checks = await adapter.verify(u, point, ctx('d-gone'));
    expect(checks).toEqual([
      { name: 'rowCount', ok: false, expected: 0, actual: 'missing', detail: 'table public.gone does not exist' },
      { name: 'checksum', ok: false, expected: '0', actual: 'missing', detail: 'table public.gone does not exist' },
    ]);
    await expect(adapter.restore(u, point, ctx('d-gone'))).rejects.toThrow(/public\.gone no longer exists/);
  });

  it('release drops the shadow table and only it; restoring a released point is refused', async () => {
    await sql.query(`CREATE TABLE rel (id int PRIMARY KEY, v int)`);
    await sql.query(`INSERT INTO rel VALUES (1, 1), (2, 2)`);
    const u = unit('rel', 'rel');
    const c = ctx('d-rel');
    const point = await adapter.capture(u, c);
    const sibling = await adapter.capture(u, ctx('d-rel-next'));
    await sql.query(`UPDATE rel SET v = 9`);
    const outcome = await adapter.restore(u, point, c);

    await adapter.release(u, point, c);
    expect(await exists(point.details.shadowTable)).toBe(false);
    expect(await exists(sibling.details.shadowTable)).toBe(true);
    expect(await exists(outcome.keptAt!)).toBe(true);
    expect(await rowsOf('rel')).toEqual(['(1,1)', '(2,2)']);
    await adapter.release(u, point, c); // already gone: nothing to do

    await expect(adapter.restore(u, point, c)).rejects.toBeInstanceOf(RestorePointMissingError);
  });

  it('release refuses to drop a table that is not this sealed point', async () => {
    await sql.query(`CREATE TABLE relx (id int PRIMARY KEY)`);
    const u = unit('relx', 'relx');
    const point = await adapter.capture(u, ctx('d-relx'));
    await sql.query(`COMMENT ON TABLE ${point.details.shadowTable} IS 'hand-made'`);
    await expect(adapter.release(u, point, ctx('d-relx'))).rejects.toThrow(/refusing to drop/);
    expect(await exists(point.details.shadowTable)).toBe(true);
  });
});

describe('postgres-table adapter: property', () => {
  type Op = { kind: 'insert' | 'update' | 'delete'; k: number; v: string | null; n: number };
  const op: fc.Arbitrary<Op> = fc.record({
    kind: fc.constantFrom('insert', 'update', 'delete'),
    k: fc.integer({ min: 1, max: 12 }),
    v: fc.option(fc.string({ maxLength: 6 }), { nil: null }),
    n: fc.integer({ min: -3, max: 3 }),
  });

  it('after any mutations over a small key space, restore makes the table equal the captured rows', async () => {
    await sql.query(`CREATE TABLE prop (k int PRIMARY KEY, v text, n int)`);
    const u = unit('prop', 'prop');
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.integer({ min: 1, max: 12 }), { maxLength: 10 }), fc.array(op, { maxLength: 25 }), async (keys, ops) => {
        run += 1;
        const c = ctx(`d-prop-${run}`, `run-prop-${run}`);
        await sql.query('TRUNCATE prop');
        for (const k of keys) await sql.query('INSERT INTO prop VALUES ($1, $2, $3)', [k, `v${k}`, k]);
        const point = await adapter.capture(u, c);
        const captured = await rowsOf('prop');
        try {
          for (const o of ops) {
            if (o.kind === 'insert') await sql.query('INSERT INTO prop VALUES ($1, $2, $3) ON CONFLICT (k) DO NOTHING', [o.k, o.v, o.n]);
            else if (o.kind === 'update') await sql.query('UPDATE prop SET v = $2, n = n + $3 WHERE k = $1', [o.k, o.v, o.n]);
            else await sql.query('DELETE FROM prop WHERE k = $1', [o.k]);
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

describe('postgres-table adapter: connections', () => {
  it('ends every connection it opened (run last)', async () => {
    // Backends exit just after the client's end(); allow them a moment.
    let open = -1;
    for (let i = 0; i < 40 && open !== 0; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 50));
      const { rows } = await sql.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'etl-rollback'`,
      );
      open = Number(rows[0]!.n);
    }
    expect(open).toBe(0);
  });
});
