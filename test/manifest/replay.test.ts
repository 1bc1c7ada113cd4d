import { describe, expect, it, vi } from 'vitest';
import { ManifestError } from '../../core/errors.ts';
import { validateManifest } from '../../core/manifest/load.ts';
import { renderReplayInput } from '../../core/manifest/replay.ts';
import { prepareReplayInput, recordReplay } from '../../core/workflow/replay.ts';
import type { WorkflowDeps } from '../../core/workflow/deps.ts';

const ARN = 'arn:aws:states:eu-west-1:111122223333:stateMachine:orders-etl';

function manifest(replay: unknown) {
  return validateManifest({
    pipeline: 'orders',
    connections: { warehouse: { engine: 'postgres', url: 'postgres://u@h/db' } },
    units: [
      { id: 'raw', type: 's3-prefix', bucket: 'orders-lake', prefix: 'raw/' },
      { id: 'events', type: 'postgres-table', connection: 'warehouse', table: 'public.events', where: "day >= '2026-11-01'", dependsOn: ['raw'] },
      { id: 'catalog', type: 'glue-table', database: 'lake', table: 'orders', partitions: "dt >= '2026-11-01'", dependsOn: ['raw'] },
    ],
    replay,
  });
}

describe('manifest replay', () => {
  it('defaults: the whole restored scope as input, 60 minutes, no approval', () => {
    const m = manifest({ stateMachineArn: ARN });
    expect(m.replay).toEqual({
      stateMachineArn: ARN,
      input: { deploymentId: '{{deploymentId}}', runId: '{{runId}}', units: '{{units}}', partitions: '{{partitions}}' },
      timeoutMinutes: 60,
      approval: false,
    });
  });

  it('refuses an unknown placeholder, a state machine that is not an ARN, and a zero timeout, each by its path', () => {
    const error = (() => {
      try {
        manifest({ stateMachineArn: 'orders-etl', input: { a: ['{{deploymentID}}'] }, timeoutMinutes: 0 });
      } catch (e) {
        return e as ManifestError;
      }
      throw new Error('accepted');
    })();
    expect(error).toBeInstanceOf(ManifestError);
    const paths = error.issues.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['replay.stateMachineArn', 'replay.timeoutMinutes']));
    expect(error.message).toContain('{{deploymentID}}');
  });

  it('renders whole-string placeholders as values and embedded ones as text, anywhere in the template', () => {
    const out = renderReplayInput(
      { units: '{{units}}', nested: { list: ['{{ deploymentId }}', 3, null, true], note: 'run {{runId}} of {{units}}' }, keep: '{{notOurs}}' },
      { deploymentId: 'd-1', runId: 'r-1', pipeline: 'orders', units: ['a', 'b'], partitions: {} },
    );
    expect(out).toEqual({ units: ['a', 'b'], nested: { list: ['d-1', 3, null, true], note: 'run r-1 of ["a","b"]' }, keep: '{{notOurs}}' });
  });

  it('prepares the replay of the restored scope: partitions of the units that have one, the run\'s execution name, the timeout in seconds', () => {
    const m = manifest({ stateMachineArn: ARN, timeoutMinutes: 5 });
    const prepared = prepareReplayInput(m.replay!, { runId: 'rollback-orders-d-1-abc', pipeline: 'orders', deploymentId: 'd-1', units: ['events', 'catalog', 'raw'] }, m);
    expect(prepared).toEqual({
      stateMachineArn: ARN,
      name: 'rollback-orders-d-1-abc-replay',
      timeoutSeconds: 300,
      input: {
        deploymentId: 'd-1',
        runId: 'rollback-orders-d-1-abc',
        units: ['events', 'catalog', 'raw'],
        partitions: { events: { where: "day >= '2026-11-01'" }, catalog: { partitions: "dt >= '2026-11-01'" } },
      },
    });
  });
});

describe('recording how a replay ended', () => {
  function fakeDeps(replay?: object) {
    const updates: unknown[] = [];
    const deps = {
      ledger: { requireRun: vi.fn(async () => ({ runId: 'r-1', replay })), updateRun: vi.fn(async (_id: string, patch: unknown) => void updates.push(patch)) },
      now: () => new Date('2026-11-29T01:00:00Z'),
      log: { info: () => undefined, warn: () => undefined },
    } as unknown as WorkflowDeps;
    return { deps, updates };
  }
  const ids = { runId: 'r-1', pipeline: 'orders', deploymentId: 'd-1' };
  const execution = `${ARN.replace(':stateMachine:', ':execution:')}:r-1-replay`;

  it('a .sync:2 result: execution, status, start and stop (epoch milliseconds as Step Functions gives them)', async () => {
    const { deps, updates } = fakeDeps({ stateMachineArn: ARN, status: 'RUNNING' });
    const out = await recordReplay(deps, { ...ids, result: { ExecutionArn: execution, Status: 'SUCCEEDED', StartDate: 1796000000000, StopDate: 1796000060000, Output: { ok: true } } });
    expect(out).toEqual({ executionArn: execution, status: 'SUCCEEDED' });
    expect(updates).toEqual([{ replay: { stateMachineArn: ARN, executionArn: execution, status: 'SUCCEEDED', startDate: '2026-11-30T00:53:20.000Z', stopDate: '2026-11-30T00:54:20.000Z' } }]);
  });

  it('a failed execution (States.TaskFailed, the description as Cause): ReplayFailedError that says the data is restored and verified', async () => {
    const { deps, updates } = fakeDeps({ stateMachineArn: ARN, executionArn: execution, status: 'RUNNING', startDate: '2026-11-29T00:59:00.000Z' });
    const cause = JSON.stringify({ ExecutionArn: execution, Status: 'FAILED', Error: 'OrdersLoadFailed', Cause: 'bad files', StartDate: 1796000000000, StopDate: 1796000001000 });
    const out = await recordReplay(deps, { ...ids, error: { Error: 'States.TaskFailed', Cause: cause } });
    expect(out).toEqual({ Error: 'ReplayFailedError', Cause: `data restored and verified; replay failed: execution ${execution} FAILED: OrdersLoadFailed: bad files` });
    expect(updates[0]).toMatchObject({ replay: { status: 'FAILED', executionArn: execution, error: { name: 'OrdersLoadFailed', message: 'bad files' } } });
  });

  it('a timeout (text Cause): TIMED_OUT, with the execution the run prepared', async () => {
    const { deps, updates } = fakeDeps({ stateMachineArn: ARN, executionArn: execution, status: 'RUNNING', startDate: '2026-11-29T00:00:00.000Z' });
    const out = await recordReplay(deps, { ...ids, error: { Error: 'States.Timeout', Cause: 'no result within 3600 s' } });
    expect(out).toMatchObject({ Error: 'ReplayFailedError' });
    expect((out as { Cause: string }).Cause).toContain(`data restored and verified; replay failed: execution ${execution} TIMED_OUT`);
    expect(updates[0]).toMatchObject({ replay: { status: 'TIMED_OUT', startDate: '2026-11-29T00:00:00.000Z', stopDate: '2026-11-29T01:00:00.000Z' } });
  });
});

describe('a replay that was not approved', () => {
  it('rejected before any replay was prepared: NOT_APPROVED, no execution, ReplayFailedError with the data restored and verified', async () => {
    const { StateStore } = await import('../../core/runtime/state-store.ts');
    const updates: unknown[] = [];
    const m = manifest({ stateMachineArn: ARN, approval: true });
    vi.spyOn(StateStore.prototype, 'getJson').mockResolvedValue(m as never);
    const deps = {
      ledger: { requireRun: vi.fn(async () => ({ runId: 'r-1' })), updateRun: vi.fn(async (_id: string, patch: unknown) => void updates.push(patch)) },
      s3: {},
      stateBucket: 'state',
      now: () => new Date('2026-11-29T01:00:00Z'),
      log: { info: () => undefined, warn: () => undefined },
    } as unknown as WorkflowDeps;
    const out = await recordReplay(deps, { runId: 'r-1', pipeline: 'orders', deploymentId: 'd-1', error: { Error: 'ApprovalRejectedError', Cause: 'rejected by jane: not tonight' } });
    expect(out).toEqual({ Error: 'ReplayFailedError', Cause: 'data restored and verified; replay not approved (ApprovalRejectedError: rejected by jane: not tonight): no execution started' });
    expect(updates[0]).toMatchObject({ replay: { stateMachineArn: ARN, status: 'NOT_APPROVED' } });
    vi.restoreAllMocks();
  });
});
