import { readFileSync, writeFileSync } from 'node:fs';
import { CreateEventBusCommand, EventBridgeClient, PutRuleCommand, PutTargetsCommand } from '@aws-sdk/client-eventbridge';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { CreateQueueCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { shadowTableName } from '../../core/adapters/postgres/names.ts';
import { deploymentFailedPattern, type EventPatternJson } from '../../infra/constructs/trigger-patterns.ts';
import type { RunReport } from '../../core/report/report.ts';
import { uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table, state bucket and event bus (the handlers read them at first import), and metrics on:
// this file reads the DrillFailed metric the handlers write (Embedded Metric Format on stdout).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');
process.env.ETL_ROLLBACK_EVENT_BUS = uniqueName('bus');
process.env.POWERTOOLS_METRICS_DISABLED = 'false';

const events = new EventBridgeClient({});
const sqs = new SQSClient({});

/** The events a pattern matches on the test's bus, through an EventBridge rule whose target is an SQS queue (moto delivers). */
async function queueFor(pattern: EventPatternJson): Promise<string> {
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: uniqueName('drill-events') }))).QueueUrl!;
  const queueArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
  const rule = uniqueName('drill-events');
  await events.send(new PutRuleCommand({ Name: rule, EventBusName: process.env.ETL_ROLLBACK_EVENT_BUS, EventPattern: JSON.stringify(pattern) }));
  await events.send(new PutTargetsCommand({ Rule: rule, EventBusName: process.env.ETL_ROLLBACK_EVENT_BUS, Targets: [{ Id: 'queue', Arn: queueArn }] }));
  return queueUrl;
}

interface DeliveredEvent {
  source: string;
  'detail-type': string;
  detail: { pipeline: string; deploymentId: string; runId: string; reason: string; status: string; measuredRtoSeconds?: number; targetRtoSeconds?: number; rto?: string; overRto: boolean };
}

/** The events in the queue, deleted once read (a message left there would come back after its visibility timeout). */
async function drain(queueUrl: string): Promise<DeliveredEvent[]> {
  const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
  const messages = out.Messages ?? [];
  if (messages.length > 0) {
    await sqs.send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }));
  }
  return messages.map((m) => JSON.parse(m.Body!) as DeliveredEvent);
}

/** Metric names (with their dimensions) the handlers wrote as Embedded Metric Format while `run` ran. */
async function emittedMetrics<T>(run: () => Promise<T>): Promise<{ result: T; metrics: { name: string; dimensions: Record<string, string>; value: unknown }[] }> {
  const lines: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = String(chunk);
    if (text.includes('"_aws"')) {
      lines.push(text);
      return true;
    }
    return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  });
  try {
    const result = await run();
    const metrics = lines
      .join('')
      .split('\n')
      .filter((l) => l.trim().startsWith('{'))
      .flatMap((l) => {
        const doc = JSON.parse(l) as Record<string, unknown> & { _aws: { CloudWatchMetrics: { Dimensions: string[][]; Metrics: { Name: string }[] }[] } };
        return doc._aws.CloudWatchMetrics.flatMap((d) =>
          d.Metrics.map((m) => ({ name: m.Name, value: doc[m.Name], dimensions: Object.fromEntries(d.Dimensions.flat().map((k) => [k, String(doc[k])])) })),
        );
      });
    return { result, metrics };
  } finally {
    spy.mockRestore();
  }
}

describe('a drill over its RTO, and a drill whose gate fails: Drill Failed delivered, DrillFailed counted', () => {
  let s: Scenario;
  let queueUrl: string;
  /** What the pipeline's `Deployment Failed` trigger rule would receive: a failed drill must never start a rollback. */
  let triggerQueueUrl: string;
  let runLocal: typeof import('../../cli/local-runner.ts').runLocal;
  const deployment = 'd-drill-f';

  beforeAll(async () => {
    s = await createScenario();
    const manifest = parse(readFileSync(s.manifestPath, 'utf8'));
    manifest.rto = '90s';
    writeFileSync(s.manifestPath, stringify(manifest));
    // (its metrics are captured too, only to keep them off the test output)
    const { result: snapshot } = await emittedMetrics(() => s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local'));
    expect(snapshot.code, snapshot.stderr).toBe(0);
    await badDeploy(s);
    await events.send(new CreateEventBusCommand({ Name: process.env.ETL_ROLLBACK_EVENT_BUS! }));
    queueUrl = await queueFor({ source: ['etl.rollback'], 'detail-type': ['Drill Failed'], detail: { pipeline: [s.pipeline] } });
    triggerQueueUrl = await queueFor(deploymentFailedPattern(s.pipeline));
    ({ runLocal } = await import('../../cli/local-runner.ts'));
  });
  afterAll(async () => s?.drop());

  it('a drill slower than its RTO fails: event with measured vs target RTO, metric, exit as a failed run', async () => {
    // A clock that moves a minute every time a handler reads it: the four-unit-step drill takes minutes on it.
    let t = Date.parse('2026-11-29T03:00:00Z');
    const clock = { now: () => new Date((t += 60_000)) };
    const name = `drill-rto-${Date.now()}`;
    const { result: out, metrics } = await emittedMetrics(() =>
      runLocal('drill', { pipeline: s.pipeline, deploymentId: deployment, requestedBy: 'scheduler', reason: 'weekly drill' }, { name, clock }),
    );
    expect(out.status).toBe('FAILED');
    if (out.status !== 'FAILED') return;
    expect(out.error).toBe('DrillOverRto');
    expect(out.cause).toMatch(/over the RTO of 90s \(90 s\)/);

    const [event, ...more] = await drain(queueUrl);
    expect(more).toEqual([]);
    expect(event!.source).toBe('etl.rollback');
    expect(event!['detail-type']).toBe('Drill Failed');
    expect(event!.detail).toMatchObject({ pipeline: s.pipeline, deploymentId: deployment, runId: name, status: 'FAILED', rto: '90s', targetRtoSeconds: 90, overRto: true });
    expect(event!.detail.measuredRtoSeconds).toBeGreaterThan(90);
    expect(event!.detail.reason).toMatch(/^recovery took \d+\.\d s, over the RTO of 90s/);

    // The gates passed: only the time failed it. The scratch targets are gone all the same.
    const stored = await s.s3.send(new GetObjectCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET, Key: `reports/${s.pipeline}/${name}.json` }));
    const report = JSON.parse(await stored.Body!.transformToString()) as RunReport;
    expect(report.stages.every((st) => st.status === 'VERIFIED')).toBe(true);
    expect(report.drill).toMatchObject({ overRto: true, cleanup: { complete: true } });

    expect(metrics).toContainEqual({ name: 'DrillFailed', value: 1, dimensions: { service: 'etl-rollback' } });
    expect(metrics).toContainEqual({ name: 'DrillFailed', value: 1, dimensions: { service: 'etl-rollback', pipeline: s.pipeline } });
    expect(metrics.some((m) => m.name === 'DrillRecoveryTime' && (m.value as number) > 90_000)).toBe(true);
  });

  it('a drill whose restore point does not verify on its scratch copy fails with exit 1 and Drill Failed, production untouched', async () => {
    // The restore point itself is damaged (a row gone from staging's shadow copy): what a drill is there to find out.
    const shadow = `etl_rollback.${shadowTableName(s.pipeline, deployment, 'staging')}`;
    await s.sql.query(`DELETE FROM ${shadow} WHERE id = 7`);
    const staging = await s.rows('staging.orders');
    const { result: r, metrics } = await emittedMetrics(() => s.cli('drill', s.manifestPath, '--deployment', deployment, '--local', '--json'));
    expect(r.code, r.stderr).toBe(1);
    const out = JSON.parse(r.stdout) as { status: string; error: string; report: RunReport };
    expect(out.error).toBe('VerificationFailedError');
    expect(out.report.stages.map((st) => st.status)).toEqual(['VERIFIED', 'VERIFY_FAILED', 'NOT_STARTED']);
    expect(out.report.drill?.cleanup.complete).toBe(true);
    expect(await s.rows('staging.orders')).toEqual(staging);

    const event = (await drain(queueUrl)).find((e) => e.detail.runId === out.report.runId);
    expect(event!.detail).toMatchObject({ pipeline: s.pipeline, runId: out.report.runId, status: 'FAILED', overRto: false });
    expect(event!.detail.reason).toMatch(/^VerificationFailedError: drill stage 2 did not verify on its scratch copies/);
    expect(metrics).toContainEqual({ name: 'DrillFailed', value: 1, dimensions: { service: 'etl-rollback' } });
  });

  it('a drill whose cleanup keeps failing is reported incomplete and fails; --clean-up removes what it left, and a second one finds nothing', async () => {
    // The restore point is whole again (the row the previous case removed from the shadow copy is put back).
    const shadow = `etl_rollback.${shadowTableName(s.pipeline, deployment, 'staging')}`;
    await s.sql.query(`INSERT INTO ${shadow} SELECT 7, 70, date '2026-11-01' + 2, NULL WHERE NOT EXISTS (SELECT 1 FROM ${shadow} WHERE id = 7)`);
    const name = `drill-cleanup-${Date.now()}`;
    const crash = async () => {
      throw Object.assign(new Error('injected: the cleanup function timed out'), { name: 'Sandbox.Timedout' });
    };
    const { result: out } = await emittedMetrics(() => runLocal('drill', { pipeline: s.pipeline, deploymentId: deployment }, { name, handlers: { CleanupDrill: crash } }));
    expect(out, JSON.stringify(out)).toMatchObject({ status: 'FAILED', error: 'DrillCleanupIncomplete' });
    const event = (await drain(queueUrl)).find((e) => e.detail.runId === name);
    expect(event!.detail.reason).toMatch(/^scratch targets were not all removed: injected: the cleanup function timed out/);
    const left = async () => (await s.sql.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'etl_rollback_drill_%'")).rows.map((r) => r.nspname as string);
    expect(await left()).toHaveLength(1);

    const first = await s.cli('drill', s.manifestPath, '--clean-up', name, '--local', '--json');
    expect(first.code, first.stderr).toBe(0);
    const removed = (JSON.parse(first.stdout) as { removed: string[] }).removed;
    expect(removed).toEqual(expect.arrayContaining([expect.stringMatching(/^s3:\/\/.*\/drills\/drill-cleanup-\d+\/raw\/ \(4 object version\(s\)\)$/), expect.stringMatching(/schema etl_rollback_drill_[0-9a-f]{8}$/)]));
    expect(await left()).toEqual([]);
    // Three failed drills, and the rollback trigger rule of the pipeline received none of their events.
    expect(await drain(triggerQueueUrl)).toEqual([]);
    const second = await s.cli('drill', s.manifestPath, '--clean-up', name, '--local');
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`drill ${name} left nothing to remove`);
  });
});
