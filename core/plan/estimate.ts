import { z } from 'zod';
import type { PricesFor } from './prices.ts';
import { addRequests, noRequests, REQUEST_KINDS, runRequests, S3_TIER1, S3_TIER2, stageRequests, unitRequests, workOf, type Counters, type Requests } from './requests.ts';
import { throughputOf, typeThroughputSchema, type Throughput } from './throughput.ts';

/**
 * What a rollback will cost and how long it will take, per unit, per stage and in total: the requests it makes (by
 * kind), what it moves (objects, bytes, rows), their price in USD, and the recovery time. Pure: from the stages with
 * each unit's counters (a dry run's diff), the pipeline's throughput (history or defaults) and a region's prices.
 *
 * Durations: units of a stage restore side by side, at most RESTORE_CONCURRENCY at once (the "Restore stage" Map of
 * rollback.asl.json), then the stage's gate verifies them one after the other; stages run one after the other, with
 * the measured overhead between them. Waits for approval or a maintenance window are not part of the recovery time.
 */

/** MaxConcurrency of the "Restore stage" Map in statemachines/rollback.asl.json. */
export const RESTORE_CONCURRENCY = 10;
/** Memory of the stack's Lambda functions (infra/constructs/handlers.ts), for GB-seconds. */
export const LAMBDA_MEMORY_GB = 0.5;

const usd = z.number().nonnegative().finite();
const count = z.number().nonnegative().finite();

export const costSchema = z.object({ s3: usd, lambda: usd, stepFunctions: usd, dynamodb: usd, total: usd });
export const requestsSchema = z.record(z.enum(REQUEST_KINDS), count);

const workFields = { requests: requestsSchema, objects: count, bytes: count, rows: count, costUsd: costSchema };

export const unitEstimateSchema = z.object({
  unitId: z.string(),
  type: z.string(),
  ...workFields,
  restoreSeconds: count,
  verifySeconds: count,
});

export const stageEstimateSchema = z.object({ index: z.number().int().nonnegative(), units: z.array(unitEstimateSchema), ...workFields, seconds: count });

export const runEstimateSchema = z.object({
  madeAt: z.string(),
  /** The dry run that made it (its counters are what a rollback would write). */
  dryRunId: z.string().optional(),
  region: z.object({ requested: z.string(), priced: z.string(), note: z.string().optional() }),
  prices: z.object({ asOf: z.string(), sources: z.record(z.string(), z.string()) }),
  basis: z.object({
    /** Earlier successful runs the durations were learnt from, newest first; empty: documented defaults. */
    runIds: z.array(z.string()),
    /** Unit types in the plan that no earlier run measured (their defaults were used). */
    defaultsFor: z.array(z.string()),
    text: z.string(),
    /** The throughput each unit type of the plan was estimated with, and the seconds between and after stages. */
    rates: z.record(z.string(), typeThroughputSchema),
    overheadSecondsPerStage: count,
  }),
  stages: z.array(stageEstimateSchema),
  /** The run's own work beyond its stages (planning, lock, report) and the time between and after stages. */
  overhead: z.object({ requests: requestsSchema, costUsd: costSchema, seconds: count }),
  totals: z.object({ ...workFields, seconds: count }),
});

export type Cost = z.infer<typeof costSchema>;
export type UnitEstimate = z.infer<typeof unitEstimateSchema>;
export type StageEstimate = z.infer<typeof stageEstimateSchema>;
export type RunEstimate = z.infer<typeof runEstimateSchema>;

/** One unit of a planned stage, with what restoring it would write. */
export interface PlannedUnitWork {
  unitId: string;
  type: string;
  changes: Counters;
}

export interface EstimateInput {
  stages: readonly { index: number; units: readonly PlannedUnitWork[] }[];
  throughput: Throughput;
  prices: PricesFor;
  madeAt: string;
  dryRunId?: string;
}

/** The price of some requests and Lambda seconds. */
export function costOf(requests: Requests, lambdaSeconds: number, prices: PricesFor['prices']): Cost {
  const s3 =
    (S3_TIER1.reduce((n, k) => n + requests[k], 0) / 1000) * prices.s3.tier1PerThousand + (S3_TIER2.reduce((n, k) => n + requests[k], 0) / 1000) * prices.s3.tier2PerThousand;
  const lambda = (requests['Lambda invocations'] / 1e6) * prices.lambda.perMillionRequests + Math.max(0, lambdaSeconds) * LAMBDA_MEMORY_GB * prices.lambda.perGbSecond;
  const stepFunctions = (requests['Step Functions transitions'] / 1000) * prices.stepFunctions.perThousandTransitions;
  const dynamodb = (requests['DynamoDB writes'] / 1e6) * prices.dynamodb.perMillionWriteUnits;
  return { s3, lambda, stepFunctions, dynamodb, total: s3 + lambda + stepFunctions + dynamodb };
}

export function addCost(a: Cost, b: Cost): Cost {
  return { s3: a.s3 + b.s3, lambda: a.lambda + b.lambda, stepFunctions: a.stepFunctions + b.stepFunctions, dynamodb: a.dynamodb + b.dynamodb, total: a.total + b.total };
}

export const noCost = (): Cost => ({ s3: 0, lambda: 0, stepFunctions: 0, dynamodb: 0, total: 0 });

/** Seconds until the last of `durations` is done when `slots` run at once, taken in order as slots free up. */
export function makespan(durations: readonly number[], slots = RESTORE_CONCURRENCY): number {
  const free = Array.from({ length: Math.max(1, Math.min(slots, durations.length)) }, () => 0);
  for (const d of durations) {
    const i = free.indexOf(Math.min(...free));
    free[i]! += d;
  }
  return durations.length === 0 ? 0 : Math.max(...free);
}

export function estimateUnit(unit: PlannedUnitWork, throughput: Throughput, prices: PricesFor['prices']): UnitEstimate {
  const work = workOf(unit.changes);
  const t = throughputOf(throughput, unit.type);
  const restoreSeconds = t.fixedSeconds + work.objects / t.objectsPerSecond + work.bytes / t.bytesPerSecond + work.rows / t.rowsPerSecond;
  const requests = unitRequests(unit.type, unit.changes);
  return { unitId: unit.unitId, type: unit.type, requests, ...work, costUsd: costOf(requests, restoreSeconds, prices), restoreSeconds, verifySeconds: t.verifySeconds };
}

export function estimateRollback(input: EstimateInput): RunEstimate {
  const prices = input.prices.prices;
  const stages: StageEstimate[] = input.stages.map((stage) => {
    const units = stage.units.map((u) => estimateUnit(u, input.throughput, prices));
    const verifySeconds = units.reduce((n, u) => n + u.verifySeconds, 0);
    const own = stageRequests();
    const requests = units.reduce((r, u) => addRequests(r, u.requests), addRequests(noRequests(), own));
    return {
      index: stage.index,
      units,
      requests,
      objects: units.reduce((n, u) => n + u.objects, 0),
      bytes: units.reduce((n, u) => n + u.bytes, 0),
      rows: units.reduce((n, u) => n + u.rows, 0),
      costUsd: units.reduce((c, u) => addCost(c, u.costUsd), costOf(own, verifySeconds, prices)),
      seconds: makespan(units.map((u) => u.restoreSeconds)) + verifySeconds,
    };
  });
  const overheadSeconds = input.throughput.overheadSecondsPerStage * stages.length;
  const overheadRequests = runRequests();
  const overhead = { requests: overheadRequests, costUsd: costOf(overheadRequests, overheadSeconds, prices), seconds: overheadSeconds };
  const types = [...new Set(input.stages.flatMap((s) => s.units.map((u) => u.type)))].sort();
  const defaultsFor = types.filter((t) => !input.throughput.byType[t]);
  const runs = input.throughput.runIds.length;
  const text =
    runs === 0
      ? 'defaults, no history'
      : `from ${runs} earlier run${runs === 1 ? '' : 's'}${defaultsFor.length > 0 ? `; defaults for ${defaultsFor.join(', ')} (no history)` : ''}`;
  return {
    madeAt: input.madeAt,
    ...(input.dryRunId ? { dryRunId: input.dryRunId } : {}),
    region: { requested: input.prices.requestedRegion, priced: input.prices.pricedRegion, ...(input.prices.note ? { note: input.prices.note } : {}) },
    prices: { asOf: input.prices.asOf, sources: { ...input.prices.sources } },
    basis: {
      runIds: [...input.throughput.runIds],
      defaultsFor,
      text,
      rates: Object.fromEntries(types.map((t) => [t, throughputOf(input.throughput, t)])),
      overheadSecondsPerStage: input.throughput.overheadSecondsPerStage,
    },
    stages,
    overhead,
    totals: {
      requests: stages.reduce((r, s) => addRequests(r, s.requests), addRequests(noRequests(), overheadRequests)),
      objects: stages.reduce((n, s) => n + s.objects, 0),
      bytes: stages.reduce((n, s) => n + s.bytes, 0),
      rows: stages.reduce((n, s) => n + s.rows, 0),
      costUsd: stages.reduce((c, s) => addCost(c, s.costUsd), overhead.costUsd),
      seconds: stages.reduce((n, s) => n + s.seconds, 0) + overheadSeconds,
    },
  };
}
