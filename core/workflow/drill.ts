import { drillShort } from '../adapters/drill/names.ts';
import { scratchTargetFor } from '../adapters/drill/registry.ts';
import { assertScratchApart } from '../adapters/drill/s3-scratch.ts';
import type { DrillScratch } from '../adapters/drill/types.ts';
import { adapterFor } from '../adapters/registry.ts';
import { DEFAULT_MAX_POLLS } from '../adapters/types.ts';
import { DrillYieldedError, RestorePointMissingError, VerificationFailedError } from '../errors.ts';
import type { PlannedStage, Run, RunTrigger, Step } from '../ledger/ledger.ts';
import { durationSeconds } from '../manifest/drill.ts';
import type { Manifest, Unit } from '../manifest/schema.ts';
import { planRollback } from '../plan/plan.ts';
import { auditBucketOf, auditSafely, writeAuditReport } from '../report/audit.ts';
import { buildReport, type DrillFacts, type RunReport } from '../report/report.ts';
import { stateKeys } from '../runtime/state-store.ts';
import { drillFailed } from './drill-notify.ts';
import { drillRequestSchema } from './drill-request.ts';
import { estimateDrill } from './estimates.ts';
import { adapterContext, deployedManifest, stateStore, summarizeCaught, unitOf, type CaughtError, type WorkflowDeps } from './deps.ts';
import { announce } from './notify.ts';
import { parseInput } from './requests.ts';

/**
 * Rollback drills: the staged rollback of a deployment's restore point, rehearsed into scratch targets (see
 * core/adapters/drill/types.ts), every gate and user check run on the scratch copies, each stage timed, every scratch
 * target removed, and a report in the audit trail. A drill never writes production data, never pauses the pipeline's
 * triggers, and never takes the pipeline's lock: it reads the lock before it starts and before every unit and gate,
 * and yields (DrillYieldedError, exit 3) to a rollback or snapshot holding it — a real incident wins, and is never
 * refused because a drill runs. It records its steps in the ledger under its run id and its own record in the state
 * bucket (`drill-runs/…`), not as a rollback run: history, status, triggers and the release job never mistake it for one.
 */

export interface DrillIds {
  runId: string;
  pipeline: string;
  deploymentId: string;
}

/** What the state bucket keeps of a drill between its tasks. */
export interface DrillRecord extends DrillIds {
  requestedBy: string;
  reason: string;
  trigger: RunTrigger;
  startedAt: string;
  stages: PlannedStage[];
  scratchBucket: string;
  rto?: string;
  /** What cleanup removed so far (a cleanup that waits on RDS runs several times). */
  removed: string[];
}

export interface DrillPlan extends DrillIds {
  stages: PlannedStage[];
}

const drillRecordKey = (pipeline: string, runId: string) => `drill-runs/${pipeline}/${runId}.json`;

/** Deployment states whose restore points are sealed. */
const SEALED = ['READY', 'ROLLING_BACK', 'ROLLED_BACK', 'ROLLBACK_FAILED'] as const;

async function readRecord(deps: WorkflowDeps, ids: { pipeline: string; runId: string }): Promise<DrillRecord | undefined> {
  return stateStore(deps).getJson<DrillRecord>(drillRecordKey(ids.pipeline, ids.runId));
}

async function requireRecord(deps: WorkflowDeps, ids: { pipeline: string; runId: string }): Promise<DrillRecord> {
  const record = await readRecord(deps, ids);
  if (!record) throw new RestorePointMissingError(`drill ${ids.runId} of pipeline "${ids.pipeline}" has no record in s3://${deps.stateBucket}/${drillRecordKey(ids.pipeline, ids.runId)}`);
  return record;
}

function scratchOf(record: Pick<DrillRecord, 'runId' | 'scratchBucket'>): DrillScratch {
  return { runId: record.runId, short: drillShort(record.runId), s3Bucket: record.scratchBucket };
}

/** A drill yields to a rollback or snapshot of its pipeline: the lock held (and not expired) stops it. */
async function yieldToIncidents(deps: WorkflowDeps, pipeline: string, runId: string): Promise<void> {
  const lock = await deps.ledger.getLock(pipeline);
  if (lock && lock.holder !== runId && lock.expiresAt > Math.floor(deps.now().getTime() / 1000)) {
    throw new DrillYieldedError(
      `run "${lock.holder}" (deployment ${lock.deploymentId}) holds the lock of pipeline "${pipeline}" since ${lock.acquiredAt}: ` +
        'a drill yields to a real rollback or snapshot; it stopped and removes its scratch targets. Run the drill again later.',
    );
  }
}

/** First state: validates the request, finds the deployment (`latest` or named), plans every unit's stage, records the drill. */
export async function planDrill(deps: WorkflowDeps, input: { request: unknown; executionName: string }): Promise<DrillPlan> {
  const request = parseInput(drillRequestSchema, input.request, 'drill request');
  const deployment =
    request.deploymentId === 'latest'
      ? await deps.ledger.latestDeployment(request.pipeline, SEALED)
      : await deps.ledger.requireDeployment(request.pipeline, request.deploymentId);
  if (!deployment) throw new RestorePointMissingError(`pipeline "${request.pipeline}" has no deployment with sealed restore points to drill`);
  if (!(SEALED as readonly string[]).includes(deployment.status)) {
    throw new RestorePointMissingError(`deployment "${deployment.deploymentId}" of pipeline "${request.pipeline}" is ${deployment.status}: it has no sealed restore points to drill`);
  }
  const runId = input.executionName;
  const existing = await readRecord(deps, { pipeline: request.pipeline, runId });
  if (existing) return { runId, pipeline: existing.pipeline, deploymentId: existing.deploymentId, stages: existing.stages };
  await yieldToIncidents(deps, request.pipeline, runId);
  const manifest = await deployedManifest(deps, request.pipeline, deployment.deploymentId);
  const plan = planRollback(manifest, { cascade: true });
  const have = new Set((await deps.ledger.listRestorePoints(request.pipeline, deployment.deploymentId)).map((p) => p.unitId));
  const missing = plan.scope.filter((u) => !have.has(u));
  if (missing.length > 0) throw new RestorePointMissingError(`deployment "${deployment.deploymentId}" has no restore point for: ${missing.join(', ')}`);
  const record: DrillRecord = {
    runId,
    pipeline: request.pipeline,
    deploymentId: deployment.deploymentId,
    requestedBy: request.requestedBy,
    reason: request.reason,
    trigger: request.trigger ?? { kind: 'manual' },
    startedAt: deps.now().toISOString(),
    stages: plan.stages.map((units, index) => ({ index, units })),
    scratchBucket: manifest.drill?.scratchBucket ?? deps.stateBucket,
    ...(manifest.rto ? { rto: manifest.rto } : {}),
    removed: [],
  };
  // Refused before anything is written: a scratch bucket that is a unit's own.
  for (const unit of manifest.units) if (unit.type === 's3-prefix') assertScratchApart(unit, scratchOf(record));
  await stateStore(deps).putJson(drillRecordKey(record.pipeline, runId), record);
  deps.log.info('drill planned', { runId, deploymentId: record.deploymentId, stages: plan.stages, scratchBucket: record.scratchBucket, rto: record.rto });
  return { runId, pipeline: record.pipeline, deploymentId: record.deploymentId, stages: record.stages };
}

export interface RehearsedUnit {
  unitId: string;
  stage: number;
  done: boolean;
  waitSeconds: number;
  maxPolls: number;
  status?: string;
}

const IN_PROGRESS = 'rehearsal in progress: ';
const REHEARSED_IN = 'rehearsed in ';

/** Restores one unit's restore point into its scratch target and records the step. Idempotent; may answer "not done yet". */
export async function rehearseUnit(deps: WorkflowDeps, ids: DrillIds & { stage: number; unitId: string; polls?: number }): Promise<RehearsedUnit> {
  await yieldToIncidents(deps, ids.pipeline, ids.runId);
  const record = await requireRecord(deps, ids);
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const unit = unitOf(manifest, ids.unitId);
  const scratchTarget = scratchTargetFor(unit);
  const previous = await deps.ledger.getStep(ids.runId, ids.stage, ids.unitId);
  const startedAt = previous?.startedAt ?? deps.now().toISOString();
  if (!scratchTarget) {
    await deps.ledger.putStep({ ...stepBase(ids, unit), status: 'FAILED', notes: [`${unit.type} units cannot be rehearsed in a drill yet`], startedAt });
    throw new VerificationFailedError(`unit "${unit.id}": ${unit.type} units cannot be rehearsed in a drill yet; the drill cannot prove this pipeline's recovery`);
  }
  const point = await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, ids.unitId);
  if (!point) throw new RestorePointMissingError(`unit "${ids.unitId}" has no restore point in deployment "${ids.deploymentId}"`);
  const outcome = await scratchTarget.restore(unit, point, adapterContext(deps, manifest, ids), scratchOf(record));
  const changes = { ...(previous?.changes ?? {}) };
  for (const [k, v] of Object.entries(outcome.changes)) changes[k] = (changes[k] ?? 0) + v;
  const notes = [...new Set([...(previous?.notes ?? []), `${REHEARSED_IN}${outcome.target}`, ...outcome.notes])].filter((n) => !n.startsWith(IN_PROGRESS));
  if (outcome.pending) notes.push(`${IN_PROGRESS}${outcome.pending.status}`);
  // Writes stay 0: a drill's report counts production writes, and a drill makes none. The scratch copies are `changes`.
  await deps.ledger.putStep({ ...stepBase(ids, unit), status: outcome.pending ? 'FAILED' : 'RESTORED', changes, notes, startedAt, restoredAt: deps.now().toISOString() });
  // The same poll budget as the unit's rollback restore (6 hours for RDS).
  const maxPolls = outcome.pending?.maxPolls ?? adapterFor(unit).maxPolls ?? DEFAULT_MAX_POLLS;
  if (outcome.pending) {
    return { unitId: unit.id, stage: ids.stage, done: false, waitSeconds: Math.max(1, Math.round(outcome.pending.waitSeconds)), maxPolls, status: `${unit.type} unit "${unit.id}": ${outcome.pending.status} (poll ${ids.polls ?? 0} of ${maxPolls})` };
  }
  return { unitId: unit.id, stage: ids.stage, done: true, waitSeconds: 0, maxPolls };
}

function stepBase(ids: DrillIds & { stage: number }, unit: Unit): Omit<Step, 'status'> {
  return { runId: ids.runId, stage: ids.stage, unitId: unit.id, type: unit.type, changes: {}, writes: 0, notes: [] };
}

/** The gate of a stage, on the scratch copies: the adapter's count and checksum, and the unit's user checks pointed there. */
export async function verifyDrillStage(deps: WorkflowDeps, ids: DrillIds & { stage: PlannedStage }): Promise<{ stage: number; verified: string[] }> {
  await yieldToIncidents(deps, ids.pipeline, ids.runId);
  const record = await requireRecord(deps, ids);
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const failures: string[] = [];
  for (const unitId of ids.stage.units) {
    const unit = unitOf(manifest, unitId);
    const point = (await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, unitId))!;
    const { checks, notes } = await scratchTargetFor(unit)!.verify(unit, point, adapterContext(deps, manifest, { ...ids, unitId }), scratchOf(record));
    const ok = checks.every((c) => c.ok);
    const step = await deps.ledger.getStep(ids.runId, ids.stage.index, unitId);
    await deps.ledger.putStep({
      ...stepBase({ ...ids, stage: ids.stage.index }, unit),
      changes: step?.changes ?? {},
      notes: [...new Set([...(step?.notes ?? []), ...notes])],
      startedAt: step?.startedAt,
      restoredAt: step?.restoredAt,
      status: ok ? 'VERIFIED' : 'VERIFY_FAILED',
      checks,
      verifiedAt: deps.now().toISOString(),
    });
    if (!ok) failures.push(`${unitId}: ${checks.filter((c) => !c.ok).map((c) => `${c.name} expected ${c.expected}, got ${c.actual}`).join('; ')}`);
  }
  if (failures.length > 0) {
    throw new VerificationFailedError(`drill stage ${ids.stage.index + 1} did not verify on its scratch copies; later stages were not started:\n  ${failures.join('\n  ')}`);
  }
  deps.log.info('drill stage verified', { runId: ids.runId, stage: ids.stage.index, units: ids.stage.units });
  return { stage: ids.stage.index, verified: ids.stage.units };
}

export interface DrillCleanup {
  done: boolean;
  waitSeconds: number;
  /** Everything removed so far, by this call and earlier ones. */
  removed: string[];
  /** What this call removed. */
  removedNow: string[];
  status?: string;
}

/**
 * Removes every scratch target of the drill (every unit's, whatever stage the drill reached: a unit that was never
 * rehearsed has nothing to remove). Idempotent and rerunnable; a target is removed only if it proves to be this
 * drill's. Answers "not done yet" while an RDS copy is being deleted.
 */
export async function cleanupDrill(deps: WorkflowDeps, ids: { runId: string; pipeline: string }): Promise<DrillCleanup> {
  const record = await readRecord(deps, ids);
  if (!record) return { done: true, waitSeconds: 0, removed: [], removedNow: [] };
  const manifest = await deployedManifest(deps, record.pipeline, record.deploymentId);
  const removed: string[] = [];
  const waiting: string[] = [];
  let waitSeconds = 0;
  for (const unit of manifest.units) {
    const target = scratchTargetFor(unit);
    if (!target) continue;
    const out = await target.cleanup(unit, adapterContext(deps, manifest, { deploymentId: record.deploymentId, runId: record.runId, unitId: unit.id }), scratchOf(record));
    removed.push(...out.removed);
    if (out.pending) {
      waiting.push(out.pending.status);
      waitSeconds = Math.max(waitSeconds, out.pending.waitSeconds);
    }
  }
  const all = [...new Set([...record.removed, ...removed])];
  await stateStore(deps).putJson(drillRecordKey(record.pipeline, record.runId), { ...(await requireRecord(deps, ids)), removed: all });
  deps.log.info('drill cleanup', { runId: record.runId, removed, waiting });
  return waiting.length > 0
    ? { done: false, waitSeconds: Math.max(1, Math.round(waitSeconds)), removed: all, removedNow: removed, status: waiting.join('; ') }
    : { done: true, waitSeconds: 0, removed: all, removedNow: removed };
}

export interface DrillOutcome {
  report: RunReport;
  status: 'SUCCEEDED' | 'FAILED' | 'REFUSED';
  /** Why the drill failed (a gate, an error, over its RTO), or undefined. */
  failure?: string;
  error?: { name: string; message: string };
}

/**
 * Last state, whatever happened: builds the report from the steps (per-stage timings), measures the recovery time
 * against the RTO, writes the report (state bucket and audit store, JSON and Markdown, rendered like a rollback's) and,
 * for a drill that failed or was over its RTO, sends `Drill Failed`. A drill that yielded to a rollback is REFUSED,
 * not failed: nothing is wrong with the pipeline's recovery.
 */
export async function finishDrill(
  deps: WorkflowDeps,
  input: { executionName: string; plan?: DrillIds; request?: { pipeline?: unknown; deploymentId?: unknown }; error?: CaughtError | null; cleanup?: DrillCleanup; cleanupError?: CaughtError | null },
): Promise<DrillOutcome> {
  const runId = input.plan?.runId ?? input.executionName;
  const pipeline = input.plan?.pipeline ?? (typeof input.request?.pipeline === 'string' ? input.request.pipeline : 'unknown');
  const record = pipeline === 'unknown' ? undefined : await readRecord(deps, { pipeline, runId });
  const caught = input.error?.Error ? summarizeCaught(input.error) : undefined;
  const cleanupError = input.cleanupError?.Error ? summarizeCaught(input.cleanupError) : undefined;
  const endedAt = deps.now().toISOString();
  const steps = record ? await deps.ledger.listSteps(runId) : [];
  const manifest = record ? await deployedManifest(deps, record.pipeline, record.deploymentId).catch(() => undefined) : undefined;

  const recoveryMs = measuredRecovery(steps, record?.stages ?? []);
  const rtoSeconds = record?.rto ? durationSeconds(record.rto) : undefined;
  const overRto = rtoSeconds !== undefined && recoveryMs !== undefined && recoveryMs > rtoSeconds * 1000;
  const cleanupComplete = !cleanupError && (input.cleanup?.done ?? record === undefined);
  const yielded = caught?.name === 'DrillYieldedError';
  const failure = yielded
    ? undefined
    : caught
      ? `${caught.name}: ${caught.message}`
      : overRto
        ? `recovery took ${(recoveryMs! / 1000).toFixed(1)} s, over the RTO of ${record!.rto} (${rtoSeconds} s)`
        : !cleanupComplete
          ? `scratch targets were not all removed${cleanupError ? `: ${cleanupError.message}` : input.cleanup?.status ? ` (${input.cleanup.status})` : ''}`
          : undefined;
  const status = yielded ? 'REFUSED' : failure ? 'FAILED' : 'SUCCEEDED';
  const error = caught ?? (failure ? { name: overRto ? 'DrillOverRto' : 'DrillCleanupIncomplete', message: failure } : undefined);

  const drill: DrillFacts = {
    ...(record?.rto ? { rto: record.rto, rtoSeconds } : {}),
    ...(recoveryMs !== undefined ? { recoveryMs } : {}),
    overRto,
    // Each unit's step says where it was rehearsed (units of a stage run in parallel: one record per unit, no shared one).
    scratch: steps.flatMap((st) => st.notes.filter((n) => n.startsWith(REHEARSED_IN)).map((n) => ({ unitId: st.unitId, target: n.slice(REHEARSED_IN.length) }))),
    cleanup: { removed: input.cleanup?.removed ?? record?.removed ?? [], complete: cleanupComplete, ...(cleanupError ? { error: `${cleanupError.name}: ${cleanupError.message}` } : {}) },
  };
  const run: Run = {
    runId,
    pipeline,
    deploymentId: record?.deploymentId ?? (typeof input.request?.deploymentId === 'string' ? input.request.deploymentId : 'unknown'),
    status,
    dryRun: false,
    requested: manifest?.units.map((u) => u.id) ?? [],
    scope: manifest?.units.map((u) => u.id) ?? [],
    stages: record?.stages ?? [],
    reasons: {},
    requestedBy: record?.requestedBy ?? 'unknown',
    reason: record?.reason ?? '',
    startedAt: record?.startedAt ?? endedAt,
    endedAt,
    ...(record ? { trigger: record.trigger } : {}),
    ...(error ? { error } : {}),
  };
  // Set against what the drill measured (the Markdown's estimate-against-actual table); best effort.
  const estimate = record
    ? await estimateDrill(deps, record, await deps.ledger.listRestorePoints(record.pipeline, record.deploymentId)).catch((e: unknown) => {
        deps.log.warn('drill estimate not made', { runId, error: (e as Error).message });
        return undefined;
      })
    : undefined;
  const report: RunReport = {
    ...buildReport(run, steps, Object.fromEntries((manifest?.units ?? []).map((u: Manifest['units'][number]) => [u.id, u.type]))),
    drill,
    ...(estimate ? { estimate } : {}),
  };
  // A drill changes no production data: a stage that stopped is not "partial" data, only an unfinished rehearsal.
  report.partial = false;
  if (pipeline !== 'unknown') {
    await stateStore(deps).putJson(stateKeys.report(pipeline, runId), report);
    await auditSafely(deps.log, `report of drill ${runId}`, () => writeAuditReport(deps.s3, auditBucketOf(deps) ?? deps.stateBucket, report));
  }
  if (failure) await announce(deps, drillFailed(report, failure));
  deps.log[failure ? 'warn' : 'info'](`drill ${status.toLowerCase()}`, { runId, recoveryMs, rto: record?.rto, overRto, failure });
  return { report, status, ...(failure ? { failure } : {}), ...(error ? { error } : {}) };
}

/** From the first unit's rehearsal start to the last stage's gate; undefined when no stage was verified. */
function measuredRecovery(steps: Step[], stages: PlannedStage[]): number | undefined {
  const starts = steps.map((s) => s.startedAt).filter((t): t is string => !!t).sort();
  const lastStage = stages[stages.length - 1];
  if (!lastStage || starts.length === 0) return undefined;
  const gates = steps.filter((s) => s.stage === lastStage.index && s.status === 'VERIFIED').map((s) => s.verifiedAt!).sort();
  if (gates.length < lastStage.units.length) return undefined;
  return Date.parse(gates[gates.length - 1]!) - Date.parse(starts[0]!);
}
