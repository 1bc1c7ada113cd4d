import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { runLocal } from '../../cli/local-runner.ts';

/**
 * Bad input is refused with exit 2, its path named, before any AWS or database call. To prove "before any
 * call", the AWS endpoint and the database point at a closed port: a call would fail with a connection error
 * and exit 1, not 2.
 */
const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-bad-'));
const DEAD = 'http://127.0.0.1:9';

const base = `pipeline: orders
connections:
  warehouse: { engine: postgres, url: "postgres://postgres@127.0.0.1:9/none" }
units:
  - { id: raw, type: s3-prefix, bucket: orders-lake, prefix: raw/ }
  - { id: staging, type: postgres-table, connection: warehouse, table: staging.orders, dependsOn: [raw] }
  - { id: mart, type: postgres-table, connection: warehouse, table: mart.daily, dependsOn: [staging] }
`;

const cases: { name: string; yaml: string; path: string; says: string }[] = [
  { name: 'unknown field', yaml: base.replace('prefix: raw/ }', 'prefix: raw/, retention: 3 }'), path: 'units[0]', says: 'retention' },
  { name: 'unknown unit in dependsOn', yaml: base.replace('dependsOn: [raw]', 'dependsOn: [rwa]'), path: 'units[1].dependsOn[0]', says: 'unknown unit "rwa"' },
  { name: 'duplicate id', yaml: base.replace('id: mart', 'id: staging'), path: 'units[2].id', says: 'duplicate' },
  { name: 'cycle', yaml: base.replace('prefix: raw/ }', 'prefix: raw/, dependsOn: [mart] }'), path: 'units[0].dependsOn[0]', says: 'raw -> staging -> mart -> raw' },
  { name: 'empty prefix', yaml: base.replace('prefix: raw/', 'prefix: ""'), path: 'units[0].prefix', says: 'empty' },
  { name: 'bad table name', yaml: base.replace('table: mart.daily', 'table: "mart.daily; drop table x"'), path: 'units[2].table', says: 'schema.table' },
];

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

describe('bad input is refused before anything is touched', () => {
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.AWS_ENDPOINT_URL;
    process.env.AWS_ENDPOINT_URL = DEAD;
  });
  afterEach(() => {
    process.env.AWS_ENDPOINT_URL = saved;
  });

  it.each(cases)('$name: exit 2, path named, no AWS or database call', async ({ name, yaml, path, says }) => {
    const file = join(dir, `${name.replace(/\W+/g, '-')}.yaml`);
    writeFileSync(file, yaml);
    for (const args of [
      ['validate', file],
      ['snapshot', file, '--deployment', 'd-1', '--local'],
      ['rollback', file, '--deployment', 'd-1', '--local'],
    ]) {
      const r = await cli(...args);
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(path);
      expect(r.stderr).toContain(says);
      expect(r.stderr).not.toMatch(/ECONNREFUSED|connect/i);
    }
  });

  it('a missing argument or unknown option is bad input too (exit 2)', async () => {
    expect((await cli('rollback', join(dir, 'x.yaml'))).code).toBe(2);
    expect((await cli('plan', 'examples/orders.yaml', '--frobnicate')).code).toBe(2);
    expect((await cli('nonsense')).code).toBe(2);
    const missing = await cli('validate', join(dir, 'no-such-file.yaml'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no-such-file.yaml');
  });

  it('the rollback machine rejects bad console input in its first state, with every problem named', async () => {
    const out = await runLocal('rollback', { pipeline: 'Orders!', deploymentId: '', units: 'mart', dryRun: 'yes', extra: 1 }, { name: 'bad-input' });
    expect(out.status).toBe('FAILED');
    if (out.status !== 'FAILED') return;
    expect(out.error).toBe('InputError');
    for (const field of ['rollback request.pipeline', 'rollback request.deploymentId', 'rollback request.units', 'rollback request.dryRun', 'extra']) expect(out.cause).toContain(field);
  });

  it('the snapshot machine rejects a request naming neither a manifest nor a manifestKey', async () => {
    const out = await runLocal('snapshot', { pipeline: 'orders', deploymentId: 'd-1' }, { name: 'bad-snapshot' });
    expect(out).toMatchObject({ status: 'FAILED', error: 'InputError' });
    if (out.status === 'FAILED') expect(out.cause).toContain('manifestKey');
  });
});
