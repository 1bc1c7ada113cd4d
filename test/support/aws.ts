import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { randomBytes } from 'node:crypto';
import { TEST_INTENT_HEADER } from './version-guard.ts';

/** SDK clients for tests: endpoint and credentials come from the environment, as in production. */
export function testS3(): S3Client {
  return new S3Client({ forcePathStyle: true });
}

/**
 * An S3 client for a test that destroys object versions on purpose (a hostile user, a lifecycle rule, a check that
 * Object Lock refuses it): its requests carry the header that tells the version guard (version-guard.ts) so.
 */
export function destroyingS3(): S3Client {
  const client = testS3();
  client.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers[TEST_INTENT_HEADER] = 'destroy-version';
      return next(args);
    },
    { step: 'build', name: 'testIntentDestroyVersion' },
  );
  return client;
}

export function testDynamo(): DynamoDBClient {
  return new DynamoDBClient({});
}

/** A name no other test uses (buckets, tables, pipelines). */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}
