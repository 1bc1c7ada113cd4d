import { createHash } from 'node:crypto';

/** Names of drill scratch targets, derived from the drill's run id (see types.ts). */

/** Run ids of drills start with this: what tells a drill's records and reports from a rollback's. */
export const DRILL_RUN_PREFIX = 'drill-';

export function drillShort(runId: string): string {
  return createHash('sha256').update(runId).digest('hex').slice(0, 8);
}

/** The PostgreSQL schema / MySQL database a drill's tables go to. */
export function scratchSchemaName(short: string): string {
  return `etl_rollback_drill_${short}`;
}

/** Prefix of every scratch object of a drill run in the scratch bucket. */
export function scratchRunPrefix(runId: string): string {
  return `drills/${runId}/`;
}

/** Where an S3 unit's objects are rehearsed: `drills/<run>/<unit>/`, then each key relative to the unit's prefix. */
export function scratchUnitPrefix(runId: string, unitId: string): string {
  return `${scratchRunPrefix(runId)}${unitId}/`;
}

/** The marker a drill writes on what it creates (COMMENT, marker row, tag), read back before anything is dropped. */
export interface DrillMarker {
  tool: 'etl-rollback';
  kind: 'drill-scratch';
  runId: string;
  pipeline: string;
}

export function drillMarker(runId: string, pipeline: string): DrillMarker {
  return { tool: 'etl-rollback', kind: 'drill-scratch', runId, pipeline };
}

/** True when `text` is the marker of this run (JSON as `drillMarker` makes it). */
export function isMarkerOf(text: string | null | undefined, runId: string): boolean {
  if (!text) return false;
  try {
    const m = JSON.parse(text) as Partial<DrillMarker>;
    return m.tool === 'etl-rollback' && m.kind === 'drill-scratch' && m.runId === runId;
  } catch {
    return false;
  }
}
