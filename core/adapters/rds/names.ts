import { createHash } from 'node:crypto';

/**
 * Names and tags of what the RDS adapters create. RDS identifiers (instances, clusters, snapshots): letters, digits
 * and hyphens, first a letter, no two hyphens in a row, no hyphen at the end; stored lowercase. Instances and clusters
 * take at most 63 characters, DB snapshots 255, DB cluster snapshots 63.
 */
export const MAX_RESOURCE_ID = 63;
export const MAX_DB_SNAPSHOT_ID = 255;
export const MAX_CLUSTER_SNAPSHOT_ID = 63;

/** RDS instance / cluster identifier rule, as the manifest schema checks it. */
export const RDS_IDENTIFIER = /^[a-zA-Z](?:-?[a-zA-Z0-9])*$/;

/** Tags on everything the adapters create, so that release deletes only what a restore point made. */
export const TAG = {
  pipeline: 'etl-rollback:pipeline',
  deployment: 'etl-rollback:deployment',
  unit: 'etl-rollback:unit',
  /** `<pipeline>/<deployment>/<unit>`: the restore point a resource belongs to. */
  point: 'etl-rollback:point',
  /** On a restored instance/cluster: the run that restored it. */
  run: 'etl-rollback:run',
  /** On a restored instance/cluster: `snapshot:<id>` or `pitr:<ISO time>`. */
  restoredFrom: 'etl-rollback:restored-from',
  /** On a kept original: the restore point whose rollback replaced it. */
  keptFor: 'etl-rollback:kept-for',
} as const;

export function shortHash(text: string, length = 8): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/** Lowercase, hyphens for anything else, no doubled/leading/trailing hyphen, a letter first. */
export function sanitizeIdentifier(raw: string): string {
  let s = raw.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/-+/g, '-').replace(/^-|-$/g, '');
  if (!/^[a-z]/.test(s)) s = `x${s ? `-${s}` : ''}`;
  return s;
}

/** `raw` as a valid identifier of at most `max` characters; a long one is cut and ends with a hash of the whole. */
export function fitIdentifier(raw: string, max: number): string {
  const s = sanitizeIdentifier(raw);
  if (s.length <= max) return s;
  const hash = shortHash(s);
  return `${s.slice(0, max - hash.length - 1).replace(/-+$/, '')}-${hash}`;
}

/** `<base>-<suffix>` within `max`: the base is shortened (with a hash of it) when needed; the suffix stays readable. */
export function derivedIdentifier(base: string, suffix: string, max = MAX_RESOURCE_ID): string {
  const whole = `${base}-${suffix}`.toLowerCase();
  if (whole.length <= max) return whole;
  const hash = shortHash(base, 6);
  const room = max - suffix.length - hash.length - 2;
  return `${base.toLowerCase().slice(0, room).replace(/-+$/, '')}-${hash}-${suffix}`;
}

/** The snapshot of one unit of one deployment: `etlrb-<pipeline>-<deployment>-<unit>`, deterministic. */
export function snapshotIdentifier(ids: { pipeline: string; deploymentId: string; unitId: string }, max: number): string {
  return fitIdentifier(`etlrb-${ids.pipeline}-${ids.deploymentId}-${ids.unitId}`, max);
}

/** Eight hex characters naming a run in identifiers (`<id>-restored-<runshort>`). */
export function runShort(runId: string): string {
  return shortHash(runId);
}

export function pointKey(ids: { pipeline: string; deploymentId: string; unitId: string }): string {
  return `${ids.pipeline}/${ids.deploymentId}/${ids.unitId}`;
}

export type Tags = Record<string, string>;

export function tagMap(list: { Key?: string; Value?: string }[] | undefined): Tags {
  return Object.fromEntries((list ?? []).filter((t) => t.Key !== undefined).map((t) => [t.Key!, t.Value ?? '']));
}

export function tagList(tags: Tags): { Key: string; Value: string }[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
}

/** A resource's own tags, without ours (a restored copy gets the original's tags, not its etl-rollback bookkeeping). */
export function ownTags(tags: Tags): Tags {
  return Object.fromEntries(Object.entries(tags).filter(([k]) => !k.startsWith('etl-rollback:')));
}
