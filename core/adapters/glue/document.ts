import { createHash } from 'node:crypto';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Partition, PartitionInput, Table, TableInput } from '@aws-sdk/client-glue';
import { z } from 'zod';
import { RestorePointMissingError } from '../../errors.ts';
import { restorePointFolder, s3Url } from '../s3/keys.ts';
import { errorName, httpStatus, sendOnce, type RetryPolicy } from '../s3/retry.ts';

/**
 * The documents of a glue-table unit, kept in the state bucket as JSON, and the canonical form both the restore plan and
 * the checksum compare. No Glue calls here.
 *
 * A table is kept as exactly what UpdateTable/CreateTable take (TableInput), a partition as what BatchCreatePartition
 * takes (PartitionInput); what GetTable/GetPartitions add on their own (CreateTime, UpdateTime, CreatedBy, DatabaseName,
 * CatalogId, VersionId, IsRegisteredWithLakeFormation, CreationTime, …) is dropped. Times become ISO strings.
 */

export const POINT_FORMAT = 'etl-rollback/glue-table@1';
export const QUARANTINE_FORMAT = 'etl-rollback/glue-table-quarantine@1';

/** `restore-points/<pipeline>/<deployment>/<unit>/glue-table.json`. */
export function pointKeyFor(pipeline: string, deploymentId: string, unitId: string): string {
  return `${restorePointFolder(pipeline, deploymentId, unitId)}glue-table.json`;
}

/** `quarantine/<run>/<unit>/glue-table.json`: what a restore replaced. */
export function quarantineKeyFor(runId: string, unitId: string): string {
  return `quarantine/${encodeURIComponent(runId)}/${encodeURIComponent(unitId)}/glue-table.json`;
}

const isoTime = z.iso.datetime({ offset: true });
const json = z.record(z.string(), z.unknown());
const column = z.looseObject({ Name: z.string().min(1), Type: z.string().optional(), Comment: z.string().optional() });
const storageDescriptor = z.looseObject({ Columns: z.array(column).optional(), Location: z.string().optional() });

/** A TableInput as stored (times as ISO strings). */
export const storedTableSchema = z.strictObject({
  Name: z.string().min(1),
  Description: z.string().optional(),
  Owner: z.string().optional(),
  LastAccessTime: isoTime.optional(),
  LastAnalyzedTime: isoTime.optional(),
  Retention: z.number().int().nonnegative().optional(),
  StorageDescriptor: storageDescriptor.optional(),
  PartitionKeys: z.array(column).optional(),
  ViewOriginalText: z.string().optional(),
  ViewExpandedText: z.string().optional(),
  TableType: z.string().optional(),
  Parameters: z.record(z.string(), z.string()).optional(),
  TargetTable: json.optional(),
  FederatedTable: json.optional(),
});
export type StoredTable = z.infer<typeof storedTableSchema>;

/** A PartitionInput as stored (times as ISO strings). */
export const storedPartitionSchema = z.strictObject({
  Values: z.array(z.string()),
  LastAccessTime: isoTime.optional(),
  LastAnalyzedTime: isoTime.optional(),
  StorageDescriptor: storageDescriptor.optional(),
  Parameters: z.record(z.string(), z.string()).optional(),
});
export type StoredPartition = z.infer<typeof storedPartitionSchema>;

const target = {
  pipeline: z.string(),
  deploymentId: z.string(),
  unitId: z.string(),
  catalogId: z.string().optional(),
  database: z.string().min(1),
  table: z.string().min(1),
  /** The unit's `partitions` filter expression at capture; absent: every partition. */
  expression: z.string().optional(),
};

export const pointDocumentSchema = z.strictObject({
  format: z.literal(POINT_FORMAT),
  ...target,
  capturedAt: z.string(),
  /** Partitions in scope. */
  count: z.number().int().nonnegative(),
  checksum: z.string(),
  definition: storedTableSchema,
  partitions: z.array(storedPartitionSchema),
});
export type PointDocument = z.infer<typeof pointDocumentSchema>;

export const quarantineDocumentSchema = z.strictObject({
  format: z.literal(QUARANTINE_FORMAT),
  ...target,
  runId: z.string(),
  keptAt: z.string(),
  /** The live definition the restore replaced; null when the table had been dropped. */
  definition: storedTableSchema.nullable(),
  /** The live partitions in scope before the restore. */
  partitions: z.array(storedPartitionSchema),
});
export type QuarantineDocument = z.infer<typeof quarantineDocumentSchema>;

/** Dates → ISO strings, undefined dropped: what JSON.stringify makes of a value. */
function plain<T>(value: T): unknown {
  return JSON.parse(JSON.stringify(value)) as unknown;
}

const TABLE_INPUT_FIELDS = [
  'Name',
  'Description',
  'Owner',
  'LastAccessTime',
  'LastAnalyzedTime',
  'Retention',
  'StorageDescriptor',
  'PartitionKeys',
  'ViewOriginalText',
  'ViewExpandedText',
  'TableType',
  'Parameters',
  'TargetTable',
  'FederatedTable',
] as const satisfies readonly (keyof TableInput & keyof Table)[];

const PARTITION_INPUT_FIELDS = ['Values', 'LastAccessTime', 'StorageDescriptor', 'Parameters', 'LastAnalyzedTime'] as const satisfies readonly (keyof PartitionInput &
  keyof Partition)[];

function pick<T extends object>(source: T, fields: readonly (keyof T)[]): Partial<T> {
  const out: Partial<T> = {};
  for (const f of fields) if (source[f] !== undefined) out[f] = source[f];
  return out;
}

/** What GetTable answered, as the TableInput that puts it back. */
export function storedTable(table: Table): StoredTable {
  return storedTableSchema.parse(plain(pick(table, TABLE_INPUT_FIELDS)));
}

export function storedPartition(partition: Partition): StoredPartition {
  return storedPartitionSchema.parse(plain(pick(partition, PARTITION_INPUT_FIELDS)));
}

const date = (iso: string | undefined) => (iso === undefined ? undefined : new Date(iso));

export function tableInputOf(t: StoredTable): TableInput {
  return { ...(t as Omit<StoredTable, 'LastAccessTime' | 'LastAnalyzedTime'>), LastAccessTime: date(t.LastAccessTime), LastAnalyzedTime: date(t.LastAnalyzedTime) } as TableInput;
}

export function partitionInputOf(p: StoredPartition): PartitionInput {
  return { ...(p as Omit<StoredPartition, 'LastAccessTime' | 'LastAnalyzedTime'>), LastAccessTime: date(p.LastAccessTime), LastAnalyzedTime: date(p.LastAnalyzedTime) } as PartitionInput;
}

/**
 * Canonical JSON: keys sorted at every level; empty objects, empty arrays and absent values dropped (Glue answers
 * `Parameters: {}` and no Parameters alike). Array order is kept (column order matters).
 */
export function canonicalJson(value: unknown): string {
  const norm = (v: unknown): unknown => {
    if (Array.isArray(v)) {
      const items = v.map(norm).filter((x) => x !== undefined);
      return items.length === 0 ? undefined : items;
    }
    if (v !== null && typeof v === 'object') {
      const entries = Object.keys(v as Record<string, unknown>)
        .sort()
        .map((k) => [k, norm((v as Record<string, unknown>)[k])] as const)
        .filter(([, x]) => x !== undefined);
      return entries.length === 0 ? undefined : Object.fromEntries(entries);
    }
    return v;
  };
  return JSON.stringify(norm(value) ?? null);
}

/**
 * What a table or partition is, for comparing: its canonical JSON without LastAccessTime and LastAnalyzedTime (Glue's
 * and the query engines' bookkeeping, not what a deploy changes).
 */
export function canonicalDefinition(entity: StoredTable | StoredPartition): string {
  const { LastAccessTime: _a, LastAnalyzedTime: _b, ...rest } = entity;
  return canonicalJson(rest);
}

/** A partition's identity: its values. */
export const partitionKey = (p: { Values: readonly string[] }): string => JSON.stringify(p.Values);

/** Order-independent sha256 over the canonical definition and every canonical partition. */
export function catalogChecksum(definition: StoredTable | undefined, partitions: readonly StoredPartition[]): string {
  const lines = [`table\t${definition ? canonicalDefinition(definition) : 'null'}`, ...partitions.map((p) => `partition\t${canonicalDefinition(p)}`)].sort();
  const hash = createHash('sha256');
  for (const line of lines) hash.update(`${line}\n`);
  return hash.digest('hex');
}

async function readJson(s3: S3Client, policy: RetryPolicy, bucket: string, key: string): Promise<unknown> {
  let text: string;
  try {
    const out = await sendOnce(policy, () => s3.send(new GetObjectCommand({ Bucket: bucket, Key: key })));
    text = (await out.Body?.transformToString('utf8')) ?? '';
  } catch (error) {
    if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return undefined;
    throw error;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new RestorePointMissingError(`${s3Url(bucket, key)} is not valid JSON: it cannot be used`, { cause: error });
  }
}

/** Reads and checks a restore-point document (shape, count, checksum); undefined if it does not exist. */
export async function readPointDocument(s3: S3Client, policy: RetryPolicy, bucket: string, key: string): Promise<PointDocument | undefined> {
  const raw = await readJson(s3, policy, bucket, key);
  if (raw === undefined) return undefined;
  const parsed = pointDocumentSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new RestorePointMissingError(`restore point ${s3Url(bucket, key)} is not a ${POINT_FORMAT} document (${issues})`);
  }
  const doc = parsed.data;
  const keys = new Set(doc.partitions.map(partitionKey));
  if (doc.partitions.length !== doc.count || keys.size !== doc.count || catalogChecksum(doc.definition, doc.partitions) !== doc.checksum || doc.definition.Name !== doc.table) {
    throw new RestorePointMissingError(`restore point ${s3Url(bucket, key)} does not match its own count/checksum: it was altered`);
  }
  return doc;
}

function preconditionFailed(error: unknown): boolean {
  return errorName(error) === 'PreconditionFailed' || httpStatus(error) === 412;
}

/** Writes a document once (If-None-Match: *); false when one is already there (that one stands). */
export async function putOnce(s3: S3Client, policy: RetryPolicy, bucket: string, key: string, doc: PointDocument | QuarantineDocument): Promise<boolean> {
  try {
    await sendOnce(policy, () => s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: JSON.stringify(doc), ContentType: 'application/json', IfNoneMatch: '*' })));
    return true;
  } catch (error) {
    if (preconditionFailed(error)) return false;
    throw error;
  }
}

/** Writes the point document once; if a concurrent capture won the race, its document is the point. */
export async function writePointOnce(s3: S3Client, policy: RetryPolicy, bucket: string, key: string, doc: PointDocument): Promise<PointDocument> {
  if (await putOnce(s3, policy, bucket, key, doc)) return doc;
  const winner = await readPointDocument(s3, policy, bucket, key);
  if (!winner) throw new RestorePointMissingError(`restore point ${s3Url(bucket, key)} was reported as existing but cannot be read`);
  return winner;
}

/** Reads a quarantine document back (tests and people); undefined if absent. */
export async function readQuarantineDocument(s3: S3Client, policy: RetryPolicy, bucket: string, key: string): Promise<QuarantineDocument | undefined> {
  const raw = await readJson(s3, policy, bucket, key);
  return raw === undefined ? undefined : quarantineDocumentSchema.parse(raw);
}
