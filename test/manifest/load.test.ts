import { describe, expect, it } from 'vitest';
import { ManifestError, type ManifestIssue } from '../../core/errors.ts';
import { parseManifest, validateManifest } from '../../core/manifest/load.ts';
import type { Manifest } from '../../core/manifest/schema.ts';

/** The valid pipeline every error case starts from: raw (S3) → staging → mart (PostgreSQL). */
const VALID = `
pipeline: orders
connections:
  warehouse:
    engine: postgres
    url: postgres://postgres@127.0.0.1:5432/orders_demo
units:
  - id: raw
    type: s3-prefix
    bucket: orders-lake
    prefix: raw/orders/
  - id: staging
    type: postgres-table
    connection: warehouse
    table: staging.orders
    dependsOn: [raw]
  - id: mart
    type: postgres-table
    connection: warehouse
    table: mart.daily_orders
    dependsOn: [staging]
`;

/** VALID with one or more lines replaced; each `from` must occur exactly once, so a case cannot silently test nothing. */
function variant(...edits: Array<[from: string, to: string]>): string {
  let text = VALID;
  for (const [from, to] of edits) {
    const at = text.indexOf(from);
    if (at < 0 || text.indexOf(from, at + 1) >= 0) throw new Error(`test setup: "${from}" must occur exactly once`);
    text = text.slice(0, at) + to + text.slice(at + from.length);
  }
  return text;
}

/** 1-based number of the line holding `marker`: the only such line, or the `nth` (1-based) when it recurs. */
function lineWith(text: string, marker: string, nth?: number): number {
  const lines = text.split('\n');
  const hits = lines.flatMap((line, i) => (line.includes(marker) ? [i + 1] : []));
  if (nth === undefined && hits.length !== 1) throw new Error(`test setup: "${marker}" is on ${hits.length} lines, say which`);
  const hit = hits[(nth ?? 1) - 1];
  if (hit === undefined) throw new Error(`test setup: no occurrence ${nth} of "${marker}"`);
  return hit;
}

function issuesOf(run: () => unknown): ManifestIssue[] {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ManifestError);
    return (error as ManifestError).issues;
  }
  throw new Error('expected a ManifestError, but the manifest was accepted');
}

const expectedValid: Manifest = {
  pipeline: 'orders',
  connections: { warehouse: { engine: 'postgres', url: 'postgres://postgres@127.0.0.1:5432/orders_demo' } },
  units: [
    { id: 'raw', type: 's3-prefix', bucket: 'orders-lake', prefix: 'raw/orders/', mode: 'versioned', capture: 'listing', dependsOn: [], checks: { count: true, checksum: true } },
    { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'staging.orders', dependsOn: ['raw'], checks: { count: true, checksum: true } },
    { id: 'mart', type: 'postgres-table', connection: 'warehouse', table: 'mart.daily_orders', dependsOn: ['staging'], checks: { count: true, checksum: true } },
  ],
  retention: { days: 14 },
};

describe('parseManifest on a valid manifest', () => {
  it('parses raw → staging → mart with defaults filled in', () => {
    expect(parseManifest(VALID)).toEqual(expectedValid);
  });

  it('accepts a connection given by Secrets Manager ARN instead of a URL', () => {
    const manifest = parseManifest(
      variant(['    url: postgres://postgres@127.0.0.1:5432/orders_demo', '    secretArn: arn:aws:secretsmanager:eu-west-1:123456789012:secret:wh-AbCd']),
    );
    expect(manifest.connections.warehouse).toEqual({ engine: 'postgres', secretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:wh-AbCd' });
  });

  it('accepts YAML merge keys, so teams can share fields between units', () => {
    const text = `
pipeline: orders
connections:
  warehouse: { engine: postgres, url: "postgres://postgres@127.0.0.1:5432/orders_demo" }
units:
  - { id: raw, type: s3-prefix, bucket: orders-lake, prefix: raw/orders/ }
  - id: staging
    <<: &warehouse-table { type: postgres-table, connection: warehouse }
    table: staging.orders
    dependsOn: [raw]
  - id: mart
    <<: *warehouse-table
    table: mart.daily_orders
    dependsOn: [staging]
`;
    expect(parseManifest(text)).toEqual(expectedValid);
  });
});

interface ErrorCase {
  name: string;
  text: string;
  path: string;
  /** Every fragment must appear in the issue's message. */
  says: string[];
  /** The line the issue must point at: a fragment of it, with which occurrence when it recurs. Omitted: no line. */
  line?: string | [marker: string, nth: number];
}

const errorCases: ErrorCase[] = [
  {
    name: 'YAML syntax error, with line and column',
    text: variant(['    bucket: orders-lake', '    bucket: orders-lake: again']),
    path: '',
    says: ['YAML syntax error', `(line ${lineWith(VALID, 'bucket: orders-lake')}, column`],
  },
  {
    name: 'YAML mapping with a key given twice',
    text: variant(['    prefix: raw/orders/', '    prefix: raw/orders/\n    prefix: raw/other/']),
    path: '',
    says: ['YAML syntax error', 'unique'],
  },
  {
    name: 'YAML alias without its anchor',
    text: variant(['    bucket: orders-lake', '    bucket: *lake']),
    path: '',
    says: ['YAML alias *lake refers to no anchor &lake defined before it'],
    line: 'bucket: *lake',
  },
  {
    name: 'YAML aliases nested to exhaust memory ("billion laughs")',
    text: ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 8 }, (_, i) => `a${i + 1}: &a${i + 1} [${Array(10).fill(`*a${i}`).join(', ')}]`)].join('\n'),
    path: '',
    says: ['the YAML cannot be turned into data', 'Excessive alias count'],
  },
  {
    name: 'unknown field in a unit, with the allowed fields and a suggestion',
    text: variant(['    bucket: orders-lake', '    bukcet: orders-lake']),
    path: 'units[0].bukcet',
    says: ['unknown field "bukcet"', 'allowed: id, dependsOn, description, checks, type, bucket, prefix', 'did you mean "bucket"?'],
    line: 'bukcet',
  },
  {
    name: 'unknown field at the top level',
    text: variant(['pipeline: orders', 'pipeline: orders\nowner: data-team']),
    path: 'owner',
    says: ['unknown field "owner"', 'allowed: pipeline, description, connections, units'],
    line: 'owner:',
  },
  {
    name: 'unknown field in checks',
    text: variant(['    dependsOn: [staging]', '    dependsOn: [staging]\n    checks: { count: true, rows: true }']),
    path: 'units[2].checks.rows',
    says: ['unknown field "rows"', 'allowed: count, checksum'],
    line: 'rows: true',
  },
  {
    name: 'missing required field in a unit',
    text: variant(['    table: staging.orders\n', '']),
    path: 'units[1].table',
    says: ['missing required field "table"'],
    line: '- id: staging',
  },
  {
    name: 'missing pipeline name',
    text: variant(['pipeline: orders\n', '']),
    path: 'pipeline',
    says: ['missing required field "pipeline"'],
    line: 'connections:',
  },
  {
    name: 'missing unit type, with the known types',
    text: variant(['    type: s3-prefix\n', '']),
    path: 'units[0].type',
    says: ['missing required field "type"', 's3-prefix, postgres-table'],
    line: '- id: raw',
  },
  {
    name: 'unknown unit type, with the known types',
    text: variant(['    type: s3-prefix', '    type: s3-bucket']),
    path: 'units[0].type',
    says: ['unknown unit type "s3-bucket" (known: s3-prefix, postgres-table, ', 'mysql-table'],
    line: 's3-bucket',
  },
  {
    name: 'dependsOn naming an unknown unit, with the known units',
    text: variant(['    dependsOn: [staging]', '    dependsOn: [stg]']),
    path: 'units[2].dependsOn[0]',
    says: ['unknown unit "stg" (known: raw, staging, mart)'],
    line: '[stg]',
  },
  {
    name: 'dependsOn with a likely typo suggests the unit meant',
    text: variant(['    dependsOn: [staging]', '    dependsOn: [stagin]']),
    path: 'units[2].dependsOn[0]',
    says: ['unknown unit "stagin"', 'did you mean "staging"?'],
    line: '[stagin]',
  },
  {
    name: 'duplicate unit id, naming both indexes',
    text: variant(['  - id: mart', '  - id: raw']),
    path: 'units[2].id',
    says: ['duplicate unit id "raw"', 'units[0] and units[2]'],
    line: ['- id: raw', 2],
  },
  {
    name: 'unit depending on itself',
    text: variant(['    dependsOn: [raw]', '    dependsOn: [staging]']),
    path: 'units[1].dependsOn[0]',
    says: ['unit "staging" depends on itself'],
    line: ['dependsOn: [staging]', 1],
  },
  {
    name: 'the same producer listed twice',
    text: variant(['    dependsOn: [raw]', '    dependsOn: [raw, raw]']),
    path: 'units[1].dependsOn[1]',
    says: ['"raw" is already listed at dependsOn[0]'],
    line: '[raw, raw]',
  },
  {
    name: 'dependency cycle, named in cycle order',
    text: variant(['    prefix: raw/orders/', '    prefix: raw/orders/\n    dependsOn: [mart]']),
    path: 'units[0].dependsOn[0]',
    says: ['cycle: raw -> staging -> mart -> raw'],
    line: '[mart]',
  },
  {
    name: 'empty prefix',
    text: variant(['    prefix: raw/orders/', '    prefix: ""']),
    path: 'units[0].prefix',
    says: ['must not be empty', 'name the prefix'],
    line: 'prefix: ""',
  },
  {
    name: 'prefix that YAML read as a number',
    text: variant(['    prefix: raw/orders/', '    prefix: 2024']),
    path: 'units[0].prefix',
    says: ['expected a string, got a number (2024)', 'quote it'],
    line: 'prefix: 2024',
  },
  {
    name: 'bad table name, quoting what was given',
    text: variant(['    table: staging.orders', '    table: staging.orders; drop table x']),
    path: 'units[1].table',
    says: ['must be "table" or "schema.table"', '(got "staging.orders; drop table x")'],
    line: 'drop table',
  },
  {
    name: 'table name with three parts',
    text: variant(['    table: mart.daily_orders', '    table: db.mart.daily_orders']),
    path: 'units[2].table',
    says: ['must be "table" or "schema.table"', '(got "db.mart.daily_orders")'],
    line: 'db.mart',
  },
  {
    name: 'bad bucket name',
    text: variant(['    bucket: orders-lake', '    bucket: Orders_Lake']),
    path: 'units[0].bucket',
    says: ['must be a valid S3 bucket name', '(got "Orders_Lake")'],
    line: 'Orders_Lake',
  },
  {
    name: 'unit referring to a connection not in connections',
    text: variant(['    connection: warehouse\n    table: mart', '    connection: wh\n    table: mart']),
    path: 'units[2].connection',
    says: ['unknown connection "wh" (known: warehouse)'],
    line: 'connection: wh',
  },
  {
    name: 'unit referring to a connection when none is defined',
    text: `
pipeline: orders
units:
  - id: staging
    type: postgres-table
    connection: warehouse
    table: staging.orders
`,
    path: 'units[0].connection',
    says: ['unknown connection "warehouse"', 'defines no connections', 'add it under "connections"'],
    line: 'connection: warehouse',
  },
  {
    name: 'postgres-table unit on a mysql connection',
    text: variant(['    engine: postgres\n    url: postgres://', '    engine: mysql\n    url: mysql://']),
    path: 'units[1].connection',
    says: ['connection "warehouse" has engine "mysql"', 'needs a postgres connection'],
    line: ['connection: warehouse', 1],
  },
  {
    name: 'connection URL whose scheme does not fit its engine',
    text: variant(['    url: postgres://', '    url: mysql://']),
    path: 'connections.warehouse.url',
    says: ['a mysql:// URL does not fit engine "postgres"'],
    line: 'url: mysql://',
  },
  {
    name: 'connection with neither url nor secretArn',
    text: variant(['    url: postgres://postgres@127.0.0.1:5432/orders_demo\n', '']),
    path: 'connections.warehouse',
    says: ['needs "url" (local runs) or "secretArn" (AWS)'],
    line: 'warehouse:',
  },
  {
    name: 'connection with both url and secretArn',
    text: variant(['    engine: postgres\n', '    engine: postgres\n    secretArn: arn:aws:secretsmanager:eu-west-1:1:secret:x\n']),
    path: 'connections.warehouse.secretArn',
    says: ['either "url" or "secretArn", not both'],
    line: 'secretArn:',
  },
  {
    name: 'connection with an unknown engine',
    text: variant(['    engine: postgres', '    engine: oracle']),
    path: 'connections.warehouse.engine',
    says: ['unknown engine "oracle" (known: postgres, mysql)'],
    line: 'oracle',
  },
  {
    name: 'empty dependsOn value',
    text: variant(['    dependsOn: [raw]', '    dependsOn:']),
    path: 'units[1].dependsOn',
    says: ['expected a list, got null', 'give it a value or remove the field'],
    line: ['dependsOn:', 1],
  },
  {
    name: 'a manifest without units',
    text: 'pipeline: orders\nunits: []\n',
    path: 'units',
    says: ['a manifest needs at least one unit'],
    line: 'units: []',
  },
  {
    name: 'an empty document',
    text: '# nothing here yet\n',
    path: '',
    says: ['the manifest is empty'],
  },
  {
    name: 'a document that is a list, not a mapping',
    text: '- id: raw\n',
    path: '',
    says: ['must be a mapping with "pipeline", "connections" and "units"', 'got a list'],
    line: '- id: raw',
  },
];

describe('parseManifest reports', () => {
  it.each(errorCases)('$name', ({ text, path, says, line }) => {
    const issues = issuesOf(() => parseManifest(text, 'orders.yaml'));
    const issue = issues.find((i) => i.path === path);
    expect(issue, `no issue at "${path}"; got:\n${issues.map((i) => `${i.path}: ${i.message}`).join('\n')}`).toBeDefined();
    for (const fragment of says) expect(issue!.message).toContain(fragment);
    if (line === undefined) {
      expect(issue!.message).not.toMatch(/\(line \d+\)$/);
    } else {
      const lineNumber = typeof line === 'string' ? lineWith(text, line) : lineWith(text, ...line);
      expect(issue!.message).toMatch(new RegExp(`\\(line ${lineNumber}\\)$`));
    }
  });
});

describe('parseManifest collects every problem', () => {
  it('reports schema and dependency problems of different units together, in file order', () => {
    const text = variant(
      ['    bucket: orders-lake', '    bucket: orders-lake\n    retention: 7d'],
      ['    table: staging.orders', '    table: "1staging"'],
      ['    dependsOn: [staging]', '    dependsOn: [stg]'],
    );
    const issues = issuesOf(() => parseManifest(text));
    expect(issues.map((i) => i.path)).toEqual(['units[0].retention', 'units[1].table', 'units[2].dependsOn[0]']);
  });

  it('checks dependencies of a unit whose own fields are invalid, and does not call its id unknown', () => {
    // staging's table is bad, so the schema rejects it; mart still depends on it by a known id.
    const issues = issuesOf(() => parseManifest(variant(['    table: staging.orders', '    table: ""'], ['    dependsOn: [raw]', '    dependsOn: [raw, nope]'])));
    expect(issues.map((i) => i.path)).toEqual(['units[1].table', 'units[1].dependsOn[1]']);
  });

  it('reports YAML syntax errors alone, since nothing after them can be trusted', () => {
    const issues = issuesOf(() => parseManifest(variant(['    dependsOn: [staging]', '    dependsOn: [staging'])));
    expect(issues.length).toBeGreaterThan(0);
    for (const issue of issues) expect(issue.message).toMatch(/^YAML syntax error: .* \(line \d+, column \d+\)$/);
  });

  it('names the source and every issue in the error message', () => {
    try {
      parseManifest(variant(['    dependsOn: [staging]', '    dependsOn: [stg]']), 'pipelines/orders.yaml');
      expect.unreachable('the manifest was accepted');
    } catch (error) {
      expect(error).toBeInstanceOf(ManifestError);
      expect((error as ManifestError).name).toBe('ManifestError');
      expect((error as ManifestError).exitCode).toBe(2);
      expect((error as Error).message).toBe(
        `pipelines/orders.yaml is invalid:\n  units[2].dependsOn[0]: unknown unit "stg" (known: raw, staging, mart) (line ${lineWith(VALID, 'dependsOn: [staging]')})`,
      );
    }
  });

  it('never repeats a connection URL, which may hold a password, in a message', () => {
    const issues = issuesOf(() => parseManifest(variant(['url: postgres://postgres@127.0.0.1', 'url: postgres//admin:s3cret@127.0.0.1'])));
    expect(issues.map((i) => i.path)).toEqual(['connections.warehouse.url']);
    expect(issues[0]!.message).not.toContain('s3cret');
  });

  it('cuts a long list of known units short', () => {
    const units = Array.from({ length: 40 }, (_, i) => ({ id: `u${String(i).padStart(2, '0')}`, type: 's3-prefix', bucket: 'orders-lake', prefix: `p${i}/` }));
    const issues = issuesOf(() => validateManifest({ pipeline: 'big', units: [...units, { id: 'last', type: 's3-prefix', bucket: 'orders-lake', prefix: 'x/', dependsOn: ['zz'] }] }));
    expect(issues).toHaveLength(1);
    expect(issues[0]!.message).toContain('u29, … and 11 more)');
    expect(issues[0]!.message).not.toContain('u30');
  });
});

describe('validateManifest on plain data', () => {
  it('accepts the same manifest as parsed data, and accepts its own output again', () => {
    const manifest = validateManifest(structuredClone(expectedValid));
    expect(manifest).toEqual(expectedValid);
    expect(validateManifest(manifest)).toEqual(manifest);
  });

  it('reports paths without line numbers', () => {
    const input = structuredClone(expectedValid) as unknown as { units: Array<Record<string, unknown>> };
    input.units[2]!.dependsOn = ['stg'];
    input.units[0]!.prefix = '';
    const issues = issuesOf(() => validateManifest(input, 'input'));
    expect(issues).toEqual([
      { path: 'units[0].prefix', message: expect.stringContaining('must not be empty') },
      { path: 'units[2].dependsOn[0]', message: 'unknown unit "stg" (known: raw, staging, mart)' },
    ]);
  });

  it.each([
    ['null', null],
    ['a string', 'orders'],
    ['a list', []],
  ])('rejects %s as a manifest', (_label, value) => {
    const issues = issuesOf(() => validateManifest(value));
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe('');
  });

  it('quotes connection names that are not identifiers in paths', () => {
    const issues = issuesOf(() =>
      validateManifest({ ...expectedValid, connections: { 'Data Warehouse': { engine: 'postgres', url: 'postgres://h/db' }, warehouse: expectedValid.connections.warehouse } }),
    );
    expect(issues).toEqual([{ path: 'connections["Data Warehouse"]', message: expect.stringContaining('"Data Warehouse" is not a valid name') }]);
  });
});

describe('a `where` predicate is one SQL expression', () => {
  it('is read token by token: quotes skipped; a separator, a comment, a stray or missing parenthesis refused with where', async () => {
    const { predicateProblem } = await import('../../core/manifest/schema.ts');
    expect(predicateProblem("day >= '2024-01-01' AND region IN ('eu', 'us')")).toBeUndefined();
    expect(predicateProblem(`note = 'a;b--c' AND "odd ) name" = 1 AND \`x(\` = 'it''s'`)).toBeUndefined();
    expect(predicateProblem('a = 1) OR (1 = 1')).toMatch(/"\)" at character 6 closes a parenthesis the predicate did not open/);
    expect(predicateProblem('a = 1; DROP TABLE x')).toMatch(/";" at character 6/);
    expect(predicateProblem('a = 1 -- and the rest')).toMatch(/a comment at character 7/);
    expect(predicateProblem('a = 1 /* ) */')).toMatch(/a comment at character 7/);
    expect(predicateProblem('(a = 1')).toMatch(/1 parenthesis\(es\) left open/);
    expect(predicateProblem("a = 'open")).toMatch(/a string opened at character 5 is not closed/);
  });
});
