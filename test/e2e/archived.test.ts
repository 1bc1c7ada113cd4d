import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Context } from 'aws-lambda';
import { stringify } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import type { EventLog } from '../../cli/local-runner.ts';
import { main } from '../../cli/main.ts';
import { ensureLedgerTable } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { PRICES } from '../../core/plan/prices.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { bytes, completeRetrievalInMoto, newBucket, put, s3 } from '../adapters/s3/helpers.ts';
import { uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/** The poll loop runs for real, without its waits (15 minutes between polls for a Standard retrieval in AWS). */
const NO_WAITS = { 'Wait for restore': 0 };

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

describe('an archived restore-point version, end to end: dry run, then Restore unit → Wait for restore → Restore unit (definition, real handlers, moto)', () => {
  const pipeline = uniqueName('cold');
  const deployment = 'd-cold';
  let bucket: string;
  let manifestPath: string;
  let good: string;
  let runLocal: typeof import('../../cli/local-runner.ts').runLocal;
  let HANDLERS: typeof import('../../cli/local-runner.ts').HANDLERS;

  beforeAll(async () => {
    await ensureLedgerTable(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    await ensureStateBucket(s3, process.env.ETL_ROLLBACK_STATE_BUCKET!);
    ({ runLocal, HANDLERS } = await import('../../cli/local-runner.ts'));
    bucket = await newBucket('cold', true);
    good = (await put(bucket, 'events/2026-10.csv', 'october, good', { StorageClass: 'GLACIER', ContentType: 'text/csv' }))!;
    await put(bucket, 'events/2026-11.csv', 'november, good');
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-archived-'));
    manifestPath = join(dir, 'cold.yaml');
    writeFileSync(manifestPath, stringify({ pipeline, units: [{ id: 'events', type: 's3-prefix', bucket, prefix: 'events/', archiveRetrieval: { tier: 'Bulk', days: 2 } }] }));
    const snap = await cli('snapshot', manifestPath, '--deployment', deployment, '--local', '--json');
    expect(snap.code, snap.stderr + snap.stdout).toBe(0);
    // The bad deploy rewrites both months.
    await put(bucket, 'events/2026-10.csv', 'october, BAD');
    await put(bucket, 'events/2026-11.csv', 'november, BAD');
  });

  it('the dry run says which versions are archived, how many bytes, the tier and the expected delay', async () => {
    const r = await cli('rollback', manifestPath, '--deployment', deployment, '--dry-run', '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const report = (JSON.parse(r.stdout) as { report: RunReport }).report;
    const unit = report.stages[0]!.units[0]!;
    expect(unit.notes).toContain(
      `archived: 1 captured version(s), ${'october, good'.length} bytes, in Glacier Flexible Retrieval: RestoreObject with the Bulk tier, ` +
        `temporary copy kept 2 day(s); expected delay 5–12 hours; retrieval $0 (free) (us-east-1 list prices of ${PRICES.asOf}); each is copied as soon as it is readable`,
    );
    expect((await bytes(bucket, 'events/2026-10.csv')).toString()).toBe('october, BAD');
  });

  it('the unit pends while the version is retrieved, the state machine waits and polls, then copies it and verifies the stage', async () => {
    const real = HANDLERS.RestoreUnit!;
    const calls: { done: boolean; waitSeconds: number; maxPolls: number }[] = [];
    let retrieved = false;
    // The real handler; after its first "pending" answer, S3 completes the retrieval (moto stand-in: see
    // completeRetrievalInMoto). Its RestoreObject reached moto, which acts on the current version (not archived here)
    // and answers InvalidObjectState: the adapter lets the next poll's HeadObject decide, as it does in AWS.
    const restoreUnit = async (event: unknown, context: Context) => {
      const out = (await real(event, context)) as { done: boolean; waitSeconds: number; maxPolls: number };
      calls.push({ done: out.done, waitSeconds: out.waitSeconds, maxPolls: out.maxPolls });
      if (!out.done && !retrieved) {
        await completeRetrievalInMoto(bucket, 'events/2026-10.csv', good);
        retrieved = true;
      }
      return out;
    };
    const entered: string[] = [];
    const out = await runLocal('rollback', { pipeline, deploymentId: deployment }, {
      name: uniqueName('run-cold'),
      handlers: { RestoreUnit: restoreUnit },
      waitTimeOverrides: NO_WAITS,
      onEvent: (e: EventLog) => {
        if (e.type === 'StateEntered') entered.push(e.state.name);
      },
    });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    // Bulk from Flexible Retrieval: polled every 30 minutes, within a budget that covers 12 hours with room to spare.
    expect(calls).toEqual([
      { done: false, waitSeconds: 1800, maxPolls: 38 },
      { done: true, waitSeconds: 0, maxPolls: 120 },
    ]);
    expect(entered.filter((s) => s === 'Restore unit')).toHaveLength(2);
    expect(entered.filter((s) => s === 'Wait for restore')).toHaveLength(1);

    const report = (out as { output: RunReport }).output;
    expect(report.stages.map((st) => st.status)).toEqual(['VERIFIED']);
    const unit = report.stages[0]!.units[0]!;
    // November on the first call, October once readable: each written once.
    expect(unit.changes).toMatchObject({ objectsCopied: 2 });
    expect(unit.writes).toBe(2);
    expect((await bytes(bucket, 'events/2026-10.csv')).toString()).toBe('october, good');
    expect((await bytes(bucket, 'events/2026-11.csv')).toString()).toBe('november, good');
    // Nothing lost: the archived original is still its own version.
    expect((await bytes(bucket, 'events/2026-10.csv', good)).toString()).toBe('october, good');
  });
});
