import { describe, expect, it } from 'vitest';
import { CreateBucketCommand, ListBucketsCommand } from '@aws-sdk/client-s3';
import { testS3, uniqueName } from './support/aws.ts';
import { createTestDatabase } from './support/postgres.ts';

describe('test harness', () => {
  it('reaches moto through AWS_ENDPOINT_URL', async () => {
    const s3 = testS3();
    const bucket = uniqueName('harness');
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const out = await s3.send(new ListBucketsCommand({}));
    expect(out.Buckets?.map((b) => b.Name)).toContain(bucket);
  });

  it('creates and drops a PostgreSQL database of its own', async () => {
    const db = await createTestDatabase();
    const c = await db.client();
    const { rows } = await c.query('select current_database() as name');
    expect(rows[0].name).toBe(db.name);
    await db.drop();
  });
});
