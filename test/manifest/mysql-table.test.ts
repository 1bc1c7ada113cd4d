import { describe, expect, it } from 'vitest';
import { ManifestError, type ManifestIssue } from '../../core/errors.ts';
import { parseManifest } from '../../core/manifest/load.ts';

const VALID = `
pipeline: shop
connections:
  shopdb:
    engine: mysql
    url: mariadb://etl@127.0.0.1:3306/shop
  warehouse:
    engine: postgres
    url: postgres://postgres@127.0.0.1:5432/wh
units:
  - id: orders
    type: mysql-table
    connection: shopdb
    table: shop.orders
  - id: events
    type: mysql-table
    connection: shopdb
    table: events
    partition: [p2024, p2025]
    where: "day >= '2024-11-01'"
    dependsOn: [orders]
    checks: { count: true, checksum: false }
    assertions:
      - name: no negative totals
        sql: SELECT COUNT(*) = 0 FROM events WHERE total < 0
        timeoutSeconds: 5
`;

function issuesOf(text: string): ManifestIssue[] {
  try {
    parseManifest(text, 'shop.yaml');
  } catch (error) {
    expect(error).toBeInstanceOf(ManifestError);
    return (error as ManifestError).issues;
  }
  throw new Error('expected a ManifestError, but the manifest was accepted');
}

function edit(from: string, to: string): string {
  expect(VALID.split(from)).toHaveLength(2);
  return VALID.replace(from, to);
}

describe('manifest: mysql-table units', () => {
  it('accepts table, database.table, a partition (one or a list), a where predicate and assertions', () => {
    const manifest = parseManifest(VALID);
    expect(manifest.units[0]).toEqual({ id: 'orders', type: 'mysql-table', connection: 'shopdb', table: 'shop.orders', dependsOn: [], checks: { count: true, checksum: true } });
    expect(manifest.units[1]).toMatchObject({
      type: 'mysql-table',
      table: 'events',
      partition: ['p2024', 'p2025'],
      where: "day >= '2024-11-01'",
      checks: { count: true, checksum: false },
      assertions: [{ name: 'no negative totals', timeoutSeconds: 5 }],
    });
    expect(parseManifest(edit('partition: [p2024, p2025]', 'partition: p2024')).units[1]).toMatchObject({ partition: 'p2024' });
  });

  it('refuses a mysql-table unit on a postgres connection, naming both engines', () => {
    const issues = issuesOf(edit('    connection: shopdb\n    table: shop.orders', '    connection: warehouse\n    table: shop.orders'));
    expect(issues).toEqual([
      {
        path: 'units[0].connection',
        message: expect.stringContaining('connection "warehouse" has engine "postgres", but a mysql-table unit needs a mysql connection'),
      },
    ]);
  });

  it('refuses an unknown connection with the known ones', () => {
    const issues = issuesOf(edit('    connection: shopdb\n    table: shop.orders', '    connection: shop\n    table: shop.orders'));
    expect(issues).toEqual([{ path: 'units[0].connection', message: expect.stringMatching(/unknown connection "shop" \(known: shopdb, warehouse\)/) }]);
  });

  it('refuses bad partition names, a where with ";", and fields of other unit types', () => {
    const issues = issuesOf(
      edit('    partition: [p2024, p2025]\n    where: "day >= \'2024-11-01\'"', '    partition: [p2024, "2025-x"]\n    where: "1=1; DROP TABLE x"\n    bucket: b1'),
    );
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i.message]));
    expect(byPath['units[1].partition[1]']).toMatch(/must be a partition name/);
    expect(byPath['units[1].where']).toMatch(/must be one SQL predicate: ";" at character 4/);
    expect(byPath['units[1].bucket']).toMatch(/unknown field "bucket" \(allowed: .*partition.*where/);
  });

  it('lists mysql-table among the known unit types', () => {
    const issues = issuesOf(edit('    type: mysql-table\n    connection: shopdb\n    table: shop.orders', '    type: mysql_table\n    connection: shopdb\n    table: shop.orders'));
    expect(issues[0]!.message).toMatch(/unknown unit type "mysql_table" \(known: .*mysql-table/);
  });
});
