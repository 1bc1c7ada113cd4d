import { CreateBucketCommand, DeleteObjectCommand, PutBucketVersioningCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type pg from 'pg';

/**
 * The orders pipeline of the README, as data: a versioned lake bucket with raw order files, a staging table
 * built from them and a mart built from staging; and the bad deploy that damages all three. Shared by the
 * demo and the end-to-end tests, so the demo shows exactly what the tests prove.
 */
export interface OrdersWorld {
  s3: S3Client;
  sql: pg.Client;
  bucket: string;
}

export const RAW_PREFIX = 'raw/orders/';
export const NEIGHBOUR_PREFIX = 'raw/orders-archive/';

export const RAW_FILES: Record<string, string> = {
  'raw/orders/2026-11-01.csv': 'id,amount\n1,10\n2,20\n',
  'raw/orders/2026-11-02.csv': 'id,amount\n3,30\n',
  'raw/orders/2026-11-03.csv': 'id,amount\n4,40\n',
  'raw/orders/by day/2026 11 04+late%.csv': 'id,amount\n5,50\n',
  'raw/orders-archive/2026-10-31.csv': 'archived, not part of the unit\n',
};

export async function seedOrders(w: OrdersWorld): Promise<void> {
  await w.s3.send(new CreateBucketCommand({ Bucket: w.bucket }));
  await w.s3.send(new PutBucketVersioningCommand({ Bucket: w.bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  for (const [Key, Body] of Object.entries(RAW_FILES)) await w.s3.send(new PutObjectCommand({ Bucket: w.bucket, Key, Body }));
  await w.sql.query(`
    CREATE SCHEMA IF NOT EXISTS staging; CREATE SCHEMA IF NOT EXISTS mart;
    DROP TABLE IF EXISTS staging.orders, mart.daily_orders;
    CREATE TABLE staging.orders (id int PRIMARY KEY, amount numeric(12,2) NOT NULL, day date NOT NULL, note text);
    INSERT INTO staging.orders SELECT g, g * 10, date '2026-11-01' + (g % 5), CASE WHEN g % 7 = 0 THEN NULL ELSE 'ok' END FROM generate_series(1, 500) g;
    CREATE TABLE mart.daily_orders (day date PRIMARY KEY, orders int NOT NULL, revenue numeric(14,2) NOT NULL);
    INSERT INTO mart.daily_orders SELECT day, count(*), sum(amount) FROM staging.orders GROUP BY day;
  `);
}

/** The bad deploy: every kind of damage to every unit. Returns what it did, for people. */
export async function breakOrders(w: OrdersWorld): Promise<string[]> {
  const put = (Key: string, Body: string) => w.s3.send(new PutObjectCommand({ Bucket: w.bucket, Key, Body }));
  await put('raw/orders/2026-11-01.csv', 'id,amount\n1,-999\n');
  await put('raw/orders/2026-11-05.csv', 'id,amount\n9,90\n');
  await w.s3.send(new DeleteObjectCommand({ Bucket: w.bucket, Key: 'raw/orders/2026-11-02.csv' }));
  await w.s3.send(new DeleteObjectCommand({ Bucket: w.bucket, Key: 'raw/orders/by day/2026 11 04+late%.csv' }));
  await put('raw/orders/by day/2026 11 04+late%.csv', 'id,amount\n5,0\n');
  await w.sql.query(`
    INSERT INTO staging.orders VALUES (501, 1, '2026-11-09', 'dup'), (502, 2, '2026-11-09', 'dup');
    UPDATE staging.orders SET amount = amount * 100 WHERE id IN (10, 20, 30);
    DELETE FROM staging.orders WHERE id IN (40, 41);
    DELETE FROM mart.daily_orders;
    INSERT INTO mart.daily_orders SELECT day, count(*), sum(amount) FROM staging.orders GROUP BY day;
  `);
  return [
    's3: overwrote raw/orders/2026-11-01.csv, added 2026-11-05.csv, deleted 2026-11-02.csv, deleted and re-created "by day/2026 11 04+late%.csv"',
    'staging.orders: inserted 2 duplicate rows, multiplied 3 amounts by 100, deleted 2 rows',
    'mart.daily_orders: rebuilt from the bad staging rows',
  ];
}

export function ordersManifest(names: { pipeline: string; bucket: string; databaseUrl: string }) {
  return {
    pipeline: names.pipeline,
    description: 'Nightly orders load: raw files in S3, staged and aggregated in the warehouse.',
    connections: { warehouse: { engine: 'postgres' as const, url: names.databaseUrl } },
    units: [
      { id: 'raw', type: 's3-prefix' as const, bucket: names.bucket, prefix: RAW_PREFIX },
      { id: 'staging', type: 'postgres-table' as const, connection: 'warehouse', table: 'staging.orders', dependsOn: ['raw'] },
      { id: 'mart', type: 'postgres-table' as const, connection: 'warehouse', table: 'mart.daily_orders', dependsOn: ['staging'] },
    ],
  };
}
