import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { describeFreeze } from '../../core/adapters/freeze/unit-freeze.ts';
import { ManifestError } from '../../core/errors.ts';
import { validateManifest } from '../../core/manifest/load.ts';

const base = (units: unknown[]) => ({
  pipeline: 'orders',
  connections: { warehouse: { engine: 'postgres', url: 'postgres://postgres@127.0.0.1:5432/x' }, shop: { engine: 'mysql', url: 'mysql://root@127.0.0.1:3306/shop' } },
  units,
});

function issues(units: unknown[]): string {
  try {
    validateManifest(base(units));
  } catch (error) {
    expect(error).toBeInstanceOf(ManifestError);
    return (error as Error).message;
  }
  throw new Error('expected the manifest to be refused');
}

describe('manifest: freeze', () => {
  it('takes freeze: true on an s3 prefix and revokeFrom on tables, and says which freeze applies to which unit', () => {
    const m = validateManifest(
      base([
        { id: 'raw', type: 's3-prefix', bucket: 'orders-lake', prefix: 'raw/', freeze: true },
        { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'staging.orders', freeze: { revokeFrom: ['loader'] } },
        { id: 'carts', type: 'mysql-table', connection: 'shop', table: 'carts', freeze: { revokeFrom: ['etl', 'etl@10.0.0.%'] } },
        { id: 'mart', type: 'postgres-table', connection: 'warehouse', table: 'mart.daily' },
      ]),
    );
    expect(m.units.map(describeFreeze)).toEqual([
      "write freeze: a bucket policy statement denies writes to s3://orders-lake/raw/* to every principal but the rollback's, until the run ends",
      'write freeze: INSERT, UPDATE, DELETE, TRUNCATE on staging.orders revoked from loader until the run ends (their grants recorded first and put back as they were)',
      "write freeze: INSERT, UPDATE, DELETE, DROP on carts revoked from 'etl'@'%', 'etl'@'10.0.0.%' until the run ends (their grants recorded first and put back as they were)",
      undefined,
    ]);
  });

  it('refuses a table lock, naming why, an empty role list, and a role name that could break out of the statement', () => {
    expect(issues([{ id: 't', type: 'postgres-table', connection: 'warehouse', table: 't', freeze: { revokeFrom: ['a'], lock: true } }])).toMatch(
      /units\[0\]\.freeze\.lock: a table lock cannot be held across the rollback's stages/,
    );
    expect(issues([{ id: 't', type: 'postgres-table', connection: 'warehouse', table: 't', freeze: { revokeFrom: [] } }])).toMatch(/units\[0\]\.freeze\.revokeFrom/);
    expect(issues([{ id: 't', type: 'mysql-table', connection: 'shop', table: 't', freeze: { revokeFrom: ["x'; DROP"] } }])).toMatch(/units\[0\]\.freeze\.revokeFrom\[0\]: must be a role name/);
    expect(issues([{ id: 't', type: 'postgres-table', connection: 'warehouse', table: 't', freeze: true }])).toMatch(/units\[0\]\.freeze/);
    expect(issues([{ id: 'db', type: 'rds-instance', instanceId: 'orders-db', freeze: true }])).toMatch(/units\[0\]/);
  });

  it('the plan names the freeze under each frozen unit', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'etl-rollback-')), 'orders.yaml');
    writeFileSync(
      file,
      stringify(
        base([
          { id: 'raw', type: 's3-prefix', bucket: 'orders-lake', prefix: 'raw/', freeze: true },
          { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'staging.orders', dependsOn: ['raw'] },
        ]),
      ),
    );
    let out = '';
    expect(await main(['plan', file], { out: (t) => (out += `${t}\n`), err: () => undefined })).toBe(0);
    expect(out).toContain('    raw (s3-prefix s3://orders-lake/raw/)\n      write freeze: a bucket policy statement denies writes to s3://orders-lake/raw/*');
    expect(out).toMatch(/staging \(postgres-table warehouse:staging\.orders\)[^\n]*\n(?! {6}write freeze)/);
  });
});
