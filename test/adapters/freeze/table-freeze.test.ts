import mysql from 'mysql2/promise';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freezeUnit, liftRunFreezes, listRunFreezes, type FreezeContext } from '../../../core/adapters/freeze/unit-freeze.ts';
import { mysqlTableUnitSchema, postgresTableUnitSchema } from '../../../core/manifest/schema.ts';
import { testS3, uniqueName } from '../../support/aws.ts';
import { createTestMysqlDatabase, MYSQL_ADMIN_URL, type TestMysqlDatabase } from '../../support/mysql.ts';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.ts';
import { newBucket } from '../s3/helpers.ts';

/**
 * Table write freezes against the real servers: a role with write grants is refused during the freeze — in a session
 * it opened before the freeze too — and has exactly its grants back after (privilege by privilege, grant option
 * included), also after a retried freeze. Roles and accounts are server-wide: each gets a unique name and is dropped.
 */
const suffix = randomBytes(4).toString('hex');
const s3 = testS3();
let stateBucket: string;

function freezeContext(connect: FreezeContext['postgres'] | FreezeContext['mysql'], engine: 'postgres' | 'mysql'): FreezeContext {
  const refuse = { connect: () => Promise.reject(new Error(`no ${engine === 'postgres' ? 'MySQL' : 'PostgreSQL'} here`)) };
  return {
    pipeline: 'sales',
    s3,
    stateBucket,
    postgres: engine === 'postgres' ? (connect as FreezeContext['postgres']) : (refuse as FreezeContext['postgres']),
    mysql: engine === 'mysql' ? (connect as FreezeContext['mysql']) : (refuse as FreezeContext['mysql']),
    now: () => new Date(),
    log: { info: () => undefined, warn: () => undefined },
  };
}

beforeAll(async () => {
  stateBucket = await newBucket('state', false);
});

describe('postgres-table write freeze (REVOKE/GRANT)', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  const only = `wf_insert_${suffix}`;
  const many = `wf_write_${suffix}`;
  const member = `wf_member_${suffix}`;
  const asRole = async (role: string) => {
    const c = new pg.Client({ connectionString: db.url.replace('//postgres@', `//${role}@`) });
    await c.connect();
    return c;
  };
  const acl = async () =>
    (await admin.query<{ g: string }>(
      `SELECT r.rolname || ':' || a.privilege_type || ':' || a.is_grantable AS g
         FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = 'public.orders'::regclass ORDER BY 1`,
    )).rows.map((r) => r.g);
  const ctx = () => freezeContext({ connect: async () => { const c = new pg.Client({ connectionString: db.url }); await c.connect(); return c; } }, 'postgres');
  const unit = (roles: string[]) => postgresTableUnitSchema.parse({ id: 'orders', type: 'postgres-table', connection: 'warehouse', table: 'orders', freeze: { revokeFrom: roles } });

  beforeAll(async () => {
    db = await createTestDatabase('freeze');
    admin = await db.client();
    await admin.query(`
      CREATE TABLE orders (id int PRIMARY KEY, v text);
      INSERT INTO orders VALUES (1, 'a');
      CREATE ROLE ${only} LOGIN; CREATE ROLE ${many} LOGIN; CREATE ROLE ${member} LOGIN;
      GRANT SELECT, INSERT ON orders TO ${only};
      GRANT SELECT ON orders TO ${many};
      GRANT INSERT, UPDATE, DELETE, TRUNCATE ON orders TO ${many} WITH GRANT OPTION;
      GRANT ${many} TO ${member};`);
  });
  afterAll(async () => {
    for (const role of [member, only, many]) await admin.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => undefined);
    await db.drop();
  });

  it('refuses the roles\' writes (an open session included) and gives back exactly their grants, after a retried freeze too', async () => {
    const before = await acl();
    expect(before).toContain(`${only}:INSERT:false`);
    const early = await asRole(only);
    const runId = uniqueName('run');
    const c = ctx();
    await freezeUnit(unit([only, many]), c, { runId, principals: [] });
    await freezeUnit(unit([only, many]), c, { runId, principals: [] });
    expect(await acl()).toEqual(before.filter((g) => !((g.startsWith(`${only}:`) || g.startsWith(`${many}:`)) && /:(INSERT|UPDATE|DELETE|TRUNCATE):/.test(g))));

    await expect(early.query(`INSERT INTO orders VALUES (2, 'late')`)).rejects.toMatchObject({ code: '42501' });
    const writer = await asRole(many);
    await expect(writer.query(`UPDATE orders SET v = 'late'`)).rejects.toMatchObject({ code: '42501' });
    await expect(writer.query(`TRUNCATE orders`)).rejects.toMatchObject({ code: '42501' });
    expect((await early.query('SELECT count(*)::int AS n FROM orders')).rows[0]).toEqual({ n: 1 });

    const [record] = await listRunFreezes(c, runId);
    expect(record).toMatchObject({ kind: 'postgres-table', roles: [only, many] });

    expect(await liftRunFreezes(c, runId)).toEqual({ lifted: ['orders'] });
    expect(await acl()).toEqual(before);
    await early.query(`INSERT INTO orders VALUES (2, 'after')`);
    // Only INSERT came back to the role that had only INSERT.
    await expect(early.query(`UPDATE orders SET v = 'x'`)).rejects.toMatchObject({ code: '42501' });
    await writer.query(`UPDATE orders SET v = 'after' WHERE id = 1`);
    await early.end();
    await writer.end();
  });

  it('refuses a role that would still write through a role it belongs to, and leaves every grant as it was', async () => {
    const before = await acl();
    const runId = uniqueName('run');
    await expect(freezeUnit(unit([member]), ctx(), { runId, principals: [] })).rejects.toMatchObject({
      name: 'InputError',
      message: expect.stringContaining(`role "${member}" can still INSERT, UPDATE, DELETE, TRUNCATE on public.orders`),
    });
    expect(await acl()).toEqual(before);
  });

  it('names a role that does not exist', async () => {
    await expect(freezeUnit(unit(['nobody_here']), ctx(), { runId: uniqueName('run'), principals: [] })).rejects.toThrow(/freeze.revokeFrom names role\(s\) that do not exist: nobody_here/);
  });
});

describe('mysql-table write freeze (REVOKE/GRANT)', () => {
  let db: TestMysqlDatabase;
  let admin: mysql.Connection;
  const only = `wfi_${suffix}`;
  const many = `wfw_${suffix}`;
  const wide = `wfd_${suffix}`;
  const url = new URL(MYSQL_ADMIN_URL.replace(/^mariadb:/, 'mysql:'));
  const asUser = (user: string) => mysql.createConnection({ host: url.hostname, port: Number(url.port || 3306), user, database: db.name });
  const grants = async () =>
    ((await admin.query<mysql.RowDataPacket[]>(
      `SELECT CONCAT(GRANTEE, ':', PRIVILEGE_TYPE, ':', IS_GRANTABLE) AS g FROM information_schema.TABLE_PRIVILEGES
        WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'orders' ORDER BY 1`,
      [db.name],
    ))[0] as { g: string }[]).map((r) => r.g);
  const ctx = () => freezeContext({ connect: () => db.connection() }, 'mysql');
  const unit = (roles: string[]) => mysqlTableUnitSchema.parse({ id: 'orders', type: 'mysql-table', connection: 'warehouse', table: 'orders', freeze: { revokeFrom: roles } });

  beforeAll(async () => {
    db = await createTestMysqlDatabase('freeze');
    admin = await db.connection();
    await admin.query('CREATE TABLE orders (id int PRIMARY KEY, v varchar(20)) ENGINE=InnoDB');
    await admin.query(`INSERT INTO orders VALUES (1, 'a')`);
    for (const u of [only, many, wide]) await admin.query(`CREATE USER '${u}'@'%'`);
    await admin.query(`GRANT SELECT, INSERT ON \`${db.name}\`.orders TO '${only}'@'%'`);
    await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE, DROP ON \`${db.name}\`.orders TO '${many}'@'%' WITH GRANT OPTION`);
    await admin.query(`GRANT INSERT ON \`${db.name}\`.* TO '${wide}'@'%'`);
  });
  afterAll(async () => {
    for (const u of [only, many, wide]) await admin.query(`DROP USER IF EXISTS '${u}'@'%'`).catch(() => undefined);
    await db.drop();
  });

  it('refuses the accounts\' writes (an open session included) and gives back exactly their grants, after a retried freeze too', async () => {
    const before = await grants();
    const early = await asUser(only);
    const runId = uniqueName('run');
    const c = ctx();
    await freezeUnit(unit([only, `${many}@%`]), c, { runId, principals: [] });
    await freezeUnit(unit([only, `${many}@%`]), c, { runId, principals: [] });
    expect(await grants()).toEqual(before.filter((g) => !/:(INSERT|UPDATE|DELETE|DROP):/.test(g)));
    await expect(early.query(`INSERT INTO orders VALUES (2, 'late')`)).rejects.toMatchObject({ errno: 1142 });
    const writer = await asUser(many);
    await expect(writer.query(`DELETE FROM orders`)).rejects.toMatchObject({ errno: 1142 });
    await expect(writer.query(`TRUNCATE orders`)).rejects.toMatchObject({ errno: 1142 });

    expect(await liftRunFreezes(c, runId)).toEqual({ lifted: ['orders'] });
    expect(await grants()).toEqual(before);
    await early.query(`INSERT INTO orders VALUES (2, 'after')`);
    await expect(early.query(`UPDATE orders SET v = 'x'`)).rejects.toMatchObject({ errno: 1142 });
    await writer.query(`UPDATE orders SET v = 'after' WHERE id = 1`);
    await early.end();
    await writer.end();
  });

  it('refuses an account that writes through a database-wide grant, revoking nothing', async () => {
    const before = await grants();
    await expect(freezeUnit(unit([only, wide]), ctx(), { runId: uniqueName('run'), principals: [] })).rejects.toMatchObject({
      name: 'InputError',
      message: expect.stringContaining(`'${wide}'@'%' has INSERT on database ${db.name}`),
    });
    expect(await grants()).toEqual(before);
  });
});
