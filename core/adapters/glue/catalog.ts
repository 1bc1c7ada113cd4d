import {
  BatchCreatePartitionCommand,
  BatchDeletePartitionCommand,
  BatchUpdatePartitionCommand,
  CreateTableCommand,
  GetPartitionsCommand,
  GetTableCommand,
  UpdateTableCommand,
  type GlueClient,
  type Table,
} from '@aws-sdk/client-glue';
import { backoffDelay, errorName, sendOnce, sleep, type RetryPolicy } from '../s3/retry.ts';
import { nameSome } from '../s3/keys.ts';
import { partitionInputOf, partitionKey, storedPartition, storedTable, tableInputOf, type StoredPartition, type StoredTable } from './document.ts';

/**
 * Glue Data Catalog calls of the glue-table unit: read a table and its partitions, write them back in batches within the
 * API limits. Request-level failures are the SDK's to retry (see s3/retry.ts); per-entry errors inside a successful batch
 * answer are ours: throttled or transient entries are sent again with backoff, any other error fails naming the
 * partitions.
 */

/** Entries per call, the API limits. */
export const BATCH_CREATE_LIMIT = 100;
export const BATCH_DELETE_LIMIT = 25;
export const BATCH_UPDATE_LIMIT = 100;
/** GetPartitions page size, the API maximum. */
export const PARTITION_PAGE_SIZE = 1000;

/** Per-entry error codes worth another attempt. */
export const RETRYABLE_ENTRY_CODES: ReadonlySet<string> = new Set([
  'ThrottlingException',
  'InternalServiceException',
  'OperationTimeoutException',
  'ConcurrentModificationException',
  'ServiceUnavailableException',
]);

export interface TableRef {
  catalogId?: string;
  database: string;
  table: string;
}

export const tableName = (t: TableRef): string => `${t.catalogId ? `${t.catalogId}:` : ''}${t.database}.${t.table}`;

const ids = (t: TableRef) => ({ ...(t.catalogId ? { CatalogId: t.catalogId } : {}), DatabaseName: t.database });

/** The table's definition as a TableInput; undefined when the table does not exist. */
export async function getTable(glue: GlueClient, policy: RetryPolicy, t: TableRef): Promise<{ table: Table; stored: StoredTable } | undefined> {
  try {
    const out = await sendOnce(policy, () => glue.send(new GetTableCommand({ ...ids(t), Name: t.table })));
    if (!out.Table) return undefined;
    return { table: out.Table, stored: storedTable(out.Table) };
  } catch (error) {
    if (errorName(error) === 'EntityNotFoundException') return undefined;
    throw error;
  }
}

/** Every partition the expression selects (all without one), page by page (NextToken). */
export async function getPartitions(glue: GlueClient, policy: RetryPolicy, t: TableRef, expression: string | undefined, pageSize = PARTITION_PAGE_SIZE): Promise<StoredPartition[]> {
  const out: StoredPartition[] = [];
  const seen = new Set<string>();
  let NextToken: string | undefined;
  do {
    const page = await sendOnce(policy, () =>
      glue.send(new GetPartitionsCommand({ ...ids(t), TableName: t.table, ...(expression ? { Expression: expression } : {}), MaxResults: pageSize, NextToken })),
    );
    for (const p of page.Partitions ?? []) {
      const s = storedPartition(p);
      const key = partitionKey(s);
      if (seen.has(key)) throw new Error(`GetPartitions of ${tableName(t)} answered partition ${key} twice: the pages overlap`);
      seen.add(key);
      out.push(s);
    }
    NextToken = page.NextToken || undefined;
  } while (NextToken);
  return out;
}

export async function createTable(glue: GlueClient, policy: RetryPolicy, t: TableRef, definition: StoredTable): Promise<void> {
  await sendOnce(policy, () => glue.send(new CreateTableCommand({ ...ids(t), TableInput: tableInputOf(definition) })));
}

/**
 * Puts `definition` back. With `versionId` (the version the restore read and kept), Glue refuses the update if the table
 * changed since (ConcurrentModificationException), so a change made meanwhile is never replaced without being kept.
 */
export async function updateTable(glue: GlueClient, policy: RetryPolicy, t: TableRef, definition: StoredTable, versionId?: string): Promise<void> {
  await sendOnce(policy, () => glue.send(new UpdateTableCommand({ ...ids(t), TableInput: tableInputOf(definition), ...(versionId ? { VersionId: versionId } : {}) })));
}

interface EntryError {
  values: string[] | undefined;
  code: string;
  message: string;
}

/**
 * Sends `entries` in chunks of `limit`; per chunk, the entries that failed with a retryable code are sent again (with
 * full-jitter backoff) up to `policy.maxAttempts` times. `tolerated` says which other codes mean "already done" (an entry
 * the SDK's own retry of the call had already written). Anything else fails, naming the partitions.
 */
async function batched<E>(
  what: string,
  t: TableRef,
  entries: readonly E[],
  limit: number,
  valuesOf: (e: E) => string[],
  send: (chunk: E[]) => Promise<{ errors: EntryError[]; attempts: number }>,
  tolerated: (code: string, attempts: number) => boolean,
  policy: RetryPolicy,
): Promise<void> {
  for (let i = 0; i < entries.length; i += limit) {
    let pending = entries.slice(i, i + limit);
    for (let attempt = 1; pending.length > 0; attempt++) {
      const { errors, attempts } = await send(pending);
      const byKey = new Map(pending.map((e) => [JSON.stringify(valuesOf(e)), e]));
      const retry: E[] = [];
      const fatal: string[] = [];
      for (const err of errors) {
        const entry = err.values ? byKey.get(JSON.stringify(err.values)) : undefined;
        if (RETRYABLE_ENTRY_CODES.has(err.code) && entry !== undefined) retry.push(entry);
        else if (!tolerated(err.code, attempts)) fatal.push(`${JSON.stringify(err.values ?? null)}: ${err.code} ${err.message}`.trim());
      }
      if (fatal.length > 0) throw new Error(`${what} of ${tableName(t)} failed for ${fatal.length} partition(s): ${nameSome(fatal, 10)}`);
      if (retry.length > 0 && attempt >= policy.maxAttempts) {
        throw new Error(`${what} of ${tableName(t)}: ${retry.length} partition(s) still throttled after ${attempt} attempts: ${nameSome(retry.map((e) => JSON.stringify(valuesOf(e))), 10)}`);
      }
      if (retry.length > 0) await sleep(backoffDelay(attempt, policy));
      pending = retry;
    }
  }
}

/**
 * Sends one batch call; `attempts` counts every time it went out: the SDK's retries, and ours when the SDK made only one
 * (sendOnce). Any attempt after the first may find the work of an earlier one whose answer was lost.
 */
async function sendBatch<T extends { $metadata: { attempts?: number } }>(policy: RetryPolicy, call: () => Promise<T>): Promise<{ out: T; attempts: number }> {
  let ours = 0;
  const out = await sendOnce(policy, () => {
    ours += 1;
    return call();
  });
  return { out, attempts: (out.$metadata.attempts ?? 1) + ours - 1 };
}

const entryErrors = (errors: { PartitionValues?: string[]; PartitionValueList?: string[]; ErrorDetail?: { ErrorCode?: string; ErrorMessage?: string } }[] | undefined): EntryError[] =>
  (errors ?? []).map((e) => ({ values: e.PartitionValues ?? e.PartitionValueList, code: e.ErrorDetail?.ErrorCode ?? 'UnknownError', message: e.ErrorDetail?.ErrorMessage ?? '' }));

export async function createPartitions(glue: GlueClient, policy: RetryPolicy, t: TableRef, partitions: readonly StoredPartition[]): Promise<void> {
  await batched(
    'BatchCreatePartition',
    t,
    partitions,
    BATCH_CREATE_LIMIT,
    (p) => p.Values,
    async (chunk) => {
      const { out, attempts } = await sendBatch(policy, () => glue.send(new BatchCreatePartitionCommand({ ...ids(t), TableName: t.table, PartitionInputList: chunk.map(partitionInputOf) })));
      return { errors: entryErrors(out.Errors), attempts };
    },
    // The call went out again after a lost answer: what it reports as existing, an earlier attempt created (verify
    // compares it with the restore point all the same).
    (code, attempts) => code === 'AlreadyExistsException' && attempts > 1,
    policy,
  );
}

export async function deletePartitions(glue: GlueClient, policy: RetryPolicy, t: TableRef, partitions: readonly StoredPartition[]): Promise<void> {
  await batched(
    'BatchDeletePartition',
    t,
    partitions,
    BATCH_DELETE_LIMIT,
    (p) => p.Values,
    async (chunk) => {
      const { out, attempts } = await sendBatch(policy, () =>
        glue.send(new BatchDeletePartitionCommand({ ...ids(t), TableName: t.table, PartitionsToDelete: chunk.map((p) => ({ Values: p.Values })) })),
      );
      return { errors: entryErrors(out.Errors), attempts };
    },
    (code, attempts) => code === 'EntityNotFoundException' && attempts > 1,
    policy,
  );
}

export async function updatePartitions(glue: GlueClient, policy: RetryPolicy, t: TableRef, partitions: readonly StoredPartition[]): Promise<void> {
  await batched(
    'BatchUpdatePartition',
    t,
    partitions,
    BATCH_UPDATE_LIMIT,
    (p) => p.Values,
    async (chunk) => {
      const { out, attempts } = await sendBatch(policy, () =>
        glue.send(
          new BatchUpdatePartitionCommand({
            ...ids(t),
            TableName: t.table,
            Entries: chunk.map((p) => ({ PartitionValueList: p.Values, PartitionInput: partitionInputOf(p) })),
          }),
        ),
      );
      return { errors: entryErrors(out.Errors), attempts };
    },
    () => false,
    policy,
  );
}
