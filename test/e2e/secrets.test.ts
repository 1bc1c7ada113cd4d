import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { stringify } from 'yaml';
import { ordersManifest } from '../../scripts/demo-data.ts';
import { testDynamo, testS3, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger and state bucket; handler logs on, so that what they would print is checked too.
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');
process.env.POWERTOOLS_LOG_LEVEL = 'DEBUG';

/**
 * Secrets never reach logs, reports, errors or the ledger. The connection URL carries a password (the local
 * PostgreSQL trusts every local connection, so any password works); everything a run writes or prints is
 * collected and searched for it.
 */
const PASSWORD = 'Sup3r-S3cret-pw-7f3a';

describe('a password in a connection URL never appears in anything a run writes or prints', () => {
  let s: Scenario;
  let printed = '';
  const restore: (() => void)[] = [];

  beforeAll(async () => {
    s = await createScenario();
    const url = s.db.url.replace('postgres://postgres@', `postgres://postgres:${PASSWORD}@`);
    writeFileSync(s.manifestPath, stringify(ordersManifest({ pipeline: s.pipeline, bucket: s.bucket, databaseUrl: url })));
    for (const stream of [process.stdout, process.stderr]) {
      const write = stream.write.bind(stream);
      // Kept, not forwarded: the handlers' DEBUG lines would flood the test run's output.
      stream.write = ((chunk: string | Uint8Array) => {
        printed += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
        return true;
      }) as typeof stream.write;
      restore.push(() => (stream.write = write));
    }
  });
  afterAll(async () => {
    for (const r of restore) r();
    await s?.drop();
  });

  it('snapshot, dry run, rollback and a failing run keep the password out of every output and every record', async () => {
    const outputs: string[] = [];
    const run = async (...args: string[]) => {
      const r = await s.cli(...args);
      outputs.push(r.stdout, r.stderr);
      return r;
    };
    expect((await run('snapshot', s.manifestPath, '--deployment', 'd-1', '--local', '--json')).code).toBe(0);
    await badDeploy(s);
    expect((await run('rollback', s.manifestPath, '--deployment', 'd-1', '--dry-run', '--local', '--json')).code).toBe(0);
    expect((await run('rollback', s.manifestPath, '--deployment', 'd-1', '--local', '--json')).code).toBe(0);

    // A run that fails on the database: the error names the connection, never the password.
    const deadUrl = `postgres://postgres:${PASSWORD}@127.0.0.1:9/nowhere`;
    const dead = s.manifestPath.replace(/\.yaml$/, '-dead.yaml');
    writeFileSync(dead, stringify(ordersManifest({ pipeline: s.pipeline, bucket: s.bucket, databaseUrl: deadUrl })));
    const failed = await run('snapshot', dead, '--deployment', 'd-dead', '--local', '--json');
    expect(failed.code).not.toBe(0);
    expect(failed.stdout + failed.stderr).toMatch(/FAILED|ECONNREFUSED|connect/);

    // Everything the runs wrote: state bucket objects and ledger items.
    const s3 = testS3();
    const bucket = process.env.ETL_ROLLBACK_STATE_BUCKET!;
    const objects: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) objects.push(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key! }))).Body!.transformToString());
      token = page.NextContinuationToken;
    } while (token);
    const ledger = await testDynamo().send(new ScanCommand({ TableName: process.env.ETL_ROLLBACK_LEDGER_TABLE! }));

    expect(objects.length).toBeGreaterThan(3);
    expect(ledger.Items?.length).toBeGreaterThan(5);
    expect(printed.length).toBeGreaterThan(0);
    const everything = [...outputs, printed, ...objects, JSON.stringify(ledger.Items)].join('\n');
    // The deployed manifest keeps the URL the team wrote (it is how the restore reconnects), so the state
    // bucket holds it once per deployment: that object is the one place, and it is not a log, report or error.
    const manifests = objects.filter((o) => o.includes('"connections"'));
    const elsewhere = everything.split('\n').filter((line) => line.includes(PASSWORD) && !manifests.some((m) => m.includes(line)));
    expect(elsewhere).toEqual([]);
    expect(outputs.join('\n')).not.toContain(PASSWORD);
    expect(printed).not.toContain(PASSWORD);
    expect(JSON.stringify(ledger.Items)).not.toContain(PASSWORD);
  });
});
