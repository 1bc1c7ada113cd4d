import type { S3Client } from '@aws-sdk/client-s3';
import type { RestorePoint } from '../adapters/types.ts';
import type { PlannedStage, Run, Step } from '../ledger/ledger.ts';
import { estimateRollback, type RunEstimate } from '../plan/estimate.ts';
import { pricesFor } from '../plan/prices.ts';
import { throughputFrom } from '../plan/throughput.ts';
import { measureRun } from '../report/measure-run.ts';
import type { WorkflowDeps } from './deps.ts';

/**
 * Where estimates meet the ledger: a dry run estimates the rollback from its diffs, the pipeline's measured
 * throughput and its region's prices; a rollback takes over the estimate of the latest dry run of the same
 * deployment and scope when it is planned; a successful rollback records how fast it went, for the next estimate.
 */

/** How many of a pipeline's most recent runs are searched for the dry run whose estimate a rollback takes over. */
const DRY_RUNS_SEARCHED = 20;

/** The region the run's S3 client talks to (what the requests are billed in); empty when it has none configured. */
async function regionOf(s3: S3Client): Promise<string> {
  try {
    return await s3.config.region();
  } catch {
    return '';
  }
}

/** A dry run's estimate of the rollback it describes, from the dry run's steps (what each unit's restore would write). */
export async function estimateDryRun(deps: WorkflowDeps, run: Run, steps: readonly Step[]): Promise<RunEstimate> {
  const samples = await deps.ledger.listThroughputSamples(run.pipeline);
  const byUnit = new Map(steps.map((s) => [`${s.stage}#${s.unitId}`, s]));
  return estimateRollback({
    stages: run.stages.map((st) => ({
      index: st.index,
      units: st.units.map((unitId) => {
        const step = byUnit.get(`${st.index}#${unitId}`);
        return { unitId, type: step?.type ?? 'unknown', changes: step?.changes ?? {} };
      }),
    })),
    throughput: throughputFrom(samples),
    prices: pricesFor(await regionOf(deps.s3)),
    madeAt: deps.now().toISOString(),
    dryRunId: run.runId,
  });
}

/**
 * The estimate of the latest dry run of this deployment with the same stages, if there is one and no rollback of the
 * deployment ran since: a rollback after the dry run changed what the dry run saw, so its counts no longer hold.
 */
export async function latestDryRunEstimate(deps: WorkflowDeps, planned: Pick<Run, 'runId' | 'pipeline' | 'deploymentId' | 'stages'>): Promise<RunEstimate | undefined> {
  const shape = JSON.stringify(planned.stages.map((s) => s.units));
  for (const entry of await deps.ledger.listRunIndex(planned.pipeline, DRY_RUNS_SEARCHED)) {
    if (entry.deploymentId !== planned.deploymentId || entry.runId === planned.runId) continue;
    if (!entry.dryRun) return undefined;
    const run = await deps.ledger.getRun(entry.runId);
    if (run?.estimate && JSON.stringify(run.stages.map((s) => s.units)) === shape) return run.estimate;
  }
  return undefined;
}

/**
 * Records how fast a successful run went (idempotent: the same run writes the same item). Best effort: a run that
 * restored and verified every stage is not failed because its measurement could not be written; that is logged.
 */
export async function recordThroughput(deps: WorkflowDeps, run: Run, steps: readonly Step[]): Promise<void> {
  const sample = measureRun(run, steps, deps.now().toISOString());
  if (!sample) return;
  try {
    await deps.ledger.putThroughputSample(sample);
  } catch (error) {
    deps.log.warn('throughput of the run not recorded; later estimates will not learn from it', { runId: run.runId, error: (error as Error).message });
  }
}

/**
 * What a drill is expected to take: it copies each unit's whole restore point into its scratch target (every captured
 * object or row, not only what a rollback would write), at the pipeline's measured throughput. RDS units are their
 * restore from the snapshot (the type's fixed time).
 */
export async function estimateDrill(
  deps: WorkflowDeps,
  drill: { pipeline: string; runId: string; stages: readonly PlannedStage[] },
  points: readonly RestorePoint[],
): Promise<RunEstimate> {
  const samples = await deps.ledger.listThroughputSamples(drill.pipeline);
  const byUnit = new Map(points.map((p) => [p.unitId, p]));
  return estimateRollback({
    stages: drill.stages.map((st) => ({
      index: st.index,
      units: st.units.map((unitId) => {
        const point = byUnit.get(unitId);
        return { unitId, type: point?.type ?? 'unknown', changes: point ? drillWork(point) : {} };
      }),
    })),
    throughput: throughputFrom(samples),
    prices: pricesFor(await regionOf(deps.s3)),
    madeAt: deps.now().toISOString(),
  });
}

function drillWork(point: RestorePoint): Record<string, number> {
  if (point.type === 's3-prefix') return { objectsCopied: point.count, bytesCopied: Number((point.details as { totalBytes?: unknown }).totalBytes ?? 0) || 0 };
  if (point.type === 'postgres-table' || point.type === 'mysql-table') return { rowsCopied: point.count };
  return {};
}
