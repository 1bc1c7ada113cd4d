import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateDBInstanceCommand, DescribeDBInstancesCommand, RDSClient } from '@aws-sdk/client-rds';
import { mysqlTable as adapter, type MysqlTableDetails } from '../../core/adapters/mysql-table.ts';
import { temporaryIdentifier } from '../../core/adapters/rds/temporary-copy.ts';
import { isoUtc } from '../../core/adapters/rds/window.ts';
import type { AdapterContext, Outcome, RestorePoint } from '../../core/adapters/types.ts';
import { OutsideRestorableWindowError, PreflightError } from '../../core/errors.ts';
import { connectionSchema, type MysqlTableUnit } from '../../core/manifest/schema.ts';
import { mysqlConnector, type MysqlConnector } from '../../core/runtime/connections.ts';
import { allDbInstances, uniqueName } from '../support/aws.ts';
import { createTestMysqlDatabase, type TestMysqlDatabase } from '../support/mysql.ts';
import { mysqlAdapterContext, mysqlRows, mysqlUnit } from '../support/mysql-adapter.ts';

// `--to` for a mysql-table unit against real MariaDB, the point-in-time copy's control path against moto's RDS API.
// moto's endpoints do not resolve: connectTo maps the copy's endpoint (checked to be the one moto reports for it) to a
// second local database holding the table as it was at T, standing in for the temporary instance. The manifest's
// connection names the RDS instance (`rds`), parsed by the manifest schema, and the real connector answers rdsOf.

const rds = new RDSClient({});
let prod: TestMysqlDatabase;
let atT: TestMysqlDatabase;
let sql: mysql.Connection;
let atTSql: mysql.Connection;
let sourceId: string;
let at: Date;
let connector: MysqlConnector;

beforeAll(async () => {
  prod = await createTestMysqlDatabase('pitrprod');
  atT = await createTestMysqlDatabase('pitrat');
  sql = await prod.connection();
  atTSql = await atT.connection();
  sourceId = uniqueName('mysrc');
  await rds.send(
    new CreateDBInstanceCommand({ DBInstanceIdentifier: sourceId, Engine: 'mysql', DBInstanceClass: 'db.t3.micro', AllocatedStorage: 20, MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', BackupRetentionPeriod: 2 }),
  );
  const real = mysqlConnector({
    warehouse: connectionSchema.parse({ engine: 'mysql', url: prod.url, rds: { instanceId: sourceId } }),
    'stand-in': connectionSchema.parse({ engine: 'mysql', url: atT.url }),
  });
  connector = {
    connect: (name) => real.connect(name),
    rdsOf: (name) => real.rdsOf!(name),
    async connectTo(_name, endpoint) {
      const copies = await allDbInstances(rds);
      const copy = copies.find((i) => i.DBInstanceIdentifier?.startsWith(`${sourceId}-pitr-`));
      expect(endpoint).toEqual({ host: copy?.Endpoint?.Address, port: copy?.Endpoint?.Port });
      return real.connect('stand-in');
    },
  };
  await new Promise((r) => setTimeout(r, 1100));
  at = new Date(Date.now() - 100);
});
afterAll(async () => {
  await atT?.drop();
  await prod?.drop();
});

const ctx = (deploymentId: string, runId: string, mysql: MysqlConnector = connector): AdapterContext => mysqlAdapterContext({ pipeline: 'shop', deploymentId, runId, mysql });

async function restoreToEnd(u: MysqlTableUnit, point: RestorePoint<MysqlTableDetails>, c: AdapterContext): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (let calls = 1; calls <= 10; calls++) {
    const o = await adapter.restore(u, point, c);
    outcomes.push(o);
    if (!o.pending) return outcomes;
  }
  throw new Error('restore did not finish in 10 calls');
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

describe('mysql-table --to (point-in-time restore and merge)', () => {
  it('restores a where scope to its rows at T, writing only differing rows, quarantining what it replaces, then deletes the copy; a rerun writes nothing', async () => {
    for (const c of [sql, atTSql]) {
      await c.query(`CREATE TABLE carts (id INT PRIMARY KEY, shop VARCHAR(10) NOT NULL, total DECIMAL(10,2), blob_col VARBINARY(8), at_ts DATETIME(3), doc JSON) ENGINE=InnoDB`);
      await c.query(
        `INSERT INTO carts SELECT seq, IF(seq % 2 = 0, 'north', 'south'), seq * 1.25, UNHEX(LPAD(HEX(seq), 4, '0')), '2026-01-01 00:00:00.000' + INTERVAL seq SECOND, JSON_OBJECT('n', seq) FROM seq_1_to_120`,
      );
    }
    await sql.query(`UPDATE carts SET total = -1, doc = NULL WHERE id IN (2, 4)`);
    await sql.query(`DELETE FROM carts WHERE id IN (6, 8, 10)`);
    await sql.query(`INSERT INTO carts (id, shop, total) VALUES (500, 'north', 1), (501, 'south', 2)`);
    await sql.query(`UPDATE carts SET total = 0 WHERE id IN (1, 3)`);
    const southBefore = await mysqlRows(sql, prod.name, 'carts', `shop <> 'north'`);

    const u = mysqlUnit('carts-north', 'carts', { where: `shop = 'north'` });
    const deployment = 'at-20261129T093000Z';
    const { point, shows } = await adapter.asOf(u, at, ctx(deployment, 'plan'));
    expect(point.details.capture).toBe('point-in-time');
    expect(point.details.pointInTime).toEqual({ rds: { instanceId: sourceId }, time: isoUtc(at) });
    expect(point.count).toBe(58);
    expect(shows[0]).toContain(`read from a point-in-time copy of DB instance ${sourceId}`);

    const c1 = ctx(deployment, 'run-m1');
    const copyId = temporaryIdentifier({ instanceId: sourceId }, 'run-m1', 'carts-north');
    const outcomes = await restoreToEnd(u, point, c1);
    expect(outcomes[0]!.pending?.status).toContain(copyId);
    const done = outcomes.at(-1)!;
    expect(done.changes).toMatchObject({ rowsExtracted: 60, rowsUpdated: 2, rowsInserted: 3, rowsDeleted: 1, temporaryCopiesDeleted: 1 });

    expect(await mysqlRows(sql, prod.name, 'carts', `shop = 'north'`)).toEqual(await mysqlRows(atTSql, atT.name, 'carts', `shop = 'north'`));
    expect(await mysqlRows(sql, prod.name, 'carts', `shop <> 'north'`)).toEqual(southBefore);
    const [kept] = await sql.query<mysql.RowDataPacket[]>(`SELECT id FROM ${done.keptAt!} ORDER BY id`);
    expect(kept.map((r) => Number(r.id))).toEqual([2, 4, 500]);
    expect(await instanceExists(copyId)).toBe(false);
    expect((await adapter.verify(u, point, c1)).every((ch) => ch.ok)).toBe(true);

    const again = await restoreToEnd(u, point, c1);
    expect(again.reduce((n, o) => n + o.writes, 0)).toBe(0);
  });

  it('refuses a connection that names no RDS instance, and a time outside the window (naming it)', async () => {
    const u = mysqlUnit('carts-north', 'carts', { where: `shop = 'north'` });
    const plain = mysqlConnector({ warehouse: connectionSchema.parse({ engine: 'mysql', url: prod.url }) });
    await expect(adapter.asOf(u, at, ctx('at-x', 'plan', plain))).rejects.toThrow(PreflightError);
    await expect(adapter.asOf(u, at, ctx('at-x', 'plan', plain))).rejects.toThrow(/connection "warehouse" does not name one/);
    const error = await adapter.asOf(u, new Date('2019-09-09T09:09:09Z'), ctx('at-y', 'plan')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutsideRestorableWindowError);
    expect((error as Error).message).toMatch(new RegExp(`mysql-table unit "carts-north" \\(DB instance ${sourceId}\\) cannot be restored to 2019-09-09T09:09:09Z.*restorable window is \\[\\S+Z, \\S+Z\\]`));
  });

  it('the manifest schema checks the connection\'s rds field', () => {
    expect(connectionSchema.safeParse({ engine: 'mysql', url: 'mysql://h/db', rds: { instanceId: 'ok-1' } }).success).toBe(true);
    expect(connectionSchema.safeParse({ engine: 'mysql', url: 'mysql://h/db', rds: { clusterId: 'c1' } }).success).toBe(true);
    const bad = connectionSchema.safeParse({ engine: 'mysql', url: 'mysql://h/db', rds: { instance: 'x' } });
    expect(bad.success).toBe(false);
    expect(JSON.stringify(bad.error?.issues)).toContain('"instanceId"');
  });
});
