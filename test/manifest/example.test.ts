import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError, ManifestError } from '../../core/errors.ts';
import { loadManifestFile } from '../../core/manifest/load.ts';
import { planRollback } from '../../core/plan/plan.ts';

const examplePath = fileURLToPath(new URL('../../examples/orders.yaml', import.meta.url));

describe('examples/orders.yaml', () => {
  it('loads as the documented orders pipeline', async () => {
    const manifest = await loadManifestFile(examplePath);
    expect(manifest).toEqual({
      pipeline: 'orders',
      description: 'Nightly orders load; raw files in S3, staged and aggregated in the warehouse.',
      connections: { warehouse: { engine: 'postgres', url: 'postgres://postgres@127.0.0.1:5432/orders_demo' } },
      units: [
        {
          id: 'raw',
          type: 's3-prefix',
          description: 'Order files as they land from the shop.',
          bucket: 'orders-lake',
          prefix: 'raw/orders/',
          mode: 'versioned',
          capture: 'listing',
          dependsOn: [],
          checks: { count: true, checksum: true },
        },
        { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'staging.orders', dependsOn: ['raw'], checks: { count: true, checksum: true } },
        { id: 'mart', type: 'postgres-table', connection: 'warehouse', table: 'mart.daily_orders', dependsOn: ['staging'], checks: { count: true, checksum: true } },
      ],
      retention: { days: 14 },
      policy: {
        windows: ['Sat 00:00-06:00 UTC', 'daily 02:00-04:00 UTC'],
        approval: { required: true, timeoutMinutes: 240, allowSelfApproval: false },
        pause: {
          rules: [
            { name: 'orders-nightly-load', eventBus: 'default' },
            { name: 'orders-late-files', eventBus: 'etl' },
          ],
          schedules: [{ name: 'orders-hourly-refresh', group: 'etl' }],
        },
      },
      rto: '15m',
      drill: { schedule: 'cron(0 3 ? * SUN *)', deployment: 'latest' },
    });
  });

  it('plans a full rollback as mart, then staging, then raw', async () => {
    const plan = planRollback(await loadManifestFile(examplePath));
    expect(plan.stages).toEqual([['mart'], ['staging'], ['raw']]);
  });
});

describe('loadManifestFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'etl-rollback-manifest-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names the file as the source of a ManifestError', async () => {
    const path = join(dir, 'broken.yaml');
    await writeFile(path, 'pipeline: orders\nunits:\n  - id: raw\n    type: s3-prefix\n    bucket: orders-lake\n    prefix: ""\n');
    const error = await loadManifestFile(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ManifestError);
    expect((error as ManifestError).source).toBe(path);
    expect((error as ManifestError).message).toContain(`${path} is invalid:\n  units[0].prefix: must not be empty`);
    expect((error as ManifestError).message).toContain('(line 6)');
  });

  it('says which file is missing, as bad input', async () => {
    const path = join(dir, 'nope.yaml');
    const error = await loadManifestFile(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InputError);
    expect((error as InputError).message).toBe(`cannot read manifest file "${path}": no such file; check the path given`);
  });
});
