import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createPostgresTableAdapter, postgresTableAdapter as adapter } from '../../core/adapters/postgres-table.ts';
import { countAndChecksum } from '../../core/adapters/postgres/checksum.ts';
import { quarantineTableName } from '../../core/adapters/postgres/names.ts';
import { VerificationFailedError, PreflightError, TableBusyError } from '../../core/errors.ts';
import type { AdapterContext } from '../../core/adapters/types.ts';
import { postgresConnector } from '../../core/runtime/connections.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

let h: PgHarness;

beforeAll(async () => {
  h = await pgHarness('pgcow', ['cw_orders']);
});

afterAll(async () => {
  await h?.sql.end();
  await h?.db.drop();
});

const one = async <T>(sql: string): Promise<T> => Object.values((await h.sql.query(sql)).rows[0] as Record<string, T>)[0]!;

async function ourTriggers(table: string): Promise<string[]> {
  const { rows } = await h.sql.query<{ n: string }>(`SELECT tgname AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname LIKE 'etl_rollback_cw_%' ORDER BY 1`, [table]);
  return rows.map((r) => r.n);
}

describe('postgres-table copy-on-write: capture and restore', () => {
  it('copies nothing, records first pre-images; restore puts back inserts, updates (of the key too), deletes, TRUNCATE and many changes; dependents keep working', async () => {
    await h.sql.query(`CREATE TABLE cw_orders (id int PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), at timestamptz DEFAULT now())`);
    await h.sql.query(`INSERT INTO cw_orders SELECT g, 'c' || (g % 7), g * 1.25, '2024-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(1, 500) g`);
    await h.sql.query(`CREATE TABLE cw_lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES cw_orders (id), qty int)`);
    await h.sql.query(`INSERT INTO cw_lines SELECT g, g, 1 FROM generate_series(1, 20) g`);
    await h.sql.query(`CREATE VIEW cw_orders_by_customer AS SELECT customer, sum(amount) AS total FROM cw_orders GROUP BY customer`);
    await h.sql.query(`DO $$ BEGIN CREATE ROLE cw_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await h.sql.query(`GRANT SELECT ON cw_orders TO cw_reader`);
    const u = h.unit({ id: 'orders', table: 'cw_orders', capture: 'copy-on-write' });
    const c = h.ctx('d-cw');
    const captured = await h.rowsOf('cw_orders');
    const view = await h.rowsOf('cw_orders_by_customer');

    const point = await adapter.capture(u, c);
    expect(point).toMatchObject({ count: 500, details: { capture: 'copy-on-write', primaryKey: ['id'] } });
    expect(point.details.shadowTable).toMatch(/^etl_rollback\.cw_sales_orders_[0-9a-f]{16}$/);
    expect(await one<string>(`SELECT count(*)::text FROM ${point.details.shadowTable}`)).toBe('0');
    expect(await ourTriggers('cw_orders')).toHaveLength(4);
    expect(await one<string>(`SELECT string_agg(DISTINCT tgenabled::text, '') FROM pg_trigger WHERE tgrelid = 'cw_orders'::regclass AND tgname LIKE 'etl_rollback_cw_%'`)).toBe('A');
    // Idempotent: the same point again, nothing new.
    expect(await adapter.capture(u, { ...c, now: () => new Date('2031-01-01T00:00:00Z') })).toEqual(point);

    // The bad deploy.
    await h.sql.query(`INSERT INTO cw_orders (id, customer, amount) SELECT g, 'bad', 0 FROM generate_series(501, 510) g`);
    await h.sql.query(`UPDATE cw_orders SET amount = -1 WHERE id BETWEEN 30 AND 39`);
    for (let i = 0; i < 5; i++) await h.sql.query(`UPDATE cw_orders SET amount = amount + 1000, customer = 'many' WHERE id = 100`);
    await h.sql.query(`DELETE FROM cw_orders WHERE id BETWEEN 200 AND 204`);
    await h.sql.query(`UPDATE cw_orders SET id = id + 10000 WHERE id BETWEEN 300 AND 302`); // key update
    await h.sql.query(`UPDATE cw_orders SET id = 200 WHERE id = 410`); // a key moved onto a captured key the deploy deleted
    await h.sql.query(`BEGIN; UPDATE cw_orders SET amount = 123 WHERE id = 450; ROLLBACK`); // aborted: not recorded
    await h.sql.query(`SET session_replication_role = replica`); // ALWAYS triggers fire in replica sessions too
    await h.sql.query(`UPDATE cw_orders SET customer = 'replica' WHERE id = 460`);
    await h.sql.query(`RESET session_replication_role`);
    expect(await one<string>(`SELECT count(*)::text FROM ${point.details.shadowTable} WHERE id = 450`)).toBe('0');

    const plan = await adapter.diff(u, point, c);
    expect(plan.notes[0]).toMatch(/^capture: copy-on-write \(the unit sets capture: copy-on-write\): undo table etl_rollback\.cw_/);
    expect(plan.notes.join('\n')).not.toMatch(/FAILED/);
    // Deleted: 501-510, 10300-10302. Updated: 30-39, 100, 200 (holding 410's row), 460. Inserted: 201-204, 300-302, 410.
    expect(plan.changes).toMatchObject({ rowsDeleted: 13, rowsUpdated: 13, rowsInserted: 8 });

    h.commits.length = 0;
    const out = await adapter.restore(u, point, c);
    expect(out.changes).toMatchObject({ rowsDeleted: 13, rowsUpdated: 13, rowsInserted: 8, rowsQuarantined: 26 });
    expect(h.writesTo('cw_orders')).toEqual({ ins: 8, upd: 13, del: 13 });
    expect(out.notes.at(-1)).toMatch(/verified in the restore transaction: 500 rows/);
    expect(await h.rowsOf('cw_orders')).toEqual(captured);
    expect(await h.checksOk(adapter, u, point, c)).toBe(true);
    expect(await h.rowsOf('cw_orders_by_customer')).toEqual(view);
    expect(await one<boolean>(`SELECT has_table_privilege('cw_reader', 'cw_orders', 'SELECT')`)).toBe(true);
    await expect(h.sql.query(`INSERT INTO cw_lines VALUES (99, 99999, 1)`)).rejects.toThrow(/foreign key/);
    expect(await one<string>(`SELECT count(*)::text FROM ${out.keptAt!}`)).toBe('26');

    // A rerun writes nothing.
    h.commits.length = 0;
    const again = await adapter.restore(u, point, h.ctx('d-cw', 'run-2'));
    expect(again.writes).toBe(0);
    expect(h.commits).toEqual([]);

    // TRUNCATE (with the trigger saving the whole table), then new rows: restored too.
    await h.sql.query(`TRUNCATE cw_orders CASCADE`);
    await h.sql.query(`INSERT INTO cw_orders (id, customer, amount) VALUES (1, 'after-truncate', 1), (9999, 'x', 2)`);
    const t = await adapter.restore(u, point, h.ctx('d-cw', 'run-3'));
    expect(t.writes).toBeGreaterThan(0);
    expect(await h.rowsOf('cw_orders')).toEqual(captured);
    expect(await h.checksOk(adapter, u, point, c)).toBe(true);

    // Release drops the triggers, the function and the undo table; twice is fine.
    await adapter.release(u, point, c);
    await adapter.release(u, point, c);
    expect(await ourTriggers('cw_orders')).toEqual([]);
    expect(await one<string | null>(`SELECT to_regclass('${point.details.shadowTable}')::text`)).toBeNull();
    expect(await one<string>(`SELECT count(*)::text FROM pg_proc WHERE proname LIKE 'cw_sales_orders_%'`)).toBe('0');
    await h.sql.query(`INSERT INTO cw_orders (id, customer) VALUES (7777, 'no trigger now')`);
  });

  it('a deploy that bypasses the triggers makes the restore fail, name the cause and the backstop, and write nothing', async () => {
    await h.sql.query(`CREATE TABLE cw_by (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO cw_by SELECT g, 'v' || g FROM generate_series(1, 100) g`);
    const u = h.unit({ id: 'by', table: 'cw_by', capture: 'copy-on-write' });
    const c = h.ctx('d-by');
    const point = await adapter.capture(u, c);
    const [ins, del, trn, upd] = await ourTriggers('cw_by');
    void ins;
    void del;
    void trn;

    // Disabled, written, enabled again: the catalog looks as at capture; the xmin check sees the write.
    await h.sql.query(`UPDATE cw_by SET v = 'seen' WHERE id = 1`);
    await h.sql.query(`ALTER TABLE cw_by DISABLE TRIGGER ${upd}`);
    await h.sql.query(`UPDATE cw_by SET v = 'unseen' WHERE id = 2`);
    await h.sql.query(`ALTER TABLE cw_by ENABLE ALWAYS TRIGGER ${upd}`);
    const bad = await h.rowsOf('cw_by');
    const plan = await adapter.diff(u, point, c);
    expect(plan.notes.join('\n')).toMatch(/copy-on-write check FAILED.*1 row\(s\) were written after the capture without the triggers recording them \(first key \(2\)\).*backstop.*snapshot.*point-in-time restore/);
    const err = await adapter.restore(u, point, c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationFailedError);
    expect((err as Error).message).toMatch(/written after the capture without the triggers.*Nothing was written.*point-in-time restore/);
    expect(await h.rowsOf('cw_by')).toEqual(bad);

    // A delete with all triggers disabled: the count of untouched rows tells.
    await h.sql.query(`UPDATE cw_by SET v = 'v2' WHERE id = 2`); // undo the unseen change by hand
    await h.sql.query(`ALTER TABLE cw_by DISABLE TRIGGER USER`);
    await h.sql.query(`DELETE FROM cw_by WHERE id = 50`);
    for (const t of await ourTriggers('cw_by')) await h.sql.query(`ALTER TABLE cw_by ENABLE ALWAYS TRIGGER ${t}`);
    await expect(adapter.restore(u, point, c)).rejects.toThrow(/rows were deleted \(or truncated\) without the triggers recording them.*backstop/);

    // A dropped trigger.
    await h.sql.query(`INSERT INTO cw_by VALUES (50, 'v50')`); // (recorded as an insert: the key stays suspect)
    await h.sql.query(`DROP TRIGGER ${upd} ON cw_by`);
    await expect(adapter.restore(u, point, c)).rejects.toThrow(new RegExp(`trigger ${upd} on public.cw_by was dropped.*backstop`));
    await adapter.release(u, point, c);
    expect(await ourTriggers('cw_by')).toEqual([]);
  });

  it('triggers untouched in the catalog: the restore reads only the logged rows, in the same 8 round trips whatever their number; a restore keeps that proof for the next; a rewrite of the table falls back to the pass over it', async () => {
    await h.sql.query(`CREATE TABLE cw_fast (id int PRIMARY KEY, v text)`);
    // Large enough that looking rows up by key beats reading the table (the planner's choice), 1% logged per deploy.
    await h.sql.query(`INSERT INTO cw_fast SELECT g, 'v' || g FROM generate_series(1, 20000) g`);
    await h.sql.query('ANALYZE cw_fast');
    const u = h.unit({ id: 'fast', table: 'cw_fast', capture: 'copy-on-write' });
    const c = h.ctx('d-fast');
    const point = await adapter.capture(u, c);
    const captured = await h.rowsOf('cw_fast');
    const deploy = async (every = 200) => {
      await h.sql.query(`UPDATE cw_fast SET v = 'bad' WHERE id % ${every} = 0`);
      await h.sql.query(`DELETE FROM cw_fast WHERE id % ${every} = 1`);
      await h.sql.query(`INSERT INTO cw_fast VALUES (100000, 'new')`);
    };
    // The statements a restore sends (each one round trip, a network hop from a Lambda to RDS): counted at the client.
    let trips = 0;
    const counted: AdapterContext = {
      ...c,
      postgres: {
        async connect(name) {
          const client = await c.postgres.connect(name);
          const query = client.query.bind(client) as (...args: unknown[]) => unknown;
          (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
            trips += 1;
            return query(...args);
          };
          return client;
        },
      },
    };
    const untouchedNote = /the table was not read to look for unrecorded writes/;
    const scannedNote = /every row was checked for writes the triggers did not record/;

    await deploy();
    // The seq_scan counter of the table: the fast path looks rows up by key and never scans it.
    const scans = async () => {
      await h.sql.query('SELECT pg_stat_force_next_flush()');
      await h.sql.query('SELECT pg_stat_clear_snapshot()');
      return Number(await one<string>(`SELECT seq_scan::text FROM pg_stat_user_tables WHERE relid = 'cw_fast'::regclass`));
    };
    const before = await scans();
    const first = await adapter.restore(u, point, { ...counted, runId: 'run-fast-1' });
    expect(await scans()).toBe(before);
    const firstTrips = trips;
    expect(firstTrips).toBeLessThanOrEqual(8);
    expect(first.notes.join('\n')).toMatch(untouchedNote);
    expect(first.notes.join('\n')).toMatch(/verified in the restore transaction: 20000 rows/);
    expect(await h.rowsOf('cw_fast')).toEqual(captured);
    // What it replaced is kept as it was: the 100 overwritten rows with the deploy's values, and the inserted one.
    expect(await h.rowsOf(`(SELECT v, count(*)::int AS n FROM ${first.keptAt!} GROUP BY v)`)).toEqual(['(bad,100)', '(new,1)']);
    // A rerun by another run writes nothing and leaves no quarantine table behind.
    const rerun = await adapter.restore(u, point, { ...c, runId: 'run-fast-rerun' });
    expect(rerun.writes).toBe(0);
    expect(rerun.keptAt).toBeUndefined();
    expect(await one<string | null>(`SELECT to_regclass('etl_rollback.${quarantineTableName(c.pipeline, 'run-fast-rerun', u.id)}')::text`)).toBeNull();

    // The restore disabled and enabled the triggers (user triggers do not fire for a restore): it recorded their new
    // catalog rows, so the next deploy's rollback from the same point is proven the same way. That deploy changes four
    // times as many rows: the restore writes them with the same statements.
    await deploy(50);
    trips = 0;
    const second = await adapter.restore(u, point, { ...counted, runId: 'run-fast-2' });
    expect(second.notes.join('\n')).toMatch(untouchedNote);
    expect(second.writes).toBeGreaterThan(3 * first.writes);
    expect(trips).toBe(firstTrips);
    expect(await h.rowsOf('cw_fast')).toEqual(captured);

    // VACUUM FULL rewrites the table (a new relfilenode) without changing a row: no proof from the catalog, so every
    // row is checked; nothing unrecorded is found and the restore goes on.
    await deploy();
    await h.sql.query('VACUUM FULL cw_fast');
    const third = await adapter.restore(u, point, { ...c, runId: 'run-fast-3' });
    expect(third.notes.join('\n')).toMatch(scannedNote);
    expect(await h.rowsOf('cw_fast')).toEqual(captured);

    // Disabled and enabled again with nothing written in between: the catalog changed, the pass finds nothing, restore.
    const [, , , upd] = await ourTriggers('cw_fast');
    await h.sql.query(`ALTER TABLE cw_fast DISABLE TRIGGER ${upd}`);
    await h.sql.query(`ALTER TABLE cw_fast ENABLE ALWAYS TRIGGER ${upd}`);
    await deploy();
    const fourth = await adapter.restore(u, point, { ...c, runId: 'run-fast-4' });
    expect(fourth.notes.join('\n')).toMatch(scannedNote);
    expect(await h.rowsOf('cw_fast')).toEqual(captured);
    await adapter.release(u, point, c);
  });

  it('a row that does not read back as its pre-image (a BEFORE trigger left firing rewrites it) fails the restore, which writes nothing', async () => {
    await h.sql.query(`CREATE TABLE cw_stamp (id int PRIMARY KEY, v text, touched text)`);
    await h.sql.query(`INSERT INTO cw_stamp SELECT g, 'v' || g, 'original' FROM generate_series(1, 50) g`);
    const u = h.unit({ id: 'stamp', table: 'cw_stamp', capture: 'copy-on-write' });
    const c = h.ctx('d-stamp');
    const point = await adapter.capture(u, c);
    await h.sql.query(`UPDATE cw_stamp SET v = 'bad' WHERE id <= 5`);
    await h.sql.query(`CREATE FUNCTION cw_stamp_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := 'stamped'; RETURN NEW; END $$`);
    await h.sql.query(`CREATE TRIGGER cw_stamp_touch BEFORE UPDATE ON cw_stamp FOR EACH ROW EXECUTE FUNCTION cw_stamp_fn()`);
    const bad = await h.rowsOf('cw_stamp');
    const err = await createPostgresTableAdapter({ triggers: 'fire' })
      .restore(u, point, { ...c, runId: 'run-stamp' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationFailedError);
    expect((err as Error).message).toMatch(/5 overwritten and 0 re-inserted row\(s\) do not read back as their pre-image.*rolled back; nothing was written/);
    expect(await h.rowsOf('cw_stamp')).toEqual(bad);
    // With user triggers off for the restore (the default), the same restore goes through.
    await adapter.restore(u, point, { ...c, runId: 'run-stamp-2' });
    expect(await one<string>(`SELECT count(*)::text FROM cw_stamp WHERE v = 'bad' OR touched <> 'original'`)).toBe('0');
    await adapter.release(u, point, c);
  });

  it('a write the restore planned but did not make (a BEFORE trigger left firing skips it) fails the restore, which writes nothing', async () => {
    await h.sql.query(`CREATE TABLE cw_skip (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO cw_skip SELECT g, 'v' || g FROM generate_series(1, 50) g`);
    const u = h.unit({ id: 'skip', table: 'cw_skip', capture: 'copy-on-write' });
    const c = h.ctx('d-skip');
    const point = await adapter.capture(u, c);
    await h.sql.query(`UPDATE cw_skip SET v = 'bad' WHERE id <= 4`);
    await h.sql.query(`DELETE FROM cw_skip WHERE id BETWEEN 10 AND 12`);
    // Silently drops every UPDATE and INSERT addressed to the table (a "read-only after load" guard, say).
    await h.sql.query(`CREATE FUNCTION cw_skip_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
    await h.sql.query(`CREATE TRIGGER cw_skip_guard BEFORE UPDATE OR INSERT ON cw_skip FOR EACH ROW EXECUTE FUNCTION cw_skip_fn()`);
    const bad = await h.rowsOf('cw_skip');
    const err = await createPostgresTableAdapter({ triggers: 'fire' })
      .restore(u, point, { ...c, runId: 'run-skip' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationFailedError);
    expect((err as Error).message).toMatch(/wrote other rows than it planned \(deleted 0 of 0, overwrote 0 of 4, re-inserted 0 of 3, kept 4 of 4\).*nothing was written/);
    expect(await h.rowsOf('cw_skip')).toEqual(bad);
    expect(await one<string>(`SELECT count(*)::text FROM pg_tables WHERE tablename LIKE 'q\\_skip\\_%'`)).toBe('0');
    await adapter.restore(u, point, { ...c, runId: 'run-skip-2' });
    expect(await one<string>(`SELECT count(*)::text FROM cw_skip WHERE v = 'v' || id`)).toBe('50');
    await adapter.release(u, point, c);
  });

  it('writes that fail part-way (a CHECK the deploy added that a pre-image breaks) leave the table, the user triggers and ours as they were; the catalog proof holds for the next restore', async () => {
    await h.sql.query(`CREATE TABLE cw_check (id int PRIMARY KEY, v int NOT NULL)`);
    await h.sql.query(`INSERT INTO cw_check SELECT g, g FROM generate_series(1, 100) g`);
    await h.sql.query(`CREATE TABLE cw_check_audit (id int, at timestamptz DEFAULT now())`);
    await h.sql.query(`CREATE FUNCTION cw_check_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO cw_check_audit (id) VALUES (NEW.id); RETURN NEW; END $$`);
    await h.sql.query(`CREATE TRIGGER cw_check_audit_t AFTER UPDATE ON cw_check FOR EACH ROW EXECUTE FUNCTION cw_check_fn()`);
    const u = h.unit({ id: 'check', table: 'cw_check', capture: 'copy-on-write' });
    const c = h.ctx('d-check');
    const captured = await h.rowsOf('cw_check');
    const point = await adapter.capture(u, c);
    await h.sql.query(`UPDATE cw_check SET v = -v WHERE id <= 5`);
    await h.sql.query(`DELETE FROM cw_check WHERE id BETWEEN 50 AND 52`);
    await h.sql.query(`INSERT INTO cw_check VALUES (1000, -1)`);
    // Added without rewriting the table: the catalog proof still stands, so the restore takes its one-statement path.
    await h.sql.query(`ALTER TABLE cw_check ADD CONSTRAINT cw_check_negative_first CHECK (id > 5 OR v < 0)`);
    const deployed = await h.rowsOf('cw_check');
    const catalog = async () => h.rowsOf(`(SELECT tgname, tgenabled, xmin::text AS x FROM pg_trigger WHERE tgrelid = 'cw_check'::regclass AND NOT tgisinternal ORDER BY tgname)`);
    const before = await catalog();
    const audited = await one<string>(`SELECT count(*)::text FROM cw_check_audit`);

    const err = await adapter.restore(u, point, { ...c, runId: 'run-check' }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/cw_check_negative_first/);
    // Nothing was written: the deployed rows, every trigger in its state (the switches went with the writes, in one
    // round trip, and were rolled back with them), no user trigger fired, no quarantine table left.
    expect(await h.rowsOf('cw_check')).toEqual(deployed);
    expect(await catalog()).toEqual(before);
    expect(await one<string>(`SELECT count(*)::text FROM cw_check_audit`)).toBe(audited);
    expect(await one<string | null>(`SELECT to_regclass('etl_rollback.${quarantineTableName(c.pipeline, 'run-check', u.id)}')::text`)).toBeNull();

    // Without the constraint the same point restores, still proven by the catalog (the table is not read).
    await h.sql.query(`ALTER TABLE cw_check DROP CONSTRAINT cw_check_negative_first`);
    const done = await adapter.restore(u, point, { ...c, runId: 'run-check-2' });
    expect(done.notes.join('\n')).toMatch(/the table was not read to look for unrecorded writes/);
    expect(await h.rowsOf('cw_check')).toEqual(captured);
    expect(await one<string>(`SELECT count(*)::text FROM cw_check_audit`)).toBe(audited);
    await adapter.release(u, point, c);
  });

  it('a table with inheritance children is refused at capture, and a child added after the capture fails the restore', async () => {
    await h.sql.query(`CREATE TABLE cw_parent (id int PRIMARY KEY, v text)`);
    await h.sql.query(`CREATE TABLE cw_child () INHERITS (cw_parent)`);
    await expect(adapter.capture(h.unit({ id: 'parent', table: 'cw_parent', capture: 'copy-on-write' }), h.ctx('d-inh'))).rejects.toThrow(/inheritance children.*Use capture: copy/);

    await h.sql.query(`CREATE TABLE cw_base (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO cw_base SELECT g, 'v' || g FROM generate_series(1, 20) g`);
    const u = h.unit({ id: 'base', table: 'cw_base', capture: 'copy-on-write' });
    const c = h.ctx('d-base');
    const point = await adapter.capture(u, c);
    await h.sql.query(`UPDATE cw_base SET v = 'bad' WHERE id = 1`);
    await h.sql.query(`CREATE TABLE cw_base_child () INHERITS (cw_base)`);
    await h.sql.query(`INSERT INTO cw_base_child VALUES (100, 'unseen')`);
    await expect(adapter.restore(u, point, { ...c, runId: 'run-base' })).rejects.toThrow(/has inheritance children now.*backstop/s);
    expect(await one<string>(`SELECT v FROM ONLY cw_base WHERE id = 1`)).toBe('bad');
    await h.sql.query(`DROP TABLE cw_base_child`);
    await adapter.release(u, point, c);
  });

  it('refuses what it cannot protect, with the reason: no key, partitioned; a dropped column fails with the backstop; an added one is put back', async () => {
    await h.sql.query(`CREATE TABLE cw_nokey (a int, b text)`);
    await expect(adapter.capture(h.unit({ id: 'nokey', table: 'cw_nokey', capture: 'copy-on-write' }), h.ctx('d-nk'))).rejects.toThrow(/no primary key.*Use capture: copy/);
    await h.sql.query(`CREATE TABLE cw_parted (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d)`);
    await expect(adapter.capture(h.unit({ id: 'parted', table: 'cw_parted', capture: 'copy-on-write' }), h.ctx('d-pt'))).rejects.toThrow(PreflightError);

    await h.sql.query(`CREATE TABLE cw_sch (id int PRIMARY KEY, a text, b int)`);
    await h.sql.query(`INSERT INTO cw_sch SELECT g, 'a' || g, g FROM generate_series(1, 30) g`);
    const captured = await h.rowsOf('cw_sch');
    const u = h.unit({ id: 'sch', table: 'cw_sch', capture: 'copy-on-write' });
    const point = await adapter.capture(u, h.ctx('d-sch'));
    await h.sql.query(`ALTER TABLE cw_sch ADD COLUMN extra text DEFAULT 'x'`);
    await h.sql.query(`UPDATE cw_sch SET a = 'changed', extra = 'y' WHERE id <= 3`);
    await h.sql.query(`INSERT INTO cw_sch VALUES (31, 'new', 31, 'z')`);
    const out = await adapter.restore(u, point, h.ctx('d-sch'));
    expect(out.notes).toContain('schema restored: column "extra" dropped');
    expect(await h.rowsOf('cw_sch')).toEqual(captured);

    await h.sql.query(`ALTER TABLE cw_sch DROP COLUMN b`);
    await expect(adapter.restore(u, point, h.ctx('d-sch', 'run-sch-2'))).rejects.toThrow(/dropped or retyped captured column.*backstop/);
    await adapter.release(u, point, h.ctx('d-sch'));
  });

  it('the seal reads the table as the triggers found it, whatever was written since: a capture stopped between install and seal is sealed by the next one', async () => {
    await h.sql.query(`CREATE TABLE cw_seal (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO cw_seal SELECT g, 'v' || g FROM generate_series(1, 200) g`);
    const u = h.unit({ id: 'seal', table: 'cw_seal', capture: 'copy-on-write' });
    const c = h.ctx('d-seal');
    const captured = await h.rowsOf('cw_seal');
    const point = await adapter.capture(u, c);
    // As if the capture had stopped after the install: the record unsealed, and the deploy already writing.
    const undo = point.details.shadowTable;
    const meta = JSON.parse(await one<string>(`SELECT obj_description('${undo}'::regclass, 'pg_class')`)) as Record<string, unknown>;
    await h.sql.query(`COMMENT ON TABLE ${undo} IS ${"'"}${JSON.stringify({ ...meta, sealed: false, count: 0, checksum: '' }).replace(/'/g, "''")}${"'"}`);
    await expect(adapter.restore(u, point, c)).rejects.toThrow(/not the sealed undo table/);
    await h.sql.query(`UPDATE cw_seal SET v = 'bad' WHERE id <= 20`);
    await h.sql.query(`DELETE FROM cw_seal WHERE id > 190`);
    await h.sql.query(`INSERT INTO cw_seal VALUES (500, 'new')`);
    const sealed = await adapter.capture(u, c);
    expect(sealed).toEqual(point); // the same count and checksum as the first seal, read after the writes
    const out = await adapter.restore(u, sealed, c);
    expect(out.changes).toMatchObject({ rowsUpdated: 20, rowsInserted: 10, rowsDeleted: 1 });
    expect(await h.rowsOf('cw_seal')).toEqual(captured);
    await adapter.release(u, sealed, c);
  });

  it('a first seal read in key ranges over several calls (pending between them) is the table as installed, whatever the deploy writes between the calls: rows ahead and behind, keys moved across the ranges both ways', async () => {
    const sliced = createPostgresTableAdapter({ sealing: { above: 0, chunkRows: 7, sliceSeconds: 0 } });
    await h.sql.query(`CREATE TABLE cw_slices (region text, id int, v text, PRIMARY KEY (region, id))`);
    await h.sql.query(`INSERT INTO cw_slices SELECT CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g, 'v' || g FROM generate_series(1, 40) g`);
    const u = h.unit({ id: 'slices', table: 'cw_slices', capture: 'copy-on-write' });
    const c = h.ctx('d-slices');
    const captured = await h.rowsOf('cw_slices');
    const reference = await countAndChecksum(h.sql, 'SELECT region, id, v FROM cw_slices', ['region', 'id', 'v']);
    await sliced.install(u, c);
    // The deploy, one statement between each two calls; the ranges are read in (region, id) order: eu 2..40, then us 1..39.
    const writes = [
      `UPDATE cw_slices SET v = 'bad' WHERE id % 5 = 0`, // rows behind the first range and ahead of it
      `UPDATE cw_slices SET region = 'zz' WHERE region = 'eu' AND id <= 10`, // keys read already, moved past the end
      `DELETE FROM cw_slices WHERE region = 'us' AND id > 30`, // rows not read yet, deleted
      `INSERT INTO cw_slices VALUES ('aa', 1, 'new'), ('eu', 1000, 'new')`, // new keys behind and ahead
      `UPDATE cw_slices SET region = 'ab' WHERE region = 'us' AND id BETWEEN 11 AND 15`, // keys not read yet, moved behind
    ];
    const statuses: string[] = [];
    let point: Awaited<ReturnType<typeof adapter.capture>> | undefined;
    for (let call = 0; !point; call += 1) {
      expect(call).toBeLessThan(20);
      const r = await sliced.capture(u, c);
      if ('pending' in r) {
        statuses.push(r.pending.status);
        const write = writes[call];
        if (write) await h.sql.query(write);
      } else point = r;
    }
    // 40 rows in ranges of 7: five calls answer pending, the sixth seals.
    expect(statuses).toHaveLength(5);
    expect(statuses[0]).toBe('sealing public.cw_slices in key ranges: 1 read, 7 rows of the table as installed so far');
    expect({ count: point.count, checksum: point.checksum }).toEqual(reference);
    const meta = JSON.parse(await one<string>(`SELECT obj_description('${point.details.shadowTable}'::regclass, 'pg_class')`)) as Record<string, unknown>;
    expect(meta).toMatchObject({ sealed: true, sealedInChunks: 6 });
    expect(meta.sealProgress).toBeUndefined();
    // Sealed: a capture again answers the point at once; the restore puts back the table as it was before the install.
    expect(await sliced.capture(u, c)).toEqual(point);
    await sliced.restore(u, point, c);
    expect(await h.rowsOf('cw_slices')).toEqual(captured);
    await sliced.release(u, point, c);
    // A sliced seal begun by the capture function and finished by the adapter that never pends: in that one call.
    const c3 = h.ctx('d-slices-finish');
    await sliced.install(u, c3);
    expect('pending' in (await sliced.capture(u, c3))).toBe(true);
    const finished = await adapter.capture(u, c3);
    expect(JSON.parse(await one<string>(`SELECT obj_description('${finished.details.shadowTable}'::regclass, 'pg_class')`))).toMatchObject({ sealed: true, sealedInChunks: 2 }); // the rest in one range of the default size
    expect({ count: finished.count, checksum: finished.checksum }).toEqual(reference);
    await adapter.release(u, finished, c3);
    // A small table is read whole even by the sliced adapter (below `above`), in one call.
    const whole = createPostgresTableAdapter({ sealing: { above: 1000, chunkRows: 7, sliceSeconds: 0 } });
    const c2 = h.ctx('d-slices-whole');
    await whole.install(u, c2);
    const once = await whole.capture(u, c2);
    expect('pending' in once ? once.pending : { count: once.count, checksum: once.checksum }).toEqual(reference);
    if (!('pending' in once)) await whole.release(u, once, c2);
  });

  it('a column the deploy retyped, dropped or renamed before the seal (or between its key ranges) fails the seal, naming it and the backstop; an added one does not', async () => {
    await h.sql.query(`CREATE TABLE cw_sealcols (id int PRIMARY KEY, v text, amount numeric(12,2))`);
    await h.sql.query(`INSERT INTO cw_sealcols SELECT g, 'v' || g, g / 4.0 FROM generate_series(1, 30) g`);
    const u = h.unit({ id: 'sealcols', table: 'cw_sealcols', capture: 'copy-on-write' });
    const reference = await countAndChecksum(h.sql, 'SELECT id, v, amount FROM cw_sealcols', ['id', 'v', 'amount']);
    // An added column: the seal reads the captured ones, and is the table as installed.
    const c1 = h.ctx('d-sealcols-1');
    await adapter.install(u, c1);
    await h.sql.query(`ALTER TABLE cw_sealcols ADD COLUMN note text DEFAULT 'x'`);
    const added = await adapter.capture(u, c1);
    expect({ count: added.count, checksum: added.checksum }).toEqual(reference);
    await adapter.release(u, added, c1);
    await h.sql.query(`ALTER TABLE cw_sealcols DROP COLUMN note`);
    // A retyped column: every row's text changes (1.25 reads 1.2500), so no seal is read.
    const c2 = h.ctx('d-sealcols-2');
    await adapter.install(u, c2);
    await h.sql.query(`ALTER TABLE cw_sealcols ALTER COLUMN amount TYPE numeric(12,4)`);
    const retyped = await adapter.capture(u, c2).catch((e: unknown) => e);
    expect(retyped).toBeInstanceOf(PreflightError);
    expect((retyped as Error).message).toContain('its columns changed after its triggers went in (column amount is numeric(12,4), was numeric(12,2))');
    expect((retyped as Error).message).toContain('This restore point cannot be sealed; the backstop is');
    await h.sql.query(`ALTER TABLE cw_sealcols ALTER COLUMN amount TYPE numeric(12,2)`);
    // Read in key ranges: a column renamed between two ranges fails the next one.
    const sliced = createPostgresTableAdapter({ sealing: { above: 0, chunkRows: 10, sliceSeconds: 0 } });
    const c3 = h.ctx('d-sealcols-3');
    await sliced.install(u, c3);
    expect('pending' in (await sliced.capture(u, c3))).toBe(true);
    await h.sql.query(`ALTER TABLE cw_sealcols RENAME COLUMN v TO label`);
    await expect(sliced.capture(u, c3)).rejects.toThrow('(column v is gone (dropped or renamed))');
  });

  it('an install that cannot lock the table within its wait (a write transaction left open) tries again, then fails naming that session; nothing is made, later writers are not held; once it ends, the install goes through', async () => {
    await h.sql.query(`CREATE TABLE cw_locked (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO cw_locked SELECT g, 'v' || g FROM generate_series(1, 20) g`);
    const quick = createPostgresTableAdapter({ installLock: { timeoutMs: 150, tries: 3, pauseMs: 50 } });
    const u = h.unit({ id: 'locked', table: 'cw_locked', capture: 'copy-on-write' });
    const c = h.ctx('d-locked');
    const blocker = await h.db.client();
    try {
      await blocker.query('BEGIN');
      await blocker.query(`UPDATE cw_locked SET v = 'open' WHERE id = 1`);
      const started = Date.now();
      const error = await quick.install(u, c).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TableBusyError);
      expect((error as Error).message).toMatch(
        /could not lock cw_locked to install its triggers: 3 tries of 150 ms each, and open transactions still held it \(pid \d+ \(postgres(, [^,]+)?, idle in transaction, in a transaction open since [-\d: ]+: UPDATE cw_locked SET v = 'open'/,
      );
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(await ourTriggers('cw_locked')).toEqual([]);
      // The install gave up its place in the lock queue: another writer goes on.
      await h.sql.query(`UPDATE cw_locked SET v = 'other' WHERE id = 2`);
      await blocker.query('COMMIT');
    } finally {
      await blocker.end();
    }
    expect((await quick.install(u, c))?.status).toMatch(/^in place, seal to follow/);
    const point = await quick.capture(u, c);
    expect(point.count).toBe(20);
    await quick.release(u, point, c);
  });

  it('install puts the triggers in place and stops before the seal (the deploy may start); the seal read while the deploy writes is the table as installed; a copy unit has no install', async () => {
    await h.sql.query(`CREATE TABLE cw_inplace (id int PRIMARY KEY, v text)`);
    await h.sql.query(`INSERT INTO cw_inplace SELECT g, 'v' || g FROM generate_series(1, 300) g`);
    const u = h.unit({ id: 'inplace', table: 'cw_inplace', capture: 'copy-on-write' });
    const c = h.ctx('d-inplace');
    const captured = await h.rowsOf('cw_inplace');
    const reference = await adapter.capture(h.unit({ id: 'inplace-copy', table: 'cw_inplace', capture: 'copy' }), h.ctx('d-inplace-copy'));

    const inPlace = await adapter.install(u, c);
    expect(inPlace?.status).toMatch(/^in place, seal to follow: triggers on public\.cw_inplace log every change since .* into etl_rollback\.cw_/);
    expect(await ourTriggers('cw_inplace')).toHaveLength(4);
    const undo = `etl_rollback.${String(/etl_rollback\.(cw_\w+)/.exec(inPlace!.status)![1])}`;
    expect(JSON.parse(await one<string>(`SELECT obj_description('${undo}'::regclass, 'pg_class')`))).toMatchObject({ sealed: false, count: 0, checksum: '' });
    // Installing again (a retried task) finds it in place.
    expect((await adapter.install(u, c))?.status).toMatch(/^in place, seal to follow/);

    // The deploy writes before the seal; in one of its transactions the seal runs.
    await h.sql.query(`UPDATE cw_inplace SET v = 'bad' WHERE id <= 30`);
    await h.sql.query(`DELETE FROM cw_inplace WHERE id > 290`);
    const writer = await h.db.client();
    try {
      await writer.query(`BEGIN`);
      await writer.query(`INSERT INTO cw_inplace SELECT g, 'new' FROM generate_series(1000, 1004) g`);
      await writer.query(`UPDATE cw_inplace SET v = 'bad again' WHERE id BETWEEN 25 AND 40`);
      const sealed = await adapter.capture(u, c); // not held up by the open transaction
      await writer.query(`COMMIT`);
      expect({ count: sealed.count, checksum: sealed.checksum }).toEqual({ count: reference.count, checksum: reference.checksum });
      // Sealed: install answers so, and the restore puts back the table as it was before the install.
      expect((await adapter.install(u, c))?.status).toMatch(/^sealed: /);
      const out = await adapter.restore(u, sealed, c);
      expect(out.changes).toMatchObject({ rowsUpdated: 40, rowsInserted: 10, rowsDeleted: 5 });
      expect(await h.rowsOf('cw_inplace')).toEqual(captured);
      await adapter.release(u, sealed, c);
    } finally {
      await writer.end();
    }
    // A unit captured by a copy cannot stop half-way: no install, the caller captures it whole.
    expect(await adapter.install(h.unit({ id: 'inplace-copy', table: 'cw_inplace', capture: 'copy' }), h.ctx('d-inplace-copy-2'))).toBeUndefined();
    await adapter.release(h.unit({ id: 'inplace-copy', table: 'cw_inplace', capture: 'copy' }), reference, h.ctx('d-inplace-copy'));
  });

  it('an earlier point of the unit still guarding the table seals the next capture from the two logs, without reading the table; exact, writes during the capture included; no proof, a full read', async () => {
    await h.sql.query(`CREATE TABLE cw_carry (id int PRIMARY KEY, region text NOT NULL, v text)`);
    await h.sql.query(`INSERT INTO cw_carry SELECT g, CASE WHEN g % 3 = 0 THEN 'eu' ELSE 'us' END, 'v' || g FROM generate_series(1, 3000) g`);
    const u = h.unit({ id: 'carry', table: 'cw_carry', capture: 'copy-on-write', where: `region = 'eu'` });
    const metaOf = async (undo: string) => JSON.parse(await one<string>(`SELECT obj_description('${undo}'::regclass, 'pg_class')`)) as Record<string, unknown>;
    const c1 = h.ctx('d-carry-1');
    const first = await adapter.capture(u, c1);
    expect((await metaOf(first.details.shadowTable)).sealedFrom).toBeUndefined(); // the first one reads the table
    // Yesterday's deploy: updates, moves into and out of scope, a key moved, deletes, inserts.
    await h.sql.query(`UPDATE cw_carry SET v = 'changed' WHERE id <= 60`);
    await h.sql.query(`UPDATE cw_carry SET region = 'us' WHERE id IN (3, 6); UPDATE cw_carry SET region = 'eu' WHERE id IN (1, 2)`);
    await h.sql.query(`UPDATE cw_carry SET id = 9000 WHERE id = 9`);
    await h.sql.query(`DELETE FROM cw_carry WHERE id BETWEEN 100 AND 120`);
    await h.sql.query(`INSERT INTO cw_carry VALUES (5000, 'eu', 'new'), (5001, 'us', 'new')`);

    // Today's capture: carried from the first point's log, and exact (the gate's own count and checksum agree).
    const c2 = h.ctx('d-carry-2');
    const second = await adapter.capture(u, c2);
    expect((await metaOf(second.details.shadowTable)).sealedFrom).toBe(first.details.shadowTable);
    expect(await h.checksOk(adapter, u, second, c2)).toBe(true);
    const atSecond = await h.rowsOf(`(SELECT * FROM cw_carry WHERE region = 'eu')`);

    // A capture stopped between its install and its seal while the deploy already writes: the next call seals it
    // from both logs, as the table was at the install.
    const meta = await metaOf(second.details.shadowTable);
    await h.sql.query(`COMMENT ON TABLE ${second.details.shadowTable} IS ${"'"}${JSON.stringify({ ...meta, sealed: false, count: 0, checksum: '' }).replace(/'/g, "''")}${"'"}`);
    await h.sql.query(`UPDATE cw_carry SET v = 'today' WHERE id BETWEEN 30 AND 90`);
    await h.sql.query(`DELETE FROM cw_carry WHERE id BETWEEN 200 AND 230; UPDATE cw_carry SET region = 'eu' WHERE id = 4`);
    expect(await adapter.capture(u, c2)).toEqual(second);

    // The restore of today's point puts back the table as it was at today's capture.
    await adapter.restore(u, second, c2);
    expect(await h.rowsOf(`(SELECT * FROM cw_carry WHERE region = 'eu')`)).toEqual(atSecond);

    // No proof for the earlier point (its triggers disabled and enabled again: writes in between may be missing from
    // its log): the next capture reads the table.
    const names = (await h.sql.query<{ n: string }>(`SELECT tgname AS n FROM pg_trigger WHERE tgrelid = 'cw_carry'::regclass AND tgname LIKE 'etl_rollback_cw_%'`)).rows.map((r) => r.n);
    for (const n of names) await h.sql.query(`ALTER TABLE cw_carry DISABLE TRIGGER "${n}"; ALTER TABLE cw_carry ENABLE ALWAYS TRIGGER "${n}"`);
    await h.sql.query(`UPDATE cw_carry SET v = 'later' WHERE id = 300`);
    const c3 = h.ctx('d-carry-3');
    const third = await adapter.capture(u, c3);
    expect((await metaOf(third.details.shadowTable)).sealedFrom).toBeUndefined();
    expect(await h.checksOk(adapter, u, third, c3)).toBe(true);
    for (const [p, c] of [[third, c3], [second, c2], [first, c1]] as const) await adapter.release(u, p, c);
  });

  it('without `capture`: copy-on-write for a table over the size threshold that it can protect, and the plan says why; a copy for smaller ones and ones it cannot protect', async () => {
    await h.sql.query(`CREATE TABLE cw_big (id int PRIMARY KEY, v text); INSERT INTO cw_big SELECT g, repeat('v', 50) FROM generate_series(1, 2000) g`);
    await h.sql.query(`CREATE TABLE cw_bignokey (id int, v text); INSERT INTO cw_bignokey SELECT g, repeat('v', 50) FROM generate_series(1, 2000) g`);
    const sized = createPostgresTableAdapter({ copyOnWriteAbove: 64 * 1024 });
    const big = h.unit({ id: 'big', table: 'cw_big' });
    const c = h.ctx('d-auto');
    const before = await h.rowsOf('cw_big');
    const point = await sized.capture(big, c);
    expect(point.details.capture).toBe('copy-on-write');
    expect(await sized.capture(big, c)).toEqual(point); // a retry keeps the mode and the point
    await h.sql.query(`UPDATE cw_big SET v = 'bad' WHERE id <= 10`);
    const plan = await sized.diff(big, point, c);
    expect(plan.notes[0]).toMatch(/^capture: copy-on-write \(the default for a table over 64\.0 KiB: public\.cw_big was \d+\.\d (KiB|MiB); the unit does not set capture\): undo table /);
    expect(plan.notes.join('\n')).not.toMatch(/now asks for/);
    await sized.restore(big, point, c);
    expect(await h.rowsOf('cw_big')).toEqual(before);
    await sized.release(big, point, c);

    // Under the threshold (the default one, 1 GiB), and a large table without a primary key: copies.
    const small = await adapter.capture(big, h.ctx('d-auto-small'));
    expect(small.details.capture ?? 'copy').toBe('copy');
    expect((await adapter.diff(big, small, h.ctx('d-auto-small'))).notes[0]).toMatch(/^capture: copy \(the default for a table under 1\.0 GiB, or one copy-on-write cannot protect; the unit does not set capture\)/);
    const nokey = h.unit({ id: 'bignokey', table: 'cw_bignokey' });
    const copied = await sized.capture(nokey, h.ctx('d-auto-nokey'));
    expect(copied.details.capture ?? 'copy').toBe('copy');
    expect(await ourTriggers('cw_bignokey')).toEqual([]);
    await adapter.release(big, small, h.ctx('d-auto-small'));
    await sized.release(nokey, copied, h.ctx('d-auto-nokey'));

    // A role that may read the table but does not own it cannot make the triggers fire always: a copy, not a failed
    // snapshot; asked for copy-on-write explicitly, a clear refusal before anything is made.
    await h.sql.query(`DO $$ BEGIN CREATE ROLE cw_reader_only LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await h.sql.query(`GRANT SELECT ON cw_big TO cw_reader_only; GRANT USAGE, CREATE ON SCHEMA etl_rollback TO cw_reader_only`);
    await h.sql.query(`DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO cw_reader_only', current_database()); END $$`);
    // The test database's drop recorder (test/support/postgres.ts) runs as the role that drops.
    await h.sql.query(`GRANT USAGE ON SCHEMA etl_guard TO cw_reader_only; GRANT INSERT ON etl_guard.drops TO cw_reader_only`);
    const url = new URL(h.db.url);
    url.username = 'cw_reader_only';
    const asReader = { ...h.ctx('d-auto-reader'), postgres: postgresConnector({ warehouse: { engine: 'postgres', url: url.toString() } }) };
    const byReader = await sized.capture(big, asReader);
    expect(byReader.details.capture ?? 'copy').toBe('copy');
    expect(await ourTriggers('cw_big')).toEqual([]);
    await sized.release(big, byReader, asReader);
    await expect(sized.capture(h.unit({ id: 'big', table: 'cw_big', capture: 'copy-on-write' }), { ...asReader, deploymentId: 'd-auto-reader-2' })).rejects.toThrow(
      /copy-on-write is not possible for public\.cw_big: the role etl-rollback connects as does not own it/,
    );
  });

  it('a `where` unit restores only its scope', async () => {
    await h.sql.query(`CREATE TABLE cw_sc (id int PRIMARY KEY, region text NOT NULL, v int)`);
    await h.sql.query(`INSERT INTO cw_sc SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 40) g`);
    const u = h.unit({ id: 'sc', table: 'cw_sc', capture: 'copy-on-write', where: `region = 'eu'` });
    const point = await adapter.capture(u, h.ctx('d-sc'));
    expect(point.count).toBe(20);
    const euBefore = await h.rowsOf(`(SELECT * FROM cw_sc WHERE region = 'eu')`);
    await h.sql.query(`UPDATE cw_sc SET v = -v`); // everything, both regions
    await h.sql.query(`UPDATE cw_sc SET region = 'us' WHERE id = 2`); // out of scope
    await h.sql.query(`UPDATE cw_sc SET region = 'eu' WHERE id = 3`); // into scope
    await h.sql.query(`INSERT INTO cw_sc VALUES (100, 'eu', 1), (101, 'us', 1)`);
    const usAfterDeploy = await h.rowsOf(`(SELECT * FROM cw_sc WHERE region = 'us' AND id <> 2)`);
    const out = await adapter.restore(u, point, h.ctx('d-sc'));
    expect(out.notes).toContain(`scope: rows where (region = 'eu')`);
    expect(await h.rowsOf(`(SELECT * FROM cw_sc WHERE region = 'eu')`)).toEqual(euBefore);
    expect(await h.rowsOf(`(SELECT * FROM cw_sc WHERE region = 'us')`)).toEqual(usAfterDeploy);
    await adapter.release(u, point, h.ctx('d-sc'));
  });
});

describe('postgres-table copy-on-write: what a rollback replaces (undo)', () => {
  it('is recorded at the keys the undo log names, not by copying the table; the record puts it back, refuses writes made since at other keys, and is undoable in turn', async () => {
    await h.sql.query(`CREATE TABLE cw_undo (id int PRIMARY KEY, v text NOT NULL, n int)`);
    await h.sql.query(`INSERT INTO cw_undo SELECT g, 'v' || g, g FROM generate_series(1, 2000) g`);
    await h.sql.query(`CREATE SEQUENCE cw_undo_seq OWNED BY cw_undo.id`);
    const u = h.unit({ id: 'undo', table: 'cw_undo', capture: 'copy-on-write' });
    const c = h.ctx('d-undo');
    const point = await adapter.capture(u, c);
    const captured = await h.rowsOf('cw_undo');
    await h.sql.query(`UPDATE cw_undo SET v = 'bad' WHERE id <= 20`);
    await h.sql.query(`DELETE FROM cw_undo WHERE id BETWEEN 21 AND 25`);
    await h.sql.query(`INSERT INTO cw_undo VALUES (5001, 'new', 0), (5002, 'new', 0)`);
    await h.sql.query(`UPDATE cw_undo SET id = 6000 WHERE id = 26`);
    await h.sql.query(`SELECT setval('cw_undo_seq', 77)`);
    const found = await h.rowsOf('cw_undo');

    const rc = h.ctx('undo-r1', 'r1');
    const record = await adapter.undoRecord(u, rc, point);
    // 20 updated + 5 deleted + 2 inserted + the key moved (26 and 6000): 29 rows kept, not the table's 1,997.
    expect(await one<string>(`SELECT count(*)::text FROM ${record.details.shadowTable}`)).toBe('29');
    expect(await one<string>(`SELECT string_agg(kind || ':' || n, ',' ORDER BY kind) FROM (SELECT "etl_rollback$kind"::text AS kind, count(*) AS n FROM ${record.details.shadowTable} GROUP BY 1) x`)).toBe('i:6,p:23');
    expect(record.count).toBe(1997);
    expect(found).toHaveLength(1997);
    expect(await h.checksOk(adapter, u, record, rc)).toBe(true);
    // Idempotent: asked again (a retry), the same record.
    expect(await adapter.undoRecord(u, rc, point)).toEqual(record);

    await adapter.restore(u, point, c);
    expect(await h.rowsOf('cw_undo')).toEqual(captured);

    // The undo, dry run first: it names the record and what it would write.
    const uc = h.ctx('undo-r1', 'u1');
    const plan = await adapter.diff(u, record, uc);
    expect(plan.notes[0]).toMatch(/^the record of what run r1 replaced/);
    // Overwritten: 1-20; deleted: 21-26 (absent when the run found the table); re-inserted: 5001, 5002, 6000.
    expect(plan.changes).toMatchObject({ rowsUpdated: 20, rowsDeleted: 6, rowsInserted: 3 });
    // A write since the rollback at a key the record does not hold: the undo would not put the table back as the run
    // found it. It fails, says why, and writes nothing.
    await h.sql.query(`UPDATE cw_undo SET v = 'later' WHERE id = 1500`);
    await expect(adapter.restore(u, record, uc)).rejects.toThrow(VerificationFailedError);
    await expect(adapter.restore(u, record, uc)).rejects.toThrow(/1 row\(s\) were written after the record without it holding them \(first key \(1500\)\)/);
    await h.sql.query(`UPDATE cw_undo SET v = 'v1500' WHERE id = 1500`);
    await expect(adapter.restore(u, record, uc)).rejects.toThrow(/written after the record/);
    // Even with the old values back, a row version written since the record is a write it does not hold. A new record
    // (another rollback) covers it: the original point's triggers logged 1500 too.
    await adapter.release(u, record, rc);
    const rc2 = h.ctx('undo-r2', 'r2');
    await h.sql.query(`UPDATE cw_undo SET v = 'bad' WHERE id <= 20`);
    const record2 = await adapter.undoRecord(u, rc2, point);
    await adapter.restore(u, point, h.ctx('d-undo', 'again'));
    const out = await adapter.restore(u, record2, h.ctx('undo-r2', 'u2'));
    expect(out.changes).toMatchObject({ rowsUpdated: 20, rowsDeleted: 0, rowsInserted: 0 });
    expect(await h.checksOk(adapter, u, record2, rc2)).toBe(true);
    // The undo is undoable: its own record (no triggers to prove the rest: the table is read, not copied).
    const rc3 = h.ctx('undo-u2', 'u2b');
    const record3 = await adapter.undoRecord(u, rc3, record2);
    expect(await one<string>(`SELECT count(*)::text FROM ${record3.details.shadowTable}`)).toBe('30');
    expect(record3.count).toBe(2000);
    await adapter.release(u, record3, rc3);
    await adapter.release(u, record2, rc2);
    for (const r of [record, record2, record3]) expect(await one<string | null>(`SELECT to_regclass('${r.details.shadowTable}')::text`)).toBeNull();

    // A deploy that added a column: the rows at the logged keys no longer describe the table the rollback replaces
    // (every row has the new column), so the record is a shadow copy, and the undo puts the column back too.
    await h.sql.query(`ALTER TABLE cw_undo ADD COLUMN note text DEFAULT 'x'`);
    await h.sql.query(`UPDATE cw_undo SET v = 'bad' WHERE id <= 3`);
    const widened = await h.rowsOf('cw_undo');
    const rc4 = h.ctx('undo-r4', 'r4');
    const copied = await adapter.undoRecord(u, rc4, point);
    expect(copied.details.capture ?? 'copy').toBe('copy');
    expect(copied.count).toBe(2000);
    await adapter.restore(u, point, h.ctx('d-undo', 'r4'));
    expect(await h.rowsOf('cw_undo')).toEqual(captured);
    await adapter.restore(u, copied, h.ctx('undo-r4', 'u4'));
    expect(await h.rowsOf('cw_undo')).toEqual(widened);
    await adapter.release(u, copied, rc4);
    await adapter.release(u, point, c);
  });
});

describe('postgres-table copy-on-write: property', () => {
  /** One statement of a deploy over a table (id int PRIMARY KEY, v text, n int) of keys 1..40. */
  const deployOp = fc.oneof(
    fc.record({ kind: fc.constant('insert' as const), id: fc.integer({ min: 1, max: 60 }), n: fc.integer({ min: -5, max: 5 }) }),
    fc.record({ kind: fc.constant('update' as const), lo: fc.integer({ min: 1, max: 60 }), span: fc.integer({ min: 0, max: 10 }), n: fc.integer({ min: -5, max: 5 }) }),
    fc.record({ kind: fc.constant('rekey' as const), lo: fc.integer({ min: 1, max: 60 }), span: fc.integer({ min: 0, max: 5 }), by: fc.integer({ min: -40, max: 80 }) }),
    fc.record({ kind: fc.constant('delete' as const), lo: fc.integer({ min: 1, max: 60 }), span: fc.integer({ min: 0, max: 10 }) }),
    fc.constant({ kind: 'truncate' as const }),
    // Two rows trade keys (through an unused one): whatever else a row holds goes with it.
    fc.record({ kind: fc.constant('swap' as const), a: fc.integer({ min: 1, max: 45 }), b: fc.integer({ min: 1, max: 45 }) }),
  );
  async function applyOp(table: string, o: typeof deployOp extends fc.Arbitrary<infer T> ? T : never): Promise<void> {
    if (o.kind === 'insert') await h.sql.query(`INSERT INTO ${table} VALUES ($1, 'ins', $2) ON CONFLICT (id) DO UPDATE SET v = 'upsert', n = excluded.n`, [o.id, o.n]);
    else if (o.kind === 'update') await h.sql.query(`UPDATE ${table} SET n = n + $3, v = v || '!' WHERE id BETWEEN $1 AND $2`, [o.lo, o.lo + o.span, o.n]);
    else if (o.kind === 'rekey') await h.sql.query(`UPDATE ${table} SET id = id + $3 WHERE id BETWEEN $1 AND $2 AND NOT EXISTS (SELECT 1 FROM ${table} p WHERE p.id BETWEEN $1 + $3 AND $2 + $3)`, [o.lo, o.lo + o.span, o.by]);
    else if (o.kind === 'delete') await h.sql.query(`DELETE FROM ${table} WHERE id BETWEEN $1 AND $2`, [o.lo, o.lo + o.span]);
    else if (o.kind === 'swap') {
      for (const [from, to] of [[o.a, -1], [o.b, o.a], [-1, o.b]]) await h.sql.query(`UPDATE ${table} SET id = $2 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM ${table} p WHERE p.id = $2)`, [from, to]);
    } else await h.sql.query(`TRUNCATE ${table}`);
  }

  it('a seal read in key ranges of any size, with any writes between the calls, equals the table as installed; the restore is exact', async () => {
    await h.sql.query(`CREATE TABLE cw_prop_slices (id int PRIMARY KEY, v text, n int)`);
    let run = 0;
    // Each step: one of the deploy's statements, then (or not) one call of the capture, reading one key range.
    const step = fc.record({ op: deployOp, call: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 12 }), fc.array(step, { maxLength: 14 }), async (chunkRows, steps) => {
        run += 1;
        const sliced = createPostgresTableAdapter({ sealing: { above: 0, chunkRows, sliceSeconds: 0 } });
        await h.sql.query(`TRUNCATE cw_prop_slices`);
        await h.sql.query(`INSERT INTO cw_prop_slices SELECT g, 'v' || g, g FROM generate_series(1, 40) g`);
        const u = h.unit({ id: 'prop-slices', table: 'cw_prop_slices', capture: 'copy-on-write' });
        const c = h.ctx(`d-prop-slices-${run}`);
        const captured = await h.rowsOf('cw_prop_slices');
        const reference = await countAndChecksum(h.sql, 'SELECT id, v, n FROM cw_prop_slices', ['id', 'v', 'n']);
        await sliced.install(u, c);
        let point: Awaited<ReturnType<typeof adapter.capture>> | undefined;
        for (const { op: o, call } of steps) {
          await applyOp('cw_prop_slices', o);
          if (call && !point) {
            const r = await sliced.capture(u, c);
            if (!('pending' in r)) point = r;
          }
        }
        for (let calls = 0; !point; calls += 1) {
          expect(calls).toBeLessThan(200);
          const r = await sliced.capture(u, c);
          if (!('pending' in r)) point = r;
        }
        expect({ count: point.count, checksum: point.checksum }).toEqual(reference);
        await sliced.restore(u, point, c);
        expect(await h.rowsOf('cw_prop_slices')).toEqual(captured);
        await sliced.release(u, point, c);
      }),
      { numRuns: 30 },
    );
  }, 120_000);

  it('any sequence of inserts, updates (of the key too), deletes and TRUNCATE is undone exactly, values of a unique key moved or swapped between rows included', async () => {
    // `w`: unique, moving with its row when the key changes, so keys moved back and forth swap values between rows.
    await h.sql.query(`CREATE TABLE cw_prop (id int PRIMARY KEY, v text, n int, w text NOT NULL UNIQUE DEFAULT ('w-' || gen_random_uuid()))`);
    let run = 0;
    await fc.assert(
      // `sealAfter`: the point is installed, and sealed only after that many of the deploy's operations (the deploy
      // starts once the point is in place; the seal is read while it writes).
      fc.asyncProperty(fc.array(deployOp, { maxLength: 12 }), fc.nat({ max: 12 }), async (ops, sealAfter) => {
        run += 1;
        await h.sql.query(`TRUNCATE cw_prop`);
        await h.sql.query(`INSERT INTO cw_prop SELECT g, 'v' || g, g, 'w' || g FROM generate_series(1, 40) g`);
        const u = h.unit({ id: 'prop', table: 'cw_prop', capture: 'copy-on-write' });
        const c = h.ctx(`d-prop-${run}`);
        const captured = await h.rowsOf('cw_prop');
        await adapter.install(u, c);
        let point = sealAfter === 0 ? await adapter.capture(u, c) : undefined;
        for (const [index, o] of ops.entries()) {
          if (index === sealAfter && index > 0) point = await adapter.capture(u, c);
          await applyOp('cw_prop', o);
        }
        point ??= await adapter.capture(u, c);
        // The next deploy's capture, sealed from this point's log without reading the table: the gate's own count and
        // checksum of the table agree with it.
        const nc = h.ctx(`d-prop-next-${run}`);
        const next = await adapter.capture(u, nc);
        // (After a TRUNCATE the table has a new relfilenode, which a rewrite without triggers would give it too: no proof.)
        const carried = ops.some((o) => o.kind === 'truncate') ? null : point.details.shadowTable;
        expect(await one<string | null>(`SELECT obj_description('${next.details.shadowTable}'::regclass, 'pg_class')::json->>'sealedFrom'`)).toBe(carried);
        expect(await h.checksOk(adapter, u, next, nc)).toBe(true);
        await adapter.release(u, next, nc);
        // What the rollback replaces, recorded first at the logged keys only: it describes the table as it is now.
        const found = await h.rowsOf('cw_prop');
        const rc = h.ctx(`undo-r-prop-${run}`, `r-prop-${run}`);
        const record = await adapter.undoRecord(u, rc, point);
        expect(record.details.capture).toBe('copy-on-write');
        expect(await h.checksOk(adapter, u, record, rc)).toBe(true);
        await adapter.restore(u, point, c);
        expect(await h.rowsOf('cw_prop')).toEqual(captured);
        expect((await adapter.restore(u, point, h.ctx(`d-prop-${run}`, 'again'))).writes).toBe(0);
        // Undo of the rollback: the record puts back exactly what the rollback replaced.
        await adapter.restore(u, record, h.ctx(`undo-r-prop-${run}`, `u-prop-${run}`));
        expect(await h.rowsOf('cw_prop')).toEqual(found);
        await adapter.release(u, record, rc);
        await adapter.release(u, point, c);
      }),
      { numRuns: 40 },
    );
  }, 120_000);
});
