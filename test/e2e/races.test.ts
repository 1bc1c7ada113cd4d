import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Ledger } from '../../core/ledger/ledger.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';
import { gate, type Handler } from '../support/gate.ts';

/**
 * Runs of one pipeline that meet, on the real state machines: the pipeline's lock lets exactly one of them work, and
 * the others stop at once naming the run that holds it (exit 3 from the CLI), touching nothing.
 */

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger-races');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state-races');

type RunLocal = (typeof import('../../cli/local-runner.ts'))['runLocal'];

let s: Scenario;
let runLocal: RunLocal;
let ledger: Ledger;
let manifest: unknown;

beforeAll(async () => {
  s = await createScenario();
  const r = await s.cli('snapshot', s.manifestPath, '--deployment', 'd-1', '--local');
  expect(r.code, r.stderr).toBe(0);
  manifest = parse(readFileSync(s.manifestPath, 'utf8'));
  ({ runLocal } = await import('../../cli/local-runner.ts'));
  ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
});

afterAll(async () => s?.drop());

describe('races on one pipeline', () => {
  it('two rollbacks of one pipeline at once: exactly one runs; the other fails at once naming the run that holds the lock', async () => {
    await badDeploy(s);
    const [a, b] = [uniqueName('race-a'), uniqueName('race-b')];
    // The second starts as soon as the first holds the lock. (Two conditional writes at the same instant are kept
    // apart by DynamoDB; moto does not make them atomic, so that instant is left to test/ledger, in every order.)
    const first = runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-1' }, { name: a });
    for (let i = 0; i < 200 && (await ledger.getLock(s.pipeline))?.holder !== a; i++) await new Promise((r) => setTimeout(r, 25));
    const outcomes = await Promise.all([first, runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-1' }, { name: b })]);
    const statuses = outcomes.map((o) => o.status).sort();
    expect(statuses).toEqual(['FAILED', 'SUCCEEDED']);
    const loser = outcomes.find((o) => o.status === 'FAILED')!;
    const winner = outcomes[0]!.status === 'SUCCEEDED' ? a : b;
    expect(loser).toMatchObject({ error: 'LockHeldError' });
    expect((loser as { cause: string }).cause).toContain(winner);
    expect((await ledger.requireRun(winner === a ? b : a)).status).toBe('REFUSED');
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();
  });

  it('a rollback while a snapshot of the pipeline runs is refused (the snapshot would capture half-restored tables), and the snapshot goes on', async () => {
    const { handler: realCapture } = (await import('../../lambdas/capture-unit.ts')) as unknown as { handler: Handler };
    const g = gate();
    let held = false;
    const slowCapture: Handler = async (event, context) => {
      if (!held) {
        held = true;
        await g.wait();
      }
      return realCapture(event, context);
    };
    const snapshot = runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-2', manifest, requestedBy: 'test' }, { name: uniqueName('snap'), handlers: { CaptureUnit: slowCapture } });
    await g.reached;
    expect((await ledger.getLock(s.pipeline))?.holder).toBe('snapshot-d-2');

    const before = await s.rows('staging.orders');
    const refused = await s.cli('rollback', s.manifestPath, '--deployment', 'd-1', '--local');
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toContain('snapshot-d-2');
    expect(await s.rows('staging.orders')).toEqual(before);

    g.open();
    expect((await snapshot).status).toBe('SUCCEEDED');
    expect((await ledger.requireDeployment(s.pipeline, 'd-2')).status).toBe('READY');
    expect(await ledger.getLock(s.pipeline)).toBeUndefined();
  });

  it('a snapshot while a rollback runs is refused without marking anything, and can be taken once the rollback is done', async () => {
    await badDeploy(s);
    const { handler: realRestore } = (await import('../../lambdas/restore-unit.ts')) as unknown as { handler: Handler };
    const g = gate();
    let held = false;
    const slowRestore: Handler = async (event, context) => {
      if (!held) {
        held = true;
        await g.wait();
      }
      return realRestore(event, context);
    };
    const name = uniqueName('rollback');
    const rollback = runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-1' }, { name, handlers: { RestoreUnit: slowRestore } });
    await g.reached;

    const refused = await runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-3', manifest, requestedBy: 'test' }, { name: uniqueName('snap-refused') });
    expect(refused).toMatchObject({ status: 'FAILED', error: 'LockHeldError' });
    expect((refused as { cause: string }).cause).toContain(name);
    // Nothing of the refused snapshot was recorded as failed: it never began.
    expect((await ledger.getDeployment(s.pipeline, 'd-3'))?.status).not.toBe('FAILED');
    expect((await ledger.getLock(s.pipeline))?.holder).toBe(name);

    g.open();
    expect((await rollback).status).toBe('SUCCEEDED');
    const again = await runLocal('snapshot', { pipeline: s.pipeline, deploymentId: 'd-3', manifest, requestedBy: 'test' }, { name: uniqueName('snap-again') });
    expect(again.status, JSON.stringify(again)).toBe('SUCCEEDED');
  });
});
