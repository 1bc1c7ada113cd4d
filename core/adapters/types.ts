import type { S3Client } from '@aws-sdk/client-s3';
import type { Unit } from '../manifest/schema.ts';
import type { MysqlConnector, PostgresConnector } from '../runtime/connections.ts';

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
  /** Bucket where restore-point manifests, reports and audit objects are written. */
  stateBucket: string;
  /** Opens connections named in the manifest's `connections`. */
  postgres: PostgresConnector;
  /** Opens MySQL/MariaDB connections named in the manifest's `connections`. */
  mysql: MysqlConnector;
  /** Days the restore point must stay restorable (the manifest's `retention.days`). */
  retentionDays: number;
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

export interface Outcome {
  changes: Changes;
  /** Total writes made: 0 on a rerun over a restored unit. */
  writes: number;
  notes: string[];
  /** Where the replaced (bad) data was kept, if anything was replaced: a quarantine table, "noncurrent versions". */
  keptAt?: string;
}

export interface Check {
  name: string;
  ok: boolean;
  expected: string | number;
  actual: string | number;
  detail?: string;
}

export interface UnitAdapter<U extends Unit = Unit, D = Record<string, unknown>> {
  readonly type: U['type'];
  /** Make the restore point. Idempotent: a second call for the same deployment returns the same point. */
  capture(unit: U, ctx: AdapterContext): Promise<RestorePoint<D>>;
  /** What a restore would change, without changing anything (dry run). */
  diff(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<Diff>;
  /** Put the unit back as the point describes. Idempotent; keeps what it replaces. */
  restore(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<Outcome>;
  /** Does the live state equal the restore point? */
  verify(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<Check[]>;
  /** Retention ended: drop what only the restore point needed (shadow copies, manifests). */
  release(unit: U, point: RestorePoint<D>, ctx: AdapterContext): Promise<void>;
}
