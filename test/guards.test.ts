import { describe, expect, it } from 'vitest';
import { s3RequestOf, versionDeletions } from './support/version-guard.ts';

describe('the version guard reads which versions a request removes for good', () => {
  it('DeleteObject with a version id (path style, encoded key); without one it removes nothing for good', () => {
    const u = new URL('http://x/data-1/orders/a%20b%26c.csv?versionId=v%2B1&x-id=DeleteObject');
    expect(versionDeletions('DELETE', u, Buffer.alloc(0))).toEqual([{ bucket: 'data-1', key: 'orders/a b&c.csv', versionId: 'v+1' }]);
    expect(versionDeletions('DELETE', new URL('http://x/data-1/orders/a.csv?x-id=DeleteObject'), Buffer.alloc(0))).toEqual([]);
  });

  it('DeleteObjects: the entries with a VersionId, XML entities decoded', () => {
    const body = Buffer.from(
      '<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>k&amp;1</Key><VersionId>v1</VersionId></Object>' +
        '<Object><Key>plain</Key></Object><Object><Key>k2</Key><VersionId>v&lt;2</VersionId></Object><Quiet>true</Quiet></Delete>',
    );
    expect(versionDeletions('POST', new URL('http://x/data-1?delete&x-id=DeleteObjects'), body)).toEqual([
      { bucket: 'data-1', key: 'k&1', versionId: 'v1' },
      { bucket: 'data-1', key: 'k2', versionId: 'v<2' },
    ]);
    expect(versionDeletions('GET', new URL('http://x/data-1?versions'), Buffer.alloc(0))).toEqual([]);
  });
});

describe('the S3 request log reads which bucket and key a mutating request writes', () => {
  const signed = (service: string) => ({ authorization: `AWS4-HMAC-SHA256 Credential=testing/20261129/us-east-1/${service}/aws4_request, SignedHeaders=host, Signature=x`, 'user-agent': 'ua' });
  it('a copy names its target and, apart, its source; requests to other services are not S3 requests', () => {
    const copy = s3RequestOf('PUT', new URL('http://x/state-1/drills/run-1/raw/a%20b.csv?x-id=CopyObject'), { ...signed('s3'), 'x-amz-copy-source': 'lake-1/raw/orders/a%20b.csv?versionId=v1' });
    expect(copy).toEqual({ method: 'PUT', bucket: 'state-1', key: 'drills/run-1/raw/a b.csv', query: 'x-id=CopyObject', copySource: 'lake-1/raw/orders/a b.csv?versionId=v1', userAgent: 'ua' });
    expect(s3RequestOf('POST', new URL('http://x/lake-1?delete'), signed('s3'))).toMatchObject({ bucket: 'lake-1', key: '', query: 'delete' });
    expect(s3RequestOf('POST', new URL('http://x/'), signed('dynamodb'))).toBeUndefined();
  });
});

describe('the drop guard of the test databases', () => {
  it('records tables dropped by etl-rollback sessions outside etl_rollback, and fails the database\'s drop()', async () => {
    const { createTestDatabase } = await import('./support/postgres.ts');
    const pg = (await import('pg')).default;
    const db = await createTestDatabase('guard');
    const session = new pg.Client({ connectionString: db.url, application_name: 'etl-rollback' });
    await session.connect();
    await session.query('CREATE SCHEMA etl_rollback; CREATE TABLE etl_rollback.rp_x (id int); CREATE TABLE public.orders (id int)');
    await session.query('DROP TABLE etl_rollback.rp_x'); // its own table: allowed
    await session.query('CREATE SCHEMA etl_rollback_drill_0a1b2c3d; CREATE TABLE etl_rollback_drill_0a1b2c3d.staging (id int)');
    await session.query('DROP TABLE etl_rollback_drill_0a1b2c3d.staging'); // a drill's scratch copy: allowed
    await session.query('DROP TABLE public.orders'); // a table it protects: recorded
    await session.end();
    await expect(db.drop()).rejects.toThrow(/etl-rollback dropped table\(s\) of the database it protects: public\.orders \(DROP TABLE public\.orders\)/);
  });
});
