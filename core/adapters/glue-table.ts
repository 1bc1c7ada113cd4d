import { InputError, PreflightError, RestorePointMissingError } from '../errors.ts';
import type { GlueTableUnit } from '../manifest/schema.ts';
import {
  createPartitions,
  createTable,
  deletePartitions,
  getPartitions,
  getTable,
  PARTITION_PAGE_SIZE,
  tableName,
  updatePartitions,
  updateTable,
  type TableRef,
} from './glue/catalog.ts';
import {
  canonicalDefinition,
  catalogChecksum,
  partitionKey,
  pointKeyFor,
  putOnce,
  QUARANTINE_FORMAT,
  quarantineKeyFor,
  readPointDocument,
  writePointOnce,
  POINT_FORMAT,
  type PointDocument,
  type StoredPartition,
  type StoredTable,
} from './glue/document.ts';
import { deleteInBatches, listPrefix } from './s3/io.ts';
import { s3Url } from './s3/keys.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from './s3/retry.ts';
import type { AdapterContext, Changes, Check, Diff, Outcome, RestorePoint, UnitAdapter } from './types.ts';

/**
 * glue-table adapter: a Glue Data Catalog table's definition and its partitions (all, or those the unit's `partitions`
 * expression selects).
 *
 * Capture reads the table (GetTable) and its partitions (GetPartitions, paged) and writes them once, as the TableInput and
 * PartitionInputs that put them back, to `restore-points/<pipeline>/<deployment>/<unit>/glue-table.json` in the state
 * bucket, with the partition count and an order-independent checksum. Restore compares canonical forms and writes only
 * what differs: CreateTable if the table was dropped, UpdateTable if its definition changed, then BatchDeletePartition
 * for partitions added since (within the expression's scope only), BatchCreatePartition for those removed,
 * BatchUpdatePartition for those changed. Before its first write it keeps the live definition and partitions in
 * `quarantine/<run>/<unit>/glue-table.json`. A rerun finds nothing to write.
 */

export interface GlueTableDetails {
  database: string;
  table: string;
  catalogId?: string;
  /** The `partitions` expression at capture; absent: every partition. */
  expression?: string;
  /** Key of the point document in the state bucket. */
  documentKey: string;
}

export interface GlueTableAdapterOptions {
  /** GetPartitions page size (MaxResults). Default 1,000, the API maximum. */
  pageSize?: number;
  retry?: Partial<RetryPolicy>;
}

/** What a restore would write, and the live state it was planned from. */
export interface CatalogPlan {
  table: 'create' | 'update' | 'none';
  create: StoredPartition[];
  delete: StoredPartition[];
  update: StoredPartition[];
  live: LiveCatalog;
}

/** The table as read now: its definition (undefined: dropped), the Glue version of it, its partitions in scope. */
export interface LiveCatalog {
  definition: StoredTable | undefined;
  versionId?: string;
  partitions: StoredPartition[];
}

const ref = (unit: GlueTableUnit): TableRef => ({ database: unit.database, table: unit.table, ...(unit.catalogId ? { catalogId: unit.catalogId } : {}) });

/** Plans the restore of `captured` over the live state: only what differs, by canonical form. Pure. */
export function planCatalog(
  captured: { definition: StoredTable; partitions: readonly StoredPartition[] },
  live: LiveCatalog,
): CatalogPlan {
  const table = live.definition === undefined ? 'create' : canonicalDefinition(live.definition) === canonicalDefinition(captured.definition) ? 'none' : 'update';
  const liveByKey = new Map(live.partitions.map((p) => [partitionKey(p), p]));
  const capturedKeys = new Set(captured.partitions.map(partitionKey));
  const create: StoredPartition[] = [];
  const update: StoredPartition[] = [];
  for (const p of captured.partitions) {
    const now = liveByKey.get(partitionKey(p));
    if (now === undefined) create.push(p);
    else if (canonicalDefinition(now) !== canonicalDefinition(p)) update.push(p);
  }
  const del = live.partitions.filter((p) => !capturedKeys.has(partitionKey(p)));
  return { table, create, delete: del, update, live };
}

export function planChanges(plan: CatalogPlan): Changes {
  return {
    tablesCreated: plan.table === 'create' ? 1 : 0,
    tablesUpdated: plan.table === 'update' ? 1 : 0,
    partitionsCreated: plan.create.length,
    partitionsDeleted: plan.delete.length,
    partitionsUpdated: plan.update.length,
  };
}

export const planWrites = (plan: CatalogPlan): number => Object.values(planChanges(plan)).reduce((a, b) => a + b, 0);

function planNotes(unit: GlueTableUnit, plan: CatalogPlan): string[] {
  const notes: string[] = [];
  if (plan.table === 'create') {
    notes.push(
      `table ${unit.database}.${unit.table} was dropped: it is created again` +
        (unit.partitions ? ` with its partitions in scope (${unit.partitions}); those outside the scope were not captured and stay gone` : ''),
    );
  }
  if (plan.table === 'update') notes.push(`table ${unit.database}.${unit.table}: its definition differs from the restore point`);
  if (unit.partitions) notes.push(`partitions in scope: ${unit.partitions}`);
  if (planWrites(plan) === 0) notes.push('already equals its restore point');
  return notes;
}

function pointFrom(doc: PointDocument, documentKey: string): RestorePoint<GlueTableDetails> {
  return {
    unitId: doc.unitId,
    type: 'glue-table',
    capturedAt: doc.capturedAt,
    count: doc.count,
    checksum: doc.checksum,
    details: {
      database: doc.database,
      table: doc.table,
      ...(doc.catalogId ? { catalogId: doc.catalogId } : {}),
      ...(doc.expression ? { expression: doc.expression } : {}),
      documentKey,
    },
  };
}

function assertSameTarget(unit: GlueTableUnit, t: { database: string; table: string; catalogId?: string; expression?: string }, where: string): void {
  if (unit.database !== t.database || unit.table !== t.table || unit.catalogId !== t.catalogId || unit.partitions !== t.expression) {
    const name = (x: { database: string; table: string; catalogId?: string; expression?: string }) =>
      `${x.catalogId ? `${x.catalogId}:` : ''}${x.database}.${x.table}${x.expression ? ` (partitions ${JSON.stringify(x.expression)})` : ''}`;
    throw new InputError(
      `unit "${unit.id}" names ${name({ ...unit, expression: unit.partitions })}, but ${where} was captured for ${name(t)}: ` +
        'the manifest changed after the capture; roll back with the manifest the deployment was made with',
    );
  }
}

export function createGlueTableAdapter(options: GlueTableAdapterOptions = {}): UnitAdapter<GlueTableUnit, GlueTableDetails> {
  const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...options.retry };
  const pageSize = options.pageSize ?? PARTITION_PAGE_SIZE;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > PARTITION_PAGE_SIZE) throw new InputError(`glue-table adapter: pageSize must be 1-${PARTITION_PAGE_SIZE}`);

  async function readLive(unit: GlueTableUnit, ctx: AdapterContext): Promise<LiveCatalog> {
    const found = await getTable(ctx.glue, policy, ref(unit));
    if (!found) return { definition: undefined, partitions: [] };
    return {
      definition: found.stored,
      ...(found.table.VersionId ? { versionId: found.table.VersionId } : {}),
      partitions: await getPartitions(ctx.glue, policy, ref(unit), unit.partitions, pageSize),
    };
  }

  async function loadPoint(unit: GlueTableUnit, point: RestorePoint<GlueTableDetails>, ctx: AdapterContext): Promise<PointDocument> {
    assertSameTarget(unit, point.details, 'its restore point');
    const key = point.details.documentKey;
    const doc = await readPointDocument(ctx.s3, policy, ctx.stateBucket, key);
    if (!doc) {
      throw new RestorePointMissingError(`restore point of unit "${unit.id}" is gone: ${s3Url(ctx.stateBucket, key)} does not exist (released, or a different state bucket?)`);
    }
    if (doc.checksum !== point.checksum || doc.count !== point.count) {
      throw new RestorePointMissingError(
        `restore point of unit "${unit.id}" does not match ${s3Url(ctx.stateBucket, key)} (checksum ${point.checksum} vs ${doc.checksum}): it was replaced`,
      );
    }
    assertSameTarget(unit, doc, s3Url(ctx.stateBucket, key));
    return doc;
  }

  async function plan(unit: GlueTableUnit, point: RestorePoint<GlueTableDetails>, ctx: AdapterContext): Promise<CatalogPlan> {
    const doc = await loadPoint(unit, point, ctx);
    return planCatalog(doc, await readLive(unit, ctx));
  }

  return {
    type: 'glue-table',

    async capture(unit, ctx) {
      const key = pointKeyFor(ctx.pipeline, ctx.deploymentId, unit.id);
      const existing = await readPointDocument(ctx.s3, policy, ctx.stateBucket, key);
      if (existing) {
        assertSameTarget(unit, existing, `the restore point at ${s3Url(ctx.stateBucket, key)}`);
        return pointFrom(existing, key);
      }
      const t = ref(unit);
      const found = await getTable(ctx.glue, policy, t);
      if (!found) throw new PreflightError(`unit "${unit.id}": Glue table ${tableName(t)} does not exist: there is nothing to take a restore point of`);
      if (found.table.ViewDefinition !== undefined || found.table.IsMultiDialectView) {
        throw new PreflightError(`unit "${unit.id}": ${tableName(t)} is a multi-dialect view (ViewDefinition): not supported as a glue-table unit`);
      }
      const partitions = await getPartitions(ctx.glue, policy, t, unit.partitions, pageSize);
      const doc: PointDocument = {
        format: POINT_FORMAT,
        pipeline: ctx.pipeline,
        deploymentId: ctx.deploymentId,
        unitId: unit.id,
        ...(unit.catalogId ? { catalogId: unit.catalogId } : {}),
        database: unit.database,
        table: unit.table,
        ...(unit.partitions ? { expression: unit.partitions } : {}),
        capturedAt: ctx.now().toISOString(),
        count: partitions.length,
        checksum: catalogChecksum(found.stored, partitions),
        definition: found.stored,
        partitions,
      };
      const kept = await writePointOnce(ctx.s3, policy, ctx.stateBucket, key, doc);
      ctx.log.info('glue-table restore point captured', { unit: unit.id, table: tableName(t), partitions: kept.count, document: s3Url(ctx.stateBucket, key) });
      return pointFrom(kept, key);
    },

    async diff(unit, point, ctx): Promise<Diff> {
      const p = await plan(unit, point, ctx);
      return { changes: planChanges(p), writes: planWrites(p), notes: planNotes(unit, p) };
    },

    async restore(unit, point, ctx): Promise<Outcome> {
      const doc = await loadPoint(unit, point, ctx);
      const p = planCatalog(doc, await readLive(unit, ctx));
      const writes = planWrites(p);
      const t = ref(unit);
      if (writes === 0) {
        ctx.log.info('glue-table already equals its restore point', { unit: unit.id, table: tableName(t), runId: ctx.runId });
        return { changes: planChanges(p), writes: 0, notes: planNotes(unit, p) };
      }
      if (!ctx.runId) throw new InputError(`unit "${unit.id}": a restore needs a run id (it names where the replaced definition is kept)`);
      // Keep what is replaced before the first write. Written once per run: a rerun of the same run keeps the first one,
      // which holds the deploy's state (what a rerun replaces was written by this run from the restore point).
      const keptKey = quarantineKeyFor(ctx.runId, unit.id);
      await putOnce(ctx.s3, policy, ctx.stateBucket, keptKey, {
        format: QUARANTINE_FORMAT,
        pipeline: ctx.pipeline,
        deploymentId: ctx.deploymentId,
        unitId: unit.id,
        ...(unit.catalogId ? { catalogId: unit.catalogId } : {}),
        database: unit.database,
        table: unit.table,
        ...(unit.partitions ? { expression: unit.partitions } : {}),
        runId: ctx.runId,
        keptAt: ctx.now().toISOString(),
        definition: p.live.definition ?? null,
        partitions: p.live.partitions,
      });
      if (p.table === 'create') await createTable(ctx.glue, policy, t, doc.definition);
      if (p.table === 'update') await updateTable(ctx.glue, policy, t, doc.definition, p.live.versionId);
      await deletePartitions(ctx.glue, policy, t, p.delete);
      await createPartitions(ctx.glue, policy, t, p.create);
      await updatePartitions(ctx.glue, policy, t, p.update);
      const changes = planChanges(p);
      ctx.log.info('glue-table restored', { unit: unit.id, table: tableName(t), runId: ctx.runId, ...changes, writes });
      return { changes, writes, notes: planNotes(unit, p), keptAt: s3Url(ctx.stateBucket, keptKey) };
    },

    async verify(unit, point, ctx): Promise<Check[]> {
      const doc = await loadPoint(unit, point, ctx);
      const live = await readLive(unit, ctx);
      const p = planCatalog(doc, live);
      const checks: Check[] = [];
      if (unit.checks.count) checks.push({ name: 'partitionCount', ok: live.partitions.length === doc.count, expected: doc.count, actual: live.partitions.length });
      if (unit.checks.checksum) {
        const actual = live.definition ? catalogChecksum(live.definition, live.partitions) : 'table missing';
        const ok = actual === doc.checksum;
        const c = planChanges(p);
        const detail = ok
          ? undefined
          : [
              p.table === 'create' ? 'table missing' : p.table === 'update' ? 'table definition differs' : '',
              c.partitionsCreated ? `${c.partitionsCreated} partition(s) missing` : '',
              c.partitionsDeleted ? `${c.partitionsDeleted} partition(s) not in the restore point` : '',
              c.partitionsUpdated ? `${c.partitionsUpdated} partition(s) changed` : '',
            ]
              .filter(Boolean)
              .join('; ');
        checks.push({ name: 'catalogChecksum', ok, expected: doc.checksum, actual, ...(detail ? { detail } : {}) });
      }
      return checks;
    },

    async release(unit, point, ctx) {
      const expected = pointKeyFor(ctx.pipeline, ctx.deploymentId, unit.id);
      if (point.details.documentKey !== expected) {
        throw new InputError(
          `unit "${unit.id}": restore point names ${point.details.documentKey}, expected ${expected} for pipeline "${ctx.pipeline}" ` +
            `deployment "${ctx.deploymentId}": refusing to delete another object`,
        );
      }
      // The point document only (every version of it: the state bucket may be versioned); never the catalog. A second
      // release finds nothing.
      const listing = await listPrefix(ctx.s3, ctx.stateBucket, expected, policy);
      const targets = [...listing.values()]
        .filter((h) => h.key === expected)
        .flatMap((h) => [...h.versions, ...h.markers].map((v) => ({ key: h.key, versionId: v.versionId })));
      await deleteInBatches(ctx.s3, policy, ctx.stateBucket, expected, targets, 'releasing the restore point');
      ctx.log.info('glue-table restore point released', { unit: unit.id, document: s3Url(ctx.stateBucket, expected), versions: targets.length });
    },
  };
}

export const glueTableAdapter = createGlueTableAdapter();
