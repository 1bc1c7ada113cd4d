import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, PutBucketVersioningCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { CreateQueueCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { stringify } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { Ledger } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { liveEtags, testDynamo, testS3, uniqueName } from '../support/aws.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

const s3 = testS3();
const sqs = new SQSClient({});
const EXAMPLE = fileURLToPath(new URL('../../examples/compensations/republish.ts', import.meta.url));

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { out: (t) => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

interface Sent {
  type: string;
  recordId: string;
  compensationId: string;
  deploymentId: string;
  runId: string;
  record?: unknown;
}

/** Every message waiting in the queue (moto hands them out at once), bodies parsed, by record id. */
async function drain(queueUrl: string): Promise<Sent[]> {
  const out: Sent[] = [];
  for (;;) {
    const page = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 600 }));
    if (!page.Messages?.length) return out.sort((a, b) => a.recordId.localeCompare(b.recordId));
    out.push(...page.Messages.map((m) => JSON.parse(m.Body!) as Sent));
  }
}

const unitOf = (report: RunReport, unitId: string) => report.stages.flatMap((st) => st.units).find((u) => u.unitId === unitId)!;

describe('worked example: republish corrections to SQS (examples/compensations/republish.ts) against moto', () => {
  const pipeline = uniqueName('orders');
  const bucket = uniqueName('orders-outbox');
  const prefix = 'outbox/orders/';
  let queueUrl = '';
  let manifestPath = '';
  const put = (id: string, record: unknown) => s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${id}.json`, Body: JSON.stringify(record) }));

  beforeAll(async () => {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    await put('o-1', { id: 'o-1', total: 10 });
    await put('o-2', { id: 'o-2', total: 20 });
    await put('o-3', { id: 'o-3', total: 30 });
    queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: uniqueName('orders-corrections') }))).QueueUrl!;
    process.env.REPUBLISH_QUEUE_URL = queueUrl;
    process.env.REPUBLISH_OUTBOX = `s3://${bucket}/${prefix}`;
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-republish-'));
    manifestPath = join(dir, 'orders.yaml');
    writeFileSync(
      manifestPath,
      stringify({
        pipeline,
        units: [
          { id: 'outbox', type: 's3-prefix', bucket, prefix },
          { id: 'republish', type: 'custom', handler: { module: relative(dir, EXAMPLE).startsWith('.') ? relative(dir, EXAMPLE) : `./${relative(dir, EXAMPLE)}` }, timeoutSeconds: 60, dependsOn: ['outbox'] },
        ],
      }),
    );
  });

  it('captures the outbox, sends one retraction or correction per record the deploy published, verified; a rerun sends nothing', async () => {
    const before = await liveEtags(s3, bucket, prefix);
    const snap = await cli('snapshot', manifestPath, '--deployment', 'd-42', '--local', '--json');
    expect(snap.code, snap.stderr).toBe(0);
    const point = await new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!).getRestorePoint(pipeline, 'd-42', 'republish');
    expect(point).toMatchObject({ type: 'custom', count: 3, details: { restorePoint: { queueUrl, bucket, prefix } } });
    expect(Object.keys((point!.details as { restorePoint: { records: object } }).restorePoint.records).sort()).toEqual(['o-1', 'o-2', 'o-3']);

    // The bad deploy published a wrong total for o-2 and an order that does not exist, o-4.
    await put('o-2', { id: 'o-2', total: -20 });
    await put('o-4', { id: 'o-4', total: 999 });

    const dry = await cli('rollback', manifestPath, '--deployment', 'd-42', '--dry-run', '--local', '--json');
    expect(dry.code, dry.stderr).toBe(0);
    const dryUnit = unitOf((JSON.parse(dry.stdout) as { report: RunReport }).report, 'republish');
    expect(dryUnit).toMatchObject({ status: 'WOULD_CHANGE', changes: { retractionsSent: 1, correctionsSent: 1 }, writes: 2, notes: ['would send 1 retraction(s) and 1 correction(s): o-2, o-4'] });
    expect(await drain(queueUrl)).toEqual([]);

    const r = await cli('rollback', manifestPath, '--deployment', 'd-42', '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const report = (JSON.parse(r.stdout) as { report: RunReport }).report;
    // The corrections go out first (the consumer), then the outbox is put back.
    expect(report.stages.map((st) => [st.units.map((u) => u.unitId), st.status])).toEqual([
      [['republish'], 'VERIFIED'],
      [['outbox'], 'VERIFIED'],
    ]);
    expect(unitOf(report, 'republish')).toMatchObject({
      changes: { retractionsSent: 1, correctionsSent: 1 },
      checks: [{ name: 'compensation', ok: true, detail: 'a compensation was sent for every record the deploy changed' }],
    });
    const sent = await drain(queueUrl);
    expect(sent.map(({ type, recordId, deploymentId, runId, record }) => ({ type, recordId, deploymentId, runId, record }))).toEqual([
      { type: 'correct', recordId: 'o-2', deploymentId: 'd-42', runId: report.runId, record: { id: 'o-2', total: 20 } },
      { type: 'retract', recordId: 'o-4', deploymentId: 'd-42', runId: report.runId, record: undefined },
    ]);
    expect(sent.every((m) => m.compensationId.startsWith(`d-42/${m.recordId}/`))).toBe(true);
    expect(await liveEtags(s3, bucket, prefix)).toEqual(before);

    const again = await cli('rollback', manifestPath, '--deployment', 'd-42', '--local', '--json');
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { report: RunReport }).report.totals.writes).toBe(0);
    expect(await drain(queueUrl)).toEqual([]);
  });

  it('the corrections alone (--units republish --no-cascade): the outbox stays as the deploy left it, one correction is sent, and a rerun sends nothing and still verifies', async () => {
    // Another deploy, and a rollback of the corrections only (the outbox is left as the deploy wrote it).
    const snap = await cli('snapshot', manifestPath, '--deployment', 'd-43', '--local');
    expect(snap.code, snap.stderr).toBe(0);
    await put('o-1', { id: 'o-1', total: 11 });
    const r = await cli('rollback', manifestPath, '--deployment', 'd-43', '--units', 'republish', '--no-cascade', '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(unitOf((JSON.parse(r.stdout) as { report: RunReport }).report, 'republish').changes).toEqual({ retractionsSent: 0, correctionsSent: 1 });
    expect((await drain(queueUrl)).map((m) => [m.type, m.recordId, m.record])).toEqual([['correct', 'o-1', { id: 'o-1', total: 10 }]]);
    const again = await cli('rollback', manifestPath, '--deployment', 'd-43', '--units', 'republish', '--no-cascade', '--local', '--json');
    expect(again.code, again.stderr).toBe(0);
    const report = (JSON.parse(again.stdout) as { report: RunReport }).report;
    expect(unitOf(report, 'republish')).toMatchObject({ status: 'VERIFIED', writes: 0 });
    expect(await drain(queueUrl)).toEqual([]);
  });
});
