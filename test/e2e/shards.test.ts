import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import type { RunReport } from '../../core/report/report.ts';
import { shardIndexSchema } from '../../core/adapters/s3-prefix.ts';
import { del, newBucket, put, s3, versionFingerprint } from '../adapters/s3/helpers.ts';
import { liveEtags, uniqueName } from '../support/aws.ts';

/** Objects through moto, which the other test files share: slow on a loaded 2-core machine. */
const SHARDED_TIMEOUT_MS = 180_000;

// This file's own ledger table and state bucket (the handlers read them at first import), and the s3-prefix adapter's
// shard size and distributed threshold lowered so that 250 objects take the Distributed Map path.
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');
process.env.ETL_ROLLBACK_S3_SHARD_SIZE = '100';
process.env.ETL_ROLLBACK_S3_DISTRIBUTED_THRESHOLD = '200';

const keyOf = (i: number) => `data/part-${String(i).padStart(4, '0')}.csv`;


async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

describe('a large S3 prefix rolls back shard by shard through the Distributed Map (real definitions, local runner, moto)', () => {
  let bucket: string;
  let manifestPath: string;
  const pipeline = uniqueName('lake');
  const deployment = 'd-big';

  beforeAll(async () => {
    bucket = await newBucket('lake', true);
    const keys = Array.from({ length: 250 }, (_, i) => keyOf(i));
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => put(bucket, k, `v1 of ${k}`, { ContentType: 'text/csv' })));
    await put(bucket, 'data-archive/keep.csv', 'neighbour');
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-shards-'));
    manifestPath = join(dir, 'lake.yaml');
    writeFileSync(manifestPath, stringify({ pipeline, units: [{ id: 'lake', type: 's3-prefix', bucket, prefix: 'data/' }] }));
  });
  afterAll(() => undefined);

  it('captures the prefix as 3 shards and an index, restores it through "Restore shards" (the child file run per batch), and verifies', async () => {
    const snap = await cli('snapshot', manifestPath, '--deployment', deployment, '--local', '--json');
    expect(snap.code, snap.stderr + snap.stdout).toBe(0);
    const captured = await liveEtags(s3, bucket, 'data/');

    const indexKey = `restore-points/${pipeline}/${deployment}/lake/versions.json`;
    const indexObject = await s3.send(new GetObjectCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET, Key: indexKey }));
    const index = shardIndexSchema.parse(JSON.parse(await indexObject.Body!.transformToString()));
    expect(index.shards.map((s) => s.count)).toEqual([100, 100, 50]);

    // The bad deploy: damage in every shard, additions before, between and after the shards' key ranges.
    await put(bucket, keyOf(10), 'bad', { ContentType: 'application/json' });
    await del(bucket, keyOf(120));
    await put(bucket, keyOf(222), 'bad too');
    for (const k of ['data/0-early.csv', 'data/part-0199x.csv', 'data/zz-late.csv']) await put(bucket, k, 'added');
    const before = await versionFingerprint(bucket, '');

    const r = await cli('rollback', manifestPath, '--deployment', deployment, '--local', '--json');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const out = JSON.parse(r.stdout) as { status: string; report: RunReport };
    expect(out.status).toBe('SUCCEEDED');
    const unit = out.report.stages.flatMap((s) => s.units).find((u) => u.unitId === 'lake')!;
    expect(unit.status).toBe('VERIFIED');
    expect(unit.changes).toMatchObject({ objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 3, objectsUnchanged: 247 });
    expect(unit.writes).toBe(6);
    expect(unit.notes.join(' | ')).toContain('restored shard by shard (3 shards of up to 100 keys');
    expect(unit.notes.join(' | ')).toContain('3 shard(s) restored by 1 batch(es)');
    expect(unit.notes.join(' | ')).not.toContain('restore in progress');

    // State read back from moto: the prefix equals the restore point; writes only where changed; neighbour untouched.
    expect(await liveEtags(s3, bucket, 'data/')).toEqual(captured);
    const after = await versionFingerprint(bucket, '');
    expect(after.filter((v) => !before.includes(v))).toHaveLength(5); // 2 copies + 3 delete markers
    expect(before.filter((v) => !after.includes(v))).toHaveLength(1); // 1 delete marker removed
    expect(after.filter((v) => v.startsWith('data-archive/'))).toEqual(before.filter((v) => v.startsWith('data-archive/')));

    // A second rollback goes the same way and writes nothing.
    const again = await cli('rollback', manifestPath, '--deployment', deployment, '--local', '--json');
    expect(again.code, again.stderr).toBe(0);
    const second = JSON.parse(again.stdout) as { report: RunReport };
    expect(second.report.totals.writes).toBe(0);
    expect(await versionFingerprint(bucket, '')).toEqual(after);
  }, SHARDED_TIMEOUT_MS);
});
