import { nameHash, readablePart } from '../table-names.ts';

/** The schema holding shadow copies (`rp_…`) and quarantine tables (`q_…`). */
export const ROLLBACK_SCHEMA = 'etl_rollback';


/**
 * Shadow table name: deterministic from (pipeline, deployment, unit), so a retried capture finds its own copy.
 * `rp_` + 18 + `_` + 18 + `_` + 16 hex = at most 57 characters, under PostgreSQL's 63-byte identifier limit;
 * the readable part is for people, the hash for uniqueness.
 */
export function shadowTableName(pipeline: string, deploymentId: string, unitId: string): string {
  return `rp_${readablePart(pipeline, 18)}_${readablePart(unitId, 18)}_${nameHash('shadow', pipeline, deploymentId, unitId)}`;
}

/** Quarantine table name for one rollback run of one unit: `q_` + 24 + `_` + 16 hex (at most 43 characters). */
export function quarantineTableName(pipeline: string, runId: string, unitId: string): string {
  return `q_${readablePart(unitId, 24)}_${nameHash('quarantine', pipeline, runId, unitId)}`;
}

/** Advisory lock key for one shadow table (serialises concurrent captures of the same point). */
export const lockKey = (name: string): string => `etl_rollback:${name}`;

/**
 * Copy-on-write objects of one restore point, deterministic from (pipeline, deployment, unit) like the shadow table:
 * the undo table `cw_…` (at most 57 characters), its trigger function `cw_…_fn` and the triggers on the user's table,
 * `etl_rollback_cw_<hash>_<ins|upd|del|trn>`.
 */
export function undoTableName(pipeline: string, deploymentId: string, unitId: string): string {
  return `cw_${readablePart(pipeline, 18)}_${readablePart(unitId, 18)}_${nameHash('undo', pipeline, deploymentId, unitId)}`;
}

export function cowTriggerNames(pipeline: string, deploymentId: string, unitId: string): { ins: string; upd: string; del: string; trn: string } {
  const base = `etl_rollback_cw_${nameHash('undo', pipeline, deploymentId, unitId)}`;
  return { ins: `${base}_ins`, upd: `${base}_upd`, del: `${base}_del`, trn: `${base}_trn` };
}
