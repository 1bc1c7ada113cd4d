import { PutCommand, DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { beforeAll, describe, expect, it } from 'vitest';
import { Ledger, ensureLedgerTable, type Run } from '../../core/ledger/ledger.ts';
import { estimateRollback } from '../../core/plan/estimate.ts';
import { pricesFor } from '../../core/plan/prices.ts';
import { throughputFrom, type ThroughputSample } from '../../core/plan/throughput.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';

const sample = (pipeline: string, runId: string, runStartedAt: string, restoreSeconds = 0.2): ThroughputSample => ({
  pipeline,
  runId,
  runStartedAt,
  recordedAt: runStartedAt,
  stages: 1,
  overheadSeconds: 0.1,
  units: [{ unitId: 'raw', unitType: 's3-prefix', restoreSeconds, verifySeconds: 0.1, objects: 4, bytes: 35, rows: 0 }],
});

const run = (runId: string): Run => ({
  runId,
  pipeline: 'orders',
  deploymentId: 'd-1',
  status: 'DRY_RUN',
  dryRun: true,
  requested: ['raw'],
  scope: ['raw'],
  stages: [{ index: 0, units: ['raw'] }],
  reasons: { raw: 'requested' },
  requestedBy: 'jane',
  reason: '',
  startedAt: '2026-11-29T03:00:00.000Z',
});

describe('ledger: throughput records and estimates (DynamoDB on moto)', () => {
  const dynamo = testDynamo();
  const table = uniqueName('ledger');
  const ledger = new Ledger(dynamo, table);

  beforeAll(async () => {
    await ensureLedgerTable(dynamo, table);
  });

  it('records a run once however often it is recorded, and lists the newest first, at most as many as asked', async () => {
    const pipeline = uniqueName('p');
    for (const day of ['03', '01', '02']) await ledger.putThroughputSample(sample(pipeline, `run-${day}`, `2026-11-${day}T00:00:00.000Z`));
    // The same run recorded again (a retried finish): still one item, as it was first written.
    await ledger.putThroughputSample(sample(pipeline, 'run-02', '2026-11-02T00:00:00.000Z'));
    expect((await ledger.listThroughputSamples(pipeline)).map((s) => s.runId)).toEqual(['run-03', 'run-02', 'run-01']);
    expect((await ledger.listThroughputSamples(pipeline, 2)).map((s) => s.runId)).toEqual(['run-03', 'run-02']);
    expect(await ledger.listThroughputSamples(uniqueName('other'))).toEqual([]);
  });

  it('skips a throughput item that does not read back as one, instead of estimating from it', async () => {
    const pipeline = uniqueName('p');
    await ledger.putThroughputSample(sample(pipeline, 'good', '2026-11-01T00:00:00.000Z'));
    const doc = DynamoDBDocumentClient.from(dynamo);
    await doc.send(new PutCommand({ TableName: table, Item: { pk: `THROUGHPUT#${pipeline}`, sk: 'RUN#2026-11-02#bad', pipeline, runId: 'bad', units: 'not a list' } }));
    expect((await ledger.listThroughputSamples(pipeline)).map((s) => s.runId)).toEqual(['good']);
  });

  it('refuses to record a measurement that is not one (negative seconds)', async () => {
    await expect(ledger.putThroughputSample(sample(uniqueName('p'), 'r', '2026-11-01T00:00:00.000Z', -1))).rejects.toThrow();
  });

  it('keeps a run\'s estimate and gives it back as it was made', async () => {
    const estimate = estimateRollback({
      stages: [{ index: 0, units: [{ unitId: 'raw', type: 's3-prefix', changes: { objectsCopied: 2, objectsUnchanged: 2, bytesCopied: 35 } }] }],
      throughput: throughputFrom([sample('orders', 'r1', '2026-11-01T00:00:00.000Z')]),
      prices: pricesFor('eu-west-1'),
      madeAt: '2026-11-29T03:00:01.000Z',
      dryRunId: 'dry-1',
    });
    const runId = uniqueName('dry');
    await ledger.createRun(run(runId));
    await ledger.updateRun(runId, { estimate });
    expect((await ledger.getRun(runId))!.estimate).toEqual(estimate);
  });

  it('leaves out an estimate that does not read back as one', async () => {
    const runId = uniqueName('dry');
    await ledger.createRun({ ...run(runId), estimate: { madeAt: 'then' } as unknown as Run['estimate'] });
    const back = await ledger.getRun(runId);
    expect(back?.runId).toBe(runId);
    expect(back && 'estimate' in back).toBe(false);
  });
});
