import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { FreezeNotLiftedError } from '../../errors.ts';
import type { Unit } from '../../manifest/schema.ts';
import { StateStore, stateKeys } from '../../runtime/state-store.ts';
import { withSession } from '../mysql/sql.ts';
import { withClient } from '../postgres/sql.ts';
import type { AdapterContext } from '../types.ts';
import { applyMysqlFreeze, grantMysqlBack, mysqlAccount, readMysqlWriteGrants, type MysqlGrant } from './mysql.ts';
import { applyPostgresFreeze, grantPostgresBack, readPostgresWriteGrants, type PostgresGrant } from './postgres.ts';
import { applyS3Freeze, freezeSid, liftS3Freeze, readBucketPolicy } from './s3.ts';

/**
 * Write freezes, unit by unit (`freeze` in the manifest): what each one replaced is written to the state bucket,
 * `freeze/<pipeline>/<run>/<unit>.json`, before the freeze is put in place, and the record is all a lift needs. So
 * "lift every freeze of run R" (liftRunFreezes) works from the records alone — after a success, a failure, a refusal or
 * a cancellation, from any state — and a retried freeze never records the frozen state as the one to go back to: the
 * first record of a run's unit is kept, later calls only put the freeze in place again.
 */

interface RecordBase {
  unitId: string;
  runId: string;
  pipeline: string;
  frozenAt: string;
  /** Set once the freeze is lifted; a lifted record is not lifted again (what was granted back may have changed since). */
  liftedAt?: string;
}

export type FreezeRecord =
  | (RecordBase & { kind: 's3-prefix'; bucket: string; prefix: string; sid: string; principals: string[]; policyBefore: string | null })
  | (RecordBase & { kind: 'postgres-table'; connection: string; table: string; roles: string[]; grants: PostgresGrant[] })
  | (RecordBase & { kind: 'mysql-table'; connection: string; table: string; roles: string[]; grants: MysqlGrant[] });

export type FreezeContext = Pick<AdapterContext, 'pipeline' | 's3' | 'stateBucket' | 'postgres' | 'mysql' | 'now' | 'log'>;

/** Which freeze applies to a unit, as a sentence for the plan and the dry run; undefined when none does. */
export function describeFreeze(unit: Unit): string | undefined {
  if (unit.type === 's3-prefix' && unit.freeze) {
    return `write freeze: a bucket policy statement denies writes to s3://${unit.bucket}/${unit.prefix}* to every principal but the rollback's, until the run ends`;
  }
  if ((unit.type === 'postgres-table' || unit.type === 'mysql-table') && unit.freeze) {
    const privileges = unit.type === 'postgres-table' ? 'INSERT, UPDATE, DELETE, TRUNCATE' : 'INSERT, UPDATE, DELETE, DROP';
    const roles = unit.type === 'mysql-table' ? unit.freeze.revokeFrom.map(mysqlAccount) : unit.freeze.revokeFrom;
    return `write freeze: ${privileges} on ${unit.table} revoked from ${roles.join(', ')} until the run ends (their grants recorded first and put back as they were)`;
  }
  return undefined;
}

/**
 * Puts the unit's freeze in place for run `runId` (no-op for a unit without `freeze`). `principals`: the ARNs the
 * rollback writes as, excepted from an S3 freeze. Returns the freeze's description, or undefined when the unit has none.
 */
export async function freezeUnit(unit: Unit, ctx: FreezeContext, run: { runId: string; principals: string[] }): Promise<string | undefined> {
  const described = describeFreeze(unit);
  if (!described) return undefined;
  const store = new StateStore(ctx.s3, ctx.stateBucket);
  const key = stateKeys.freeze(ctx.pipeline, run.runId, unit.id);
  const recorded = await store.getJson<FreezeRecord>(key);
  const base: RecordBase = { unitId: unit.id, runId: run.runId, pipeline: ctx.pipeline, frozenAt: ctx.now().toISOString() };
  if (unit.type === 's3-prefix') {
    const sid = freezeSid(run.runId, unit.id);
    // Refused before anything is recorded or written (applyS3Freeze says why).
    if (run.principals.length === 0) await applyS3Freeze(ctx.s3, { bucket: unit.bucket, prefix: unit.prefix, sid, principals: [] });
    let record = recorded;
    if (!record) {
      const before = await readBucketPolicy(ctx.s3, unit.bucket);
      record = { ...base, kind: 's3-prefix', bucket: unit.bucket, prefix: unit.prefix, sid, principals: run.principals, policyBefore: before?.text ?? null };
      await store.putJson(key, record);
    } else if (record.liftedAt) {
      await store.putJson(key, { ...record, liftedAt: undefined });
    }
    await applyS3Freeze(ctx.s3, { bucket: unit.bucket, prefix: unit.prefix, sid, principals: run.principals });
  } else if (unit.type === 'postgres-table' && unit.freeze) {
    const roles = unit.freeze.revokeFrom;
    await withClient(ctx as AdapterContext, unit.connection, async (client) => {
      let record = recorded?.kind === 'postgres-table' ? recorded : undefined;
      if (!record) {
        record = { ...base, kind: 'postgres-table', connection: unit.connection, table: unit.table, roles, grants: await readPostgresWriteGrants(client, unit.table, roles) };
        await store.putJson(key, record);
      } else if (record.liftedAt) {
        await store.putJson(key, { ...record, liftedAt: undefined });
      }
      await applyPostgresFreeze(client, unit.table, roles, record.grants);
    });
  } else if (unit.type === 'mysql-table' && unit.freeze) {
    const roles = unit.freeze.revokeFrom;
    await withSession(ctx as AdapterContext, unit.connection, async (conn) => {
      let record = recorded?.kind === 'mysql-table' ? recorded : undefined;
      if (!record) {
        record = { ...base, kind: 'mysql-table', connection: unit.connection, table: unit.table, roles, grants: await readMysqlWriteGrants(conn, unit.table, roles) };
        await store.putJson(key, record);
      } else if (record.liftedAt) {
        await store.putJson(key, { ...record, liftedAt: undefined });
      }
      await applyMysqlFreeze(conn, record.grants);
    });
  }
  ctx.log.info('write freeze in place', { runId: run.runId, unitId: unit.id });
  return described;
}

async function liftRecord(record: FreezeRecord, ctx: FreezeContext): Promise<void> {
  if (record.kind === 's3-prefix') {
    await liftS3Freeze(ctx.s3, { bucket: record.bucket, sid: record.sid });
  } else if (record.kind === 'postgres-table') {
    await withClient(ctx as AdapterContext, record.connection, (client) => grantPostgresBack(client, record.grants));
  } else {
    await withSession(ctx as AdapterContext, record.connection, (conn) => grantMysqlBack(conn, record.grants));
  }
}

/** The freeze records of a run, in key order. */
export async function listRunFreezes(ctx: Pick<FreezeContext, 's3' | 'stateBucket' | 'pipeline'>, runId: string): Promise<FreezeRecord[]> {
  const store = new StateStore(ctx.s3, ctx.stateBucket);
  const records: FreezeRecord[] = [];
  let ContinuationToken: string | undefined;
  do {
    const page = await ctx.s3.send(new ListObjectsV2Command({ Bucket: ctx.stateBucket, Prefix: stateKeys.freezes(ctx.pipeline, runId), ContinuationToken }));
    for (const o of page.Contents ?? []) {
      const record = await store.getJson<FreezeRecord>(o.Key!);
      if (record) records.push(record);
    }
    ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (ContinuationToken);
  return records;
}

/**
 * Lifts every freeze of run `runId` that is still in place: removes the run's bucket policy statements, grants back the
 * recorded table privileges, and marks each record lifted. Idempotent, and safe to call from any point of a run (a run
 * that froze nothing has no records). Every record is tried; if any could not be lifted, FreezeNotLiftedError names
 * them (the others are lifted and marked).
 */
export async function liftRunFreezes(ctx: FreezeContext, runId: string): Promise<{ lifted: string[] }> {
  const store = new StateStore(ctx.s3, ctx.stateBucket);
  const lifted: string[] = [];
  const failed: string[] = [];
  for (const record of await listRunFreezes(ctx, runId)) {
    if (record.liftedAt) continue;
    try {
      await liftRecord(record, ctx);
      await store.putJson(stateKeys.freeze(ctx.pipeline, runId, record.unitId), { ...record, liftedAt: ctx.now().toISOString() });
      lifted.push(record.unitId);
    } catch (error) {
      const what = record.kind === 's3-prefix' ? `statement ${record.sid} in the policy of bucket ${record.bucket}` : `grants revoked on ${record.table} from ${record.roles.join(', ')}`;
      failed.push(`${record.unitId}: ${what} (${(error as Error).name}: ${(error as Error).message})`);
    }
  }
  ctx.log.info('write freezes lifted', { runId, lifted, failed: failed.length });
  if (failed.length > 0) throw new FreezeNotLiftedError(`run ${runId}: write freeze still in place for ${failed.join('; ')}`);
  return { lifted };
}
