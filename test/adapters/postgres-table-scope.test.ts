import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createPostgresTableAdapter, postgresTableAdapter as adapter } from '../../core/adapters/postgres-table.ts';
import { PreflightError } from '../../core/errors.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

let h: PgHarness;
beforeAll(async () => {
  h = await pgHarness('pgscope', ['ev', 'sales']);
});
afterAll(async () => {
  await h?.db.drop();
});

/** Rows and their xmin outside a predicate: what a scoped restore must leave exactly as it was. */
async function outside(table: string, predicate: string): Promise<string[]> {
  const { rows } = await h.sql.query<{ r: string }>(`SELECT t::text || ' xmin=' || t.xmin::text AS r FROM ${table} AS t WHERE NOT (${predicate}) ORDER BY 1`);
  return rows.map((r) => r.r);
}

describe('postgres-table: where scope', () => {
  it('captures, diffs, restores and verifies only the rows in scope; rows outside are never touched', async () => {
    await h.sql.query(`CREATE TABLE sales (id int PRIMARY KEY, day date NOT NULL, amount numeric(10,2))`);
    await h.sql.query(`INSERT INTO sales SELECT g, date '2024-01-01' + (g % 10), g FROM generate_series(1, 100) g`);
    const u = h.unit({ id: 'sales', table: 'sales', where: `day >= '2024-01-06'` });
    const c = h.ctx('d-sales');
    const point = await adapter.capture(u, c);
    expect(point.count).toBe(50);
    expect(point.details.scope).toEqual({ where: `day >= '2024-01-06'` });
    const captured = await h.rowsOf(`(SELECT * FROM sales WHERE day >= '2024-01-06')`);
    expect(await h.rowsOf(point.details.shadowTable)).toEqual(captured);

    await h.sql.query(`UPDATE sales SET amount = -1 WHERE id IN (5, 15)`); // in scope (day 2024-01-06)
    await h.sql.query(`INSERT INTO sales VALUES (1001, '2024-01-09', 9)`); // inserted in scope
    await h.sql.query(`UPDATE sales SET day = '2023-12-31' WHERE id = 25`); // moved out of scope
    await h.sql.query(`UPDATE sales SET amount = 0 WHERE id IN (1, 2)`); // outside scope, changed
    await h.sql.query(`INSERT INTO sales VALUES (1002, '2023-06-01', 1)`); // inserted outside scope
    await h.sql.query(`UPDATE sales SET day = '2024-01-09' WHERE id = 3`); // moved into scope from outside
    const keep = `(day < '2024-01-06' AND id NOT IN (25, 3))`;
    const untouched = await outside('sales', `NOT ${keep}`);
    expect(await h.checksOk(adapter, u, point, c)).toBe(false);

    const plan = await adapter.diff(u, point, c);
    expect(plan.changes).toEqual({ rowsInserted: 0, rowsUpdated: 3, rowsDeleted: 2, rowsQuarantined: 5 });
    expect(plan.notes).toContain(`scope: rows where (day >= '2024-01-06')`);
    h.commits.length = 0;
    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual(plan.changes);
    expect(h.writesTo('sales')).toEqual({ ins: 0, upd: 3, del: 2 });

    expect(await h.rowsOf(`(SELECT * FROM sales WHERE day >= '2024-01-06')`)).toEqual(captured);
    expect(await outside('sales', `NOT ${keep}`)).toEqual(untouched);
    // The row that moved into scope from outside cannot be told from an insert: deleted, and kept in quarantine.
    expect((await h.rowsOf(outcome.keptAt!)).filter((r) => /^\((3|1001),/.test(r))).toEqual(['(1001,2024-01-09,9.00)', '(3,2024-01-09,3.00)']);
    expect(await h.checksOk(adapter, u, point, c)).toBe(true);
    expect((await adapter.restore(u, point, h.ctx('d-sales', 'run-sales-2'))).writes).toBe(0);
  });

  it('a "where" that fails is refused at capture, naming the predicate', async () => {
    await h.sql.query(`CREATE TABLE badwhere (id int PRIMARY KEY)`);
    const error = await adapter.capture(h.unit({ id: 'badwhere', table: 'badwhere', where: 'nope > 1' }), h.ctx('d-bw')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreflightError);
    expect((error as Error).message).toMatch(/"where" predicate \(nope > 1\) fails on public\.badwhere: column "nope" does not exist/);
  });

  it('reloads a scope by DELETE (not TRUNCATE), still leaving other rows alone', async () => {
    await h.sql.query(`CREATE TABLE scoped_big (id int PRIMARY KEY, grp int, v int)`);
    await h.sql.query(`INSERT INTO scoped_big SELECT g, g % 2, g FROM generate_series(1, 400) g`);
    const u = h.unit({ id: 'scoped-big', table: 'scoped_big', where: 'grp = 0' });
    const reloading = createPostgresTableAdapter({ reload: { minRows: 100 } });
    const point = await reloading.capture(u, h.ctx('d-sb'));
    await h.sql.query(`UPDATE scoped_big SET v = -v`);
    const other = await outside('scoped_big', 'grp = 0');
    const outcome = await reloading.restore(u, point, h.ctx('d-sb'));
    expect(outcome.changes).toEqual({ rowsInserted: 200, rowsUpdated: 0, rowsDeleted: 200, rowsQuarantined: 200 });
    expect(outcome.notes).toContain('strategy: reload (200 of 200 rows in scope differ (100%), above the 50% reload threshold; the rows in scope deleted, then the captured rows inserted)');
    expect(await outside('scoped_big', 'grp = 0')).toEqual(other);
    expect(await h.checksOk(reloading, u, point, h.ctx('d-sb'))).toBe(true);
  });
});

describe('postgres-table: partition scope', () => {
  it('restores only the named partitions, moves rows back across partitions, and leaves other partitions untouched', async () => {
    await h.sql.query(`CREATE TABLE ev (id int, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)`);
    await h.sql.query(`CREATE TABLE ev_01 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')`);
    await h.sql.query(`CREATE TABLE ev_02 PARTITION OF ev FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')`);
    await h.sql.query(`CREATE TABLE ev_03 PARTITION OF ev FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')`);
    await h.sql.query(`INSERT INTO ev SELECT g, date '2024-01-01' + g, 'v' || g FROM generate_series(0, 89) g`);
    const u = h.unit({ id: 'ev', table: 'ev', partition: ['ev_02'] });
    const c = h.ctx('d-ev');
    const point = await adapter.capture(u, c);
    expect(point.details.scope).toEqual({ partition: ['public.ev_02'] });
    expect(point.count).toBe(29);
    const captured = await h.rowsOf('ev_02');

    await h.sql.query(`UPDATE ev SET v = 'bad' WHERE day = '2024-02-10'`);
    await h.sql.query(`UPDATE ev SET day = '2024-03-20' WHERE day = '2024-02-20'`); // moved to ev_03 (key changes with day)
    await h.sql.query(`UPDATE ev SET v = 'jan-bad' WHERE day = '2024-01-10'`); // other partition
    await h.sql.query(`INSERT INTO ev VALUES (500, '2024-02-02', 'new')`);
    const others = [...(await outside('ev_01', 'false')), ...(await outside('ev_03', `day = '2024-03-20'`))];

    const outcome = await adapter.restore(u, point, c);
    expect(outcome.changes).toEqual({ rowsInserted: 1, rowsUpdated: 1, rowsDeleted: 1, rowsQuarantined: 2 });
    expect(await h.rowsOf('ev_02')).toEqual(captured);
    // The row the deploy moved to ev_03 under a new key is not in the captured scope: it stays (documented), and
    // every other row of ev_01 and ev_03 keeps its values and its xmin.
    expect([...(await outside('ev_01', 'false')), ...(await outside('ev_03', `day = '2024-03-20'`))]).toEqual(others);
    expect(await h.checksOk(adapter, u, point, c)).toBe(true);
    expect(outcome.notes).toContain('scope: rows of partition public.ev_02');
  });

  it('refuses a partition that is not the table\'s', async () => {
    await h.sql.query(`CREATE TABLE lone (id int PRIMARY KEY)`);
    await expect(adapter.capture(h.unit({ id: 'lone', table: 'lone', partition: 'ev_01' }), h.ctx('d-lone'))).rejects.toThrow(/not a partitioned table/);
    await expect(adapter.capture(h.unit({ id: 'evx', table: 'ev', partition: 'lone' }), h.ctx('d-evx'))).rejects.toThrow(/"lone" is not a partition of public\.ev \(its partitions: ev_01, ev_02, ev_03\)/);
  });
});

describe('postgres-table: property (where scope)', () => {
  type Op = { kind: 'insert' | 'update' | 'delete' | 'move'; k: number; v: string | null; g: number };
  const op: fc.Arbitrary<Op> = fc.record({
    kind: fc.constantFrom('insert', 'update', 'delete', 'move'),
    k: fc.integer({ min: 1, max: 16 }),
    v: fc.option(fc.string({ maxLength: 5 }), { nil: null }),
    g: fc.integer({ min: 0, max: 2 }),
  });

  it('after random mutations inside and outside the scope, in-scope rows equal the captured ones and the rest is exactly as it was', async () => {
    await h.sql.query(`CREATE TABLE prop_scope (k int PRIMARY KEY, g int NOT NULL, v text)`);
    const u = h.unit({ id: 'prop-scope', table: 'prop_scope', where: 'g = 0' });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.integer({ min: 1, max: 16 }), { maxLength: 12 }), fc.array(op, { maxLength: 25 }), async (keys, ops) => {
        run += 1;
        const c = h.ctx(`d-ps-${run}`, `run-ps-${run}`);
        await h.sql.query('TRUNCATE prop_scope');
        for (const k of keys) await h.sql.query('INSERT INTO prop_scope VALUES ($1, $2, $3)', [k, k % 3, `v${k}`]);
        const point = await adapter.capture(u, c);
        const captured = await h.rowsOf('(SELECT * FROM prop_scope WHERE g = 0)');
        const capturedKeys = new Set(captured.map((r) => Number(/^\((\d+),/.exec(r)![1])));
        try {
          for (const o of ops) {
            if (o.kind === 'insert') await h.sql.query('INSERT INTO prop_scope VALUES ($1, $2, $3) ON CONFLICT (k) DO NOTHING', [o.k, o.g, o.v]);
            else if (o.kind === 'update') await h.sql.query('UPDATE prop_scope SET v = $2 WHERE k = $1', [o.k, o.v]);
            else if (o.kind === 'move') await h.sql.query('UPDATE prop_scope SET g = $2 WHERE k = $1', [o.k, o.g]);
            else await h.sql.query('DELETE FROM prop_scope WHERE k = $1', [o.k]);
          }
          // Out of scope: rows neither in scope now nor captured. They must keep their values and their xmin.
          const { rows } = await h.sql.query<{ r: string }>(
            `SELECT t::text || ' ' || t.xmin::text AS r FROM prop_scope t WHERE g <> 0 AND NOT (k = ANY ($1::int[])) ORDER BY 1`,
            [[...capturedKeys]],
          );
          const planned = await adapter.diff(u, point, c);
          const outcome = await adapter.restore(u, point, c);
          expect(outcome.changes).toEqual(planned.changes);
          expect(await h.rowsOf('(SELECT * FROM prop_scope WHERE g = 0)')).toEqual(captured);
          const after = await h.sql.query<{ r: string }>(
            `SELECT t::text || ' ' || t.xmin::text AS r FROM prop_scope t WHERE g <> 0 AND NOT (k = ANY ($1::int[])) ORDER BY 1`,
            [[...capturedKeys]],
          );
          expect(after.rows.map((r) => r.r)).toEqual(rows.map((r) => r.r));
          expect(await h.checksOk(adapter, u, point, c)).toBe(true);
          expect((await adapter.restore(u, point, c)).writes).toBe(0);
        } finally {
          await adapter.release(u, point, c);
        }
      }),
      { numRuns: 25 },
    );
  });
});
