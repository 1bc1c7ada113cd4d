import { InputError } from '../errors.ts';
import type { Ledger, ReleaseRecord, RunStatus, RunTrigger } from '../ledger/ledger.ts';
import { buildReport } from '../report/report.ts';

/**
 * What `etl-rollback status` and `history` show, read straight from the ledger (no state machine, no scan): the same code
 * locally and in AWS, given the ledger table.
 */
export interface InspectDeps {
  ledger: Ledger;
  now(): Date;
}

export interface RestorePointSummary {
  unitId: string;
  type: string;
  count: number;
  capturedAt: string;
}

export interface RunSummary {
  runId: string;
  deploymentId: string;
  status: RunStatus | 'UNKNOWN';
  dryRun: boolean;
  startedAt: string;
  endedAt?: string;
  requestedBy: string;
  reason: string;
  writes: number;
  partial: boolean;
  error?: { name: string; message: string };
  /** What started the run (manual, or the EventBridge source). */
  trigger?: RunTrigger;
  /** The failed run this one resumed. */
  resumedFrom?: string;
}

export interface PipelineStatus {
  pipeline: string;
  at: string;
  lock?: { holder: string; deploymentId: string; acquiredAt: string; expiresAt: string };
  latestDeployment?: {
    deploymentId: string;
    status: string;
    createdAt: string;
    updatedAt: string;
    requestedBy?: string;
    reason?: string;
    restorePoints: RestorePointSummary[];
    release?: ReleaseRecord;
  };
  lastRun?: RunSummary;
  lastRestorePointAt?: string;
  secondsSinceLastRestorePoint?: number;
}

export interface HistoryEntry {
  kind: 'deployment' | 'run';
  at: string;
  deploymentId: string;
  /** The run id, for runs. */
  runId?: string;
  who: string;
  why: string;
  /** Deployment status or run status (`SUCCEEDED`, `FAILED (partial)`, `DRY_RUN`, ...). */
  result: string;
  /** Writes the run made (or, for a dry run, would make). */
  writes?: number;
  dryRun?: boolean;
  endedAt?: string;
  /** For runs: what started it. */
  trigger?: RunTrigger;
  /** For runs: the failed run it resumed. */
  resumedFrom?: string;
}

async function runSummary(ledger: Ledger, runId: string): Promise<RunSummary | undefined> {
  const run = await ledger.getRun(runId);
  if (!run) return undefined;
  const report = buildReport(run, await ledger.listSteps(runId), {});
  return {
    runId,
    deploymentId: run.deploymentId,
    status: run.status,
    dryRun: run.dryRun,
    startedAt: run.startedAt,
    endedAt: run.endedAt,
    requestedBy: run.requestedBy,
    reason: run.reason,
    writes: report.totals.writes,
    partial: report.partial,
    ...(run.error ? { error: run.error } : {}),
    ...(run.trigger ? { trigger: run.trigger } : {}),
    ...(run.resumedFrom ? { resumedFrom: run.resumedFrom } : {}),
  };
}

function unknownPipeline(ledger: Ledger, pipeline: string): InputError {
  return new InputError(`pipeline "${pipeline}" has no deployments and no runs in ledger ${ledger.tableName}: check the name, or the table (--ledger-table / ETL_ROLLBACK_LEDGER_TABLE)`);
}

/** Lock holder, latest deployment and its restore points, last run, time since the last restore point. */
export async function pipelineStatus(deps: InspectDeps, pipeline: string): Promise<PipelineStatus> {
  const now = deps.now();
  const [deployments, runs, lock] = await Promise.all([deps.ledger.listDeployments(pipeline), deps.ledger.listRunIndex(pipeline, 1), deps.ledger.getLock(pipeline)]);
  if (deployments.length === 0 && runs.length === 0) throw unknownPipeline(deps.ledger, pipeline);
  const status: PipelineStatus = { pipeline, at: now.toISOString() };
  if (lock && lock.expiresAt * 1000 > now.getTime()) {
    status.lock = { holder: lock.holder, deploymentId: lock.deploymentId, acquiredAt: lock.acquiredAt, expiresAt: new Date(lock.expiresAt * 1000).toISOString() };
  }
  // Derived deployments (an undo's record, a time resolved) are not deploys: the latest deploy and the last restore point
  // taken before one are what an on-call engineer asks for.
  const deploys = deployments.filter((d) => d.origin === undefined);
  const latest = deploys[0];
  if (latest) {
    const points = await deps.ledger.listRestorePoints(pipeline, latest.deploymentId);
    const release = latest.status === 'RELEASED' ? await deps.ledger.getReleaseRecord(pipeline, latest.deploymentId) : undefined;
    status.latestDeployment = {
      deploymentId: latest.deploymentId,
      status: latest.status,
      createdAt: latest.createdAt,
      updatedAt: latest.updatedAt,
      requestedBy: latest.requestedBy,
      reason: latest.reason,
      restorePoints: points.map((p) => ({ unitId: p.unitId, type: p.type, count: p.count, capturedAt: p.capturedAt })).sort((a, b) => a.unitId.localeCompare(b.unitId)),
      ...(release ? { release } : {}),
    };
  }
  // The last restore point still usable: the newest deployment with sealed, unreleased restore points.
  const usable = deploys.find((d) => ['READY', 'ROLLING_BACK', 'ROLLED_BACK', 'ROLLBACK_FAILED'].includes(d.status));
  if (usable) {
    const points = usable === latest ? status.latestDeployment!.restorePoints : await deps.ledger.listRestorePoints(pipeline, usable.deploymentId);
    const captured = points.map((p) => p.capturedAt).sort();
    status.lastRestorePointAt = captured[captured.length - 1] ?? usable.createdAt;
    status.secondsSinceLastRestorePoint = Math.max(0, Math.round((now.getTime() - Date.parse(status.lastRestorePointAt)) / 1000));
  }
  if (runs[0]) status.lastRun = await runSummary(deps.ledger, runs[0].runId);
  return status;
}

/** Deployments and runs of a pipeline, newest first, at most `limit` entries. */
export async function pipelineHistory(deps: InspectDeps, pipeline: string, limit = 20): Promise<HistoryEntry[]> {
  const [deployments, runs] = await Promise.all([deps.ledger.listDeployments(pipeline), deps.ledger.listRunIndex(pipeline, limit)]);
  if (deployments.length === 0 && runs.length === 0) throw unknownPipeline(deps.ledger, pipeline);
  // Deploys only: a derived deployment (an undo's record) is bookkeeping of a run, which is listed itself.
  const entries: HistoryEntry[] = deployments.filter((d) => d.origin === undefined).map((d) => ({
    kind: 'deployment',
    at: d.createdAt,
    deploymentId: d.deploymentId,
    who: d.requestedBy ?? 'unknown',
    why: d.reason ?? '',
    result: d.status,
  }));
  for (const r of runs) {
    const s = await runSummary(deps.ledger, r.runId);
    entries.push({
      kind: 'run',
      at: r.startedAt,
      deploymentId: r.deploymentId,
      runId: r.runId,
      who: r.requestedBy,
      why: r.reason,
      result: s ? `${s.status}${s.partial ? ' (partial)' : ''}` : 'UNKNOWN',
      writes: s?.writes ?? 0,
      dryRun: r.dryRun,
      ...(s?.endedAt ? { endedAt: s.endedAt } : {}),
      ...(s?.trigger ? { trigger: s.trigger } : {}),
      ...(s?.resumedFrom ? { resumedFrom: s.resumedFrom } : {}),
    });
  }
  return entries.sort((a, b) => b.at.localeCompare(a.at) || (a.kind === b.kind ? 0 : a.kind === 'run' ? -1 : 1)).slice(0, limit);
}
