import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { GetBucketPolicyCommand, PutBucketPolicyCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Context } from 'aws-lambda';
import pg from 'pg';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../core/ledger/ledger.ts';
import { testS3, uniqueName } from '../support/aws.ts';
import { createIamUser } from '../support/iam.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';
import { liveContent, newBucket } from '../adapters/s3/helpers.ts';

/**
 * Write freezes through the rollback definition as it is deployed, each Task served by its real handler: a writer keeps
 * writing while a frozen pipeline is restored, and is refused (AccessDenied on the prefix; permission denied on the
 * table, in the session it already held); a change made by someone the freeze does not cover (here the database owner)
 * is named and put back by the second pass; the result is exactly the restore point; and every freeze is lifted at the
 * end — the bucket policy as it was, the writer's grants as they were — on success and on a failing run.
 *
 * The writer is an IAM user of its own in moto. moto evaluates a bucket policy's Deny without the caller's identity (test/adapters/freeze/s3-freeze.test.ts): the
 * statement denies the rollback's own writes there too, so the deploy here leaves the frozen prefix unchanged and its
 * restore writes nothing; the table unit is where the restore writes under a freeze.
 */
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');
process.env.ETL_ROLLBACK_FREEZE_PRINCIPAL_ARNS = 'arn:aws:iam::123456789012:role/etl-rollback-restore';

const s3 = testS3();
let writerS3: S3Client;
const role = `wf_pipeline_${randomBytes(4).toString('hex')}`;

describe('a writer that keeps writing during a frozen rollback', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  let bucket: string;
  let manifestPath: string;
  const pipeline = uniqueName('orders');
  const deployment = 'd-1';
  const ownPolicy = () => ({ Version: '2012-10-17', Statement: [{ Sid: 'KeepBucket', Effect: 'Deny', Principal: '*', Action: 's3:DeleteBucket', Resource: `arn:aws:s3:::${bucket}` }] });
  let before: { rows: string[]; objects: Record<string, string>; acl: string[] };

  const rows = async () => (await admin.query<{ r: string }>('SELECT t::text AS r FROM orders t ORDER BY id')).rows.map((r) => r.r);
  const acl = async () =>
    (await admin.query<{ g: string }>(
      `SELECT r.rolname || ':' || a.privilege_type AS g FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
         JOIN pg_roles r ON r.oid = a.grantee WHERE c.oid = 'orders'::regclass AND r.rolname = $1 ORDER BY 1`,
      [role],
    )).rows.map((r) => r.g);
  const policy = async () => JSON.parse((await s3.send(new GetBucketPolicyCommand({ Bucket: bucket }))).Policy!) as unknown;
  const asWriter = async () => {
    const c = new pg.Client({ connectionString: db.url.replace('//postgres@', `//${role}@`) });
    await c.connect();
    return c;
  };
  const writerPut = async (key: string) =>
    writerS3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'late' })).then(
      () => 'ok',
      (e: { $metadata?: { httpStatusCode?: number } }) => String(e.$metadata?.httpStatusCode),
    );
  const badDeploy = async () => {
    const w = await asWriter();
    await w.query(`UPDATE orders SET amount = -1 WHERE id = 1; INSERT INTO orders VALUES (9, 9)`);
    await w.end();
  };
  const cli = async (...args: string[]) => {
    const { main } = await import('../../cli/main.ts');
    let err = '';
    const code = await main(args, { out: () => undefined, err: (t) => (err += t) });
    return { code, err };
  };

  beforeAll(async () => {
    writerS3 = new S3Client({ forcePathStyle: true, credentials: (await createIamUser(uniqueName('pipeline-writer'))).credentials });
    db = await createTestDatabase('freeze_e2e');
    admin = await db.client();
    await admin.query(`CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL);
      INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 5) g;
      CREATE ROLE ${role} LOGIN; GRANT SELECT, INSERT, UPDATE ON orders TO ${role};`);
    bucket = await newBucket('lake', true);
    for (const key of ['in/a.csv', 'in/b.csv']) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: key }));
    await s3.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(ownPolicy()) }));
    const manifest = {
      pipeline,
      connections: { warehouse: { engine: 'postgres', url: db.url } },
      units: [
        { id: 'raw', type: 's3-prefix', bucket, prefix: 'in/', freeze: true },
        { id: 'orders', type: 'postgres-table', connection: 'warehouse', table: 'orders', freeze: { revokeFrom: [role] } },
      ],
    };
    manifestPath = join(mkdtempSync(join(tmpdir(), 'etl-rollback-')), 'orders.yaml');
    writeFileSync(manifestPath, stringify(manifest));
    const snap = await cli('snapshot', manifestPath, '--deployment', deployment, '--local');
    expect(snap.code, snap.err).toBe(0);
    before = { rows: await rows(), objects: await liveContent(bucket, 'in/'), acl: await acl() };
    expect(before.acl).toEqual([`${role}:INSERT`, `${role}:SELECT`, `${role}:UPDATE`]);
  });
  afterAll(async () => {
    await admin.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => undefined);
    await db.drop();
  });

  it('the dry run names each unit\'s freeze and freezes nothing', async () => {
    const { runLocal } = await import('../../cli/local-runner.ts');
    const out = await runLocal('rollback', { pipeline, deploymentId: deployment, dryRun: true }, { name: uniqueName('run-dry') });
    expect(out.status).toBe('SUCCEEDED');
    const report = (out as { output: { stages: { units: { unitId: string; notes: string[] }[] }[] } }).output;
    const notes = Object.fromEntries(report.stages.flatMap((st) => st.units).map((u) => [u.unitId, u.notes[0]]));
    expect(notes.raw).toMatch(/^write freeze: a bucket policy statement denies writes to s3:\/\/.*\/in\/\*/);
    expect(notes.orders).toBe(`write freeze: INSERT, UPDATE, DELETE, TRUNCATE on orders revoked from ${role} until the run ends (their grants recorded first and put back as they were)`);
    expect(await policy()).toEqual(ownPolicy());
    expect(await acl()).toEqual(before.acl);
  });

  it('refuses the writer during the restore, restores what slipped in by a second pass, and lifts every freeze on success', async () => {
    await badDeploy();
    const { runLocal } = await import('../../cli/local-runner.ts');
    const { handler: realRestore } = await import('../../lambdas/restore-unit.ts');
    const session = await asWriter(); // held from before the freeze
    const seen: Record<string, string> = {};
    const restoreWhileWriting = async (event: unknown, context: Context) => {
      const unitId = (event as { unitId: string }).unitId;
      if (unitId === 'raw') seen.s3 = await writerPut('in/late.csv');
      if (unitId === 'orders') {
        seen.pg = await session.query('INSERT INTO orders VALUES (10, 10)').then(() => 'ok', (e: { code?: string }) => String(e.code));
      }
      const out = await realRestore(event, context);
      // Someone the freeze does not cover changes a row after the restore: the stage's check must catch it.
      if (unitId === 'orders') await admin.query('UPDATE orders SET amount = 777 WHERE id = 2');
      return out;
    };
    const name = uniqueName('run-freeze');
    const out = await runLocal('rollback', { pipeline, deploymentId: deployment }, { name, handlers: { RestoreUnit: restoreWhileWriting } });
    expect(out).toMatchObject({ status: 'SUCCEEDED' });
    expect(seen).toEqual({ s3: '403', pg: '42501' });

    expect(await rows()).toEqual(before.rows);
    expect(await liveContent(bucket, 'in/')).toEqual(before.objects);
    const steps = await new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!).listSteps(name);
    const orders = steps.find((st) => st.unitId === 'orders')!;
    expect(orders.status).toBe('VERIFIED');
    expect(orders.notes.find((n) => n.startsWith('changed during the write freeze: '))).toMatch(/restored again by a second pass \(1 write\(s\)\)/);

    // Lifted: the bucket's own policy exactly, the writer's grants exactly, and the writer writes again.
    expect(await policy()).toEqual(ownPolicy());
    expect(await acl()).toEqual(before.acl);
    expect(await writerPut('in/after.csv')).toBe('ok');
    await session.query('INSERT INTO orders VALUES (11, 11)');
    await session.query('DELETE FROM orders WHERE id = 11').catch(() => undefined);
    await admin.query('DELETE FROM orders WHERE id = 11');
    await session.end();
  });

  it('lifts every freeze when the run fails, without hiding its error', async () => {
    await badDeploy();
    const { runLocal } = await import('../../cli/local-runner.ts');
    const held: string[] = [];
    const failingRestore = async (event: unknown) => {
      const unitId = (event as { unitId: string }).unitId;
      if (unitId === 'orders') {
        held.push(await writerPut('in/during.csv'), String((await acl()).length));
        throw Object.assign(new Error('the warehouse went away'), { name: 'ConnectionLost' });
      }
      return { unitId, stage: 0, writes: 0, done: true, waitSeconds: 0, maxPolls: 1 };
    };
    const name = uniqueName('run-freeze-fail');
    const out = await runLocal('rollback', { pipeline, deploymentId: deployment }, { name, handlers: { RestoreUnit: failingRestore } });
    expect(out).toMatchObject({ status: 'FAILED', error: 'ConnectionLost' });
    // During the run: the prefix frozen, the writer left with SELECT only.
    expect(held).toEqual(['403', '1']);
    expect(await policy()).toEqual(ownPolicy());
    expect(await acl()).toEqual(before.acl);
    expect(await writerPut('in/after-failure.csv')).toBe('ok');
    const { listRunFreezes } = await import('../../core/adapters/freeze/unit-freeze.ts');
    const records = await listRunFreezes({ s3, stateBucket: process.env.ETL_ROLLBACK_STATE_BUCKET!, pipeline }, name);
    expect(records.map((r) => [r.unitId, typeof r.liftedAt])).toEqual([
      ['orders', 'string'],
      ['raw', 'string'],
    ]);
  });
});
