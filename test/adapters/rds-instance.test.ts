import { GlueClient } from '@aws-sdk/client-glue';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  CreateDBInstanceCommand,
  DeleteDBSnapshotCommand,
  DescribeDBInstancesCommand,
  DescribeDBSnapshotsCommand,
  ModifyDBInstanceCommand,
  RDSClient,
  type DBInstance,
} from '@aws-sdk/client-rds';
import { rdsInstanceAdapter as adapter, type RdsInstanceDetails } from '../../core/adapters/rds-instance.ts';
import { derivedIdentifier, fitIdentifier, MAX_RESOURCE_ID, runShort, snapshotIdentifier, TAG, tagMap } from '../../core/adapters/rds/names.ts';
import { isPendingCapture, type AdapterContext, type Outcome, type RestorePoint } from '../../core/adapters/types.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { PreflightError, RestorePointMissingError } from '../../core/errors.ts';
import { rdsInstanceUnitSchema, type RdsInstanceUnit } from '../../core/manifest/schema.ts';
import { testS3, uniqueName } from '../support/aws.ts';

// Everything asserted is read back from moto's RDS API (control plane only: instances are `available` at once).

const rds = new RDSClient({});
const s3 = testS3();
const stateBucket = uniqueName('rds-state');
const pipeline = 'orders';

beforeAll(async () => {
  await ensureStateBucket(s3, stateBucket);
});

afterEach(() => {
  vi.restoreAllMocks();
});

function ctx(deploymentId: string, runId?: string, client: RDSClient = rds): AdapterContext {
  return {
    pipeline,
    deploymentId,
    runId,
    s3,
    rds: client,
    glue: new GlueClient({}),
    stateBucket,
    postgres: { connect: () => Promise.reject(new Error('this adapter must not open PostgreSQL connections')) },
    mysql: { connect: () => Promise.reject(new Error('this adapter must not open MySQL connections')) },
    retentionDays: 14,
    now: () => new Date(),
    log: { info: () => undefined, warn: () => undefined },
  };
}

function unit(instanceId: string): RdsInstanceUnit {
  return rdsInstanceUnitSchema.parse({ id: 'warehouse', type: 'rds-instance', instanceId });
}

async function createInstance(id: string): Promise<void> {
  await rds.send(
    new CreateDBInstanceCommand({
      DBInstanceIdentifier: id,
      Engine: 'postgres',
      EngineVersion: '16.3',
      DBInstanceClass: 'db.t3.micro',
      AllocatedStorage: 20,
      MasterUsername: 'etl',
      MasterUserPassword: 'not-a-secret-1',
      Port: 5433,
      BackupRetentionPeriod: 7,
      Tags: [{ Key: 'team', Value: 'data' }],
    }),
  );
}

async function instance(id: string): Promise<DBInstance | undefined> {
  try {
    return (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: id }))).DBInstances?.[0];
  } catch (error) {
    if ((error as Error).name === 'DBInstanceNotFoundFault') return undefined;
    throw error;
  }
}

async function instanceIds(prefix: string): Promise<string[]> {
  const all = (await rds.send(new DescribeDBInstancesCommand({}))).DBInstances ?? [];
  return all.map((i) => i.DBInstanceIdentifier!).filter((id) => id.startsWith(prefix)).sort();
}

/** Calls capture as the state machine does: again after every "pending", until it answers a point. */
async function captureToEnd(u: RdsInstanceUnit, c: AdapterContext): Promise<{ point: RestorePoint<RdsInstanceDetails>; calls: number }> {
  for (let calls = 1; calls <= 20; calls++) {
    const result = await adapter.capture(u, c);
    if (!isPendingCapture(result)) return { point: result, calls };
    expect(result.pending.waitSeconds).toBeGreaterThan(0);
  }
  throw new Error('capture did not finish in 20 calls');
}

/** Calls restore until it is done; returns every call's outcome. */
async function restoreToEnd(u: RdsInstanceUnit, point: RestorePoint<RdsInstanceDetails>, c: AdapterContext): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (let calls = 1; calls <= 20; calls++) {
    const outcome = await adapter.restore(u, point, c);
    outcomes.push(outcome);
    if (!outcome.pending) return outcomes;
  }
  throw new Error('restore did not finish in 20 calls');
}

const writes = (outcomes: Outcome[]) => outcomes.reduce((sum, o) => sum + o.writes, 0);

describe('RDS identifiers', () => {
  it('keeps derived names within 63 characters, valid and deterministic', () => {
    const long = `a${'-b1'.repeat(20)}`.slice(0, 63);
    for (const suffix of ['restored-1a2b3c4d', 'pre-rollback-1a2b3c4d']) {
      const name = derivedIdentifier(long, suffix);
      expect(name.length).toBeLessThanOrEqual(MAX_RESOURCE_ID);
      expect(name).toMatch(/^[a-z](?:-?[a-z0-9])*$/);
      expect(name.endsWith(suffix)).toBe(true);
      expect(derivedIdentifier(long, suffix)).toBe(name);
    }
    expect(derivedIdentifier('orders-db', 'restored-1a2b3c4d')).toBe('orders-db-restored-1a2b3c4d');
  });

  it('names snapshots etlrb-<pipeline>-<deployment>-<unit>, sanitized, within the kind\'s limit', () => {
    expect(snapshotIdentifier({ pipeline: 'orders_eu', deploymentId: 'Release 1.2--x', unitId: 'db' }, 255)).toBe('etlrb-orders-eu-release-1-2-x-db');
    const cut = snapshotIdentifier({ pipeline: 'p', deploymentId: 'd'.repeat(80), unitId: 'u' }, 63);
    expect(cut.length).toBeLessThanOrEqual(63);
    expect(cut).toMatch(/^etlrb-p-d+-[0-9a-f]{8}$/);
    expect(fitIdentifier('9lives', 63)).toBe('x-9lives');
  });
});

describe('rds-instance adapter against moto', () => {
  it('capture starts a tagged manual snapshot, answers pending, then a point with the original\'s settings', async () => {
    const id = uniqueName('capdb');
    await createInstance(id);
    const u = unit(id);
    const c = ctx('d-1');
    const first = await adapter.capture(u, c);
    expect(isPendingCapture(first) && first.pending.status).toContain('was started');

    const { point, calls } = await captureToEnd(u, c);
    expect(calls).toBe(1); // moto makes snapshots available at once: the next poll finds it
    const snapshotId = snapshotIdentifier({ pipeline, deploymentId: 'd-1', unitId: 'warehouse' }, 255);
    expect(point.details.snapshotId).toBe(snapshotId);
    expect(point.count).toBe(1);
    expect(point.checksum).toMatch(/^[0-9a-f]{64}$/);
    expect(point.details.settings).toMatchObject({ engine: 'postgres', engineVersion: '16.3', instanceClass: 'db.t3.micro', port: 5433, multiAZ: false, tags: { team: 'data' } });

    // Read back: one manual snapshot (besides moto's automated one), tagged with the point.
    const snaps = (await rds.send(new DescribeDBSnapshotsCommand({ DBInstanceIdentifier: id }))).DBSnapshots ?? [];
    const manual = snaps.filter((s) => s.SnapshotType === 'manual');
    expect(manual.map((s) => s.DBSnapshotIdentifier)).toEqual([snapshotId]);
    expect(tagMap(manual[0]!.TagList)).toMatchObject({ [TAG.pipeline]: pipeline, [TAG.deployment]: 'd-1', [TAG.unit]: 'warehouse' });

    // Idempotent: a retried capture returns the same point and takes no second snapshot.
    const again = await adapter.capture(u, c);
    expect(isPendingCapture(again)).toBe(false);
    expect((again as RestorePoint<RdsInstanceDetails>).checksum).toBe(point.checksum);
    expect(((await rds.send(new DescribeDBSnapshotsCommand({ DBInstanceIdentifier: id }))).DBSnapshots ?? []).filter((s) => s.SnapshotType === 'manual')).toHaveLength(1);
  });

  it('capture refuses a missing instance and a foreign snapshot under its name', async () => {
    await expect(adapter.capture(unit(uniqueName('nodb')), ctx('d-1'))).rejects.toBeInstanceOf(PreflightError);
  });

  it('restore: snapshot to <id>-restored-<run>, original renamed and protected, restored renamed to <id>; rerun writes nothing', async () => {
    const id = uniqueName('swapdb');
    await createInstance(id);
    const u = unit(id);
    const { point } = await captureToEnd(u, ctx('d-2'));
    const original = await instance(id);

    const runId = 'run-swap-1';
    const short = runShort(runId);
    const dry = await adapter.diff(u, point, ctx('d-2', runId));
    expect(dry.notes.join('\n')).toContain(`from snapshot ${point.details.snapshotId}`);
    expect(dry.notes.join('\n')).toContain(`rename ${id} to ${id}-pre-rollback-${short}`);
    expect(dry.changes).toEqual({ dbInstancesRestoredFromSnapshot: 1, dbInstancesRenamed: 2 });

    const outcomes = await restoreToEnd(u, point, ctx('d-2', runId));
    // One mutation per call: restore, rename original, rename restored; then a call that finds it done.
    expect(outcomes.map((o) => o.writes)).toEqual([1, 1, 1, 0]);
    expect(outcomes.at(-1)!.keptAt).toBe(`DB instance ${id}-pre-rollback-${short}`);

    const live = (await instance(id))!;
    expect(tagMap(live.TagList)).toMatchObject({ team: 'data', [TAG.restoredFrom]: `snapshot:${point.details.snapshotId}`, [TAG.run]: runId });
    expect(live).toMatchObject({ DBInstanceClass: 'db.t3.micro', Engine: 'postgres', EngineVersion: '16.3', DBInstanceStatus: 'available' });
    expect(live.Endpoint?.Port).toBe(5433);
    const kept = (await instance(`${id}-pre-rollback-${short}`))!;
    expect(kept.DeletionProtection).toBe(true);
    expect(kept.InstanceCreateTime).toEqual(original!.InstanceCreateTime);
    expect(tagMap(kept.TagList)[TAG.keptFor]).toBe(`${pipeline}/d-2/warehouse`);
    expect(await instance(`${id}-restored-${short}`)).toBeUndefined();
    expect(await instanceIds(id)).toEqual([id, `${id}-pre-rollback-${short}`]);

    const checks = await adapter.verify(u, point, ctx('d-2', runId));
    expect(checks.filter((ch) => !ch.ok)).toEqual([]);

    // Reruns, by this run or another: nothing to do, nothing written.
    const rerun = await restoreToEnd(u, point, ctx('d-2', 'run-swap-2'));
    expect(writes(rerun)).toBe(0);
    expect((await adapter.diff(u, point, ctx('d-2', 'run-swap-2'))).writes).toBe(0);
    expect(await instanceIds(id)).toEqual([id, `${id}-pre-rollback-${short}`]);
  });

  it('a failure between the two renames leaves <id> absent; a rerun by a new run completes the second rename', async () => {
    const id = uniqueName('faildb');
    await createInstance(id);
    const u = unit(id);
    const { point } = await captureToEnd(u, ctx('d-3'));
    const runId = 'run-fail-1';
    const short = runShort(runId);

    const faulty = new RDSClient({});
    const send = faulty.send.bind(faulty);
    vi.spyOn(faulty, 'send').mockImplementation(((command: unknown) => {
      if (command instanceof ModifyDBInstanceCommand && command.input.NewDBInstanceIdentifier === id) {
        return Promise.reject(Object.assign(new Error('injected: connection reset'), { name: 'InjectedFault' }));
      }
      return send(command as never);
    }) as never);
    await expect(restoreToEnd(u, point, ctx('d-3', runId, faulty))).rejects.toThrow('injected');

    expect(await instance(id)).toBeUndefined();
    expect(await instanceIds(id)).toEqual([`${id}-pre-rollback-${short}`, `${id}-restored-${short}`]);

    const resumed = await restoreToEnd(u, point, ctx('d-3', 'run-fail-2'));
    expect(resumed.map((o) => o.changes)).toEqual([{ dbInstancesRenamed: 1 }, {}]);
    expect(await instanceIds(id)).toEqual([id, `${id}-pre-rollback-${short}`]);
    expect(tagMap((await instance(id))!.TagList)[TAG.run]).toBe(runId);
    expect((await instance(`${id}-pre-rollback-${short}`))!.DeletionProtection).toBe(true);
    expect((await adapter.verify(u, point, ctx('d-3', 'run-fail-2'))).every((ch) => ch.ok)).toBe(true);
  });

  it('falls back to a point-in-time restore to the capture time when the snapshot is gone', async () => {
    const id = uniqueName('pitrdb');
    await createInstance(id);
    const u = unit(id);
    const { point } = await captureToEnd(u, ctx('d-4'));
    await rds.send(new DeleteDBSnapshotCommand({ DBSnapshotIdentifier: point.details.snapshotId }));

    const dry = await adapter.diff(u, point, ctx('d-4', 'run-pitr'));
    expect(dry.changes).toMatchObject({ dbInstancesRestoredToPointInTime: 1 });
    expect(dry.notes.join('\n')).toContain(`point-in-time restore to ${point.capturedAt}`);

    const outcomes = await restoreToEnd(u, point, ctx('d-4', 'run-pitr'));
    expect(outcomes[0]!.changes).toEqual({ dbInstancesRestoredToPointInTime: 1 });
    const live = (await instance(id))!;
    expect(tagMap(live.TagList)[TAG.restoredFrom]).toBe(`pitr:${point.capturedAt}`);
    expect(live.DBInstanceClass).toBe('db.t3.micro');
    expect((await adapter.verify(u, point, ctx('d-4', 'run-pitr'))).every((ch) => ch.ok)).toBe(true);
  });

  it('verify fails when <id> was not restored from the point', async () => {
    const id = uniqueName('vfdb');
    await createInstance(id);
    const u = unit(id);
    const { point } = await captureToEnd(u, ctx('d-5'));
    const checks = await adapter.verify(u, point, ctx('d-5', 'run-v'));
    expect(checks.find((ch) => ch.name === 'restoredFrom')).toMatchObject({ ok: false, actual: 'not restored by etl-rollback' });
  });

  it('release deletes the point\'s snapshot and the kept original (protection lifted), and nothing else', async () => {
    const id = uniqueName('reldb');
    await createInstance(id);
    const u = unit(id);
    const { point } = await captureToEnd(u, ctx('d-6'));
    await restoreToEnd(u, point, ctx('d-6', 'run-rel'));
    const kept = `${id}-pre-rollback-${runShort('run-rel')}`;
    expect(await instanceIds(id)).toEqual([id, kept]);

    await adapter.release(u, point, ctx('d-6'));
    expect(await instanceIds(id)).toEqual([id]);
    const snaps = (await rds.send(new DescribeDBSnapshotsCommand({}))).DBSnapshots ?? [];
    expect(snaps.map((s) => s.DBSnapshotIdentifier)).not.toContain(point.details.snapshotId);
    // Released twice: nothing left to delete, no error.
    await adapter.release(u, point, ctx('d-6'));
    expect(await instance(id)).toBeDefined();
  });

  it('undo record names the instance the restore keeps; its restore swaps it back by renames, resumes after a crash, verifies', async () => {
    const id = uniqueName('undodb');
    await createInstance(id);
    // The original is protected from deletion: it gets its protection back when it takes <id> again.
    await rds.send(new ModifyDBInstanceCommand({ DBInstanceIdentifier: id, DeletionProtection: true, ApplyImmediately: true }));
    const u = unit(id);
    const { point } = await captureToEnd(u, ctx('d-u'));
    const original = (await instance(id))!;
    const rollback = 'run-undo-rb';
    const record = await adapter.undoRecord!(u, ctx(`undo-${rollback}`, rollback));
    expect(isPendingCapture(record)).toBe(false);
    const kept = (record as RestorePoint<RdsInstanceDetails>).details.kept!;
    expect(kept).toEqual({
      kind: 'kept',
      runId: rollback,
      keptId: `${id}-pre-rollback-${runShort(rollback)}`,
      resourceId: original.DbiResourceId,
      createdAt: original.InstanceCreateTime!.toISOString(),
      deletionProtection: true,
    });
    await restoreToEnd(u, point, ctx('d-u', rollback));
    const rolledBack = (await instance(id))!;

    // The undo, by a run whose rename of the kept one to <id> fails once: <id> absent, nothing deleted.
    const undoPoint = record as RestorePoint<RdsInstanceDetails>;
    const undo = 'run-undo-1';
    const dry = await adapter.diff(u, undoPoint, ctx(`undo-${rollback}`, undo));
    expect(dry.changes).toEqual({ dbInstancesRenamed: 2 });
    expect(dry.notes.join('\n')).toContain(`then ${kept.keptId} (kept by run ${rollback}) back to ${id}`);
    const faulty = new RDSClient({});
    const send = faulty.send.bind(faulty);
    vi.spyOn(faulty, 'send').mockImplementation(((command: unknown) => {
      if (command instanceof ModifyDBInstanceCommand && command.input.NewDBInstanceIdentifier === id) {
        return Promise.reject(Object.assign(new Error('injected: connection reset'), { name: 'InjectedFault' }));
      }
      return send(command as never);
    }) as never);
    await expect(restoreToEnd(u, undoPoint, ctx(`undo-${rollback}`, undo, faulty))).rejects.toThrow('injected');
    const undoKept = `${id}-pre-rollback-${runShort(undo)}`;
    expect(await instanceIds(id)).toEqual([kept.keptId, undoKept].sort());

    // A rerun by another run completes the swap: <id> is the original again, protected as it was; the rolled-back one kept.
    const resumed = await restoreToEnd(u, undoPoint, ctx(`undo-${rollback}`, 'run-undo-2'));
    expect(resumed.map((o) => o.changes)).toEqual([{ dbInstancesRenamed: 1 }, {}]);
    expect(await instanceIds(id)).toEqual([id, undoKept].sort());
    const live = (await instance(id))!;
    expect(live.InstanceCreateTime).toEqual(original.InstanceCreateTime);
    expect(live.DeletionProtection).toBe(true);
    const replaced = (await instance(undoKept))!;
    expect(replaced.InstanceCreateTime).toEqual(rolledBack.InstanceCreateTime);
    expect(replaced.DeletionProtection).toBe(true);
    expect(tagMap(replaced.TagList)[TAG.keptFor]).toBe(`${pipeline}/undo-${rollback}/warehouse`);
    expect((await adapter.verify(u, undoPoint, ctx(`undo-${rollback}`, 'run-undo-2'))).filter((ch) => !ch.ok)).toEqual([]);
    // Verify of the snapshot point now fails: <id> is not the restored copy.
    expect((await adapter.verify(u, point, ctx('d-u', 'run-undo-2'))).some((ch) => !ch.ok)).toBe(true);

    // A later rollback to the same point (the earlier swap was undone): a new swap under its own run's names.
    const again = 'run-undo-rb-2';
    const outcomes = await restoreToEnd(u, point, ctx('d-u', again));
    expect(outcomes.map((o) => o.writes)).toEqual([1, 1, 1, 0]);
    expect(await instanceIds(id)).toEqual([id, `${id}-pre-rollback-${runShort(again)}`, undoKept].sort());
  });

  it('an undo whose kept instance is gone, or whose run found no <id>, is refused naming it, touching nothing', async () => {
    const id = uniqueName('gonedb');
    await createInstance(id);
    const u = unit(id);
    const record = (await adapter.undoRecord!(u, ctx('undo-run-gone', 'run-gone'))) as RestorePoint<RdsInstanceDetails>;
    // The recorded instance is not at <id> any more, nor under the name the run keeps it under (as if deleted by hand,
    // or released): nothing to put back.
    await rds.send(new ModifyDBInstanceCommand({ DBInstanceIdentifier: id, NewDBInstanceIdentifier: `${id}-elsewhere`, ApplyImmediately: true }));
    const error = await adapter.restore(u, record, ctx('undo-run-gone', 'run-gone-undo')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RestorePointMissingError);
    expect((error as Error).message).toContain(`${id}-pre-rollback-${runShort('run-gone')}`);
    expect(await instanceIds(id)).toEqual([`${id}-elsewhere`]);
    expect((await adapter.verify(u, record, ctx('undo-run-gone', 'run-gone-undo'))).find((ch) => ch.name === 'exists')?.ok).toBe(false);

    const none = (await adapter.undoRecord!(unit(`${id}-none`), ctx('undo-run-none', 'run-none'))) as RestorePoint<RdsInstanceDetails>;
    expect(none).toMatchObject({ count: 0, details: { kept: { keptId: '' } } });
    await expect(adapter.restore(u, none, ctx('undo-run-none', 'run-none-undo'))).rejects.toThrow(/found no DB instance .*nothing to put back/);
    expect(await instanceIds(id)).toEqual([`${id}-elsewhere`]);
  });
});
