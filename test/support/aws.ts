import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { randomBytes } from 'node:crypto';

/** SDK clients for tests: endpoint and credentials come from the environment, as in production. */
export function testS3(): S3Client {
  return new S3Client({ forcePathStyle: true });
}

export function testDynamo(): DynamoDBClient {
  return new DynamoDBClient({});
}

/** A name no other test uses (buckets, tables, pipelines). */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}
