import type { GlueClient } from '@aws-sdk/client-glue';
import type { RDSClient } from '@aws-sdk/client-rds';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Unit } from '../manifest/schema.ts';
import type { MysqlConnector, PostgresConnector } from '../runtime/connections.ts';
import type { CustomInvoker } from './custom-contract.ts';

/** Minimal structured log sink; Powertools Logger satisfies it, so does a test spy. */
export interface Log {
  info(message: string, extra?: Record<string, unknown>): void;
  warn(message: string, extra?: Record<string, unknown>): void;
}

/** Everything an adapter may touch, passed in: no module-level singletons in core. */
export interface AdapterContext {
  pipeline: string;
  deploymentId: string;
  /** The rollback run; present for restore/diff/verify/release. Names quarantine objects. */
  runId?: string;
  s3: S3Client;
  /** RDS control plane (rds-instance and rds-cluster units). */
  rds: RDSClient;
  /** Glue Data Catalog (glue-table units). */
  glue: GlueClient;
  /** Bucket where restore-point manifests, reports and audit objects are written. */
  stateBucket: string;
  /** Opens connections named in the manifest's `connections`. */
  postgres: PostgresConnector;
  /** Opens MySQL/MariaDB connections named in the manifest's `connections`. */
  mysql: MysqlConnector;
  /** Days the restore point must stay restorable (the manifest's `retention.days`). */
  retentionDays: number;
  /** Calls a `custom` unit's handler (Lambda in AWS, an in-process module for `--local`); absent: custom units fail. */
  invokeCustom?: CustomInvoker;
  now(): Date;
  log: Log;
}

/**
 * What a unit's restore point holds. Always a count and a checksum, so that "the restore equals the
 * restore point" is something we can check, plus the adapter's own details (JSON-serialisable).
 */
export interface RestorePoint<D = Record<string, unknown>> {
  unitId: string;
  type: Unit['type'];
  capturedAt: string;
  /** Objects or rows in scope at capture. */
  count: number;
  /** Order-independent digest of the content in scope at capture. */
  checksum: string;
  details: D;
}

/** Named counters of writes a restore did (or, for a diff, would do): `objectsCopied`, `rowsDeleted`, ... */
export type Changes = Record<string, number>;

export interface Diff {
  /** What a restore would write, by kind. All zero means the unit already equals its restore point. */
  changes: Changes;
  /** Total writes a restore would make. */
  writes: number;
  /** Human-readable remarks for the plan ("no primary key: full reload"). */
  notes: string[];
}

/**
 * "Not done yet": the work was started (or is under way) and the adapter must be called again after `waitSeconds`.
 * Long waits belong to the state machine (a Wait state and a poll loop), never to a sleeping Lambda. An adapter that
 * can pend derives its progress from the service on every call (describe calls), not from memory, so calling it
 * again simply continues the work.
 */
export interface Pending {
  /** Seconds the state machine should wait before calling again. */
  waitSeconds: number;
  /** What is being waited for, as a sentence for people ("snapshot etlrb-… is creating (40%)"). */
  status: string;
  /**
   * The poll budget for this wait, when it depends on what is waited for (an archive retrieval: minutes to two days,
   * with the wait between polls sized to match). Absent: the adapter's `maxPolls`.
   */
  maxPolls?: number;
}

/** What `capture` answers when the restore point is not ready yet. */
export interface PendingCapture {
  pending: Pending;
}

/** What `install` answers: the unit is recording (the deploy may write); its seal comes with the next `capture`. */
export interface InPlace {
  /** What is in place, as a sentence for people ("triggers on public.orders log every change since …"). */
  status: string;
}

/** A capture's answer: the restore point, or "call me again". */
export type CaptureResult<D = Record<string, unknown>> = RestorePoint<D> | PendingCapture;

export function isPendingCapture<D>(result: CaptureResult<D>): result is PendingCapture {
  return (result as Partial<PendingCapture>).pending !== undefined;
}

export interface Outcome {
  changes: Changes;
  /** Total writes made: 0 on a rerun over a restored unit. */
  writes: number;
  notes: string[];
  /** Where the replaced (bad) data was kept, if anything was replaced: a quarantine table, "noncurrent versions". */
  keptAt?: string;
  /**
   * Set when the restore is under way but not finished: call `restore` again after `pending.waitSeconds`. The
   * changes and writes are those of this call only. Absent: the restore is complete.
   */
  pending?: Pending;
  /**
   * Set when the restore is handed to the state machine in parts (an s3-prefix unit with a sharded restore point above
   * its threshold): nothing was written yet; the Distributed Map "Restore shards" restores these shards, then the stage
   * is verified as usual.
   */
  shards?: number[];
}

export interface Check {
  name: string;
  ok: boolean;
  expected: string | number;
  actual: string | number;
  detail?: string;
}

/**
 * One adapter per unit type. `C` is what its capture answers: a restore point (the default: always done at once), or
 * `CaptureResult<D>` for an adapter whose capture may pend (RDS snapshots).
 */
export interface UnitAdapter<U extends Unit = Unit, D = Record<string, unknown>, C extends CaptureResult<D> = RestorePoint<D>> {
  readonly type: U['type'];
  /**
   * How many times the state machine may wait and call `capture` or `restore` again before it gives up on the unit
   * (`UnitTimedOut`). Only adapters that can answer "pending" need it. @default DEFAULT_MAX_POLLS
   */
  readonly maxPolls?: number;
  /**
   * Make the restore point. Idempotent: a second call for the same deployment returns the same point. May answer
   * `{ pending }` when the point is not ready yet (an RDS snapshot being created): call again after the wait.
   */
  capture(unit: U, ctx: AdapterContext): Promise<C>;
  /**
   * The first half of a capture that can be split: what must be in place before the deploy may write (copy-on-write:
   * the triggers that log every change from now on), without what can be done while it writes (the seal: count and
   * checksum of the state as installed, exact from any later moment because every change since is logged). Answers
   * `{ status }` when it stopped there; `capture` afterwards finishes the same point. Undefined when this unit's
   * capture cannot be split (a copy is the restore point): call `capture`. Idempotent, as capture is.
   */
  install?(unit: U, ctx: AdapterContext): Promise<InPlace | undefined>;
  /** What a restore would change, without changing anything (dry run). */
  diff(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<Diff>;
  /** Put the unit back as the point describes. Idempotent; keeps what it replaces. May answer `pending` (call again). */
  restore(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<Outcome>;
  /** Does the live state equal the restore point? */
  verify(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<Check[]>;
  /** Retention ended: drop what only the restore point needed (shadow copies, manifests). */
  release(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<void>;
  /** Resolve the unit's state at `at` (from the service's own history) into a restore point the ordinary restore consumes. Throws OutsideRestorableWindowError (naming the resource and its window) when `at` is outside it. */
  asOf?(unit: U, at: Date, ctx: AdapterContext): Promise<{ point: RestorePoint<D>; shows: string[] }>;
  /**
   * What run `ctx.runId` is about to replace, recorded for `undo` (as the point of `ctx.deploymentId`, `undo-<run>`)
   * when the adapter has a cheaper record than its capture: an RDS restore keeps the replaced instance under a name
   * known before it writes, so the record names it instead of taking a snapshot; a copy-on-write table restore writes
   * only at the keys its undo log names, so the record keeps the rows at those keys. `restoring` is the point the run
   * restores from. Without it, `capture` records.
   */
  undoRecord?(unit: U, ctx: AdapterContext, restoring?: RestorePoint<D>): Promise<C>;
}

/** Poll budget of an adapter that does not set `maxPolls`. */
export const DEFAULT_MAX_POLLS = 120;
