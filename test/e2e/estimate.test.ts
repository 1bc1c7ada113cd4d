import { GetObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../core/ledger/ledger.ts';
import { workOf } from '../../core/plan/requests.ts';
import type { RunReport } from '../../core/report/report.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

interface RollbackJson {
  status: string;
  report: RunReport;
}

/** S3 requests the handlers send to one bucket, by operation, counted in the SDK client they use. */
async function countRequests(bucket: string): Promise<{ counts: Map<string, number>; stop(): void }> {
  // Imported here, after this file's ledger table and state bucket are set: the handlers read them at first import.
  const { deps: handlerDeps } = await import('../../lambdas/task.ts');
  const counts = new Map<string, number>();
  const name = `count-requests-${bucket}`;
  handlerDeps.s3.middlewareStack.add(
    (next, context) => async (args) => {
      if ((args.input as { Bucket?: string }).Bucket === bucket) counts.set(context.commandName!, (counts.get(context.commandName!) ?? 0) + 1);
      return next(args);
    },
    { step: 'initialize', name },
  );
  return { counts, stop: () => handlerDeps.s3.middlewareStack.remove(name) };
}

describe('estimates on the demo pipeline: dry run against the real rollback that follows', () => {
  let s: Scenario;
  const deployment = 'd-7';
  const rollback = async (...extra: string[]) => {
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', ...extra);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as RollbackJson;
  };

  beforeAll(async () => {
    s = await createScenario();
    const snap = await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local', '--json');
    expect(snap.code, snap.stderr + snap.stdout).toBe(0);
  });
  afterAll(async () => s?.drop());

  it('without history, a dry run estimates from the documented defaults and says so', async () => {
    await badDeploy(s);
    const { report } = await rollback('--dry-run');
    expect(report.estimate?.basis).toEqual({ runIds: [], defaultsFor: ['postgres-table', 's3-prefix'], text: 'defaults, no history' });
    expect(report.estimate?.region).toEqual({ requested: 'us-east-1', priced: 'us-east-1' });
    // Defaults: 1.5 s + 1.5 s for the prefix, 2 s + 2 s per table, 1 s per stage between stages (plus the work).
    expect(report.estimate!.totals.seconds).toBeGreaterThan(11);
    expect(report.estimate!.totals.costUsd.total).toBeGreaterThan(0);
  });

  it('after one calibrating rollback, the dry run of the same damage is within a factor of 2 of the rollback that follows', async () => {
    const calibrating = await rollback('--reason', 'calibrates the throughput');
    expect(calibrating.report.status).toBe('SUCCEEDED');
    // The calibrating run had no dry run of its stages since the first one: it carries that (default) estimate.
    expect(calibrating.report.estimate?.basis.text).toBe('defaults, no history');

    const ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    const samples = await ledger.listThroughputSamples(s.pipeline);
    expect(samples.map((x) => x.runId)).toEqual([calibrating.report.runId]);
    expect(samples[0]!.units.map((u) => u.unitId).sort()).toEqual(['mart', 'raw', 'staging']);

    await badDeploy(s);
    const dry = (await rollback('--dry-run')).report;
    const estimate = dry.estimate!;
    expect(estimate.basis).toEqual({ runIds: [calibrating.report.runId], defaultsFor: [], text: 'from 1 earlier run' });

    const counter = await countRequests(s.bucket);
    let real: RunReport;
    try {
      real = (await rollback('--reason', 'measured against the estimate')).report;
    } finally {
      counter.stop();
    }
    expect(real.status).toBe('SUCCEEDED');
    // The estimate made at plan time is stored with the run and comes back with its report.
    expect(real.estimate).toEqual(estimate);
    expect(real.estimate?.dryRunId).toBe(dry.runId);

    const actual = real.recoverySeconds!;
    expect(actual).toBeGreaterThan(0);
    expect(estimate.totals.seconds).toBeGreaterThanOrEqual(actual / 2);
    expect(estimate.totals.seconds).toBeLessThanOrEqual(actual * 2);

    // What moves matches what the rollback then wrote, unit by unit.
    for (const stage of real.stages) {
      for (const u of stage.units) {
        const planned = estimate.stages[stage.index]!.units.find((p) => p.unitId === u.unitId)!;
        const done = workOf(u.changes);
        expect({ unit: u.unitId, objects: planned.objects, bytes: planned.bytes, rows: planned.rows }).toEqual({ unit: u.unitId, ...done });
      }
    }
    // The S3 requests counted for the lake's prefix are the ones the handlers sent to the lake bucket.
    const raw = estimate.stages.flatMap((st) => st.units).find((u) => u.unitId === 'raw')!;
    expect(Object.fromEntries(counter.counts)).toEqual({
      ListObjectVersionsCommand: raw.requests['S3 ListObjectVersions'],
      HeadObjectCommand: raw.requests['S3 HeadObject'],
      CopyObjectCommand: raw.requests['S3 CopyObject'],
      DeleteObjectsCommand: raw.requests['S3 DeleteObjects'],
    });
    expect(raw.requests['S3 CopyObject']).toBe(2);

    // The rollback's throughput is recorded too: the next estimate learns from two runs.
    expect((await ledger.listThroughputSamples(s.pipeline)).map((x) => x.runId)).toEqual([real.runId, calibrating.report.runId]);
  });

  it('the Markdown report of the rollback draws its stages as they ran and sets the estimate against the actual', async () => {
    const runs = await new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!).listRunIndex(s.pipeline, 1);
    const run = await new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!).requireRun(runs[0]!.runId);
    const md = await (await s.s3.send(new GetObjectCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET!, Key: run.reportKey!.replace(/\.json$/, '.md') }))).Body!.transformToString();
    expect(md).toContain('```mermaid\ngantt');
    for (const n of [1, 2, 3]) expect(md).toMatch(new RegExp(`stage ${n} \\(VERIFIED\\) :stage${n}, \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z, \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z`));
    expect(md).toContain('## Estimate against actual');
    expect(md).toMatch(/\| total \(recovery time\) \| [\d.]+ m?s \| [\d.]+ m?s \| [\d.]+× \| \d+ \| \d+ \|/);
  });

  it('a rollback takes over no estimate from a dry run of other stages, nor from one a rollback has run since', async () => {
    await badDeploy(s);
    const partial = (await rollback('--dry-run', '--units', 'staging')).report;
    expect(partial.estimate?.stages.map((st) => st.units.map((u) => u.unitId))).toEqual([['mart'], ['staging']]);
    const whole = (await rollback()).report;
    expect(whole.status).toBe('SUCCEEDED');
    expect(whole.estimate).toBeUndefined();

    await badDeploy(s);
    await rollback('--dry-run');
    expect((await rollback()).report.estimate?.basis.text).toBe('from 3 earlier runs');
    // The dry run before that rollback saw data the rollback has since restored: the next run does not take it over.
    expect((await rollback()).report.estimate).toBeUndefined();
  });
});
