import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { ensureLedgerTable, Ledger } from '../../core/ledger/ledger.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { testDynamo, testS3, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';
import { gate, type Handler } from '../support/gate.ts';

/**
 * The snapshot's two halves on the real state machines: the deployment is IN_PLACE (the deploy may start) once every
 * unit is captured or recording, before a copy-on-write table's seal is read; a rollback asked for meanwhile waits for
 * the seal, then restores every unit to the state before the snapshot, writes made during the seal included.
 */

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger-in-place');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state-in-place');

type RunLocal = (typeof import('../../cli/local-runner.ts'))['runLocal'];

let s: Scenario;
let runLocal: RunLocal;
let ledger: Ledger;
let manifest: Record<string, unknown>;

const events = async () => (await s.sql.query<{ id: number; kind: string }>('SELECT id, kind FROM staging.events ORDER BY id')).rows;

beforeAll(async () => {
  s = await createScenario();
  await s.sql.query("CREATE TABLE staging.events (id int PRIMARY KEY, kind text NOT NULL); INSERT INTO staging.events SELECT g, 'k' || g FROM generate_series(1, 50) g");
  const base = parse(readFileSync(s.manifestPath, 'utf8')) as { units: unknown[] };
  manifest = { ...base, units: [...base.units, { id: 'events', type: 'postgres-table', connection: 'warehouse', table: 'staging.events', capture: 'copy-on-write' }] };
  writeFileSync(s.manifestPath, stringify(manifest));
  ({ runLocal } = await import('../../cli/local-runner.ts'));
  ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
  await ensureLedgerTable(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
  await ensureStateBucket(testS3(), process.env.ETL_ROLLBACK_STATE_BUCKET!);
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
