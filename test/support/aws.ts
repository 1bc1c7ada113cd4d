import { DescribeDBClustersCommand, DescribeDBInstancesCommand, type DBCluster, type DBInstance, type RDSClient } from '@aws-sdk/client-rds';
import type { GlueClient } from '@aws-sdk/client-glue';
import { ListObjectVersionsCommand, S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { randomBytes } from 'node:crypto';
import { COUNTS_PATH, TEST_COUNT_HEADER, TEST_INTENT_HEADER } from './version-guard.ts';

/** The endpoint (a version guard in front of its own moto server) the fault matrix points the SDK at (global-setup.ts). */
export const FAULTS_ENDPOINT_ENV = 'ETL_ROLLBACK_TEST_FAULTS_ENDPOINT';

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

/** key → ETag of every current object under a prefix, as S3 computed it from the bytes: a cheap content read-back. */
export async function liveEtags(s3: S3Client, bucket: string, prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker, VersionIdMarker }));
    for (const v of page.Versions ?? []) if (v.IsLatest) out[v.Key!] = v.ETag!;
    if (!page.IsTruncated) return out;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
}

/**
 * Tags every request `client` sends with `tag`, so that the version-guard proxy counts them on the wire (each attempt the
 * SDK makes, retries included); read the counts with requestCounts(tag).
 */
export function countingClient<C extends GlueClient | S3Client | DynamoDBClient>(client: C, tag: string): C {
  (client.middlewareStack as GlueClient['middlewareStack']).add(
    (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers[TEST_COUNT_HEADER] = tag;
      return next(args);
    },
    { step: 'build', name: 'testRequestCounter' },
  );
  return client;
}

/** Requests the proxy saw tagged `tag`, by operation (`GetTable`, `BatchCreatePartition`, `S3 PUT`, …). */
export async function requestCounts(tag: string): Promise<Record<string, number>> {
  const endpoint = process.env.AWS_ENDPOINT_URL;
  if (!endpoint) throw new Error('AWS_ENDPOINT_URL is not set: the tests run behind the version-guard proxy');
  const res = await fetch(`${endpoint}${COUNTS_PATH}${encodeURIComponent(tag)}`);
  return (await res.json()) as Record<string, number>;
}

/**
 * Every DB instance / cluster moto holds, page by page (DescribeDB* answer 100 at a time, and the test run's other
 * files create many): a test that looks for its own by name must not stop at the first page.
 */
export async function allDbInstances(rds: RDSClient): Promise<DBInstance[]> {
  const out: DBInstance[] = [];
  let Marker: string | undefined;
  do {
    const page = await rds.send(new DescribeDBInstancesCommand({ Marker }));
    out.push(...(page.DBInstances ?? []));
    Marker = page.Marker;
  } while (Marker);
  return out;
}

export async function allDbClusters(rds: RDSClient): Promise<DBCluster[]> {
  const out: DBCluster[] = [];
  let Marker: string | undefined;
  do {
    const page = await rds.send(new DescribeDBClustersCommand({ Marker }));
    out.push(...(page.DBClusters ?? []));
    Marker = page.Marker;
  } while (Marker);
  return out;
}
