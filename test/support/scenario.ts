import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import type pg from 'pg';
import { main } from '../../cli/main.ts';
import { testS3, uniqueName } from './aws.ts';
import { createTestDatabase, type TestDatabase } from './postgres.ts';

/**
 * The story of issue #2 on real services: a pipeline with an S3 prefix (raw) and two PostgreSQL tables
 * (staging built from raw, mart built from staging), a restore point, a bad deploy that damages all three.
 */
export interface Scenario {
  pipeline: string;
  bucket: string;
  prefix: string;
  db: TestDatabase;
  sql: pg.Client;
  s3: S3Client;
  manifestPath: string;
  /** Runs the CLI in-process; returns exit code and what it printed. */
  cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Every object under the prefix (and the neighbour prefix) as key → bytes, current versions only. */
  objects(): Promise<Map<string, string>>;
  /** key → number of versions and delete markers (to count writes). */
  versionCounts(): Promise<Map<string, number>>;
  rows(table: string): Promise<unknown[]>;
  drop(): Promise<void>;
}

export async function createScenario(): Promise<Scenario> {
  const s3 = testS3();
  const pipeline = uniqueName('orders');
  const bucket = uniqueName('lake');
  const prefix = 'raw/orders/';
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  const files: Record<string, string> = {
    'raw/orders/2026-11-01.csv': 'id,amount\n1,10\n2,20\n',
    'raw/orders/2026-11-02.csv': 'id,amount\n3,30\n',
    'raw/orders/2026-11-03.csv': 'id,amount\n4,40\n',
    'raw/orders/by day/2026 11 04+late%.csv': 'id,amount\n5,50\n',
    'raw/orders-archive/2026-10-31.csv': 'archived, not part of the unit\n',
  };
  for (const [Key, Body] of Object.entries(files)) await s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body }));

  const db = await createTestDatabase('e2e');
  const sql = await db.client();
  await sql.query(`
    CREATE SCHEMA staging; CREATE SCHEMA mart;
    CREATE TABLE staging.orders (id int PRIMARY KEY, amount numeric(12,2) NOT NULL, day date NOT NULL, note text);
    INSERT INTO staging.orders SELECT g, g * 10, date '2026-11-01' + (g % 5), CASE WHEN g % 7 = 0 THEN NULL ELSE 'ok' END FROM generate_series(1, 500) g;
    CREATE TABLE mart.daily_orders (day date PRIMARY KEY, orders int NOT NULL, revenue numeric(14,2) NOT NULL);
    INSERT INTO mart.daily_orders SELECT day, count(*), sum(amount) FROM staging.orders GROUP BY day;
  `);

  const manifest = {
    pipeline,
    connections: { warehouse: { engine: 'postgres', url: db.url } },
    units: [
      { id: 'raw', type: 's3-prefix', bucket, prefix },
      { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'staging.orders', dependsOn: ['raw'] },
      { id: 'mart', type: 'postgres-table', connection: 'warehouse', table: 'mart.daily_orders', dependsOn: ['staging'] },
    ],
  };
  const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-'));
  const manifestPath = join(dir, 'orders.yaml');
  writeFileSync(manifestPath, stringify(manifest));

  return {
    pipeline,
    bucket,
    prefix,
    db,
    sql,
    s3,
    manifestPath,
    async cli(...args) {
      let stdout = '';
      let stderr = '';
      const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
      return { code, stdout, stderr };
    },
    async objects() {
      const out = new Map<string, string>();
      for (const p of [prefix, 'raw/orders-archive/']) {
        const list = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: p }));
        for (const v of list.Versions ?? []) {
          if (!v.IsLatest) continue;
          const obj = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: v.Key! }));
          out.set(v.Key!, await obj.Body!.transformToString());
        }
      }
      return out;
    },
    async versionCounts() {
      const list = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'raw/' }));
      const counts = new Map<string, number>();
      for (const v of [...(list.Versions ?? []), ...(list.DeleteMarkers ?? [])]) counts.set(v.Key!, (counts.get(v.Key!) ?? 0) + 1);
      return counts;
    },
    async rows(table) {
      const key = table === 'mart.daily_orders' ? 'day' : 'id';
      return (await sql.query(`SELECT * FROM ${table} ORDER BY ${key}`)).rows;
    },
    async drop() {
      await db.drop();
    },
  };
}

/** The bad deploy: every kind of damage to every unit. */
export async function badDeploy(s: Scenario): Promise<void> {
  const put = (Key: string, Body: string) => s.s3.send(new PutObjectCommand({ Bucket: s.bucket, Key, Body }));
  await put('raw/orders/2026-11-01.csv', 'id,amount\n1,-999\n'); // modified
  await put('raw/orders/2026-11-05.csv', 'id,amount\n9,90\n'); // added
  await s.s3.send(new DeleteObjectCommand({ Bucket: s.bucket, Key: 'raw/orders/2026-11-02.csv' })); // deleted (delete marker only)
  await s.s3.send(new DeleteObjectCommand({ Bucket: s.bucket, Key: 'raw/orders/by day/2026 11 04+late%.csv' }));
  await put('raw/orders/by day/2026 11 04+late%.csv', 'id,amount\n5,0\n'); // deleted, then re-created with other bytes
  await s.sql.query(`
    INSERT INTO staging.orders VALUES (501, 1, '2026-11-09', 'dup'), (502, 2, '2026-11-09', 'dup');
    UPDATE staging.orders SET amount = amount * 100 WHERE id IN (10, 20, 30);
    DELETE FROM staging.orders WHERE id IN (40, 41);
    DELETE FROM mart.daily_orders;
    INSERT INTO mart.daily_orders SELECT day, count(*), sum(amount) FROM staging.orders GROUP BY day;
  `);
}
