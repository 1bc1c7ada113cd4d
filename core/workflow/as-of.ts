import { adapterFor } from '../adapters/registry.ts';
import type { RestorePoint } from '../adapters/types.ts';
import { InputError } from '../errors.ts';
import type { Deployment } from '../ledger/ledger.ts';
import { validateManifest } from '../manifest/load.ts';
import type { Manifest } from '../manifest/schema.ts';
import { planRollback } from '../plan/plan.ts';
import { stateKeys } from '../runtime/state-store.ts';
import { adapterContext, deployedManifest, stateStore, type WorkflowDeps } from './deps.ts';

/**
 * Rollback to a time (`rollback --to <time>`, input `toTime`), when no restore point was taken before the change.
 *
 * The rollback state machine rolls a pipeline back to a deployment's restore points. A time has none captured
 * beforehand, so the first state makes a *derived deployment* `at-<YYYYMMDDTHHMMSSZ>`, whose restore points each unit's
 * adapter resolves from its service's own history (`UnitAdapter.asOf`: an s3-prefix from its version history, a
 * database from point-in-time recovery), and the ordinary staged, verified rollback then runs on it unchanged.
 *
 * - Its manifest is the one the request carries, else that of the pipeline's latest deployment (the manifest the
 *   pipeline runs with). It is stored as the deployment's manifest, once: a second request for the same time with a
 *   different manifest is refused (a deployment's manifest never changes).
 * - Every unit in scope must have an `asOf`; one without is refused (InputError naming unit and type) before anything is
 *   written. A time outside a unit's restorable window is refused by its adapter (OutsideRestorableWindowError).
 * - Idempotent: the deployment is registered once (origin `{ kind: 'time', at }`), adapters reuse what they resolved for
 *   it before (the history at a past time does not change), and sealed points are never replaced, so a crash and a rerun
 *   converge on the same points. Units added to the scope by a later request for the same time get their points then.
 * - The time is taken to the second (the id has no fraction, and S3 and RDS history have one-second resolution).
 * - What each unit resolved to (`shows`) is kept beside the deployment for the run (`resolutionKey`): the dry run
 *   prints it with each unit's changes, and the CLI shows it before asking for confirmation.
 */

/** `at-20261129T093000Z` for 2026-11-29T09:30:00(.xxx)Z. */
export function deploymentIdForTime(at: Date): string {
  return `at-${at.toISOString().slice(0, 19).replace(/[-:]/g, '')}Z`;
}

/** The time a request's `toTime` names, to the second; refused if it is in the future (by the workflow's clock). */
export function parseToTime(toTime: string, now: Date, what = 'toTime'): Date {
  const parsed = new Date(Date.parse(toTime));
  if (Number.isNaN(parsed.getTime())) throw new InputError(`${what}: ${JSON.stringify(toTime)} is not an ISO-8601 UTC time (e.g. 2026-11-29T09:30:00Z)`);
  const at = new Date(Math.floor(parsed.getTime() / 1000) * 1000);
  if (at.getTime() > now.getTime()) {
    throw new InputError(`${what}: ${at.toISOString()} is in the future (now is ${now.toISOString()}): a rollback goes back to a past state`);
  }
  return at;
}

/** What one unit resolved to, in sentences for people. */
export interface UnitResolution {
  unitId: string;
  type: string;
  shows: string[];
}

export interface DerivedDeployment {
  deploymentId: string;
  at: string;
  manifest: Manifest;
  resolutions: UnitResolution[];
}

/** Where the resolution shown for a run is kept (state bucket). */
export const resolutionKey = (pipeline: string, deploymentId: string, runId: string): string => `deployments/${pipeline}/${deploymentId}/resolutions/${runId}.json`;

async function manifestFor(deps: WorkflowDeps, pipeline: string, carried: unknown): Promise<Manifest> {
  if (carried !== undefined) {
    const manifest = validateManifest(carried, 'rollback request manifest');
    if (manifest.pipeline !== pipeline) throw new InputError(`manifest: the request names pipeline "${pipeline}" but the manifest is for "${manifest.pipeline}"`);
    return manifest;
  }
  const latest = await deps.ledger.latestDeployment(pipeline);
  if (!latest) {
    throw new InputError(`pipeline "${pipeline}" has no deployment to take its manifest from: send the manifest with the request (the CLI does: etl-rollback rollback <manifest> --to <time>)`);
  }
  return deployedManifest(deps, pipeline, latest.deploymentId);
}

/**
 * Makes (or finds) the derived deployment for `toTime` and resolves a restore point for every unit in scope. Touches no
 * data: it reads history and writes only manifests (state bucket) and ledger records.
 */
export async function deriveDeploymentAt(
  deps: WorkflowDeps,
  request: { pipeline: string; toTime: string; manifest?: unknown; units?: string[]; cascade?: boolean; requestedBy: string; reason: string },
  runId?: string,
): Promise<DerivedDeployment> {
  const at = parseToTime(request.toTime, deps.now());
  const deploymentId = deploymentIdForTime(at);
  const manifest = await manifestFor(deps, request.pipeline, request.manifest);
  const { scope } = planRollback(manifest, { units: request.units, cascade: request.cascade ?? true });
  const units = scope.map((id) => manifest.units.find((u) => u.id === id)!);
  const unable = units.filter((u) => typeof adapterFor(u).asOf !== 'function');
  if (unable.length > 0) {
    throw new InputError(
      `cannot roll back to a time: ${unable.map((u) => `unit "${u.id}" (${u.type})`).join(', ')} cannot be resolved from its history yet. ` +
        'Roll back to a deployment\'s restore points (--deployment), or leave these units out (--units, --no-cascade).',
    );
  }
  const manifestKey = stateKeys.manifest(request.pipeline, deploymentId);
  await stateStore(deps).putJsonOnce(manifestKey, manifest, `the manifest of derived deployment "${deploymentId}"`);
  const { deployment } = await deps.ledger.registerDeployment({
    pipeline: request.pipeline,
    deploymentId,
    manifestKey,
    units: manifest.units.map((u) => u.id),
    requestedBy: request.requestedBy,
    reason: request.reason,
    origin: { kind: 'time', at: at.toISOString() },
  });
  if (deployment.origin?.kind !== 'time') {
    throw new InputError(`deployment "${deploymentId}" of pipeline "${request.pipeline}" exists and was not derived from a time: it cannot be used for --to ${at.toISOString()}`);
  }
  const resolutions: UnitResolution[] = [];
  for (const unit of units) {
    const ctx = adapterContext(deps, manifest, { deploymentId, unitId: unit.id, ...(runId ? { runId } : {}) });
    const { point, shows } = await adapterFor(unit).asOf!(unit, at, ctx);
    const sealed: RestorePoint = await deps.ledger.putRestorePoint(request.pipeline, deploymentId, point);
    if (sealed.checksum !== point.checksum || sealed.count !== point.count) {
      deps.log.warn('derived restore point already sealed differently: the sealed one is kept', { unitId: unit.id, deploymentId });
    }
    resolutions.push({ unitId: unit.id, type: unit.type, shows });
  }
  if (deployment.status === 'SNAPSHOTTING') await deps.ledger.setDeploymentStatus(request.pipeline, deploymentId, 'READY');
  if (runId) await stateStore(deps).putJson(resolutionKey(request.pipeline, deploymentId, runId), resolutions);
  deps.log.info('deployment derived from a time', { pipeline: request.pipeline, deploymentId, at: at.toISOString(), units: scope });
  return { deploymentId, at: at.toISOString(), manifest, resolutions };
}

/** The resolution kept for a run, by unit id; empty when the run's deployment is not derived from a time. */
export async function resolutionOf(deps: WorkflowDeps, deployment: Pick<Deployment, 'pipeline' | 'deploymentId' | 'origin'>, runId: string): Promise<Map<string, string[]>> {
  if (deployment.origin?.kind !== 'time') return new Map();
  const stored = await stateStore(deps).getJson<UnitResolution[]>(resolutionKey(deployment.pipeline, deployment.deploymentId, runId));
  return new Map((stored ?? []).map((r) => [r.unitId, r.shows]));
}

/** The resolution as text: one block per unit, for the CLI's confirmation and logs. */
export function renderResolution(at: string, resolutions: readonly UnitResolution[]): string {
  const lines = [`rollback to ${at}: each unit resolved from its own history`];
  for (const r of resolutions) {
    lines.push(`  ${r.unitId} (${r.type}):`);
    for (const s of r.shows) lines.push(`    ${s}`);
  }
  return lines.join('\n');
}
