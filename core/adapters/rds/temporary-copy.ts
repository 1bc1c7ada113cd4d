import { DeleteDBInstanceCommand, DescribeDBClustersCommand, DescribeDBInstancesCommand, ModifyDBInstanceCommand, ModifyDBClusterCommand } from '@aws-sdk/client-rds';
import { PreflightError, RestorePointMissingError, VerificationFailedError } from '../../errors.ts';
import type { ConnectionRds } from '../../manifest/schema.ts';
import type { Endpoint } from '../../runtime/connections.ts';
import { rdsClusterKind } from '../rds-cluster.ts';
import { rdsInstanceKind } from '../rds-instance.ts';
import type { AdapterContext, Changes, Check, Diff, Outcome, Pending } from '../types.ts';
import { orUndefined, RDS_POLL_SECONDS } from './engine.ts';
import { derivedIdentifier, pointKey, shortHash, TAG, tagMap, type Tags } from './names.ts';
import { checkInWindow, clusterWindow, instanceWindow, type RestorableWindow } from './window.ts';

/**
 * The temporary point-in-time copy a table unit's `--to` rollback reads its rows from.
 *
 * A table has no history of its own; its RDS instance (or Aurora cluster) has one, in its automated backups. So the
 * table's state at T is read from a copy of the whole instance restored to T under a name of its own,
 * `<source>-pitr-<hash of run and unit>`, tagged as ours (`etl-rollback:temporary` = `pitr`, plus the point and run).
 * Each unit has its own copy: two units of one instance finish at different times, and a shared copy would have to be
 * deleted by whichever finished last. Nothing here touches the source: the copy is made from its backups, read, and
 * deleted only once the merge committed and was verified, and only when its tags prove it is ours.
 *
 * Every call does at most one mutating RDS call and answers where the copy is (pending, or its endpoint), read back
 * from RDS, so calling again simply continues.
 */

/** Where a table unit's point-in-time point reads from. */
export interface PointInTimeSource {
  /** The instance or cluster named by the connection's `rds`. */
  rds: ConnectionRds;
  /** ISO-8601 UTC. */
  time: string;
}

export const TEMPORARY_TAG = 'etl-rollback:temporary';

const sourceId = (rds: ConnectionRds): string => ('instanceId' in rds ? rds.instanceId : rds.clusterId).toLowerCase();
export const describeRds = (rds: ConnectionRds): string => ('instanceId' in rds ? `DB instance ${sourceId(rds)}` : `DB cluster ${sourceId(rds)}`);

/** `<source>-pitr-<8 hex of run and unit>`, within RDS's 63 characters. */
export function temporaryIdentifier(rds: ConnectionRds, runId: string, unitId: string): string {
  return derivedIdentifier(sourceId(rds), `pitr-${shortHash(`${runId}/${unitId}`)}`);
}

/** The window of the source, refused when `at` is outside it; a missing source is bad input. */
export async function checkSourceWindow(ctx: AdapterContext, what: string, rds: ConnectionRds, at: Date): Promise<RestorableWindow> {
  const id = sourceId(rds);
  const window = 'instanceId' in rds ? await instanceWindow(ctx.rds, id) : await clusterWindow(ctx.rds, id);
  if (!window) throw new PreflightError(`${what}: its connection names ${describeRds(rds)}, which does not exist`);
  checkInWindow(`${what} (${describeRds(rds)})`, at, window);
  return window;
}

interface Found {
  status: string;
  tags: Tags;
  endpoint?: Endpoint;
  deletionProtection: boolean;
}

async function find(ctx: AdapterContext, rds: ConnectionRds, id: string): Promise<Found | undefined> {
  if ('instanceId' in rds) {
    const i = (await orUndefined(ctx.rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: id }))))?.DBInstances?.[0];
    if (!i) return undefined;
    const endpoint = i.Endpoint?.Address ? { host: i.Endpoint.Address, port: i.Endpoint.Port ?? i.DbInstancePort ?? 0 } : undefined;
    return { status: i.DBInstanceStatus ?? 'unknown', tags: tagMap(i.TagList), deletionProtection: i.DeletionProtection ?? false, ...(endpoint ? { endpoint } : {}) };
  }
  const c = (await orUndefined(ctx.rds.send(new DescribeDBClustersCommand({ DBClusterIdentifier: id }))))?.DBClusters?.[0];
  if (!c) return undefined;
  const endpoint = c.Endpoint ? { host: c.Endpoint, port: c.Port ?? 0 } : undefined;
  return { status: c.Status ?? 'unknown', tags: tagMap(c.TagList), deletionProtection: c.DeletionProtection ?? false, ...(endpoint ? { endpoint } : {}) };
}

/** Ours: made by this tool as a point-in-time copy, for this point and run. Nothing else is ever deleted. */
function isOurs(found: Found, expected: { point: string; runId: string }): boolean {
  return found.tags[TEMPORARY_TAG] === 'pitr' && found.tags[TAG.point] === expected.point && found.tags[TAG.run] === expected.runId;
}

export type CopyStep = { pending: Pending; changes: Changes } | { endpoint: Endpoint; changes: Changes };

/**
 * One step towards a readable copy of the source at `time`: start the point-in-time restore (and, for a cluster, its
 * writer instance), or report its progress, or, once available, its endpoint.
 */
export async function ensureTemporaryCopy(ctx: AdapterContext, source: PointInTimeSource, ids: { id: string; point: string; runId: string; unitId: string }): Promise<CopyStep> {
  const pending = (status: string, changes: Changes = {}): CopyStep => ({ pending: { waitSeconds: RDS_POLL_SECONDS, status }, changes });
  const found = await find(ctx, source.rds, ids.id);
  const tags: Tags = {
    [TEMPORARY_TAG]: 'pitr',
    [TAG.pipeline]: ctx.pipeline,
    [TAG.deployment]: ctx.deploymentId,
    [TAG.unit]: ids.unitId,
    [TAG.point]: ids.point,
    [TAG.run]: ids.runId,
    [TAG.restoredFrom]: `pitr:${source.time}`,
  };
  const noun = 'instanceId' in source.rds ? 'DB instance' : 'DB cluster';
  if (!found) {
    const from = sourceId(source.rds);
    // The source's own settings (class, subnet group, security groups, parameter group), so the copy is reachable the
    // way the source is; never deletion-protected and never Multi-AZ (it lives for minutes).
    if ('instanceId' in source.rds) {
      const settings = await rdsInstanceKind.settings(ctx.rds, from);
      await rdsInstanceKind.restore(ctx.rds, { kind: 'pitr', time: source.time, sourceId: from }, ids.id, { ...settings, deletionProtection: false, multiAZ: false }, tags);
    } else {
      const settings = await rdsClusterKind.settings(ctx.rds, from);
      await rdsClusterKind.restore(ctx.rds, { kind: 'pitr', time: source.time, sourceId: from }, ids.id, { ...settings, deletionProtection: false }, tags);
    }
    ctx.log.info('point-in-time copy started', { unitId: ids.unitId, source: from, copy: ids.id, time: source.time });
    return pending(`${noun} ${ids.id} is being restored from ${describeRds(source.rds)} to ${source.time}`, { [`${'instanceId' in source.rds ? 'dbInstances' : 'dbClusters'}RestoredToPointInTime`]: 1 });
  }
  if (!isOurs(found, ids)) {
    throw new PreflightError(
      `unit "${ids.unitId}": ${noun} ${ids.id} exists but is not this run's point-in-time copy (its ${TEMPORARY_TAG} / ${TAG.point} / ${TAG.run} tags differ); ` +
        'rename or delete it, then rerun',
    );
  }
  if (found.status !== 'available') return pending(`${noun} ${ids.id} (point-in-time copy at ${source.time}) is ${found.status}`);
  if (!('instanceId' in source.rds)) {
    const settings = await rdsClusterKind.settings(ctx.rds, sourceId(source.rds));
    const done = await rdsClusterKind.complete!(ctx.rds, ids.id, { identifier: ids.id, runShort: shortHash(ids.runId) }, { ...settings, deletionProtection: false }, tags);
    if (done.pending) return pending(done.pending, done.changes);
  }
  if (!found.endpoint) return pending(`${noun} ${ids.id} has no endpoint yet`);
  return { endpoint: found.endpoint, changes: {} };
}

/**
 * Deletes the copy (SkipFinalSnapshot: it holds nothing that is not in the source's backups), only when its tags prove
 * it is ours. Answers the number of deletions started (0: already gone).
 */
export async function removeTemporaryCopy(ctx: AdapterContext, rds: ConnectionRds, ids: { id: string; point: string; runId: string; unitId: string }): Promise<number> {
  const found = await find(ctx, rds, ids.id);
  if (!found || found.status === 'deleting') return 0;
  if (!isOurs(found, ids)) {
    ctx.log.warn('point-in-time copy not deleted: its tags do not prove it is ours', { unitId: ids.unitId, id: ids.id });
    return 0;
  }
  if ('instanceId' in rds) {
    if (found.deletionProtection) await ctx.rds.send(new ModifyDBInstanceCommand({ DBInstanceIdentifier: ids.id, DeletionProtection: false, ApplyImmediately: true }));
    await orUndefined(ctx.rds.send(new DeleteDBInstanceCommand({ DBInstanceIdentifier: ids.id, SkipFinalSnapshot: true })));
  } else {
    if (found.deletionProtection) await ctx.rds.send(new ModifyDBClusterCommand({ DBClusterIdentifier: ids.id, DeletionProtection: false, ApplyImmediately: true }));
    await rdsClusterKind.remove(ctx.rds, { id: ids.id, arn: '', status: found.status, deletionProtection: false, tags: found.tags }, ctx.log);
  }
  ctx.log.info('point-in-time copy deleted', { unitId: ids.unitId, id: ids.id });
  return 1;
}


/** What a table adapter brings to a point-in-time restore: its own data path, around the shared control path. */
export interface AtTimeSteps<P> {
  /** The rows at T, once read and sealed (the point as an ordinary `copy` point); undefined before. */
  sealed(): Promise<P | undefined>;
  /** Reads the unit's rows at T from the copy at `endpoint` and seals them; a rerun finds them sealed. */
  extract(endpoint: Endpoint): Promise<{ copy: P; rows: number }>;
  /** The ordinary copy restore from the sealed rows, then their count and checksum checked against the scope. */
  merge(copy: P): Promise<Outcome>;
}

const sum = (changes: Changes): number => Object.values(changes).reduce((a, b) => a + b, 0);

/**
 * The restore of a table unit's point-in-time point, one step per call: (a) the copy, pending until available;
 * (b) the rows at T read from it and sealed; (c) merged and verified; (d) only then the copy deleted. Each step is
 * found done on a rerun: sealed rows skip (a) and (b), a merged table writes nothing, a deleted copy stays deleted.
 */
export async function restoreAtTime<P extends { details: { shadowTable: string } }>(
  ctx: AdapterContext,
  source: PointInTimeSource,
  ids: { id: string; point: string; runId: string; unitId: string },
  steps: AtTimeSteps<P>,
): Promise<Outcome> {
  const changes: Changes = {};
  let copy = await steps.sealed();
  let extracted = 0;
  if (!copy) {
    const step = await ensureTemporaryCopy(ctx, source, ids);
    Object.assign(changes, step.changes);
    if ('pending' in step) return { changes, writes: sum(changes), notes: [], pending: step.pending };
    ({ copy, rows: extracted } = await steps.extract(step.endpoint));
  }
  const merged = await steps.merge(copy);
  const removed = await removeTemporaryCopy(ctx, source.rds, ids);
  const notes = [`rows as of ${source.time} read from a point-in-time copy of ${describeRds(source.rds)} into ${copy.details.shadowTable}`, ...merged.notes];
  if (removed > 0) notes.push(`temporary copy ${ids.id} deleted after the merge was verified`);
  return {
    ...merged,
    changes: { ...changes, ...merged.changes, ...(extracted > 0 ? { rowsExtracted: extracted } : {}), ...(removed > 0 ? { temporaryCopiesDeleted: removed } : {}) },
    writes: merged.writes + sum(changes) + removed,
    notes,
  };
}

/** The dry run of a point-in-time point whose rows were not read yet: what the restore will do. */
export function diffAtTime(source: PointInTimeSource | undefined, table: string, rowsNow: number, time: string): Diff {
  const changes: Changes = { [source && 'clusterId' in source.rds ? 'dbClustersRestoredToPointInTime' : 'dbInstancesRestoredToPointInTime']: 1, temporaryCopiesDeleted: 1 };
  return {
    changes,
    writes: sum(changes),
    notes: [
      `point-in-time restore of ${source ? describeRds(source.rds) : 'the source'} to ${time} into a temporary copy; the rows of ${table} in scope read from it, ` +
        'merged writing only the rows that differ (each replaced row kept in quarantine), verified, then the copy deleted',
      `rows in scope now: ${rowsNow}; how many differ is known once the copy is read`,
    ],
  };
}

/** The temporary copy's names for one run of one unit's point. */
export function temporaryIds(source: PointInTimeSource | undefined, unitId: string, ctx: AdapterContext, runId: string) {
  if (!source) throw new RestorePointMissingError(`unit "${unitId}": this point-in-time point names no RDS source`);
  return { source, ids: { id: temporaryIdentifier(source.rds, runId, unitId), point: pointKey({ pipeline: ctx.pipeline, deploymentId: ctx.deploymentId, unitId }), runId, unitId } };
}

/** A table point as the rollback-to-a-time glue reads it: the point-in-time point, or the sealed rows read from its copy. */
interface AtTimePoint {
  count: number;
  capturedAt: string;
  details: { pointInTime?: PointInTimeSource; table: string; shadowTable: string };
}

/** What a table adapter (PostgreSQL, MySQL) brings to a rollback to a time: its own data path and its copy-mode operations. */
export interface TableAtTimeParts<U extends { id: string }, P extends AtTimePoint> {
  /** The rows at T, once read and sealed (an ordinary `copy` point); undefined before. */
  sealedCopyOf(unit: U, point: P, ctx: AdapterContext): Promise<P | undefined>;
  /** Reads the unit's rows at T from the copy at `endpoint` and seals them; a rerun finds them sealed. */
  extractAtTime(unit: U, point: P, ctx: AdapterContext, endpoint: Endpoint): Promise<{ copy: P; rows: number }>;
  /** The adapter's copy-mode restore, diff and release, applied to the sealed rows. */
  restore(unit: U, copy: P, ctx: AdapterContext): Promise<Outcome>;
  diff(unit: U, copy: P, ctx: AdapterContext): Promise<Diff>;
  release(unit: U, copy: P, ctx: AdapterContext): Promise<void>;
  /** The count and checksum of the unit's scope against the sealed rows. */
  verifyScope(unit: U, copy: P, ctx: AdapterContext): Promise<Check[]>;
}

/**
 * The operations of a table unit's point-in-time point, the same for every engine around the adapter's own parts:
 * restore (one step per call, see restoreAtTime), the dry run, release (the sealed rows, and the run's copy if one is
 * left), and the data path alone for the benchmark.
 */
export function tableAtTime<U extends { id: string }, P extends AtTimePoint>(parts: TableAtTimeParts<U, P>) {
  /** (c): the ordinary copy restore from the sealed rows at T, then their count and checksum against the scope. */
  async function mergeAndVerify(unit: U, copy: P, ctx: AdapterContext): Promise<Outcome> {
    const merged = await parts.restore(unit, copy, ctx);
    const failed = (await parts.verifyScope(unit, copy, ctx)).filter((c) => !c.ok);
    if (failed.length > 0) {
      throw new VerificationFailedError(
        `unit "${unit.id}": after the merge, ${failed.map((c) => `${c.name} is ${c.actual}, expected ${c.expected}`).join('; ')}; the temporary copy is kept for inspection.`,
      );
    }
    return merged;
  }

  return {
    /** The data path alone against a database already standing at `endpoint`: extract, merge, verify (for the benchmark). */
    async mergeFromCopy(unit: U, point: P, ctx: AdapterContext, endpoint: Endpoint): Promise<Outcome> {
      const { copy, rows } = await parts.extractAtTime(unit, point, ctx, endpoint);
      const merged = await mergeAndVerify(unit, copy, ctx);
      return { ...merged, changes: { ...merged.changes, ...(rows > 0 ? { rowsExtracted: rows } : {}) } };
    },

    async restore(unit: U, point: P, ctx: AdapterContext): Promise<Outcome> {
      const { source, ids } = temporaryIds(point.details.pointInTime, unit.id, ctx, ctx.runId!);
      return restoreAtTime(ctx, source, ids, {
        sealed: () => parts.sealedCopyOf(unit, point, ctx),
        extract: (endpoint) => parts.extractAtTime(unit, point, ctx, endpoint),
        merge: (copy) => mergeAndVerify(unit, copy, ctx),
      });
    },

    async diff(unit: U, point: P, ctx: AdapterContext): Promise<Diff> {
      const copy = await parts.sealedCopyOf(unit, point, ctx);
      const time = point.details.pointInTime?.time ?? point.capturedAt;
      if (!copy) return diffAtTime(point.details.pointInTime, point.details.table, point.count, time);
      const out = await parts.diff(unit, copy, ctx);
      return { ...out, notes: [`rows as of ${time} already read into ${copy.details.shadowTable}`, ...out.notes] };
    },

    async release(unit: U, point: P, ctx: AdapterContext): Promise<void> {
      const copy = await parts.sealedCopyOf(unit, point, ctx);
      if (copy) await parts.release(unit, copy, ctx);
      if (ctx.runId) {
        const { source, ids } = temporaryIds(point.details.pointInTime, unit.id, ctx, ctx.runId);
        await removeTemporaryCopy(ctx, source.rds, ids);
      }
    },
  };
}
