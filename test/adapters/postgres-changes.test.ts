import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresTableAdapter as adapter } from '../../core/adapters/postgres-table.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

let h: PgHarness;

beforeAll(async () => {
  h = await pgHarness('pgchg', ['ch_facts', 'ch_big', 'ch_big_cow']);
});

afterAll(async () => {
  await h?.sql.end();
  await h?.db.drop();
});

describe('postgres-table copy mode: change detection by xmin', () => {
  it('finds changed rows by xmin (frozen ones and a transaction open at capture included), writes only them, and falls back after VACUUM FULL', async () => {
    await h.sql.query(`CREATE TABLE ch_facts (id int PRIMARY KEY, v text, n numeric)`);
    await h.sql.query(`INSERT INTO ch_facts SELECT g, md5(g::text), g FROM generate_series(1, 5000) g`);
    await h.sql.query(`VACUUM FREEZE ch_facts`); // old rows frozen before the capture
    const u = h.unit({ id: 'facts', table: 'ch_facts' });
    const c = h.ctx('d-facts');

    // A transaction open during the capture, writing in a savepoint (a subtransaction xid below the capture's): its
    // row is not in the copy and must be found.
    const other = await h.db.client();
    await other.query('BEGIN');
    await other.query('SELECT pg_current_xact_id()');
    await other.query('SAVEPOINT s1');
    await other.query(`INSERT INTO ch_facts VALUES (9001, 'open at capture', 0)`);
    const point = await adapter.capture(u, c);
    await other.query('COMMIT');
    await other.end();
    const captured = await h.rowsOf(`(SELECT * FROM ch_facts WHERE id <> 9001)`);
    expect(point.count).toBe(5000);

    await h.sql.query(`UPDATE ch_facts SET n = -n WHERE id % 100 = 0`); // 50 rows
    await h.sql.query(`UPDATE ch_facts SET v = v WHERE id BETWEEN 1 AND 10`); // rewritten, same values: candidates, not writes
    await h.sql.query(`DELETE FROM ch_facts WHERE id BETWEEN 4001 AND 4005`);
    await h.sql.query(`INSERT INTO ch_facts VALUES (9002, 'new', 1)`);
    await h.sql.query(`VACUUM FREEZE ch_facts`); // freezing after the deploy hides nothing (raw xmin is kept)

    const plan = await adapter.diff(u, point, c);
    expect(plan.notes).toContain(`change detection: xmin since ${/\d+/.exec(plan.notes.find((n) => n.startsWith('change detection'))!)![0]}`);
    expect(plan.changes).toMatchObject({ rowsInserted: 5, rowsUpdated: 50, rowsDeleted: 2 });

    h.commits.length = 0;
    const out = await adapter.restore(u, point, c);
    expect(out.notes[0]).toMatch(/^change detection: xmin since \d+$/);
    expect(h.writesTo('ch_facts')).toEqual({ ins: 5, upd: 50, del: 2 }); // as PostgreSQL counted the restore's writes
    expect(await h.rowsOf('ch_facts')).toEqual(captured);
    expect(await h.checksOk(adapter, u, point, c)).toBe(true);

    // VACUUM FULL gives the table a new relfilenode: the full comparison, said so, still right.
    await h.sql.query(`UPDATE ch_facts SET v = 'after' WHERE id = 77`);
    await h.sql.query(`VACUUM FULL ch_facts`);
    const after = await adapter.diff(u, point, c);
    expect(after.notes).toContain('full comparison: the table was rewritten since the capture (relfilenode changed: VACUUM FULL, CLUSTER, TRUNCATE or an ALTER TABLE that rewrites)');
    expect(after.changes).toMatchObject({ rowsUpdated: 1, rowsInserted: 0, rowsDeleted: 0 });
    h.commits.length = 0;
    const again = await adapter.restore(u, point, c);
    expect(again.notes[0]).toMatch(/^full comparison: the table was rewritten/);
    expect(h.writesTo('ch_facts')).toEqual({ ins: 0, upd: 1, del: 0 });
    expect(await h.rowsOf('ch_facts')).toEqual(captured);
  });

  it('costs what changed: 200,000 rows, 1% changed, copy mode (xmin vs full comparison) and copy-on-write', async () => {
    const N = 200_000;
    const make = async (t: string) => {
      await h.sql.query(`CREATE TABLE ${t} (id int PRIMARY KEY, customer text, amount numeric(12,2), at timestamptz, doc jsonb)`);
      await h.sql.query(`INSERT INTO ${t} SELECT g, 'customer ' || (g % 997), g / 7.0, '2024-01-01'::timestamptz + g * interval '1 minute', jsonb_build_object('g', g, 'tag', md5(g::text)) FROM generate_series(1, ${N}) g`);
      await h.sql.query(`VACUUM ANALYZE ${t}`);
    };
    const damage = async (t: string) => {
      await h.sql.query(`UPDATE ${t} SET amount = -amount WHERE id % 200 = 0`); // 1,000
      await h.sql.query(`DELETE FROM ${t} WHERE id % 200 = 1`); // 1,000
    };
    const time = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
      const t0 = performance.now();
      const r = await fn();
      return [r, Math.round(performance.now() - t0)];
    };
    await make('ch_big');
    await make('ch_big_cow');
    const expected = await h.rowsOf('ch_big');

    const u = h.unit({ id: 'big', table: 'ch_big' });
    const [point, copyCapture] = await time(() => adapter.capture(u, h.ctx('d-big')));
    await damage('ch_big');
    const [xmin, copyRestore] = await time(() => adapter.restore(u, point, h.ctx('d-big', 'r1')));
    expect(xmin.notes[0]).toMatch(/^change detection/);
    expect(xmin.changes).toMatchObject({ rowsUpdated: 1000, rowsInserted: 1000, rowsDeleted: 0 });
    await damage('ch_big');
    await h.sql.query(`VACUUM FULL ch_big`);
    const [full, fullRestore] = await time(() => adapter.restore(u, point, h.ctx('d-big', 'r2')));
    expect(full.notes[0]).toMatch(/^full comparison/);
    expect(await h.rowsOf('ch_big')).toEqual(expected);

    const uc = h.unit({ id: 'bigcow', table: 'ch_big_cow', capture: 'copy-on-write' });
    const [cpoint, cowCapture] = await time(() => adapter.capture(uc, h.ctx('d-bigcow')));
    const [, cowDeploy] = await time(() => damage('ch_big_cow'));
    const [cow, cowRestore] = await time(() => adapter.restore(uc, cpoint, h.ctx('d-bigcow', 'r1')));
    expect(cow.changes).toMatchObject({ rowsUpdated: 1000, rowsInserted: 1000, rowsDeleted: 0 });
    expect(await h.rowsOf('ch_big_cow')).toEqual(expected);
    await adapter.release(uc, cpoint, h.ctx('d-bigcow'));
    const [, plainDeploy] = await time(() => damage('ch_big_cow'));

    console.log(
      `[figures] ${N} rows, 1% changed: copy capture ${copyCapture} ms, copy restore by xmin ${copyRestore} ms, copy restore by full comparison ${fullRestore} ms; ` +
        `copy-on-write capture ${cowCapture} ms, restore ${cowRestore} ms (incl. the in-transaction count+checksum); deploy with triggers ${cowDeploy} ms, without ${plainDeploy} ms`,
    );
  }, 120_000);
});
