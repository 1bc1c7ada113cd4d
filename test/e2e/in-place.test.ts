import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Ledger } from '../../core/ledger/ledger.ts';
import { uniqueName } from '../support/aws.ts';
import { addEventsTable, badDeploy, createScenario, localMachines, type Scenario } from '../support/scenario.ts';
import { gate, type Handler } from '../support/gate.ts';
import { retryLine } from '../../cli/progress.ts';

/**
 * The snapshot's two halves on the real state machines: the deployment is IN_PLACE (the deploy may start) once every
 * unit is captured or recording, before a copy-on-write table's seal is read; a rollback asked for meanwhile waits for
 * the seal, then restores every unit to the state before the snapshot, writes made during the seal included. A snapshot
 * stopped at once (StopExecution, Ctrl-C) is cleaned up: its deployment FAILED, saying how to finish it, its lock freed.
 * A table another session holds when the rollback reaches it is retried by the machine, then restored.
 */

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger-in-place');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state-in-place');
// The cleanup function tells the snapshot machine's events by its ARN (the stack sets it); read when it is imported.
const SNAPSHOT_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:etl-rollback-snapshot';
process.env.ETL_ROLLBACK_SNAPSHOT_STATE_MACHINE_ARN = SNAPSHOT_ARN;

const CLI = fileURLToPath(new URL('../../bin/etl-rollback.mjs', import.meta.url));


let s: Scenario;
let runLocal: Awaited<ReturnType<typeof localMachines>>['runLocal'];
let ledger: Ledger;
let manifest: Record<string, unknown>;

const events = async () => (await s.sql.query<{ id: number; kind: string }>('SELECT id, kind FROM staging.events ORDER BY id')).rows;

beforeAll(async () => {
  s = await createScenario();
  manifest = await addEventsTable(s, 50);
  ({ runLocal, ledger } = await localMachines());
});

afterAll(async () => s?.drop());

describe('restore points in place before their seal', () => {
  it('the deploy may start once every unit records; a rollback asked for before the seal waits for it, then restores the state before the snapshot', async () => {
    const { handler: realCapture } = (await import('../../lambdas/capture-unit.ts')) as unknown as { handler: Handler };
    const g = gate();
    const sealCalls: string[] = [];
    const gatedSeal: Handler = async (event, context) => {
      const e = event as { unitId: string; until?: string };
      if (e.until === 'sealed') {
        sealCalls.push(e.unitId);
        await g.wait();
      }
      return realCapture(event, context);
    };
    const entered: string[] = [];
    const before = { staging: await s.rows('staging.orders'), mart: await s.rows('mart.daily_orders'), events: await events(), objects: await s.objects() };
    const snapshot = runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-1', manifest, requestedBy: 'test' }, {
      name: uniqueName('snap'),
      handlers: { CaptureUnit: gatedSeal },
      onEvent: (e) => {
        if (e.type === 'StateEntered') entered.push(e.state.name);
      },
    });
    const early = await Promise.race([g.reached.then(() => undefined), snapshot]);
    expect(early, 'the snapshot ended before its seal').toBeUndefined();
    // In place: the copy-on-write table's triggers record, its seal is not read yet; the other units are captured whole.
    expect((await ledger.requireDeployment(s.pipeline, 'd-1')).status).toBe('IN_PLACE');
    expect((await ledger.listRestorePoints(s.pipeline, 'd-1')).map((p) => p.unitId).sort()).toEqual(['mart', 'raw', 'staging']);
    expect(sealCalls).toEqual(['events']);
    expect((await ledger.getLock(s.pipeline))?.holder).toBe('snapshot-d-1');
    expect(entered.indexOf('Restore points in place')).toBeGreaterThan(entered.lastIndexOf('Capture unit'));

    // The deploy runs, and goes wrong, while the seal waits.
    await badDeploy(s);
    await s.sql.query("UPDATE staging.events SET kind = 'bad' WHERE id <= 10; DELETE FROM staging.events WHERE id > 45; INSERT INTO staging.events VALUES (100, 'new')");

    // A rollback now waits (its plan is retried on SealPendingError): no run is recorded, nothing is written.
    const name = uniqueName('rollback');
    const rollback = runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-1' }, { name });
    await new Promise((r) => setTimeout(r, 1500));
    expect(await ledger.getRun(name)).toBeUndefined();
    expect((await ledger.requireDeployment(s.pipeline, 'd-1')).status).toBe('IN_PLACE');

    g.open();
    expect((await snapshot).status).toBe('SUCCEEDED');
    const sealed = (await ledger.listRestorePoints(s.pipeline, 'd-1')).find((p) => p.unitId === 'events')!;
    expect(sealed).toMatchObject({ count: 50, details: { capture: 'copy-on-write' } });
    const outcome = await rollback;
    expect(outcome.status, JSON.stringify(outcome)).toBe('SUCCEEDED');
    expect((await ledger.requireRun(name)).status).toBe('SUCCEEDED');
    expect({ staging: await s.rows('staging.orders'), mart: await s.rows('mart.daily_orders'), events: await events(), objects: await s.objects() }).toEqual(before);
    expect((await ledger.requireDeployment(s.pipeline, 'd-1')).status).toBe('ROLLED_BACK');
  });

  it('a seal that answers not done yet (a large table read in key ranges) is called again, its polls counted, until it seals', async () => {
    const { handler: realCapture } = (await import('../../lambdas/capture-unit.ts')) as unknown as { handler: Handler };
    const polls: number[] = [];
    // The first two seal calls answer as a sliced seal does between its ranges; the third is the real one.
    const slicedSeal: Handler = async (event, context) => {
      const e = event as { unitId: string; until?: string; polls?: number };
      if (e.until !== 'sealed') return realCapture(event, context);
      polls.push(e.polls ?? -1);
      if (polls.length <= 2) {
        return { done: false, unitId: e.unitId, type: 'postgres-table', waitSeconds: 1, maxPolls: 120, status: `sealing public.events in key ranges: ${polls.length} read` };
      }
      return realCapture(event, context);
    };
    const entered: string[] = [];
    const out = await runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-6', manifest, requestedBy: 'test' }, {
      name: uniqueName('snap-sliced'),
      handlers: { CaptureUnit: slicedSeal },
      waitTimeOverrides: { 'Wait for seal': 0 },
      onEvent: (e) => {
        if (e.type === 'StateEntered') entered.push(e.state.name);
      },
    });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    expect(polls).toEqual([0, 1, 2]);
    expect(entered.filter((n) => n === 'Wait for seal')).toHaveLength(2);
    expect((await ledger.requireDeployment(s.pipeline, 'd-6')).status).toBe('READY');
    expect((await ledger.listRestorePoints(s.pipeline, 'd-6')).find((p) => p.unitId === 'events')).toMatchObject({ count: 50, details: { capture: 'copy-on-write' } });
  });

  it('the CLI prints when the restore points are in place; --until in-place is refused with --local (exit 2), which seals in its own process', async () => {
    const r = await s.cli('snapshot', s.manifestPath, '--deployment', 'd-2', '--local');
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.split('\n');
    const inPlace = lines.findIndex((l) => l.startsWith('› restore points in place: the deploy may start; sealing events while it runs'));
    expect(inPlace).toBeGreaterThan(-1);
    expect(lines.findIndex((l) => l === '› sealing events: count and checksum as it was when its triggers went in')).toBeGreaterThan(inPlace);
    expect(r.stdout).toContain('events (postgres-table): 50 rows');

    const refused = await s.cli('snapshot', s.manifestPath, '--deployment', 'd-3', '--local', '--until', 'in-place');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--until in-place needs the deployed snapshot state machine');
    expect(await ledger.getDeployment(s.pipeline, 'd-3')).toBeUndefined();
  });
});

describe('a stopped snapshot', () => {
  it('a snapshot stopped during its seal (StopExecution): the cleanup marks the deployment FAILED and frees the lock, the waiting rollback fails at once naming why; the same snapshot again seals it, and the rollback restores the state before the first', async () => {
    const { handler: realCapture } = (await import('../../lambdas/capture-unit.ts')) as unknown as { handler: Handler };
    const g = gate();
    const inflight: Promise<unknown>[] = [];
    // The seal waits at the gate; as in AWS, a task under way when the execution stops runs on, and its result is dropped.
    const gatedSeal: Handler = (event, context) => {
      const run = (event as { until?: string }).until === 'sealed' ? g.wait().then(() => realCapture(event, context)) : realCapture(event, context);
      inflight.push(run);
      return run;
    };
    const before = { staging: await s.rows('staging.orders'), events: await events(), objects: await s.objects() };
    const first = uniqueName('snap-stopped');
    const stop = new AbortController();
    const input = { pipeline: s.pipeline, deploymentId: 'd-4', manifest, requestedBy: 'test' };
    const snapshot = runLocal('snapshot', input, { name: first, handlers: { CaptureUnit: gatedSeal }, signal: stop.signal });
    await g.reached;
    expect(await ledger.requireDeployment(s.pipeline, 'd-4')).toMatchObject({ status: 'IN_PLACE', snapshotExecution: first });

    await badDeploy(s);
    await s.sql.query("UPDATE staging.events SET kind = 'bad' WHERE id <= 10; DELETE FROM staging.events WHERE id > 45");
    const name = uniqueName('rollback');
    const rollback = runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-4' }, { name });

    stop.abort();
    expect(await snapshot).toMatchObject({ status: 'FAILED', error: 'ExecutionAborted' });
    // Nothing of the failure path ran: still IN_PLACE, the lock still the snapshot's.
    expect((await ledger.requireDeployment(s.pipeline, 'd-4')).status).toBe('IN_PLACE');
    expect((await ledger.getLock(s.pipeline))?.holder).toBe('snapshot-d-4');

    // The rule's event for the stopped execution, as EventBridge delivers it (test/fixtures/events).
    const fixture = JSON.parse(readFileSync(new URL('../fixtures/events/step-functions-execution-aborted.json', import.meta.url), 'utf8')) as { detail: Record<string, unknown> };
    const eventOf = (execution: string) => ({
      ...fixture,
      detail: { ...fixture.detail, name: execution, stateMachineArn: SNAPSHOT_ARN, executionArn: `${SNAPSHOT_ARN.replace(':stateMachine:', ':execution:')}:${execution}`, input: JSON.stringify(input) },
    });
    const { handler: cleanup } = await import('../../lambdas/cancel-stopped-run.ts');
    const context = { functionName: 'cancel-stopped-run', awsRequestId: 'r-1', getRemainingTimeInMillis: () => 30_000 } as unknown as Context;
    expect(await cleanup(eventOf(first), context)).toMatchObject({ outcome: 'failed', status: 'FAILED', lockReleased: true });
    const failed = await ledger.requireDeployment(s.pipeline, 'd-4');
    expect(failed.status).toBe('FAILED');
    expect(failed.error).toMatchObject({ name: 'SnapshotStopped' });
    expect(failed.error?.message).toContain(`the snapshot execution ${first} was stopped by StopExecution after its restore points were in place`);
    expect(failed.error?.message).toContain('their triggers keep recording; run the same snapshot again under deployment id "d-4" to seal them');
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();
    // The rollback that waited for the seal fails now, naming the deployment's status; it recorded no run, wrote nothing.
    const refused = await rollback;
    expect(refused).toMatchObject({ status: 'FAILED', error: 'RestorePointMissingError' });
    expect(JSON.stringify(refused)).toContain('is FAILED');
    expect(await ledger.getRun(name)).toBeUndefined();
    // Delivered twice: the deployment keeps its record.
    expect(await cleanup(eventOf(first), context)).toMatchObject({ outcome: 'ended', status: 'FAILED', lockReleased: false });

    // The stopped execution's seal, still under way, finishes (its restore point is exact whenever it is read).
    g.open();
    await Promise.allSettled(inflight);

    // The same snapshot again, under the same id: the restore points are kept, the deployment is READY.
    const again = uniqueName('snap-again');
    expect((await runLocal('snapshot', input, { name: again })).status).toBe('SUCCEEDED');
    expect(await ledger.requireDeployment(s.pipeline, 'd-4')).toMatchObject({ status: 'READY', snapshotExecution: again });
    // A late event of the first execution leaves the deployment and the lock alone.
    expect(await cleanup(eventOf(first), context)).toMatchObject({ outcome: 'superseded', status: 'READY', lockReleased: false });

    const restored = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-4' }, { name: uniqueName('rollback') });
    expect(restored.status, JSON.stringify(restored)).toBe('SUCCEEDED');
    expect({ staging: await s.rows('staging.orders'), events: await events(), objects: await s.objects() }).toEqual(before);
  });

  it('Ctrl-C stops a local snapshot at once: exit 1, the deployment FAILED with the reason and the way on, the lock released', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'etl-rollback-stop-'));
    const marker = join(dir, 'capturing');
    // A unit whose capture takes minutes (a custom handler in the CLI's process): Ctrl-C arrives while it runs.
    writeFileSync(
      join(dir, 'slow.mjs'),
      `import { writeFileSync } from 'node:fs';
export async function handler(req) {
  if (req.action === 'capture') { writeFileSync(${JSON.stringify(marker)}, 'x'); await new Promise((r) => setTimeout(r, 300000)); }
  return { restorePoint: {}, changed: {}, message: 'ok' };
}`,
    );
    const pipeline = uniqueName('stopped');
    writeFileSync(join(dir, 'manifest.yaml'), stringify({ pipeline, units: [{ id: 'feed', type: 'custom', handler: { module: './slow.mjs' }, timeoutSeconds: 600 }] }));
    const child = spawn(process.execPath, [CLI, 'snapshot', join(dir, 'manifest.yaml'), '--deployment', 'd-5', '--local'], { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let waited = 0; !existsSync(marker); waited += 50) {
      expect(waited, stderr).toBeLessThan(60_000);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await ledger.getLock(pipeline))?.holder).toBe('snapshot-d-5');
    const signalled = Date.now();
    child.kill('SIGINT');
    expect(await exited, stderr).toBe(1);
    // It does not wait for the capture under way (minutes): it stops, cleans up and exits.
    expect(Date.now() - signalled).toBeLessThan(30_000);
    expect(stderr).toContain('stopping now (the cleanup still runs)');
    expect(stderr).toContain('› stopped: marking the deployment FAILED unless it was sealed, releasing the lock');
    const deployment = await ledger.requireDeployment(pipeline, 'd-5');
    expect(deployment.status).toBe('FAILED');
    expect(deployment.error).toMatchObject({ name: 'SnapshotStopped' });
    expect(deployment.error?.message).toContain('was stopped by Ctrl-C before every unit was captured: the deploy must not start; run the same snapshot again under deployment id "d-5" to finish it');
    expect(await ledger.getLock(pipeline)).toBeUndefined();
  });
});

describe('a table held by another session during a rollback', () => {
  // The unit's restore gives up after its own bounded lock tries (TableBusyError, nothing written); the machine's Retry
  // runs it again once the queue has drained (its interval overridden to 0 here: the definition waits 30 s and more).
  it('the restore fails TableBusyError naming the session, the machine retries the unit, and the run ends restored', async () => {
    const snap = await runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-busy', manifest, requestedBy: 'test' }, { name: uniqueName('snap-busy') });
    expect(snap.status, JSON.stringify(snap)).toBe('SUCCEEDED');
    const before = await events();
    await s.sql.query("UPDATE staging.events SET kind = 'bad' WHERE id <= 8; DELETE FROM staging.events WHERE id > 36");

    const blocker = await s.db.client();
    await blocker.query("SET application_name = 'nightly-load'");
    await blocker.query('BEGIN');
    await blocker.query("UPDATE staging.events SET kind = 'loading' WHERE id = 20");
    const failures: { error?: string; cause?: string }[] = [];
    const retries: { attempt: number; policy: Record<string, unknown> }[] = [];
    const name = uniqueName('rollback-busy');
    try {
      const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-busy', units: ['events'], requestedBy: 'test', reason: 'busy table' }, {
        name,
        retryIntervalOverrides: { 'Restore unit': 0 },
        onEvent: (e) => {
          if (e.type === 'StateFailed' && e.state.name === 'Restore unit') failures.push({ error: e.Error, cause: String(e.Cause) });
          if (e.type === 'StateRetried' && e.state.name === 'Restore unit') {
            retries.push({ attempt: e.retry.attempt, policy: e.retry.retrier as Record<string, unknown> });
            // The session that held the table ends while the machine waits to retry.
            void blocker.query('COMMIT');
          }
        },
      });
      expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    } finally {
      await blocker.end();
    }
    expect(failures).toHaveLength(1);
    expect(failures[0]!.error).toBe('TableBusyError');
    expect(failures[0]!.cause).toMatch(/unit "events": the restore could not lock staging\.events: 5 tries of 2000 ms each, and other sessions held it \(pid \d+ \(postgres, nightly-load, idle in transaction/);
    expect(retries).toEqual([{ attempt: 1, policy: expect.objectContaining({ ErrorEquals: ['TableBusyError'], IntervalSeconds: 30, MaxAttempts: 6 }) }]);
    // The write made while it held the table was logged by the triggers, and undone with the deploy's.
    expect(await events()).toEqual(before);
    const run = await ledger.requireRun(name);
    expect(run.status).toBe('SUCCEEDED');
    const step = (await ledger.listSteps(name)).find((st) => st.unitId === 'events');
    expect(step?.status).toBe('VERIFIED');
    expect(step?.notes.some((n) => n.startsWith('restore failed'))).toBe(false);
    // What the CLI prints for that retry.
    expect(retryLine('Restore unit', { unitId: 'events' }, { name: 'TableBusyError', cause: failures[0]!.cause! }, 1, retries[0]!.policy)).toMatch(
      /^› Restore unit \(events\): TableBusyError: unit "events": the restore could not lock staging\.events: .*\n {2}trying again \(1 of 6\) in up to 30 s$/,
    );
  }, 120_000);
});
