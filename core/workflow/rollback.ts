import { adapterFor } from '../adapters/registry.ts';
import { DEFAULT_MAX_POLLS } from '../adapters/types.ts';
import { InputError, LockHeldError, RestorePointMissingError, SealPendingError, VerificationFailedError } from '../errors.ts';
import type { DeploymentStatus, PlannedStage, Run, RunTrigger, Step } from '../ledger/ledger.ts';
import { stateKeys } from '../runtime/state-store.ts';
import { planRollback } from '../plan/plan.ts';
import { addChanges, buildReport, type RunReport } from '../report/report.ts';
import { adapterContext, deployedManifest, stateStore, summarizeCaught, unitOf, type CaughtError, type WorkflowDeps } from './deps.ts';
import { parseInput, rollbackRequestSchema } from './requests.ts';
import { deriveDeploymentAt, resolutionOf } from './as-of.ts';
import { auditBucketOf, auditSafely, writeAuditReport } from '../report/audit.ts';
import { announce, rollbackFailed, rollbackStarted, rollbackSucceeded, stageCompleted } from './notify.ts';
import { closeApproval, policyFacts, policyState, rejectionError, type PolicyState } from './policy.ts';
import { estimateDryRun, latestDryRunEstimate, recordThroughput } from './estimates.ts';
import { replayState, type ReplayState } from './replay.ts';
import { renderRunbook } from '../report/runbook.ts';
import { throughputFrom } from '../plan/throughput.ts';
import type { Manifest } from '../manifest/schema.ts';
import type { RestorePoint } from '../adapters/types.ts';
import { prepareUndo, recordUndoPoint } from './undo.ts';
import { checkCancel } from './cancel-request.ts';
import { describeFreeze } from '../adapters/freeze/unit-freeze.ts';
import { checkFrozenStage, freezesInPlace } from './freeze.ts';

/** How long a run may hold its pipeline's lock before another run may take it over. */
export const LOCK_TTL_SECONDS = 6 * 60 * 60;

/** Deployment states from which a rollback may start: the restore points are sealed. */
const ROLLBACKABLE = new Set(['READY', 'ROLLING_BACK', 'ROLLED_BACK', 'ROLLBACK_FAILED']);

export interface PlannedRun {
  runId: string;
  pipeline: string;
  deploymentId: string;
  dryRun: boolean;
  requested: string[];
  scope: string[];
  stages: PlannedStage[];
  /** Start outside the maintenance windows. */
  urgent: boolean;
  /** The deployment's status when the run was planned: put back if the run is not approved. */
  deploymentStatus: string;
  /** The manifest's policy, as the Choice states read it. */
  policy: PolicyState;
  /** The manifest's replay, as the Choice states after the last stage read it. */
  replay: ReplayState;
}

interface RunIds {
  runId: string;
  pipeline: string;
  deploymentId: string;
}

/**
 * First state of a rollback: validates the request, checks the deployment and its restore points, plans the
 * stages and records the run. Touches no data. The run id is the execution name, so a retry finds its run.
 */
export async function planRun(deps: WorkflowDeps, input: { request: unknown; executionName: string }): Promise<PlannedRun> {
  const parsed = parseInput(rollbackRequestSchema, input.request, 'rollback request');
  // A time (`toTime`): the derived deployment `at-…` is made (or found) here, its points resolved from the services'
  // history (core/workflow/as-of.ts). An undo (`undo`): the derived deployment `undo-<run>`, recorded by that run before
  // it wrote (core/workflow/undo.ts), for the units it changed. From here on the run is an ordinary rollback.
  const undo = parsed.undo !== undefined ? await prepareUndo(deps, { ...parsed, undo: parsed.undo }, input.executionName) : undefined;
  const deploymentId =
    undo?.deploymentId ??
    (parsed.toTime !== undefined ? (await deriveDeploymentAt(deps, { ...parsed, toTime: parsed.toTime }, input.executionName)).deploymentId : parsed.deploymentId!);
  const request = { ...parsed, deploymentId, ...(undo && parsed.resume === undefined ? { units: undo.units, cascade: false } : {}) };
  const deployment = await deps.ledger.requireDeployment(request.pipeline, request.deploymentId);
  if (deployment.status === 'IN_PLACE') {
    // The deploy may already be writing; the seal is being read. The state machine retries the plan on this error.
    throw new SealPendingError(
      `deployment "${request.deploymentId}" of pipeline "${request.pipeline}" is IN_PLACE: its restore points record every change but are not sealed yet; the rollback waits for the snapshot to seal them`,
    );
  }
  if (!ROLLBACKABLE.has(deployment.status)) {
    throw new RestorePointMissingError(
      `deployment "${request.deploymentId}" of pipeline "${request.pipeline}" is ${deployment.status}: its restore points are not sealed, so there is nothing safe to roll back to`,
    );
  }
  const manifest = await deployedManifest(deps, request.pipeline, request.deploymentId);
  // A resumed run takes the plan of the run it resumes, as it was (the manifest as deployed has not changed since).
  const resumed = request.resume ? await resumablePlan(deps, request.resume, request, input.executionName) : undefined;
  const plan = resumed ?? planRollback(manifest, { units: request.units, cascade: request.cascade ?? true });
  const points = await deps.ledger.listRestorePoints(request.pipeline, request.deploymentId);
  const have = new Set(points.map((p) => p.unitId));
  const missing = plan.scope.filter((u) => !have.has(u));
  if (missing.length > 0) {
    throw new RestorePointMissingError(`deployment "${request.deploymentId}" has no restore point for: ${missing.join(', ')}`);
  }
  const stages = resumed ? resumed.planned : plan.stages.map((units, index) => ({ index, units }));
  const trigger: RunTrigger = request.trigger ?? { kind: 'manual' };
  // A rollback carries the estimate its operator saw: that of the latest dry run of the same deployment and stages.
  // A resumed run has none (part of its work was done by the run it resumes); a dry run makes its own (describeChanges).
  const estimate = request.dryRun || request.resume ? undefined : await latestDryRunEstimate(deps, { runId: input.executionName, pipeline: request.pipeline, deploymentId: request.deploymentId, stages });
  const run = await deps.ledger.createRun({
    runId: input.executionName,
    pipeline: request.pipeline,
    deploymentId: request.deploymentId,
    status: request.dryRun ? 'DRY_RUN' : 'PLANNED',
    dryRun: request.dryRun,
    requested: plan.requested,
    scope: plan.scope,
    stages,
    reasons: undo ? { ...plan.reasons, ...undo.reasons } : plan.reasons,
    requestedBy: request.requestedBy,
    reason: request.reason,
    startedAt: deps.now().toISOString(),
    trigger,
    ...(request.resume ? { resumedFrom: request.resume } : {}),
    ...(estimate ? { estimate } : {}),
    deploymentStatusBefore: deployment.status,
  });
  await deps.ledger.indexRun(run);
  if (
    run.dryRun !== request.dryRun ||
    run.deploymentId !== request.deploymentId ||
    run.scope.join(',') !== plan.scope.join(',') ||
    run.resumedFrom !== request.resume
  ) {
    throw new InputError(`run id "${input.executionName}" is already used by another request: start the execution with a new name`);
  }
  deps.log.info('rollback planned', { runId: run.runId, stages: run.stages.map((s) => s.units), dryRun: run.dryRun, resumedFrom: run.resumedFrom });
  const policy = policyState(manifest);
  if (!run.dryRun) {
    const runbook = await writeRunbook(deps, manifest, run, points);
    await announce(deps, rollbackStarted({ ...run, urgent: request.urgent }, policyFacts(policy), runbook));
  }
  return {
    runId: run.runId,
    pipeline: run.pipeline,
    deploymentId: run.deploymentId,
    dryRun: run.dryRun,
    requested: run.requested,
    scope: run.scope,
    stages: run.stages,
    urgent: request.urgent,
    deploymentStatus: deployment.status,
    policy,
    replay: replayState(manifest),
  };
}

/**
 * The run's runbook (core/report/runbook.ts) in the state bucket, `runbooks/<pipeline>/<run>.md`: its s3:// URL for the
 * start notification, or undefined when it could not be written (a runbook never stops a rollback).
 */
async function writeRunbook(deps: WorkflowDeps, manifest: Manifest, run: Run, points: RestorePoint[]): Promise<string | undefined> {
  return auditSafely(deps.log, `runbook of run ${run.runId}`, async () => {
    const samples = await deps.ledger.listThroughputSamples(run.pipeline);
    const text = renderRunbook({
      manifest,
      plan: { pipeline: run.pipeline, requested: run.requested, scope: run.scope, stages: run.stages.map((s) => s.units), reasons: run.reasons },
      manifestPath: '<manifest>',
      deploymentId: run.deploymentId,
      restorePoints: points,
      throughput: throughputFrom(samples),
      lockTtlSeconds: LOCK_TTL_SECONDS,
      runId: run.runId,
      madeAt: deps.now().toISOString(),
    });
    return stateStore(deps).putText(stateKeys.runbook(run.pipeline, run.runId), text, 'text/markdown; charset=utf-8');
  });
}

/** Run statuses a run can be resumed from: it stopped, and did not finish the rollback (a cancelled run too). */
const RESUMABLE = new Set(['FAILED', 'REFUSED', 'REJECTED', 'CANCELLED']);

/**
 * The plan of the run `previousRunId`, for a run that resumes it: refused (InputError, exit 2) if that run is not of this
 * pipeline and deployment, is a dry run, or SUCCEEDED; refused (LockHeldError, exit 3) while it is still under way
 * (planned, running, or holding the pipeline's lock).
 */
async function resumablePlan(
  deps: WorkflowDeps,
  previousRunId: string,
  request: { pipeline: string; deploymentId: string },
  runId: string,
): Promise<{ requested: string[]; scope: string[]; stages: string[][]; reasons: Record<string, string>; planned: PlannedStage[] }> {
  const previous = await deps.ledger.getRun(previousRunId);
  const what = `cannot resume run "${previousRunId}"`;
  if (!previous) throw new InputError(`${what}: there is no such run in the ledger`);
  if (previousRunId === runId) throw new InputError(`${what}: a run cannot resume itself; start the resumed run with a new name`);
  if (previous.pipeline !== request.pipeline || previous.deploymentId !== request.deploymentId) {
    throw new InputError(
      `${what}: it rolled back ${previous.pipeline}/${previous.deploymentId}, not ${request.pipeline}/${request.deploymentId}`,
    );
  }
  if (previous.dryRun) throw new InputError(`${what}: it was a dry run; it restored nothing`);
  if (previous.status === 'SUCCEEDED') throw new InputError(`${what}: it SUCCEEDED; there is nothing left to resume`);
  const lock = await deps.ledger.getLock(request.pipeline);
  // An expired lock is free (acquireLock takes it over), even before DynamoDB's TTL deletes the item.
  const holdsLock = lock?.holder === previousRunId && lock.expiresAt > Math.floor(deps.now().getTime() / 1000);
  if (!RESUMABLE.has(previous.status) || holdsLock) {
    throw new LockHeldError(`${what}: it is still under way (${previous.status}${holdsLock ? ', holding the pipeline lock' : ''}); wait for it to end`);
  }
  return {
    requested: previous.requested,
    scope: previous.scope,
    stages: previous.stages.map((st) => st.units),
    reasons: previous.reasons,
    planned: previous.stages,
  };
}

async function unitTypes(deps: WorkflowDeps, run: Run): Promise<Record<string, string>> {
  const manifest = await deployedManifest(deps, run.pipeline, run.deploymentId);
  return Object.fromEntries(manifest.units.map((u) => [u.id, u.type]));
}

async function writeReport(deps: WorkflowDeps, run: Run, steps: Step[]): Promise<RunReport> {
  const report = buildReport(run, steps, await unitTypes(deps, run));
  const key = stateKeys.report(run.pipeline, run.runId);
  await stateStore(deps).putJson(key, report);
  await deps.ledger.updateRun(run.runId, { reportKey: key });
  // The audit copy (JSON and Markdown): the audit bucket when configured, else beside the JSON in the state bucket.
  await auditSafely(deps.log, `report of run ${run.runId}`, () => writeAuditReport(deps.s3, auditBucketOf(deps) ?? deps.stateBucket, report));
  return report;
}

/** Dry run: what each unit's restore would write, stage by stage. Writes nothing but the report. */
export async function describeChanges(deps: WorkflowDeps, ids: RunIds): Promise<RunReport> {
  const run = await deps.ledger.requireRun(ids.runId);
  const manifest = await deployedManifest(deps, run.pipeline, run.deploymentId);
  // A derived deployment: each unit's changes come after what it was resolved to, for confirmation (a time: from the
  // services' history; an undo: what the run recorded before it wrote, in the run's plan reasons).
  const deployment = await deps.ledger.requireDeployment(run.pipeline, run.deploymentId);
  const resolved = await resolutionOf(deps, deployment, run.runId);
  if (deployment.origin?.kind === 'undo') for (const [unitId, reason] of Object.entries(run.reasons)) resolved.set(unitId, [reason]);
  const steps: Step[] = [];
  for (const stage of run.stages) {
    const diffs = await Promise.all(
      stage.units.map(async (unitId) => {
        const unit = unitOf(manifest, unitId);
        const point = (await deps.ledger.getRestorePoint(run.pipeline, run.deploymentId, unitId))!;
        const diff = await adapterFor(unit).diff(unit, point, adapterContext(deps, manifest, { deploymentId: run.deploymentId, runId: run.runId, unitId }));
        const freeze = describeFreeze(unit);
        return { runId: run.runId, stage: stage.index, unitId, type: unit.type, status: 'RESTORED', changes: diff.changes, writes: diff.writes, notes: [...(freeze ? [freeze] : []), ...(resolved.get(unitId) ?? []), ...diff.notes] } satisfies Step;
      }),
    );
    steps.push(...diffs);
  }
  const estimate = await estimateDryRun(deps, run, steps);
  const endedAt = deps.now().toISOString();
  await deps.ledger.updateRun(run.runId, { endedAt, estimate });
  return writeReport(deps, { ...run, endedAt, estimate }, steps);
}

/** Takes the pipeline's lock and marks the run and deployment as rolling back. */
export async function acquireLock(deps: WorkflowDeps, ids: RunIds): Promise<{ holder: string; expiresAt: number }> {
  const lock = await deps.ledger.acquireLock(ids.pipeline, ids.runId, ids.deploymentId, LOCK_TTL_SECONDS);
  await deps.ledger.updateRun(ids.runId, { status: 'RUNNING' });
  await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, 'ROLLING_BACK');
  deps.log.info('lock acquired', { pipeline: ids.pipeline, runId: ids.runId });
  return { holder: lock.holder, expiresAt: lock.expiresAt };
}

export interface RestoredUnit {
  unitId: string;
  stage: number;
  /** Writes of every call of this run so far. */
  writes: number;
  /** False while the adapter's restore is under way: the state machine waits `waitSeconds` and calls again. */
  done: boolean;
  waitSeconds: number;
  /** Most polls the state machine may make for this unit before it fails with `UnitTimedOut`. */
  maxPolls: number;
  /** What is being waited for (only while not done). */
  status?: string;
  /**
   * Shards the Distributed Map "Restore shards" restores after the stage's units (an s3-prefix unit above its
   * threshold); the unit's step stays "in progress" until `recordShardRestores` closes it.
   */
  shards?: { unitId: string; shard: number }[];
}

/** Notes that describe a restore still under way; replaced on every call, dropped once it is done. */
export const IN_PROGRESS = 'restore in progress: ';

/**
 * Restores one unit and records what it did. Safe to retry: the adapter writes only what still differs, and
 * the step accumulates the writes of every attempt of this run. An adapter that answers "pending" (an RDS restore
 * and swap) is called again by the state machine after a Wait state; until it is done its step is recorded FAILED
 * with an "in progress" note, so a run that stops there never reports the unit as restored.
 */
export async function restoreUnit(deps: WorkflowDeps, ids: RunIds & { stage: number; unitId: string; polls?: number }): Promise<RestoredUnit> {
  const skipped = await skipVerifiedUnit(deps, ids);
  if (skipped) return skipped;
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const unit = unitOf(manifest, ids.unitId);
  const point = await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, ids.unitId);
  if (!point) throw new RestorePointMissingError(`unit "${ids.unitId}" has no restore point in deployment "${ids.deploymentId}"`);
  const adapter = adapterFor(unit);
  const started = Date.now();
  const startedAt = deps.now().toISOString();
  // What the restore is about to replace is recorded first (core/workflow/undo.ts): no undo record, no write.
  const outcome = await recordUndoPoint(deps, manifest, ids, point)
    .then(() => adapter.restore(unit, point, adapterContext(deps, manifest, ids)))
    .catch(async (error: unknown) => {
      await recordRestoreError(deps, ids, unit.type, startedAt, error);
      throw error;
    });
  const maxPolls = outcome.pending?.maxPolls ?? adapter.maxPolls ?? DEFAULT_MAX_POLLS;
  const previous = await deps.ledger.getStep(ids.runId, ids.stage, ids.unitId);
  const changes = addChanges(addChanges({}, previous?.changes ?? {}), outcome.changes);
  const writes = (previous?.writes ?? 0) + outcome.writes;
  const polls = ids.polls ?? 0;
  const status = outcome.pending ? `${unit.type} unit "${unit.id}": ${outcome.pending.status} (poll ${polls} of ${maxPolls})` : undefined;
  const notes = [...new Set([...(previous?.notes ?? []), ...outcome.notes])].filter((n) => !n.startsWith(IN_PROGRESS) && !n.startsWith(RESTORE_FAILED));
  if (outcome.pending) notes.push(`${IN_PROGRESS}${outcome.pending.status}`);
  const sharded = (outcome.shards?.length ?? 0) > 0;
  if (sharded) notes.push(`${IN_PROGRESS}${outcome.shards!.length} shard(s) to restore`);
  await deps.ledger.putStep({
    runId: ids.runId,
    stage: ids.stage,
    unitId: ids.unitId,
    type: unit.type,
    status: outcome.pending || sharded ? 'FAILED' : 'RESTORED',
    changes,
    writes,
    notes,
    keptAt: outcome.keptAt ?? previous?.keptAt,
    startedAt: previous?.startedAt ?? startedAt,
    restoredAt: deps.now().toISOString(),
  });
  if (outcome.pending) {
    deps.log.info('unit restore pending', { runId: ids.runId, unitId: ids.unitId, stage: ids.stage, polls, status: outcome.pending.status, writes: outcome.writes });
    return { unitId: ids.unitId, stage: ids.stage, writes, done: false, waitSeconds: Math.max(1, Math.round(outcome.pending.waitSeconds)), maxPolls, status };
  }
  deps.log.info('unit restored', { runId: ids.runId, unitId: ids.unitId, stage: ids.stage, writes: outcome.writes, ms: Date.now() - started });
  if (sharded) {
    deps.log.info('unit restore goes shard by shard', { runId: ids.runId, unitId: ids.unitId, stage: ids.stage, shards: outcome.shards!.length });
    return { unitId: ids.unitId, stage: ids.stage, writes, done: true, waitSeconds: 0, maxPolls, shards: outcome.shards!.map((shard) => ({ unitId: ids.unitId, shard })) };
  }
  return { unitId: ids.unitId, stage: ids.stage, writes, done: true, waitSeconds: 0, maxPolls };
}

/** Notes that say why a unit's restore stopped; replaced on every call, dropped once a call succeeds. */
export const RESTORE_FAILED = 'restore failed: ';

/**
 * The adapter's restore threw: its step is recorded FAILED with the error's message (a compensating action's handler
 * names what went wrong), keeping what earlier calls of this run wrote, so the report names the unit and why. Best
 * effort: a ledger that cannot be written does not hide the original error.
 */
async function recordRestoreError(deps: WorkflowDeps, ids: RunIds & { stage: number; unitId: string }, type: string, startedAt: string, error: unknown): Promise<void> {
  try {
    const previous = await deps.ledger.getStep(ids.runId, ids.stage, ids.unitId);
    const message = `${RESTORE_FAILED}${(error as { name?: string }).name ?? 'Error'}: ${(error as { message?: string }).message ?? String(error)}`;
    await deps.ledger.putStep({
      runId: ids.runId,
      stage: ids.stage,
      unitId: ids.unitId,
      type,
      status: 'FAILED',
      changes: previous?.changes ?? {},
      writes: previous?.writes ?? 0,
      notes: [...(previous?.notes ?? []).filter((n) => !n.startsWith(RESTORE_FAILED) && !n.startsWith(IN_PROGRESS)), message],
      keptAt: previous?.keptAt,
      startedAt: previous?.startedAt ?? startedAt,
      restoredAt: deps.now().toISOString(),
    });
  } catch (recordError) {
    deps.log.warn('could not record the failed restore', { runId: ids.runId, unitId: ids.unitId, error: String(recordError) });
  }
}

/**
 * Resume: "verified ones stay verified". A unit the resumed run (`Run.resumedFrom`) already VERIFIED is not restored
 * again: its step is copied from that run's step (VERIFIED, 0 writes, a "skipped" note, `skippedFrom`) and the adapter is
 * not called. verifyStage still checks it with the rest of its stage — a stage's gate must hold now, not only then —
 * so a unit that drifted since fails the gate (VERIFY_FAILED), and a further resume restores it. Returns undefined
 * when the unit is to be restored as usual.
 */
async function skipVerifiedUnit(deps: WorkflowDeps, ids: RunIds & { stage: number; unitId: string }): Promise<RestoredUnit | undefined> {
  const run = await deps.ledger.getRun(ids.runId);
  if (!run?.resumedFrom) return undefined;
  const before = await deps.ledger.getStep(run.resumedFrom, ids.stage, ids.unitId);
  if (before?.status !== 'VERIFIED') return undefined;
  const at = deps.now().toISOString();
  await deps.ledger.putStep({
    runId: ids.runId,
    stage: ids.stage,
    unitId: ids.unitId,
    type: before.type,
    status: 'VERIFIED',
    changes: {},
    writes: 0,
    notes: [`verified by run ${run.resumedFrom}; skipped`],
    checks: before.checks,
    startedAt: at,
    restoredAt: at,
    verifiedAt: before.verifiedAt,
    skippedFrom: run.resumedFrom,
  });
  deps.log.info('unit skipped: verified by the resumed run', { runId: ids.runId, unitId: ids.unitId, stage: ids.stage, resumedFrom: run.resumedFrom });
  return { unitId: ids.unitId, stage: ids.stage, writes: 0, done: true, waitSeconds: 0, maxPolls: DEFAULT_MAX_POLLS };
}

/**
 * The validation gate closing a stage: every unit must equal its restore point — in a resumed run, the units skipped as
 * verified by the resumed run too (re-verified, never re-restored: see skipVerifiedUnit). Records each unit's checks;
 * throws VerificationFailedError (naming units and checks) if any fails, so the next stage never starts.
 */
export async function verifyStage(deps: WorkflowDeps, ids: RunIds & { stage: PlannedStage }): Promise<{ stage: number; verified: string[] }> {
  // Units under a write freeze: what slipped in since their restore is named and restored by a second pass first.
  await checkFrozenStage(deps, ids);
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  const failures: string[] = [];
  for (const unitId of ids.stage.units) {
    const unit = unitOf(manifest, unitId);
    const point = (await deps.ledger.getRestorePoint(ids.pipeline, ids.deploymentId, unitId))!;
    const checks = await adapterFor(unit).verify(unit, point, adapterContext(deps, manifest, { ...ids, unitId }));
    const ok = checks.every((c) => c.ok);
    const step = await deps.ledger.getStep(ids.runId, ids.stage.index, unitId);
    await deps.ledger.putStep({
      runId: ids.runId,
      stage: ids.stage.index,
      unitId,
      type: unit.type,
      changes: step?.changes ?? {},
      writes: step?.writes ?? 0,
      notes: step?.notes ?? [],
      keptAt: step?.keptAt,
      startedAt: step?.startedAt,
      restoredAt: step?.restoredAt,
      skippedFrom: step?.skippedFrom,
      status: ok ? 'VERIFIED' : 'VERIFY_FAILED',
      checks,
      verifiedAt: deps.now().toISOString(),
    });
    if (!ok) failures.push(`${unitId}: ${checks.filter((c) => !c.ok).map((c) => `${c.name} expected ${c.expected}, got ${c.actual}${c.detail ? ` (${c.detail})` : ''}`).join('; ')}`);
  }
  if (failures.length > 0) {
    throw new VerificationFailedError(`stage ${ids.stage.index + 1} did not verify; later stages were not started:\n  ${failures.join('\n  ')}`);
  }
  deps.log.info('stage verified', { runId: ids.runId, stage: ids.stage.index, units: ids.stage.units });
  if (deps.notifier) await announce(deps, stageCompleted(ids, ids.stage, (await deps.ledger.getRun(ids.runId))?.stages.length));
  return { stage: ids.stage.index, verified: ids.stage.units };
}

/** Every stage verified: the run SUCCEEDED, the deployment is ROLLED_BACK, and the report is written. */
export async function finishRun(deps: WorkflowDeps, ids: RunIds): Promise<RunReport> {
  const endedAt = deps.now().toISOString();
  await deps.ledger.updateRun(ids.runId, { status: 'SUCCEEDED', endedAt });
  await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, 'ROLLED_BACK');
  const run = await deps.ledger.requireRun(ids.runId);
  const steps = await deps.ledger.listSteps(ids.runId);
  await recordThroughput(deps, run, steps);
  const report = await writeReport(deps, run, steps);
  deps.log.info('rollback succeeded', { runId: ids.runId, writes: report.totals.writes, recoverySeconds: report.recoverySeconds });
  await announce(deps, rollbackSucceeded(report, await deps.ledger.listPausedTriggers(ids.runId)));
  return report;
}

export async function releaseLock(deps: WorkflowDeps, ids: { runId: string; pipeline: string }): Promise<{ released: boolean }> {
  const released = await deps.ledger.releaseLock(ids.pipeline, ids.runId);
  deps.log.info('lock released', { pipeline: ids.pipeline, runId: ids.runId, released });
  return { released };
}

/**
 * "Check for cancel", before each stage (after the previous stage's gate): a cancel request recorded for the run
 * (core/workflow/cancel-request.ts) stops it here, with RunCancelledError, which the state machine's failure path
 * turns into a CANCELLED run (triggers resumed, lock released, report written). Touches nothing.
 */
export async function checkCancelBeforeStage(deps: WorkflowDeps, ids: { runId: string; stage: number }): Promise<{ cancelled: false }> {
  const done = ids.stage === 0 ? 'nothing restored' : ids.stage === 1 ? 'stage 1 restored and verified' : `stages 1-${ids.stage} restored and verified`;
  return checkCancel(deps, { runId: ids.runId, at: `before stage ${ids.stage + 1} (${done})` });
}

/** The error name a cancelled run ends with (RunCancelledError's): the failure path records such a run CANCELLED. */
export const RUN_CANCELLED = 'RunCancelled';

/**
 * A run stopped. Refused (the lock was held): the run is REFUSED and the deployment untouched. Cancelled (RunCancelled:
 * a cancel request found at a safe point, or a stopped execution's cleanup): the run is CANCELLED, and the deployment
 * gets back the status it had if the run restored nothing, else ROLLBACK_FAILED with the cancel as its error (the data
 * may be part-way; `--resume` finishes it). Otherwise the run FAILED, the deployment is ROLLBACK_FAILED, and the report
 * flags which stages were restored.
 */
export async function recordRollbackFailure(
  deps: WorkflowDeps,
  input: RunIds & { error?: CaughtError; rejected?: boolean; deploymentStatus?: string },
): Promise<RunReport> {
  // Not approved (rejected, or no decision in time): REJECTED, and the deployment goes back to the status it had.
  const rejected = input.rejected === true;
  const error = rejected ? rejectionError(input.error, await deps.ledger.getApproval(input.runId)) : summarizeCaught(input.error);
  if (rejected) await closeApproval(deps, input.runId, error);
  const refused = error.name === 'LockHeldError';
  const cancelled = !rejected && error.name === RUN_CANCELLED;
  // A write freeze the failure path could not lift is named with the run's own error, which it never replaces.
  const frozen = await freezesInPlace(deps, input).catch(() => []);
  if (frozen.length > 0) error.message = `${error.message}\nwrite freeze still in place (rerun the lift, or remove it by hand): ${frozen.join('; ')}`;
  const endedAt = deps.now().toISOString();
  await deps.ledger.updateRun(input.runId, { status: refused ? 'REFUSED' : rejected ? 'REJECTED' : cancelled ? 'CANCELLED' : 'FAILED', endedAt, error });
  // The replay failed after every stage verified: the data is rolled back, only the pipeline's own rerun is not.
  const replayFailed = error.name === 'ReplayFailedError';
  if (replayFailed) await deps.ledger.setDeploymentStatus(input.pipeline, input.deploymentId, 'ROLLED_BACK');
  else if (rejected && input.deploymentStatus) await deps.ledger.setDeploymentStatus(input.pipeline, input.deploymentId, input.deploymentStatus as DeploymentStatus);
  else if (cancelled) await recordCancelledDeployment(deps, input, error);
  else if (!refused && !rejected) await deps.ledger.setDeploymentStatus(input.pipeline, input.deploymentId, 'ROLLBACK_FAILED', error);
  const run = await deps.ledger.requireRun(input.runId);
  const report = await writeReport(deps, run, await deps.ledger.listSteps(input.runId));
  deps.log.warn(refused ? 'rollback refused' : rejected ? 'rollback not approved' : cancelled ? 'rollback cancelled' : 'rollback failed', { runId: input.runId, error, partial: report.partial });
  await announce(deps, rollbackFailed(report, await deps.ledger.listPausedTriggers(input.runId)));
  return report;
}

/**
 * The deployment of a cancelled run: untouched by it (no step recorded), it gets back the status it had when the run
 * was planned; otherwise ROLLBACK_FAILED, carrying the cancel, so nobody mistakes part-restored data for either state
 * (and the release schedule keeps its restore points).
 */
async function recordCancelledDeployment(deps: WorkflowDeps, ids: RunIds & { deploymentStatus?: string }, error: { name: string; message: string }): Promise<void> {
  const steps = await deps.ledger.listSteps(ids.runId);
  const run = await deps.ledger.getRun(ids.runId);
  const before = run?.deploymentStatusBefore ?? (ids.deploymentStatus as DeploymentStatus | undefined);
  const verified = new Set(steps.filter((st) => st.status === 'VERIFIED').map((st) => st.unitId));
  if (steps.length === 0 && before) await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, before);
  // Cancelled after every stage verified (waiting for the replay's approval): the data is rolled back.
  else if (run && run.scope.length > 0 && run.scope.every((u) => verified.has(u))) await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, 'ROLLED_BACK');
  else await deps.ledger.setDeploymentStatus(ids.pipeline, ids.deploymentId, 'ROLLBACK_FAILED', error);
}
