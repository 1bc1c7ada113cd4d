import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresTableAdapter, postgresTableAdapter as adapter } from '../../core/adapters/postgres-table.ts';
import { PreflightError } from '../../core/errors.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

let h: PgHarness;
beforeAll(async () => {
  h = await pgHarness('pgdepth', ['acct', 'big', 'seqd', 'fan']);
});
afterAll(async () => {
  await h?.db.drop();
});

async function one<T>(text: string): Promise<T> {
  const { rows } = await h.sql.query(text);
  return Object.values(rows[0] as Record<string, unknown>)[0] as T;
}

describe('postgres-table: the table keeps its identity through a restore', () => {
  it('views, grants, triggers, indexes and foreign keys into and out of it all work afterwards (diff and reload)', async () => {
    await h.sql.query(`CREATE ROLE etlrb_reader NOLOGIN`).catch(() => undefined);
    await h.sql.query(`CREATE TABLE branch (id int PRIMARY KEY)`);
    await h.sql.query(`INSERT INTO branch SELECT generate_series(1, 3)`);
    await h.sql.query(`CREATE TABLE acct (id int PRIMARY KEY, branch_id int NOT NULL REFERENCES branch (id), email text NOT NULL, balance numeric(12,2))`);
    await h.sql.query(`CREATE UNIQUE INDEX acct_email ON acct (lower(email))`);
    await h.sql.query(`CREATE VIEW acct_rich AS SELECT id, email FROM acct WHERE balance > 100`);
    await h.sql.query(`GRANT SELECT ON acct TO etlrb_reader`);
    await h.sql.query(`CREATE TABLE acct_audit (acct_id int, op text)`);
    await h.sql.query(`CREATE FUNCTION acct_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO acct_audit VALUES (coalesce(NEW.id, OLD.id), TG_OP); RETURN coalesce(NEW, OLD); END $$`);
    await h.sql.query(`CREATE TRIGGER acct_audit AFTER INSERT OR UPDATE OR DELETE ON acct FOR EACH ROW EXECUTE FUNCTION acct_audit()`);
    await h.sql.query(`INSERT INTO acct SELECT g, 1 + g % 3, 'a' || g || '@x', g * 10 FROM generate_series(1, 40) g`);
    const oid = await one<string>(`SELECT 'acct'::regclass::oid::text`);
    const u = h.unit({ id: 'acct', table: 'acct' });
    const point = await adapter.capture(u, h.ctx('d-acct'));
    const captured = await h.rowsOf('acct');

    // Small change: the diff. Then a large one, with a low threshold: the reload (TRUNCATE: nothing references acct).
    await h.sql.query(`UPDATE acct SET balance = 0 WHERE id <= 2`);
    await h.sql.query(`DELETE FROM acct_audit`);
    const small = await adapter.restore(u, point, h.ctx('d-acct', 'run-acct-1'));
    expect(small.notes).toEqual([expect.stringMatching(/^change detection: xmin since \d+$/), expect.stringMatching(/^strategy: diff/)]);
    await h.sql.query(`UPDATE acct SET balance = balance + 1`);
    await h.sql.query(`DELETE FROM acct_audit`);
    const reloading = createPostgresTableAdapter({ reload: { minRows: 10 } });
    const big = await reloading.restore(u, point, h.ctx('d-acct', 'run-acct-2'));
    expect(big.notes).toEqual([expect.stringMatching(/^change detection: xmin since \d+$/), expect.stringMatching(/^strategy: reload \(40 of 40 rows in scope differ \(100%\), above the 50% reload threshold; TRUNCATE/)]);

    for (const outcome of [small, big]) expect(outcome.writes).toBeGreaterThan(0);
    expect(await h.rowsOf('acct')).toEqual(captured);
    expect(await one<string>(`SELECT 'acct'::regclass::oid::text`)).toBe(oid);
    // Triggers did not fire for the restores, and are enabled again: the next business write is audited.
    expect(await one<string>(`SELECT count(*)::text FROM acct_audit`)).toBe('0');
    expect(await one<string>(`SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'acct_audit'`)).toBe('O');
    // View, grant, index (valid, used, enforcing), foreign key out of the table.
    expect(await one<string>(`SELECT count(*)::text FROM acct_rich`)).toBe('30');
    expect(await one<boolean>(`SELECT has_table_privilege('etlrb_reader', 'acct', 'SELECT')`)).toBe(true);
    expect(await one<boolean>(`SELECT indisvalid FROM pg_index WHERE indexrelid = 'acct_email'::regclass`)).toBe(true);
    await expect(h.sql.query(`INSERT INTO acct VALUES (99, 1, 'A1@X', 0)`)).rejects.toThrow(/acct_email/);
    await expect(h.sql.query(`INSERT INTO acct VALUES (99, 7, 'new@x', 0)`)).rejects.toThrow(/foreign key/);
    await h.sql.query(`INSERT INTO acct VALUES (99, 1, 'new@x', 0)`);
    expect(await one<string>(`SELECT string_agg(op, ',') FROM acct_audit`)).toBe('INSERT');
    await h.sql.query(`BEGIN; SET LOCAL enable_seqscan = off`);
    const { rows: explain } = await h.sql.query<{ 'QUERY PLAN': string }>(`EXPLAIN SELECT * FROM acct WHERE lower(email) = 'a1@x'`);
    await h.sql.query(`COMMIT`);
    expect(explain.map((r) => r['QUERY PLAN']).join('\n')).toContain('acct_email');
    await h.sql.query(`DROP OWNED BY etlrb_reader; DROP ROLE etlrb_reader`);
  });

  it('a foreign key into the table stays enforced and blocks the reload; the restore falls back to the diff', async () => {
    await h.sql.query(`CREATE TABLE fan (id int PRIMARY KEY, v int)`);
    await h.sql.query(`CREATE TABLE fan_child (id int PRIMARY KEY, fan_id int REFERENCES fan (id))`);
    await h.sql.query(`INSERT INTO fan SELECT g, g FROM generate_series(1, 20) g`);
    await h.sql.query(`INSERT INTO fan_child VALUES (1, 1), (2, 2)`);
    const u = h.unit({ id: 'fan', table: 'fan' });
    const point = await adapter.capture(u, h.ctx('d-fan'));
    await h.sql.query(`UPDATE fan SET v = -v`);
    await h.sql.query(`INSERT INTO fan VALUES (21, 21)`);
    await h.sql.query(`INSERT INTO fan_child VALUES (3, 21)`);
    const reloading = createPostgresTableAdapter({ reload: { minRows: 1 } });

    const plan = await reloading.diff(u, point, h.ctx('d-fan'));
    expect(plan.notes).toEqual([expect.stringMatching(/^capture: copy \(the default/), expect.stringMatching(/^change detection: xmin since \d+$/), expect.stringMatching(/^strategy: diff \(.*but a reload is not possible \(referenced by foreign key fan_child_fan_id_fkey on fan_child\)/)]);
    // Row 21 is referenced by a row the deploy added: the FK (kept enforced) makes the restore fail, rolled back.
    await expect(reloading.restore(u, point, h.ctx('d-fan'))).rejects.toThrow(/rolled back.*fan_child_fan_id_fkey/);
    expect(await one<string>(`SELECT count(*)::text FROM fan WHERE v < 0`)).toBe('20');
    await h.sql.query(`DELETE FROM fan_child WHERE id = 3`);
    h.commits.length = 0;
    const outcome = await reloading.restore(u, point, h.ctx('d-fan'));
    expect(outcome.changes).toMatchObject({ rowsUpdated: 20, rowsDeleted: 1, rowsInserted: 0 });
    expect(h.writesTo('fan')).toEqual({ ins: 0, upd: 20, del: 1 });
    expect(await one<string>(`SELECT count(*)::text FROM fan_child JOIN fan ON fan.id = fan_child.fan_id`)).toBe('2');
  });
});

describe('postgres-table: user triggers during a restore', () => {
  it('by default disables them (and only while restoring), keeping each trigger\'s own state; "fire" lets them fire', async () => {
    await h.sql.query(`CREATE TABLE trg (id int PRIMARY KEY, v text, touched_at timestamptz)`);
    await h.sql.query(`CREATE TABLE trg_log (id int, op text)`);
    await h.sql.query(`CREATE FUNCTION trg_log() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO trg_log VALUES (coalesce(NEW.id, OLD.id), TG_OP); RETURN coalesce(NEW, OLD); END $$`);
    await h.sql.query(`CREATE FUNCTION trg_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched_at := now(); RETURN NEW; END $$`);
    await h.sql.query(`CREATE TRIGGER a_log AFTER INSERT OR UPDATE OR DELETE ON trg FOR EACH ROW EXECUTE FUNCTION trg_log()`);
    await h.sql.query(`CREATE TRIGGER b_touch BEFORE UPDATE ON trg FOR EACH ROW EXECUTE FUNCTION trg_touch()`);
    await h.sql.query(`CREATE TRIGGER c_off BEFORE INSERT ON trg FOR EACH ROW EXECUTE FUNCTION trg_touch()`);
    await h.sql.query(`ALTER TABLE trg DISABLE TRIGGER c_off`);
    await h.sql.query(`ALTER TABLE trg ENABLE ALWAYS TRIGGER a_log`);
    await h.sql.query(`INSERT INTO trg VALUES (1, 'a', '2024-01-01Z'), (2, 'b', '2024-01-01Z'), (3, 'c', '2024-01-01Z')`);
    const u = h.unit({ id: 'trg', table: 'trg' });
    const point = await adapter.capture(u, h.ctx('d-trg'));
    const captured = await h.rowsOf('trg');
    const states = async () => (await h.sql.query(`SELECT tgname || '=' || tgenabled::text AS s FROM pg_trigger WHERE tgrelid = 'trg'::regclass ORDER BY 1`)).rows.map((r) => r.s as string);
    const before = await states();
    expect(before).toEqual(['a_log=A', 'b_touch=O', 'c_off=D']);

    await h.sql.query(`UPDATE trg SET v = 'bad' WHERE id = 1`);
    await h.sql.query(`DELETE FROM trg WHERE id = 2`);
    await h.sql.query(`DELETE FROM trg_log`);
    await adapter.restore(u, point, h.ctx('d-trg', 'run-trg-1'));
    expect(await h.rowsOf('trg')).toEqual(captured); // touched_at as captured: b_touch did not fire
    expect(await h.rowsOf('trg_log')).toEqual([]);
    expect(await states()).toEqual(before);

    await h.sql.query(`UPDATE trg SET v = 'bad' WHERE id = 1`);
    await h.sql.query(`DELETE FROM trg_log`);
    await createPostgresTableAdapter({ triggers: 'fire' }).restore(u, point, h.ctx('d-trg', 'run-trg-2'));
    expect(await h.rowsOf('trg_log')).toEqual(['(1,UPDATE)']);
    expect(await states()).toEqual(before);
  });

  it('refuses, before writing, to disable triggers on a table the connection does not own', async () => {
    await h.sql.query(`CREATE TABLE owned (id int PRIMARY KEY, v int)`);
    await h.sql.query(`CREATE FUNCTION owned_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`);
    await h.sql.query(`CREATE TRIGGER owned_noop BEFORE UPDATE ON owned FOR EACH ROW EXECUTE FUNCTION owned_noop()`);
    await h.sql.query(`INSERT INTO owned VALUES (1, 1)`);
    await h.sql.query(`DO $$ BEGIN CREATE ROLE etlrb_restorer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await h.sql.query(`GRANT USAGE, CREATE ON SCHEMA public TO etlrb_restorer`);
    await h.sql.query(`GRANT ALL ON owned TO etlrb_restorer`);
    const u = h.unit({ id: 'owned', table: 'owned' });
    const point = await adapter.capture(u, h.ctx('d-owned'));
    await h.sql.query(`UPDATE owned SET v = 2`);
    await h.sql.query(`GRANT USAGE ON SCHEMA etl_rollback TO etlrb_restorer`);
    await h.sql.query(`GRANT ALL ON ALL TABLES IN SCHEMA etl_rollback TO etlrb_restorer`);
    await h.sql.query(`GRANT CREATE ON SCHEMA etl_rollback TO etlrb_restorer`);
    const asRestorer = { ...h.ctx('d-owned'), postgres: { connect: async () => {
      const pg = (await import('pg')).default;
      const c = new pg.Client({ connectionString: h.db.url.replace('//postgres@', '//etlrb_restorer@') });
      await c.connect();
      return c;
    } } };
    const error = await adapter.restore(u, point, asRestorer).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toMatch(/user triggers \(owned_noop\).*owner.*triggers: "fire"/);
    expect(await h.rowsOf('owned')).toEqual(['(1,2)']);
    await h.sql.query(`REASSIGN OWNED BY etlrb_restorer TO postgres; DROP OWNED BY etlrb_restorer; DROP ROLE etlrb_restorer`);
  });
});

describe('postgres-table: diff or reload, chosen by measured counts', () => {
  it('writes only the difference when few rows changed, and reloads (TRUNCATE) when most did, as PostgreSQL counts', async () => {
    await h.sql.query(`CREATE TABLE big (id int PRIMARY KEY, v int)`);
    await h.sql.query(`INSERT INTO big SELECT g, g FROM generate_series(1, 2000) g`);
    const u = h.unit({ id: 'big', table: 'big' });
    const point = await adapter.capture(u, h.ctx('d-big'));
    const captured = await h.rowsOf('big');

    await h.sql.query(`UPDATE big SET v = 0 WHERE id <= 10`);
    h.commits.length = 0;
    const few = await adapter.restore(u, point, h.ctx('d-big', 'run-big-1'));
    expect(few.changes).toEqual({ rowsInserted: 0, rowsUpdated: 10, rowsDeleted: 0, rowsQuarantined: 10 });
    expect(h.writesTo('big')).toEqual({ ins: 0, upd: 10, del: 0 });

    await h.sql.query(`UPDATE big SET v = 0 WHERE id <= 1500`);
    await h.sql.query(`INSERT INTO big SELECT g, 0 FROM generate_series(2001, 2100) g`);
    const filenode = await one<string>(`SELECT pg_relation_filenode('big')::text`);
    const plan = await adapter.diff(u, point, h.ctx('d-big'));
    expect(plan.changes).toEqual({ rowsInserted: 2000, rowsUpdated: 0, rowsDeleted: 2100, rowsQuarantined: 1600 });
    expect(plan.notes).toEqual([expect.stringMatching(/^capture: copy \(the default/), expect.stringMatching(/^change detection: xmin since \d+$/), expect.stringMatching(/^strategy: reload \(1600 of 2100 rows in scope differ \(76%\), above the 50% reload threshold; TRUNCATE/)]);
    h.commits.length = 0;
    const most = await adapter.restore(u, point, h.ctx('d-big', 'run-big-2'));
    expect(most.changes).toEqual(plan.changes);
    // TRUNCATE writes no row versions to delete (counters restart after it) and gives the table a new file.
    expect(h.writesTo('big')).toEqual({ ins: 2000, upd: 0, del: 0 });
    expect(await one<string>(`SELECT pg_relation_filenode('big')::text`)).not.toBe(filenode);
    expect(await h.rowsOf('big')).toEqual(captured);
    expect(await h.rowsOf(most.keptAt!)).toHaveLength(1600);
    expect((await adapter.restore(u, point, h.ctx('d-big', 'run-big-3'))).writes).toBe(0);
  });
});

describe('postgres-table: sequences', () => {
  it('sets owned sequences back to their captured position, last and once', async () => {
    await h.sql.query(`CREATE TABLE seqd (id serial PRIMARY KEY, n bigint GENERATED BY DEFAULT AS IDENTITY, v text)`);
    await h.sql.query(`INSERT INTO seqd (v) SELECT 'v' FROM generate_series(1, 5)`);
    const u = h.unit({ id: 'seqd', table: 'seqd' });
    const point = await adapter.capture(u, h.ctx('d-seqd'));
    expect(point.details.sequences).toEqual([
      { name: 'seqd_id_seq', column: 'id', lastValue: '5', isCalled: true },
      { name: 'seqd_n_seq', column: 'n', lastValue: '5', isCalled: true },
    ]);
    await h.sql.query(`INSERT INTO seqd (v) SELECT 'bad' FROM generate_series(1, 3)`);

    const plan = await adapter.diff(u, point, h.ctx('d-seqd'));
    expect(plan.notes).toContain('sequences will be set back: seqd_id_seq to 5, seqd_n_seq to 5');
    const outcome = await adapter.restore(u, point, h.ctx('d-seqd'));
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 0, rowsDeleted: 3, rowsQuarantined: 3, sequencesReset: 2 });
    await h.sql.query(`INSERT INTO seqd (v) VALUES ('next')`);
    expect(await h.rowsOf('seqd')).toContain('(6,6,next)');
    await h.sql.query(`DELETE FROM seqd WHERE id = 6`);
    await h.sql.query(`SELECT setval('seqd_id_seq', 5), setval('seqd_n_seq', 5)`);
    const again = await adapter.restore(u, point, h.ctx('d-seqd'));
    expect(again.writes).toBe(0);
  });
});

describe('postgres-table: schema changes', () => {
  it('puts back a renamed column (views keep working), a changed default and a dropped NOT NULL', async () => {
    await h.sql.query(`CREATE TABLE sch (id int PRIMARY KEY, qty int NOT NULL DEFAULT 1, note text DEFAULT 'none')`);
    await h.sql.query(`CREATE VIEW sch_qty AS SELECT id, qty FROM sch`);
    await h.sql.query(`INSERT INTO sch VALUES (1, 5, 'x'), (2, 6, NULL)`);
    const u = h.unit({ id: 'sch', table: 'sch' });
    const point = await adapter.capture(u, h.ctx('d-sch'));
    expect(point.details.columns[1]).toMatchObject({ name: 'qty', type: 'integer', notNull: true, default: '1', generated: null, identity: null });
    await h.sql.query(`ALTER TABLE sch RENAME COLUMN qty TO quantity`);
    await h.sql.query(`ALTER TABLE sch ALTER COLUMN quantity DROP NOT NULL, ALTER COLUMN note SET DEFAULT 'tbd'`);
    await h.sql.query(`UPDATE sch SET quantity = NULL WHERE id = 2`);

    const plan = await adapter.diff(u, point, h.ctx('d-sch'));
    expect(plan.notes[0]).toMatch(/^capture: copy \(the default for a table under 1\.0 GiB, or one copy-on-write cannot protect; the unit does not set capture\): shadow copy etl_rollback\.rp_/);
    expect(plan.notes[1]).toBe("full comparison: the deploy changed the table's definition, which can change rows without writing them");
    expect(plan.notes[2]).toBe(
      'schema will be restored: column "quantity" renamed back to "qty", column "qty" made NOT NULL again, default of column "note" restored to \'none\'::text',
    );
    const outcome = await adapter.restore(u, point, h.ctx('d-sch'));
    expect(outcome.changes).toEqual({ rowsInserted: 0, rowsUpdated: 1, rowsDeleted: 0, rowsQuarantined: 1, schemaChanges: 3 });
    expect(await h.rowsOf('sch_qty')).toEqual(['(1,5)', '(2,6)']);
    await expect(h.sql.query(`INSERT INTO sch (id, qty) VALUES (3, NULL)`)).rejects.toThrow(/not-null/);
    await h.sql.query(`INSERT INTO sch (id) VALUES (3)`);
    expect(await h.rowsOf('sch')).toContain('(3,1,none)');
  });

  it('refuses, before writing, to drop a column the deploy added when a view now depends on it', async () => {
    await h.sql.query(`CREATE TABLE schv (id int PRIMARY KEY, a int)`);
    await h.sql.query(`INSERT INTO schv VALUES (1, 1)`);
    const u = h.unit({ id: 'schv', table: 'schv' });
    const point = await adapter.capture(u, h.ctx('d-schv'));
    await h.sql.query(`ALTER TABLE schv ADD COLUMN b int`);
    await h.sql.query(`CREATE VIEW schv_b AS SELECT id, b FROM schv`);
    await h.sql.query(`UPDATE schv SET a = 2`);
    for (const op of [() => adapter.diff(u, point, h.ctx('d-schv')), () => adapter.restore(u, point, h.ctx('d-schv'))]) {
      const error = await op().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PreflightError);
      expect((error as Error).message).toMatch(/column "b" was added by the deploy and must be dropped, but view schv_b depends on it.*Nothing was written/);
    }
    expect(await h.rowsOf('schv')).toEqual(['(1,2,)']);
  });

  it('refuses a schema restore for a scoped unit: the columns are shared with rows outside the scope', async () => {
    await h.sql.query(`CREATE TABLE schs (id int PRIMARY KEY, a int)`);
    await h.sql.query(`INSERT INTO schs VALUES (1, 1), (2, 2)`);
    const u = h.unit({ id: 'schs', table: 'schs', where: 'id = 1' });
    const point = await adapter.capture(u, h.ctx('d-schs'));
    await h.sql.query(`ALTER TABLE schs ADD COLUMN b int`);
    await expect(adapter.restore(u, point, h.ctx('d-schs'))).rejects.toThrow(/covers only rows where \(id = 1\).*unscoped unit/);
  });
});

describe('postgres-table: assertions', () => {
  it('runs each assertion read-only with its timeout; false, errors, writes and timeouts are failed checks', async () => {
    await h.sql.query(`CREATE TABLE asr (id int PRIMARY KEY, v int)`);
    await h.sql.query(`INSERT INTO asr VALUES (1, 10), (2, 20)`);
    const assertions = [
      { name: 'sum', sql: 'SELECT sum(v) = 30 FROM asr' },
      { name: 'positive', sql: 'SELECT bool_and(v < 15) FROM asr' },
      { name: 'broken', sql: 'SELECT nope FROM asr' },
      { name: 'writes', sql: 'DELETE FROM asr RETURNING true' },
      { name: 'two statements', sql: 'SELECT true; DELETE FROM asr' },
      { name: 'slow', sql: 'SELECT pg_sleep(3) IS NOT NULL', timeoutSeconds: 1 },
      { name: 'empty', sql: 'SELECT true WHERE false' },
    ];
    const u = h.unit({ id: 'asr', table: 'asr', assertions });
    const point = await adapter.capture(u, h.ctx('d-asr'));
    const started = Date.now();
    const checks = await adapter.verify(u, point, h.ctx('d-asr'));
    expect(Date.now() - started).toBeLessThan(2800);
    const byName = new Map(checks.map((c) => [c.name, c]));
    expect(checks.map((c) => c.name)).toEqual(['rowCount', 'checksum', ...assertions.map((a) => `assertion:${a.name}`)]);
    expect(byName.get('assertion:sum')).toEqual({ name: 'assertion:sum', ok: true, expected: 'true', actual: 'true' });
    expect(byName.get('assertion:positive')).toMatchObject({ ok: false, expected: 'true', actual: 'false' });
    expect(byName.get('assertion:broken')).toMatchObject({ ok: false, actual: expect.stringMatching(/^error: column "nope" does not exist/) });
    expect(byName.get('assertion:writes')).toMatchObject({ ok: false, actual: expect.stringMatching(/read-only transaction/) });
    expect(byName.get('assertion:two statements')).toMatchObject({ ok: false, actual: expect.stringMatching(/multiple commands|cannot insert multiple/) });
    expect(byName.get('assertion:slow')).toMatchObject({ ok: false, actual: expect.stringMatching(/statement timeout/), detail: expect.stringMatching(/after 1 s/) });
    expect(byName.get('assertion:empty')).toMatchObject({ ok: false, actual: 'no row' });
    expect(await h.rowsOf('asr')).toEqual(['(1,10)', '(2,20)']);

    // Assertions run even when count and checksum are turned off.
    const only = h.unit({ id: 'asr', table: 'asr', assertions: [assertions[0]!], checks: { count: false, checksum: false } });
    expect(await adapter.verify(only, point, h.ctx('d-asr'))).toEqual([{ name: 'assertion:sum', ok: true, expected: 'true', actual: 'true' }]);
  });
});
