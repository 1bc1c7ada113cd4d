import type { Unit } from '../../manifest/schema.ts';
import type { AdapterContext, Changes, Check, Pending, RestorePoint } from '../types.ts';

/**
 * Rollback drills: a unit's restore point restored into a scratch target (never the unit's own data), checked by the
 * same gate as a rollback, then removed. One `ScratchTarget` per unit type; see core/workflow/drill.ts for the run.
 *
 * Every scratch target is named after the drill run, so that cleanup can prove what it deletes is the drill's:
 * - S3: `s3://<scratch bucket>/drills/<run>/<unit>/…` (the state bucket unless the manifest names a scratch bucket);
 * - PostgreSQL: schema `etl_rollback_drill_<short>` (COMMENT naming the run), one table per unit named after it;
 * - MySQL: database `etl_rollback_drill_<short>` holding a marker table naming the run, one table per unit;
 * - RDS: `<id>-drill-<short>`, tagged `etl-rollback:drill=<run>`.
 * `<short>` is 8 hex characters of a hash of the run id (identifiers have length limits; the run id is in the proof).
 */
export interface DrillScratch {
  runId: string;
  short: string;
  /** The bucket S3 units are rehearsed in. */
  s3Bucket: string;
}

export interface ScratchRestore {
  /** Where the unit was rehearsed, for the report: `s3://…`, `postgres warehouse: etl_rollback_drill_….staging`. */
  target: string;
  /** What was written into the scratch target (`objectsCopied`, `rowsCopied`, `dbInstancesRestored`). */
  changes: Changes;
  notes: string[];
  /** Not ready yet (an RDS restore): call again after the wait. */
  pending?: Pending;
}

export interface ScratchVerify {
  checks: Check[];
  /** User checks that could not be pointed at the scratch copy, and why: reported, never run on production. */
  notes: string[];
}

export interface ScratchCleanup {
  /** What was deleted (or is being deleted). */
  removed: string[];
  /** Deletion under way (an RDS instance): call again after the wait until it is gone. */
  pending?: Pending;
}

export interface ScratchTarget<U extends Unit = Unit, D = Record<string, unknown>> {
  /** Builds the scratch copy from the restore point. Idempotent: a rerun converges on the same copy. */
  restore(unit: U, point: RestorePoint<D>, ctx: AdapterContext, scratch: DrillScratch): Promise<ScratchRestore>;
  /** The gate on the scratch copy: count and checksum equal to the restore point, and the unit's user checks. */
  verify(unit: U, point: RestorePoint<D>, ctx: AdapterContext, scratch: DrillScratch): Promise<ScratchVerify>;
  /** Removes the unit's scratch target if it is this drill's; removing what is gone is a no-op. */
  cleanup(unit: U, ctx: AdapterContext, scratch: DrillScratch): Promise<ScratchCleanup>;
}
