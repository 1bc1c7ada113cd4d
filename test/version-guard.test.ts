import { describe, expect, it } from 'vitest';
import { versionDeletions } from './support/version-guard.ts';

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
