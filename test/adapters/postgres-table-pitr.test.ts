import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateDBInstanceCommand, DescribeDBInstancesCommand, RDSClient } from '@aws-sdk/client-rds';
import { postgresTableAdapter as adapter, type PostgresTableDetails } from '../../core/adapters/postgres-table.ts';
import { temporaryIdentifier, TEMPORARY_TAG } from '../../core/adapters/rds/temporary-copy.ts';
import { tagMap } from '../../core/adapters/rds/names.ts';
import { isoUtc } from '../../core/adapters/rds/window.ts';
import type { AdapterContext, Outcome, RestorePoint } from '../../core/adapters/types.ts';
import { OutsideRestorableWindowError, PreflightError } from '../../core/errors.ts';
import type { PostgresTableUnit } from '../../core/manifest/schema.ts';
import type { Endpoint } from '../../core/runtime/connections.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';
import { uniqueName } from '../support/aws.ts';
import { pgHarness, type PgHarness } from './postgres/harness.ts';

// `--to` for a postgres-table unit: the control path (point-in-time copy made, found, deleted) against moto's RDS API;
// the data path against real PostgreSQL. moto's endpoints do not resolve, so the connector's connectTo maps the copy's
// endpoint (read back from moto) to a second local database, filled with the table as it was at T: it stands in for
// the temporary instance.

const rds = new RDSClient({});
let h: PgHarness;
let atT: TestDatabase;
let atTSql: pg.Client;
let sourceId: string;
let at: Date;
const opened: Endpoint[] = [];

beforeAll(async () => {
  h = await pgHarness('pgpitr', ['orders', 'events']);
  atT = await createTestDatabase('etlrb_pitr');
  atTSql = await atT.client();
  sourceId = uniqueName('pgsrc');
  await rds.send(
    new CreateDBInstanceCommand({ DBInstanceIdentifier: sourceId, Engine: 'postgres', DBInstanceClass: 'db.t3.micro', AllocatedStorage: 20, MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', BackupRetentionPeriod: 1 }),
  );
  await new Promise((r) => setTimeout(r, 1100));
  at = new Date(Date.now() - 100);
});
afterAll(async () => {
  await atT?.drop();
  await h?.db.drop();
});

/** The harness context, with a connector that knows the connection's RDS instance and reaches "the copy" locally. */
function ctx(deploymentId: string, runId: string, rdsOf: string | null = sourceId): AdapterContext {
  const base = h.ctx(deploymentId, runId);
  return {
    ...base,
    postgres: {
      ...h.connector,
      async connectTo(_name, endpoint) {
        // The endpoint must be the one moto reports for this run's copy: that is the instance the adapter made.
        const copy = (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: temporaryIdentifier({ instanceId: sourceId }, runId, 'orders-eu') }))).DBInstances?.[0];
        expect(endpoint).toEqual({ host: copy?.Endpoint?.Address, port: copy?.Endpoint?.Port });
        opened.push(endpoint);
        const client = new pg.Client({ connectionString: atT.url, application_name: 'etl-rollback' });
        await client.connect();
        return client;
      },
      rdsOf: () => (rdsOf ? { instanceId: rdsOf } : undefined),
    },
  };
}

async function restoreToEnd(u: PostgresTableUnit, point: RestorePoint<PostgresTableDetails>, c: AdapterContext): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (let calls = 1; calls <= 10; calls++) {
    const o = await adapter.restore(u, point, c);
    outcomes.push(o);
    if (!o.pending) return outcomes;
  }
  throw new Error('restore did not finish in 10 calls');
}

async function rows(client: pg.Client, sql: string): Promise<string[]> {
  return (await client.query<{ r: string }>(`SELECT t::text AS r FROM (${sql}) AS t ORDER BY 1`)).rows.map((r) => r.r);
}

async function instanceExists(id: string): Promise<boolean> {
  try {
    const i = (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: id }))).DBInstances?.[0];
    return i !== undefined && i.DBInstanceStatus !== 'deleting';
  } catch (error) {
    if ((error as Error).name === 'DBInstanceNotFoundFault') return false;
    throw error;
  }
}

const ORDERS = `CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, amount numeric(10,2), tags text[], paid_at timestamptz, doc jsonb, raw bytea)`;
const FILL = `INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g * 1.5, ARRAY['a', g::text], timestamptz '2026-01-01 10:00:00+00' + g * interval '1 minute',
                     jsonb_build_object('n', g), decode(lpad(to_hex(g), 4, '0'), 'hex') FROM generate_series(1, 200) g`;

describe('postgres-table --to (point-in-time restore and merge)', () => {
  it('restores a where scope to its rows at T, writing only differing rows, quarantining what it replaces, then deletes the copy; a rerun writes nothing', async () => {
    // The state at T, in both: production and the stand-in for the point-in-time copy.
    for (const c of [h.sql, atTSql]) {
      await c.query(ORDERS);
      await c.query(FILL);
    }
    // The deploy since T: in scope (eu) rows changed, deleted and added; out of scope (us) rows changed too.
    await h.sql.query(`UPDATE orders SET amount = -1, tags = NULL WHERE id IN (2, 4, 6)`);
    await h.sql.query(`DELETE FROM orders WHERE id IN (8, 10)`);
    await h.sql.query(`INSERT INTO orders (id, region, amount) VALUES (1000, 'eu', 1), (1001, 'eu', 2), (1002, 'us', 3)`);
    await h.sql.query(`UPDATE orders SET amount = 0 WHERE id IN (1, 3)`);
    const outsideBefore = await rows(h.sql, `SELECT * FROM orders WHERE region <> 'eu'`);

    const u = h.unit({ id: 'orders-eu', table: 'orders', where: `region = 'eu'` });
    const deployment = 'at-20261129T093000Z';
    const { point, shows } = await adapter.asOf!(u, at, ctx(deployment, 'plan'));
    expect(point.details.capture).toBe('point-in-time');
    expect(point.details.pointInTime).toEqual({ rds: { instanceId: sourceId }, time: isoUtc(at) });
    expect(point.count).toBe(100); // rows in scope now: 100 - 2 deleted + 2 added
    expect(shows[0]).toContain(`as of ${isoUtc(at)}, read from a point-in-time copy of DB instance ${sourceId}`);
    expect(shows[0]).toContain(`rows where (region = 'eu')`);

    const dry = await adapter.diff(u, point, ctx(deployment, 'run-1'));
    expect(dry.changes).toEqual({ dbInstancesRestoredToPointInTime: 1, temporaryCopiesDeleted: 1 });

    const c1 = ctx(deployment, 'run-1');
    const copyId = temporaryIdentifier({ instanceId: sourceId }, 'run-1', 'orders-eu');
    const first = await adapter.restore(u, point, c1);
    expect(first.pending?.status).toContain(copyId);
    expect(first.changes).toEqual({ dbInstancesRestoredToPointInTime: 1 });
    const made = (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: copyId }))).DBInstances![0]!;
    expect(tagMap(made.TagList)[TEMPORARY_TAG]).toBe('pitr');

    h.commits.length = 0;
    const rest = await restoreToEnd(u, point, c1);
    const done = rest.at(-1)!;
    expect(done.pending).toBeUndefined();
    expect(done.changes).toMatchObject({ rowsExtracted: 100, rowsUpdated: 3, rowsInserted: 2, rowsDeleted: 2, rowsQuarantined: 5, temporaryCopiesDeleted: 1 });
    expect(h.writesTo('orders')).toEqual({ ins: 2, upd: 3, del: 2 });

    // In scope: exactly the rows at T. Outside: untouched. Replaced rows: in quarantine. The copy: deleted.
    expect(await rows(h.sql, `SELECT * FROM orders WHERE region = 'eu'`)).toEqual(await rows(atTSql, `SELECT * FROM orders WHERE region = 'eu'`));
    expect(await rows(h.sql, `SELECT * FROM orders WHERE region <> 'eu'`)).toEqual(outsideBefore);
    expect((await rows(h.sql, `SELECT id FROM ${done.keptAt}`)).map((r) => Number(r.slice(1, -1))).sort((a, b) => a - b)).toEqual([2, 4, 6, 1000, 1001]);
    expect(await rows(h.sql, `SELECT amount FROM ${done.keptAt} WHERE id = 2`)).toEqual(['(-1.00)']);
    expect(await instanceExists(copyId)).toBe(false);
    expect(await instanceExists(sourceId)).toBe(true);
    expect(await h.checksOk(adapter, u, point, c1)).toBe(true);

    // A rerun (the same run resumed, or the state machine calling again) finds everything done.
    h.commits.length = 0;
    const again = await restoreToEnd(u, point, c1);
    expect(again.reduce((n, o) => n + o.writes, 0)).toBe(0);
    expect(h.commits).toEqual([]);

    await adapter.release(u, point, c1);
    expect((await h.sql.query(`SELECT to_regclass($1) AS r`, [point.details.shadowTable])).rows[0].r).toBeNull();
  });

  it('restores a partition scope, leaving the other partitions alone', async () => {
    for (const c of [h.sql, atTSql]) {
      await c.query(`CREATE TABLE events (id int, day date NOT NULL, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)`);
      await c.query(`CREATE TABLE events_jan PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')`);
      await c.query(`CREATE TABLE events_feb PARTITION OF events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')`);
      await c.query(`INSERT INTO events SELECT g, date '2026-01-01' + (g % 50), 'v' || g FROM generate_series(1, 100) g`);
    }
    await h.sql.query(`UPDATE events SET v = 'bad'`);
    const febBefore = await rows(h.sql, `SELECT * FROM events_feb`);
    const u = h.unit({ id: 'orders-eu', table: 'events', partition: 'events_jan' });
    const deployment = 'at-20261129T093001Z';
    const { point } = await adapter.asOf!(u, at, ctx(deployment, 'plan'));
    const done = (await restoreToEnd(u, point, ctx(deployment, 'run-p'))).at(-1)!;
    expect(done.changes).toMatchObject({ rowsUpdated: 62, rowsQuarantined: 62, temporaryCopiesDeleted: 1 });
    expect(await rows(h.sql, `SELECT * FROM events_jan`)).toEqual(await rows(atTSql, `SELECT * FROM events_jan`));
    expect(await rows(h.sql, `SELECT * FROM events_feb`)).toEqual(febBefore);
  });

  it('a crash between reading the rows at T and the merge: nothing written, the copy kept; the rerun merges without reading again, then deletes the copy', async () => {
    for (const c of [h.sql, atTSql]) {
      await c.query(`CREATE TABLE crash (id int PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO crash SELECT g, 'v' || g FROM generate_series(1, 50) g`);
    }
    await h.sql.query(`UPDATE crash SET v = 'deploy' WHERE id <= 5`);
    const before = await rows(h.sql, `SELECT * FROM crash`);
    const u = h.unit({ id: 'orders-eu', table: 'crash' });
    const deployment = 'at-20261129T093002Z';
    const { point } = await adapter.asOf!(u, at, ctx(deployment, 'plan'));
    const base = ctx(deployment, 'run-crash');
    expect((await adapter.restore(u, point, base)).pending).toBeDefined();
    // The session of the merge (the 3rd connection this call opens: sealed check, extraction, merge) is lost.
    let opened = 0;
    const crashing: AdapterContext = {
      ...base,
      postgres: { ...base.postgres, connect: async (name) => (++opened === 3 ? Promise.reject(new Error('connection lost')) : base.postgres.connect(name)) },
    };
    await expect(adapter.restore(u, point, crashing)).rejects.toThrow('connection lost');
    expect(await rows(h.sql, `SELECT * FROM crash`)).toEqual(before);
    expect(await instanceExists(temporaryIdentifier({ instanceId: sourceId }, 'run-crash', 'orders-eu'))).toBe(true);

    const done = (await restoreToEnd(u, point, base)).at(-1)!;
    expect(done.changes).toMatchObject({ rowsUpdated: 5, temporaryCopiesDeleted: 1 });
    expect(done.changes.rowsExtracted).toBeUndefined();
    expect(await rows(h.sql, `SELECT * FROM crash`)).toEqual(await rows(atTSql, `SELECT * FROM crash`));
    expect(await instanceExists(temporaryIdentifier({ instanceId: sourceId }, 'run-crash', 'orders-eu'))).toBe(false);
  });

  it('refuses a connection that names no RDS instance, and a time outside the window (naming it), touching nothing', async () => {
    const u = h.unit({ id: 'orders-eu', table: 'orders', where: `region = 'eu'` });
    const noRds = await adapter.asOf!(u, at, ctx('at-x', 'plan', null)).catch((e: unknown) => e);
    expect(noRds).toBeInstanceOf(PreflightError);
    expect((noRds as Error).message).toMatch(/connection "warehouse" does not name one\. Add "rds": \{ "instanceId": "…" \}/);

    const early = new Date('2020-02-02T02:02:02Z');
    const outside = await adapter.asOf!(u, early, ctx('at-y', 'plan')).catch((e: unknown) => e);
    expect(outside).toBeInstanceOf(OutsideRestorableWindowError);
    expect((outside as Error).message).toContain(`postgres-table unit "orders-eu" (DB instance ${sourceId}) cannot be restored to 2020-02-02T02:02:02Z`);
    expect((outside as Error).message).toMatch(/restorable window is \[\S+Z, \S+Z\]/);
  });
});
