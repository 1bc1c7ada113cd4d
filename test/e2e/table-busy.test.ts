import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Ledger } from '../../core/ledger/ledger.ts';
import { retryLine } from '../../cli/progress.ts';
import { uniqueName } from '../support/aws.ts';
import { addEventsTable, createScenario, localMachines, type Scenario } from '../support/scenario.ts';

/**
 * A table held by another session when the rollback reaches it, on the real rollback state machine with its real
 * handlers: the unit's restore gives up after its own bounded lock tries (TableBusyError, nothing written), the
 * machine's Retry runs it again once the queue has drained, and the run ends restored, the session that held the
 * table named in the failed attempt. The retry's interval is overridden to 0 (the definition waits 30 s and more).
 */

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger-busy');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state-busy');

let s: Scenario;
let runLocal: Awaited<ReturnType<typeof localMachines>>['runLocal'];
let ledger: Ledger;
let manifest: Record<string, unknown>;

const events = async () => (await s.sql.query<{ id: number; kind: string }>('SELECT id, kind FROM staging.events ORDER BY id')).rows;

beforeAll(async () => {
  s = await createScenario();
  manifest = await addEventsTable(s, 40);
  ({ runLocal, ledger } = await localMachines());
});

afterAll(async () => s?.drop());

describe('a table held by another session during a rollback', () => {
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
