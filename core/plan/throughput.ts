import { z } from 'zod';

/**
 * How fast a pipeline's units restore, learnt from its earlier successful runs.
 *
 * After each successful rollback the workflow records one measurement per run (ThroughputSample: per unit, the seconds
 * its restore and its verification took and the objects, bytes and rows it wrote; and the run's overhead between and
 * after its stages). It is written under a key made of the run's start time and id, so recording the same run again
 * writes the same item: idempotent without a read-modify-write. Rates are derived here, when estimating, from the most
 * recent runs, so an unusual run ages out instead of staying folded into a running average.
 */

const seconds = z.number().nonnegative().finite();
const amount = z.number().int().nonnegative();

export const unitSampleSchema = z.object({
  unitId: z.string(),
  unitType: z.string(),
  /** From the unit's first restore call to its last (restoredAt − startedAt). */
  restoreSeconds: seconds,
  /** Its share of the stage's gate: from the previous unit's verification (or the stage's last restore) to its own. */
  verifySeconds: seconds,
  objects: amount,
  bytes: amount,
  rows: amount,
});

export const throughputSampleSchema = z.object({
  pipeline: z.string(),
  runId: z.string(),
  runStartedAt: z.string(),
  recordedAt: z.string(),
  stages: z.number().int().positive(),
  /** Recovery time (first stage start to run end) minus the stages' own durations: transitions between stages, finish. */
  overheadSeconds: seconds,
  units: z.array(unitSampleSchema),
});

export type UnitSample = z.infer<typeof unitSampleSchema>;
export type ThroughputSample = z.infer<typeof throughputSampleSchema>;

/** How fast units of one type restore. */
export const typeThroughputSchema = z.object({
  /** Seconds a unit's restore takes before it writes anything (listing, planning, connecting, a Lambda call). */
  fixedSeconds: seconds,
  objectsPerSecond: z.number().positive().finite(),
  bytesPerSecond: z.number().positive().finite(),
  rowsPerSecond: z.number().positive().finite(),
  /** Seconds the stage's gate spends on one unit of this type. */
  verifySeconds: seconds,
  /** Units measured it was learnt from; 0: the defaults. */
  samples: amount,
});
export type TypeThroughput = z.infer<typeof typeThroughputSchema>;

export interface Throughput {
  byType: Record<string, TypeThroughput>;
  /** Seconds between and after stages (state transitions, finishing the run), per stage. */
  overheadSecondsPerStage: number;
  /** Runs the rates were learnt from, newest first; empty: defaults only. */
  runIds: string[];
}

/**
 * Defaults for a pipeline without history, for AWS (documented in README, "Estimates"):
 *   s3-prefix       1.5 s per unit, 50 objects/s (CopyObject and DeleteObjects at 16 requests in flight), 100 MiB/s of
 *                   server-side copy, 1.5 s per unit to verify (a listing and a few heads)
 *   postgres-table  2 s per unit (connect, compare), 10,000 rows/s written, 2 s per unit to verify (count and checksum)
 *   mysql-table     the same as postgres-table
 *   rds-instance    40 min per unit (restore from snapshot, wait until available, two renames), 30 s to verify
 *   rds-cluster     the same as rds-instance
 *   any other type  5 s per unit, 5 s to verify
 *   between stages  1 s per stage (Step Functions transitions and Lambda calls around the stage)
 */
const TABLE: TypeThroughput = { fixedSeconds: 2, objectsPerSecond: 50, bytesPerSecond: 100 * 1024 ** 2, rowsPerSecond: 10_000, verifySeconds: 2, samples: 0 };
const RDS: TypeThroughput = { fixedSeconds: 2400, objectsPerSecond: 50, bytesPerSecond: 100 * 1024 ** 2, rowsPerSecond: 10_000, verifySeconds: 30, samples: 0 };
export const DEFAULT_THROUGHPUT: Readonly<Record<string, TypeThroughput>> = {
  's3-prefix': { fixedSeconds: 1.5, objectsPerSecond: 50, bytesPerSecond: 100 * 1024 ** 2, rowsPerSecond: 10_000, verifySeconds: 1.5, samples: 0 },
  'postgres-table': TABLE,
  'mysql-table': TABLE,
  'rds-instance': RDS,
  'rds-cluster': RDS,
};
export const DEFAULT_OTHER_TYPE: TypeThroughput = { fixedSeconds: 5, objectsPerSecond: 50, bytesPerSecond: 100 * 1024 ** 2, rowsPerSecond: 10_000, verifySeconds: 5, samples: 0 };
export const DEFAULT_OVERHEAD_SECONDS_PER_STAGE = 1;

/** How many recent runs an estimate learns from. */
export const HISTORY_RUNS = 10;

/** Below this, a measured duration is noise: rates are not derived from it. */
const MIN_MEASURABLE_SECONDS = 0.001;

export function defaultThroughputOf(type: string): TypeThroughput {
  return DEFAULT_THROUGHPUT[type] ?? DEFAULT_OTHER_TYPE;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/**
 * Rates of one unit type from its measurements. Units that wrote nothing measure the fixed cost directly; without
 * them, the fixed cost is taken as the default, but never more than half the fastest measured restore (a run faster
 * than the default's fixed cost says the fixed cost is small here). What is left of each restore after the fixed
 * cost is the time spent on its main work: objects for units that wrote objects, else rows. Bytes keep their rate
 * (the default, a server-side copy), as one run cannot tell bytes from objects apart.
 */
export function typeThroughputFrom(type: string, units: readonly UnitSample[]): TypeThroughput {
  const base = defaultThroughputOf(type);
  if (units.length === 0) return base;
  const idle = units.filter((u) => u.objects + u.bytes + u.rows === 0);
  const busy = units.filter((u) => u.objects + u.bytes + u.rows > 0);
  const fixedSeconds = idle.length > 0 ? mean(idle.map((u) => u.restoreSeconds)) : Math.min(base.fixedSeconds, Math.min(...busy.map((u) => u.restoreSeconds)) / 2);
  const result: TypeThroughput = { ...base, fixedSeconds, verifySeconds: mean(units.map((u) => u.verifySeconds)), samples: units.length };
  const objects = sum(busy.map((u) => u.objects));
  const rows = sum(busy.map((u) => u.rows));
  const variable = sum(busy.map((u) => Math.max(0, u.restoreSeconds - fixedSeconds - u.bytes / base.bytesPerSecond)));
  const seconds = Math.max(MIN_MEASURABLE_SECONDS, variable);
  if (objects > 0) result.objectsPerSecond = objects / seconds;
  else if (rows > 0) result.rowsPerSecond = rows / seconds;
  return result;
}

/** The throughput of a pipeline from its most recent measurements (newest first); defaults where there are none. */
export function throughputFrom(samples: readonly ThroughputSample[], runs = HISTORY_RUNS): Throughput {
  const recent = [...samples].sort((a, b) => b.runStartedAt.localeCompare(a.runStartedAt)).slice(0, runs);
  const byTypeUnits = new Map<string, UnitSample[]>();
  for (const s of recent) for (const u of s.units) byTypeUnits.set(u.unitType, [...(byTypeUnits.get(u.unitType) ?? []), u]);
  const byType: Record<string, TypeThroughput> = {};
  for (const [type, units] of byTypeUnits) byType[type] = typeThroughputFrom(type, units);
  return {
    byType,
    overheadSecondsPerStage: recent.length > 0 ? mean(recent.map((s) => s.overheadSeconds / s.stages)) : DEFAULT_OVERHEAD_SECONDS_PER_STAGE,
    runIds: recent.map((s) => s.runId),
  };
}

/** A type's throughput: learnt when the pipeline has history for it, else the default. */
export function throughputOf(t: Throughput, type: string): TypeThroughput {
  return t.byType[type] ?? defaultThroughputOf(type);
}
