import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { RunReport } from '../../core/report/report.ts';
import { PROJECT_ROOT } from '../../infra/constructs/handlers.ts';
import { buildEtlRollbackApp } from '../../infra/etl-rollback-app.ts';

// The test setup silences metrics everywhere; this file reads them, so it turns them back on before the handlers load.
process.env.POWERTOOLS_METRICS_DISABLED = 'false';
type RunMetrics = typeof import('../../lambdas/run-metrics.ts');
let countRun: RunMetrics['countRun'];
let publishRunMetrics: RunMetrics['publishRunMetrics'];
let publishDrillMetrics: RunMetrics['publishDrillMetrics'];
let metrics: (typeof import('../../lambdas/task.ts'))['metrics'];

/** One metric as CloudWatch files it from an EMF line: namespace, dimension names (sorted), metric name. */
interface Emitted {
  namespace: string;
  dimensions: string[];
  name: string;
  value: unknown;
  dimensionValues: Record<string, string>;
}

/** Runs `emit` and returns what Powertools wrote to stdout as Embedded Metric Format, metric by metric. */
function captureEmf(emit: () => void): Emitted[] {
  const lines: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    emit();
    metrics.publishStoredMetrics();
  } finally {
    spy.mockRestore();
  }
  const out: Emitted[] = [];
  for (const line of lines.join('').split('\n').filter((l) => l.trim().startsWith('{'))) {
    const doc = JSON.parse(line) as Record<string, unknown> & { _aws?: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[] } };
    for (const directive of doc._aws?.CloudWatchMetrics ?? []) {
      for (const dims of directive.Dimensions) {
        for (const m of directive.Metrics) {
          out.push({
            namespace: directive.Namespace,
            dimensions: [...dims].sort(),
            name: m.Name,
            value: doc[m.Name],
            dimensionValues: Object.fromEntries(dims.map((d) => [d, String(doc[d])])),
          });
        }
      }
    }
  }
  return out;
}

const report: RunReport = {
  runId: 'run-1',
  pipeline: 'orders',
  deploymentId: 'd-1',
  status: 'SUCCEEDED',
  dryRun: false,
  requestedBy: 'sam',
  reason: 'bad numbers',
  startedAt: '2026-11-07T00:00:00.000Z',
  endedAt: '2026-11-07T00:02:30.000Z',
  partial: false,
  totals: { writes: 7, changes: { objectsCopied: 2, rowsInserted: 3, rowsUpdated: 2 } },
  stages: [
    { index: 0, status: 'VERIFIED', units: [], durationMs: 1200 },
    { index: 1, status: 'VERIFY_FAILED', units: [], durationMs: 800 },
  ],
};

describe('handler metrics against the dashboard that reads them', () => {
  beforeAll(async () => {
    ({ countRun, publishRunMetrics, publishDrillMetrics } = await import('../../lambdas/run-metrics.ts'));
    ({ metrics } = await import('../../lambdas/task.ts'));
  });
  afterEach(() => vi.restoreAllMocks());

  it('a run outcome is counted for the service (alarms) and under its pipeline (dashboard rows)', () => {
    const emitted = captureEmf(() => countRun('RollbacksFailed', 'orders'));
    const failed = emitted.filter((m) => m.name === 'RollbacksFailed');
    expect(failed.map((m) => m.dimensions.join(','))).toEqual(expect.arrayContaining(['service', 'pipeline,service']));
    expect(failed.find((m) => m.dimensions.includes('pipeline'))!.dimensionValues.pipeline).toBe('orders');
    expect(failed.every((m) => m.value === 1)).toBe(true);
  });

  it('a report gives rows, objects, gate failures and stage durations, and per pipeline its run duration', () => {
    const emitted = captureEmf(() => publishRunMetrics(report));
    const find = (name: string, dims: string) => emitted.find((m) => m.name === name && m.dimensions.join(',') === dims);
    expect(find('RowsRestored', 'service')?.value).toBe(5);
    expect(find('ObjectsRestored', 'service')?.value).toBe(2);
    expect(find('GateFailures', 'service')?.value).toBe(1);
    expect(emitted.filter((m) => m.name === 'StageDuration').map((m) => [m.dimensionValues.Stage, m.value])).toEqual([
      ['1', 1200],
      ['2', 800],
    ]);
    expect(find('RowsRestored', 'pipeline,service')?.value).toBe(5);
    expect(find('RunDuration', 'pipeline,service')?.value).toBe(150_000);
    expect(captureEmf(() => publishRunMetrics({ ...report, dryRun: true }))).toEqual([]);
  });

  it('every SEARCH on the dashboard names a namespace, dimension set and metric the handlers emit', () => {
    const emitted = [
      ...captureEmf(() => {
        for (const name of ['RollbacksStarted', 'RollbacksSucceeded', 'RollbacksFailed']) countRun(name, 'orders');
        publishRunMetrics(report);
        publishDrillMetrics({ ...report, drill: { recoveryMs: 61_000, overRto: false, scratch: [], cleanup: { removed: [], complete: true } } }, true);
      }),
    ];
    const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };
    const template = Template.fromStack(buildEtlRollbackApp(new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [] } })));
    const body = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]!.Properties.DashboardBody);
    const searches = [...body.matchAll(/SEARCH\('\{([^}]+)\} MetricName=\\+"(\w+)\\+"/g)].map((m) => ({ schema: m[1]!.split(','), name: m[2]! }));
    expect(searches.length).toBeGreaterThanOrEqual(6);
    for (const { schema, name } of searches) {
      if (name === 'TimeSinceLastRestorePoint') continue; // the release job's metric, checked in test/release
      const [namespace, ...dims] = schema;
      const match = emitted.find((m) => m.name === name && m.namespace === namespace && m.dimensions.join(',') === [...dims].sort().join(','));
      expect(match, `${namespace} {${dims.join(',')}} ${name}`).toBeDefined();
    }
  });
});
