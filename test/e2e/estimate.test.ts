import { GetObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../core/ledger/ledger.ts';
import { workOf } from '../../core/plan/requests.ts';
import { reportEstimateVsActual, type RunReport } from '../../core/report/report.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

interface RollbackJson {
  status: string;
  report: RunReport;
}

const ledger = () => new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);

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

/** The demo pipeline with a sealed restore point, and its rollback command (JSON, exit 0 required). */
async function demoPipeline(deployment: string) {
  const s = await createScenario();
  const snap = await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local', '--json');
  expect(snap.code, snap.stderr + snap.stdout).toBe(0);
  const rollback = async (...extra: string[]) => {
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', ...extra);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as RollbackJson).report;
  };
  return { s, rollback };
}

describe('estimate against the real rollback on the demo pipeline', () => {
  // Each attempt is the whole experiment on a pipeline of its own (one calibrating run, then the measured one). The
  // machine is shared: a run slowed down by other work on it is measured again rather than taken for a bad estimate.
  it('after one calibrating rollback, the dry run of the same damage is within a factor of 2 of the rollback that follows', { retry: 2 }, async () => {
    const { s, rollback } = await demoPipeline('d-7');
    try {
      await badDeploy(s);
      const calibrating = await rollback('--reason', 'calibrates the throughput');
      expect(calibrating.status).toBe('SUCCEEDED');
      const samples = await ledger().listThroughputSamples(s.pipeline);
      expect(samples.map((x) => x.runId)).toEqual([calibrating.runId]);
      expect(samples[0]!.units.map((u) => u.unitId).sort()).toEqual(['mart', 'raw', 'staging']);

      await badDeploy(s);
      const dry = await rollback('--dry-run');
      const estimate = dry.estimate!;
      expect(estimate.basis).toMatchObject({ runIds: [calibrating.runId], defaultsFor: [], text: 'from 1 earlier run' });

      const counter = await countRequests(s.bucket);
      let real: RunReport;
      try {
        real = await rollback('--reason', 'measured against the estimate');
      } finally {
        counter.stop();
      }
      expect(real.status).toBe('SUCCEEDED');
      // The estimate made at plan time is stored with the run and comes back with its report.
      expect(real.estimate).toEqual(estimate);
      expect(real.estimate?.dryRunId).toBe(dry.runId);

      const actual = real.recoverySeconds!;
      const compared = JSON.stringify(reportEstimateVsActual(real));
      expect(actual).toBeGreaterThan(0);
      expect(estimate.totals.seconds, compared).toBeGreaterThanOrEqual(actual / 2);
      expect(estimate.totals.seconds, compared).toBeLessThanOrEqual(actual * 2);

      // What moves matches what the rollback then wrote, unit by unit.
      for (const stage of real.stages) {
        for (const u of stage.units) {
          const planned = estimate.stages[stage.index]!.units.find((p) => p.unitId === u.unitId)!;
          expect({ unit: u.unitId, objects: planned.objects, bytes: planned.bytes, rows: planned.rows }).toEqual({ unit: u.unitId, ...workOf(u.changes) });
        }
      }
      // The S3 requests counted for the lake's prefix are the ones the handlers sent to the lake bucket.
      const raw = estimate.stages.flatMap((st) => st.units).find((u) => u.unitId === 'raw')!;
      // (the undo record's two bucket-configuration reads, versioning and lifecycle, are counted with the GETs)
      expect(Object.fromEntries(counter.counts)).toEqual({
        GetBucketVersioningCommand: 1,
        GetBucketLifecycleConfigurationCommand: 1,
        ListObjectVersionsCommand: raw.requests['S3 ListObjectVersions'],
        HeadObjectCommand: raw.requests['S3 HeadObject'],
        CopyObjectCommand: raw.requests['S3 CopyObject'],
        DeleteObjectsCommand: raw.requests['S3 DeleteObjects'],
      });
      expect(raw.requests['S3 CopyObject']).toBe(2);

      // The measured rollback's throughput is recorded too: the next estimate learns from both runs.
      expect((await ledger().listThroughputSamples(s.pipeline)).map((x) => x.runId)).toEqual([real.runId, calibrating.runId]);

      // Its Markdown report draws the stages as they ran and sets the estimate against the actual.
      const run = await ledger().requireRun(real.runId);
      const md = await (await s.s3.send(new GetObjectCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET!, Key: run.reportKey!.replace(/\.json$/, '.md') }))).Body!.transformToString();
      expect(md).toContain('```mermaid\ngantt');
      for (const n of [1, 2, 3]) expect(md).toMatch(new RegExp(`stage ${n} \\(VERIFIED\\) :stage${n}, \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z, \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z`));
      expect(md).toContain('## Estimate against actual');
      expect(md).toMatch(/\| total \(recovery time\) \| [\d.]+ m?s \| [\d.]+ m?s \| [\d.]+× \| \d+ \| \d+ \|/);
    } finally {
      await s.drop();
    }
  });
});

describe('which estimate a rollback carries', () => {
  let s: Scenario;
  let rollback: Awaited<ReturnType<typeof demoPipeline>>['rollback'];

  beforeAll(async () => {
    ({ s, rollback } = await demoPipeline('d-8'));
  });
  afterAll(async () => s?.drop());

  it('without history, a dry run estimates from the documented defaults and says so', async () => {
    await badDeploy(s);
    const report = await rollback('--dry-run');
    expect(report.estimate?.basis).toMatchObject({ runIds: [], defaultsFor: ['postgres-table', 's3-prefix'], text: 'defaults, no history' });
    expect(report.estimate?.region).toEqual({ requested: 'us-east-1', priced: 'us-east-1' });
    // Defaults: 1.5 s + 1.5 s for the prefix, 2 s + 2 s per table, 1 s per stage between stages (plus the work).
    expect(report.estimate!.totals.seconds).toBeGreaterThan(11);
    expect(report.estimate!.totals.costUsd.total).toBeGreaterThan(0);
    // The rollback that follows carries it.
    expect((await rollback()).estimate).toEqual(report.estimate);
  });

  it('none from a dry run of other stages, nor from one a rollback has run since', async () => {
    await badDeploy(s);
    const partial = await rollback('--dry-run', '--units', 'staging');
    expect(partial.estimate?.stages.map((st) => st.units.map((u) => u.unitId))).toEqual([['mart'], ['staging']]);
    const whole = await rollback();
    expect(whole.status).toBe('SUCCEEDED');
    expect(whole.estimate).toBeUndefined();

    await badDeploy(s);
    await rollback('--dry-run');
    expect((await rollback()).estimate?.basis.text).toBe('from 2 earlier runs');
    // The dry run before that rollback saw data the rollback has since restored: the next run does not take it over.
    expect((await rollback()).estimate).toBeUndefined();
  });
});
