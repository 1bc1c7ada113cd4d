import {
  BatchCreatePartitionCommand,
  BatchDeletePartitionCommand,
  CreateDatabaseCommand,
  CreateTableCommand,
  DeleteTableCommand,
  GetPartitionsCommand,
  GetTableCommand,
  GlueClient,
  UpdatePartitionCommand,
  UpdateTableCommand,
  type Column,
  type PartitionInput,
} from '@aws-sdk/client-glue';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { createGlueTableAdapter, glueTableAdapter, type GlueTableDetails } from '../../core/adapters/glue-table.ts';
import { canonicalDefinition, pointKeyFor, quarantineKeyFor, readQuarantineDocument, storedPartition, storedTable } from '../../core/adapters/glue/document.ts';
import { DEFAULT_RETRY_POLICY } from '../../core/adapters/s3/retry.ts';
import type { AdapterContext, Outcome, RestorePoint } from '../../core/adapters/types.ts';
import { InputError, ManifestError, PreflightError, RestorePointMissingError } from '../../core/errors.ts';
import { loadManifestFile, validateManifest } from '../../core/manifest/load.ts';
import { planRollback } from '../../core/plan/plan.ts';
import { glueTableUnitSchema, type GlueTableUnit } from '../../core/manifest/schema.ts';
import { ensureStateBucket } from '../../core/runtime/state-store.ts';
import { countingClient, requestCounts, testS3, uniqueName } from '../support/aws.ts';

// Everything is sent to moto's Glue API through the real SDK, behind the version-guard proxy, which counts the requests
// (and a batch's entries) it forwards for a tagged client: the write counts below are measured on the wire.

const s3 = testS3();
const admin = new GlueClient({});
const stateBucket = uniqueName('glue-state');
const database = uniqueName('lake').replace(/-/g, '_');
const pipeline = 'orders';

const WRITES = ['CreateTable', 'UpdateTable', 'DeleteTable', 'BatchCreatePartition', 'BatchDeletePartition', 'BatchUpdatePartition', 'CreatePartition', 'UpdatePartition', 'DeletePartition'];
const glueWrites = (counts: Record<string, number>) => Object.fromEntries(Object.entries(counts).filter(([op]) => WRITES.some((w) => op === w || op === `${w} entries`)));

beforeAll(async () => {
  await ensureStateBucket(s3, stateBucket);
  await admin.send(new CreateDatabaseCommand({ DatabaseInput: { Name: database } }));
});

/** A context whose Glue client is counted under `tag`. */
function ctx(tag: string, deploymentId: string, runId?: string, glue?: GlueClient, countS3 = false): AdapterContext {
  return {
    pipeline,
    deploymentId,
    runId,
    s3: countS3 ? countingClient(testS3(), tag) : s3,
    rds: undefined as never,
    glue: glue ?? countingClient(new GlueClient({}), tag),
    stateBucket,
    postgres: { connect: () => Promise.reject(new Error('this adapter must not open PostgreSQL connections')) },
    mysql: { connect: () => Promise.reject(new Error('this adapter must not open MySQL connections')) },
    retentionDays: 14,
    now: () => new Date(),
    log: { info: () => undefined, warn: () => undefined },
  };
}

function unit(table: string, extra: Partial<Record<'partitions' | 'id', string>> = {}): GlueTableUnit {
  return glueTableUnitSchema.parse({ id: extra.id ?? 'orders_catalog', type: 'glue-table', database, table, ...(extra.partitions ? { partitions: extra.partitions } : {}) });
}

const COLUMNS: Column[] = [
  { Name: 'order_id', Type: 'bigint' },
  { Name: 'amount', Type: 'double', Comment: 'EUR' },
];
const location = (table: string, dt: string, version = 'v1') => `s3://orders-lake/${table}/${version}/dt=${dt}/`;
const sd = (loc: string, columns = COLUMNS) => ({
  Columns: columns,
  Location: loc,
  InputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat',
  OutputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat',
  SerdeInfo: { SerializationLibrary: 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe', Parameters: { 'serialization.format': '1' } },
});
const partitionInput = (table: string, dt: string, version = 'v1'): PartitionInput => ({ Values: [dt], StorageDescriptor: sd(location(table, dt, version)), Parameters: { note: version } });
const day = (n: number) => `2026-11-${String(n).padStart(2, '0')}`;

async function createTable(table: string, days: number[]): Promise<void> {
  await admin.send(
    new CreateTableCommand({
      DatabaseName: database,
      TableInput: {
        Name: table,
        Description: 'orders, one partition a day',
        TableType: 'EXTERNAL_TABLE',
        Parameters: { classification: 'parquet', EXTERNAL: 'TRUE' },
        PartitionKeys: [{ Name: 'dt', Type: 'string' }],
        StorageDescriptor: sd(`s3://orders-lake/${table}/`),
      },
    }),
  );
  for (let i = 0; i < days.length; i += 100) {
    await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: days.slice(i, i + 100).map((d) => partitionInput(table, day(d))) }));
  }
}

/** The catalog as GetTable/GetPartitions answer it, in canonical form, partitions by values. */
async function readBack(table: string): Promise<{ definition: string; partitions: Record<string, string>; created: Record<string, number> }> {
  const t = await admin.send(new GetTableCommand({ DatabaseName: database, Name: table }));
  const parts = await admin.send(new GetPartitionsCommand({ DatabaseName: database, TableName: table }));
  const partitions: Record<string, string> = {};
  const created: Record<string, number> = {};
  for (const p of parts.Partitions ?? []) {
    partitions[p.Values!.join('/')] = canonicalDefinition(storedPartition(p));
    created[p.Values!.join('/')] = p.CreationTime!.getTime();
  }
  return { definition: canonicalDefinition(storedTable(t.Table!)), partitions, created };
}

async function tableExists(table: string): Promise<boolean> {
  try {
    await admin.send(new GetTableCommand({ DatabaseName: database, Name: table }));
    return true;
  } catch (error) {
    if ((error as Error).name === 'EntityNotFoundException') return false;
    throw error;
  }
}

/** The bad deploy: a column added, two partitions added, one dropped, one moved to a new location. */
async function badDeploy(table: string): Promise<void> {
  const t = (await admin.send(new GetTableCommand({ DatabaseName: database, Name: table }))).Table!;
  await admin.send(
    new UpdateTableCommand({
      DatabaseName: database,
      TableInput: {
        Name: table,
        Description: t.Description,
        TableType: t.TableType,
        Parameters: t.Parameters,
        PartitionKeys: t.PartitionKeys,
        StorageDescriptor: sd(t.StorageDescriptor!.Location!, [...COLUMNS, { Name: 'discount', Type: 'double' }]),
      },
    }),
  );
  await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: [partitionInput(table, day(6), 'bad'), partitionInput(table, day(7), 'bad')] }));
  await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: [{ Values: [day(2)] }] }));
  await admin.send(new UpdatePartitionCommand({ DatabaseName: database, TableName: table, PartitionValueList: [day(3)], PartitionInput: partitionInput(table, day(3), 'bad') }));
}

describe('glue-table adapter against moto Glue', () => {
  it('rolls back an added column, added, dropped and moved partitions exactly, writing only what differs (counted at the server)', async () => {
    const table = uniqueName('orders').replace(/-/g, '_');
    await createTable(table, [1, 2, 3, 4, 5]);
    const before = await readBack(table);
    const u = unit(table);

    const tagCapture = uniqueName('capture');
    const point = (await glueTableAdapter.capture(u, ctx(tagCapture, 'd-1'))) as RestorePoint<GlueTableDetails>;
    expect(point).toMatchObject({ type: 'glue-table', count: 5, details: { database, table, documentKey: pointKeyFor(pipeline, 'd-1', u.id) } });
    expect(point.checksum).toMatch(/^[0-9a-f]{64}$/);
    expect(glueWrites(await requestCounts(tagCapture))).toEqual({});
    // Idempotent: a second capture returns the same point, reading only the stored document.
    const tagAgain = uniqueName('capture-again');
    expect(await glueTableAdapter.capture(u, ctx(tagAgain, 'd-1'))).toEqual(point);
    expect(await requestCounts(tagAgain)).toEqual({});

    await badDeploy(table);
    const bad = await readBack(table);
    expect(bad.definition).not.toBe(before.definition);

    // Dry run: the counts, and not one write on the wire.
    const tagDiff = uniqueName('diff');
    const diff = await glueTableAdapter.diff(u, point, ctx(tagDiff, 'd-1', 'run-dry', undefined, true));
    expect(diff.changes).toEqual({ tablesCreated: 0, tablesUpdated: 1, partitionsCreated: 1, partitionsDeleted: 2, partitionsUpdated: 1 });
    expect(diff.writes).toBe(5);
    // (S3 too: one GET, the restore-point document.)
    expect(await requestCounts(tagDiff)).toEqual({ GetTable: 1, GetPartitions: 1, 'S3 GET': 1 });
    expect(await readBack(table)).toEqual(bad);

    const tagRestore = uniqueName('restore');
    const outcome = await glueTableAdapter.restore(u, point, ctx(tagRestore, 'd-1', 'run-1'));
    expect(outcome.changes).toEqual(diff.changes);
    expect(outcome.writes).toBe(5);
    const restoreCounts = await requestCounts(tagRestore);
    // One call each, carrying exactly the partitions that differ: the two unchanged ones are not sent.
    expect(glueWrites(restoreCounts)).toEqual({
      UpdateTable: 1,
      BatchDeletePartition: 1,
      'BatchDeletePartition entries': 2,
      BatchCreatePartition: 1,
      'BatchCreatePartition entries': 1,
      BatchUpdatePartition: 1,
      'BatchUpdatePartition entries': 1,
    });

    const after = await readBack(table);
    expect(after.definition).toBe(before.definition);
    expect(after.partitions).toEqual(before.partitions);
    // moto stamps a new CreationTime on every partition it writes: the untouched ones keep theirs.
    expect(after.created[day(1)]).toBe(before.created[day(1)]);
    expect(after.created[day(4)]).toBe(before.created[day(4)]);
    expect(after.created[day(5)]).toBe(before.created[day(5)]);

    // What was replaced is kept.
    expect(outcome.keptAt).toBe(`s3://${stateBucket}/${quarantineKeyFor('run-1', u.id)}`);
    const kept = await readQuarantineDocument(s3, DEFAULT_RETRY_POLICY, stateBucket, quarantineKeyFor('run-1', u.id));
    expect(kept?.definition?.StorageDescriptor?.Columns?.map((c) => c.Name)).toEqual(['order_id', 'amount', 'discount']);
    expect(kept?.partitions.map((p) => p.Values[0]).sort()).toEqual([day(1), day(3), day(4), day(5), day(6), day(7)]);
    expect(kept?.partitions.find((p) => p.Values[0] === day(3))?.StorageDescriptor?.Location).toBe(location(table, day(3), 'bad'));

    expect(await glueTableAdapter.verify(u, point, ctx(uniqueName('verify'), 'd-1', 'run-1'))).toEqual([
      { name: 'partitionCount', ok: true, expected: 5, actual: 5 },
      { name: 'catalogChecksum', ok: true, expected: point.checksum, actual: point.checksum },
    ]);

    // A rerun writes nothing.
    const tagRerun = uniqueName('rerun');
    const rerun = await glueTableAdapter.restore(u, point, ctx(tagRerun, 'd-1', 'run-2'));
    expect(rerun.writes).toBe(0);
    expect(rerun.keptAt).toBeUndefined();
    expect(glueWrites(await requestCounts(tagRerun))).toEqual({});
    expect(await readQuarantineDocument(s3, DEFAULT_RETRY_POLICY, stateBucket, quarantineKeyFor('run-2', u.id))).toBeUndefined();
    console.log(`glue-table must-show: capture ${JSON.stringify(await requestCounts(tagCapture))}; diff ${JSON.stringify(await requestCounts(tagDiff))}; restore ${JSON.stringify(restoreCounts)}; rerun ${JSON.stringify(await requestCounts(tagRerun))}`);
  });

  it('a dropped table is created again with its partitions; verify fails before, passes after', async () => {
    const table = uniqueName('dropped').replace(/-/g, '_');
    await createTable(table, [1, 2, 3]);
    const before = await readBack(table);
    const u = unit(table);
    const point = (await glueTableAdapter.capture(u, ctx(uniqueName('c'), 'd-drop'))) as RestorePoint<GlueTableDetails>;
    await admin.send(new DeleteTableCommand({ DatabaseName: database, Name: table }));

    const failing = await glueTableAdapter.verify(u, point, ctx(uniqueName('v'), 'd-drop'));
    expect(failing.find((c) => c.name === 'catalogChecksum')).toMatchObject({ ok: false, actual: 'table missing', detail: 'table missing; 3 partition(s) missing' });
    expect(failing.find((c) => c.name === 'partitionCount')).toMatchObject({ ok: false, expected: 3, actual: 0 });

    const tag = uniqueName('restore-dropped');
    const outcome = await glueTableAdapter.restore(u, point, ctx(tag, 'd-drop', 'run-drop'));
    expect(outcome.changes).toEqual({ tablesCreated: 1, tablesUpdated: 0, partitionsCreated: 3, partitionsDeleted: 0, partitionsUpdated: 0 });
    expect(glueWrites(await requestCounts(tag))).toEqual({ CreateTable: 1, BatchCreatePartition: 1, 'BatchCreatePartition entries': 3 });
    const after = await readBack(table);
    expect(after.definition).toBe(before.definition);
    expect(after.partitions).toEqual(before.partitions);
    const kept = await readQuarantineDocument(s3, DEFAULT_RETRY_POLICY, stateBucket, quarantineKeyFor('run-drop', u.id));
    expect(kept).toMatchObject({ definition: null, partitions: [] });
    expect((await glueTableAdapter.verify(u, point, ctx(uniqueName('v'), 'd-drop'))).every((c) => c.ok)).toBe(true);
    expect((await glueTableAdapter.restore(u, point, ctx(uniqueName('r'), 'd-drop', 'run-drop-2'))).writes).toBe(0);
  });

  it('a partition filter keeps partitions out of its scope untouched', async () => {
    const table = uniqueName('scoped').replace(/-/g, '_');
    await createTable(table, [1, 2, 3, 4, 5]);
    const u = unit(table, { partitions: `dt >= '${day(3)}'` });
    const point = (await glueTableAdapter.capture(u, ctx(uniqueName('c'), 'd-scope'))) as RestorePoint<GlueTableDetails>;
    expect(point.count).toBe(3);

    // Out of scope: 01 dropped, a new 2026-10-31 partition. In scope: 04 moved, 09 added.
    await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: [{ Values: [day(1)] }] }));
    await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: [partitionInput(table, '2026-10-31', 'bad'), partitionInput(table, day(9), 'bad')] }));
    await admin.send(new UpdatePartitionCommand({ DatabaseName: database, TableName: table, PartitionValueList: [day(4)], PartitionInput: partitionInput(table, day(4), 'bad') }));
    const bad = await readBack(table);

    const tag = uniqueName('restore-scope');
    const outcome = await glueTableAdapter.restore(u, point, ctx(tag, 'd-scope', 'run-scope'));
    expect(outcome.changes).toEqual({ tablesCreated: 0, tablesUpdated: 0, partitionsCreated: 0, partitionsDeleted: 1, partitionsUpdated: 1 });
    expect(glueWrites(await requestCounts(tag))).toEqual({ BatchDeletePartition: 1, 'BatchDeletePartition entries': 1, BatchUpdatePartition: 1, 'BatchUpdatePartition entries': 1 });
    const after = await readBack(table);
    expect(Object.keys(after.partitions).sort()).toEqual(['2026-10-31', day(2), day(3), day(4), day(5)]);
    expect(after.partitions['2026-10-31']).toBe(bad.partitions['2026-10-31']);
    expect(after.created['2026-10-31']).toBe(bad.created['2026-10-31']);
    expect(after.created[day(2)]).toBe(bad.created[day(2)]);
    expect(after.partitions[day(4)]).toContain(location(table, day(4)));
    expect((await glueTableAdapter.verify(u, point, ctx(uniqueName('v'), 'd-scope'))).every((c) => c.ok)).toBe(true);
  });

  it('pages through GetPartitions with NextToken (moto answers all at once: a test middleware cuts its answers into pages)', async () => {
    const table = uniqueName('paged').replace(/-/g, '_');
    await createTable(table, [1, 2, 3, 4, 5, 6, 7]);
    const tag = uniqueName('paged');
    const glue = countingClient(new GlueClient({}), tag);
    // moto 5 ignores MaxResults, NextToken and Segment on GetPartitions. Each page is still a request to moto; this
    // middleware keeps MaxResults of its answer from the offset in NextToken and says where the next page starts.
    glue.middlewareStack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        if (context.commandName !== 'GetPartitionsCommand') return result;
        const input = args.input as { NextToken?: string; MaxResults?: number };
        const output = result.output as { Partitions?: unknown[]; NextToken?: string };
        const from = Number(input.NextToken ?? 0);
        const all = output.Partitions ?? [];
        output.Partitions = all.slice(from, from + (input.MaxResults ?? all.length));
        output.NextToken = from + (input.MaxResults ?? all.length) < all.length ? String(from + input.MaxResults!) : undefined;
        return result;
      },
      { step: 'initialize', name: 'pageMotoAnswers' },
    );
    const adapter = createGlueTableAdapter({ pageSize: 3 });
    const point = (await adapter.capture(unit(table), ctx(tag, 'd-page', undefined, glue))) as RestorePoint<GlueTableDetails>;
    expect(point.count).toBe(7);
    expect(await requestCounts(tag)).toEqual({ GetTable: 1, GetPartitions: 3 });
    expect(point.checksum).toBe(((await glueTableAdapter.capture(unit(table), ctx(uniqueName('c'), 'd-page'))) as RestorePoint<GlueTableDetails>).checksum);
  });

  it('retries throttled batch entries and fails loudly, naming the partition, on any other entry error', async () => {
    const table = uniqueName('throttled').replace(/-/g, '_');
    await createTable(table, [1, 2, 3]);
    const u = unit(table);
    const point = (await glueTableAdapter.capture(u, ctx(uniqueName('c'), 'd-thr'))) as RestorePoint<GlueTableDetails>;
    await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: [{ Values: [day(1)] }, { Values: [day(2)] }] }));

    // The first BatchCreatePartition leaves one entry out of what it sends to moto and reports it throttled, the way
    // Glue answers a partly throttled batch (HTTP 200, Errors[]).
    const withEntryError = (tag: string, code: string) => {
      const glue = countingClient(new GlueClient({}), tag);
      let first = true;
      glue.middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName !== 'BatchCreatePartitionCommand' || !first) return next(args);
          first = false;
          const input = args.input as { PartitionInputList: PartitionInput[] };
          const [held, ...rest] = input.PartitionInputList;
          const result = await next({ ...args, input: { ...input, PartitionInputList: rest } });
          (result.output as { Errors?: unknown[] }).Errors = [{ PartitionValues: held!.Values, ErrorDetail: { ErrorCode: code, ErrorMessage: 'Rate exceeded' } }];
          return result;
        },
        { step: 'initialize', name: 'entryError' },
      );
      return glue;
    };
    const adapter = createGlueTableAdapter({ retry: { baseDelayMs: 1, maxDelayMs: 5 } });
    const deniedTag = uniqueName('denied');
    await expect(adapter.restore(u, point, ctx(deniedTag, 'd-thr', 'run-denied', withEntryError(deniedTag, 'AccessDeniedException')))).rejects.toThrow(
      new RegExp(`BatchCreatePartition of ${database}\\.${table} failed for 1 partition\\(s\\): .*${day(1)}.*AccessDeniedException`),
    );
    // The denied run created 2026-11-02 before failing: drop it again, so that two are missing.
    await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: [{ Values: [day(2)] }] }));
    const tag = uniqueName('throttled');
    const outcome: Outcome = await adapter.restore(u, point, ctx(tag, 'd-thr', 'run-thr', withEntryError(tag, 'ThrottlingException')));
    // First call: 02 written, 01 throttled; second call: 01 alone.
    expect(outcome.changes.partitionsCreated).toBe(2);
    expect(glueWrites(await requestCounts(tag))).toEqual({ BatchCreatePartition: 2, 'BatchCreatePartition entries': 2 });
    expect((await adapter.verify(u, point, ctx(uniqueName('v'), 'd-thr'))).every((c) => c.ok)).toBe(true);
  });

  it('a batch the SDK sends again after a lost answer: the entries it reports as existing were created by the first attempt', async () => {
    const table = uniqueName('lost').replace(/-/g, '_');
    await createTable(table, [1, 2]);
    const u = unit(table);
    const point = (await glueTableAdapter.capture(u, ctx(uniqueName('c'), 'd-lost'))) as RestorePoint<GlueTableDetails>;
    await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: [{ Values: [day(1)] }, { Values: [day(2)] }] }));
    const tag = uniqueName('lost');
    const glue = countingClient(new GlueClient({}), tag);
    let lost = false;
    // Below the SDK's retry: moto applies the first BatchCreatePartition, its answer is lost on the way back.
    glue.middlewareStack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        if (context.commandName === 'BatchCreatePartitionCommand' && !lost) {
          lost = true;
          throw Object.assign(new Error('socket hang up'), { name: 'TimeoutError' });
        }
        return result;
      },
      { step: 'deserialize', name: 'loseFirstAnswer' },
    );
    const outcome = await glueTableAdapter.restore(u, point, ctx(tag, 'd-lost', 'run-lost', glue));
    expect(outcome.changes.partitionsCreated).toBe(2);
    expect(glueWrites(await requestCounts(tag))).toEqual({ BatchCreatePartition: 2, 'BatchCreatePartition entries': 4 });
    expect((await glueTableAdapter.verify(u, point, ctx(uniqueName('v'), 'd-lost'))).every((c) => c.ok)).toBe(true);
  });

  it('property: for random captured and live partition sets, restore writes |symmetric difference| + |changed| entries, then verifies equal', async () => {
    const table = uniqueName('prop').replace(/-/g, '_');
    await createTable(table, []);
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: 30 }), { maxLength: 12 }),
        fc.uniqueArray(fc.integer({ min: 1, max: 30 }), { maxLength: 12 }),
        fc.array(fc.boolean(), { minLength: 30, maxLength: 30 }),
        async (captured, live, changed) => {
          n += 1;
          // Reset the table to `captured`, capture, then make it `live` (shared days moved where `changed` says so).
          const existing = await admin.send(new GetPartitionsCommand({ DatabaseName: database, TableName: table }));
          const gone = (existing.Partitions ?? []).map((p) => ({ Values: p.Values! }));
          for (let i = 0; i < gone.length; i += 25) await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: gone.slice(i, i + 25) }));
          if (captured.length > 0) await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: captured.map((d) => partitionInput(table, day(d))) }));
          const deployment = `d-prop-${n}`;
          const u = unit(table);
          const point = (await glueTableAdapter.capture(u, ctx(uniqueName('c'), deployment))) as RestorePoint<GlueTableDetails>;
          const before = await readBack(table);

          const capturedSet = new Set(captured);
          const liveSet = new Set(live);
          const removed = captured.filter((d) => !liveSet.has(d));
          const added = live.filter((d) => !capturedSet.has(d));
          const moved = live.filter((d) => capturedSet.has(d) && changed[d - 1]);
          if (removed.length > 0) await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: removed.map((d) => ({ Values: [day(d)] })) }));
          if (added.length > 0) await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: added.map((d) => partitionInput(table, day(d), 'bad')) }));
          for (const d of moved) await admin.send(new UpdatePartitionCommand({ DatabaseName: database, TableName: table, PartitionValueList: [day(d)], PartitionInput: partitionInput(table, day(d), 'bad') }));

          const tag = uniqueName('prop');
          const outcome = await glueTableAdapter.restore(u, point, ctx(tag, deployment, `run-prop-${n}`));
          const expected = removed.length + added.length + moved.length;
          expect(outcome.writes).toBe(expected);
          const wire = glueWrites(await requestCounts(tag));
          const entries = (wire['BatchCreatePartition entries'] ?? 0) + (wire['BatchDeletePartition entries'] ?? 0) + (wire['BatchUpdatePartition entries'] ?? 0);
          expect(entries).toBe(expected);
          expect(wire.UpdateTable ?? 0).toBe(0);
          const after = await readBack(table);
          expect(after.partitions).toEqual(before.partitions);
          expect((await glueTableAdapter.verify(u, point, ctx(uniqueName('v'), deployment))).every((c) => c.ok)).toBe(true);
        },
      ),
      { numRuns: 15 },
    );
  });

  it('batches within the API limits: 120 dropped partitions go back in 2 BatchCreatePartition calls, 60 added ones go in 3 BatchDeletePartition calls', async () => {
    const table = uniqueName('many').replace(/-/g, '_');
    const many = Array.from({ length: 120 }, (_, i) => i + 1);
    await admin.send(
      new CreateTableCommand({ DatabaseName: database, TableInput: { Name: table, PartitionKeys: [{ Name: 'n', Type: 'int' }], StorageDescriptor: sd(`s3://orders-lake/${table}/`) } }),
    );
    const part = (i: number): PartitionInput => ({ Values: [String(i)], StorageDescriptor: sd(`s3://orders-lake/${table}/n=${i}/`) });
    await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: many.slice(0, 100).map(part) }));
    await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: many.slice(100).map(part) }));
    const u = unit(table);
    const point = (await glueTableAdapter.capture(u, ctx(uniqueName('c'), 'd-many'))) as RestorePoint<GlueTableDetails>;
    expect(point.count).toBe(120);
    const all = await admin.send(new GetPartitionsCommand({ DatabaseName: database, TableName: table }));
    const gone = (all.Partitions ?? []).map((p) => ({ Values: p.Values! }));
    for (let i = 0; i < gone.length; i += 25) await admin.send(new BatchDeletePartitionCommand({ DatabaseName: database, TableName: table, PartitionsToDelete: gone.slice(i, i + 25) }));
    const extra = Array.from({ length: 60 }, (_, i) => 1000 + i);
    await admin.send(new BatchCreatePartitionCommand({ DatabaseName: database, TableName: table, PartitionInputList: extra.map(part) }));

    const tag = uniqueName('many');
    const outcome = await glueTableAdapter.restore(u, point, ctx(tag, 'd-many', 'run-many'));
    expect(outcome.changes).toMatchObject({ partitionsCreated: 120, partitionsDeleted: 60 });
    expect(glueWrites(await requestCounts(tag))).toEqual({ BatchCreatePartition: 2, 'BatchCreatePartition entries': 120, BatchDeletePartition: 3, 'BatchDeletePartition entries': 60 });
    expect((await glueTableAdapter.verify(u, point, ctx(uniqueName('v'), 'd-many'))).every((c) => c.ok)).toBe(true);
  });

  it('release deletes the restore-point document only; a missing or altered document is refused', async () => {
    const table = uniqueName('released').replace(/-/g, '_');
    await createTable(table, [1]);
    const u = unit(table);
    const point = (await glueTableAdapter.capture(u, ctx(uniqueName('c'), 'd-rel'))) as RestorePoint<GlueTableDetails>;
    await expect(glueTableAdapter.restore(u, { ...point, checksum: 'f'.repeat(64) }, ctx(uniqueName('r'), 'd-rel', 'run-x'))).rejects.toThrow(RestorePointMissingError);
    await expect(glueTableAdapter.restore(unit(`${table}_other`), point, ctx(uniqueName('r'), 'd-rel', 'run-x'))).rejects.toThrow(InputError);
    await expect(glueTableAdapter.release(u, { ...point, details: { ...point.details, documentKey: 'elsewhere.json' } }, ctx(uniqueName('x'), 'd-rel'))).rejects.toThrow(InputError);

    const tag = uniqueName('release');
    await glueTableAdapter.release(u, point, ctx(tag, 'd-rel'));
    expect(await requestCounts(tag)).toEqual({});
    await expect(s3.send(new GetObjectCommand({ Bucket: stateBucket, Key: point.details.documentKey }))).rejects.toThrow();
    expect(await tableExists(table)).toBe(true);
    await expect(glueTableAdapter.restore(u, point, ctx(uniqueName('r'), 'd-rel', 'run-y'))).rejects.toThrow(RestorePointMissingError);
    await glueTableAdapter.release(u, point, ctx(uniqueName('x'), 'd-rel'));
  });

  it('capture refuses a table that does not exist', async () => {
    await expect(glueTableAdapter.capture(unit('no_such_table'), ctx(uniqueName('c'), 'd-none'))).rejects.toThrow(PreflightError);
  });
});

describe('glue-table manifest', () => {
  it('examples/lake.yaml pairs the files with the table over them: the table is rolled back first, then the files', async () => {
    const manifest = await loadManifestFile(new URL('../../examples/lake.yaml', import.meta.url).pathname);
    expect(manifest.units.map((u) => [u.id, u.type])).toEqual([
      ['events_files', 's3-prefix'],
      ['events_catalog', 'glue-table'],
    ]);
    expect(planRollback(manifest).stages).toEqual([['events_catalog'], ['events_files']]);
  });

  it('accepts the unit with a partition filter and catalog id, and names what is wrong', () => {
    const manifest = validateManifest({
      pipeline: 'lake',
      units: [
        { id: 'raw', type: 's3-prefix', bucket: 'orders-lake', prefix: 'orders/' },
        { id: 'catalog', type: 'glue-table', database: 'lake', table: 'orders', partitions: "dt >= '2026-11-01'", catalogId: '123456789012', dependsOn: ['raw'] },
      ],
    });
    expect(manifest.units[1]).toMatchObject({ type: 'glue-table', database: 'lake', table: 'orders', catalogId: '123456789012', dependsOn: ['raw'] });
    expect(() => validateManifest({ pipeline: 'lake', units: [{ id: 'c', type: 'glue-table', database: 'lake', table: 'a/b', catalogId: '12' }] })).toThrow(ManifestError);
    try {
      validateManifest({ pipeline: 'lake', units: [{ id: 'c', type: 'glue-table', database: 'lake', table: 'a/b', catalogId: '12' }] });
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toContain('units[0].table');
      expect(message).toContain('units[0].catalogId');
    }
    expect(() => validateManifest({ pipeline: 'lake', units: [{ id: 'c', type: 'glue-table', database: 'Lake', table: 'orders' }] })).toThrow(/units\[0\]\.database.*lowercase/);
  });
});
