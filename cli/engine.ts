import { userInfo } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Manifest } from '../core/manifest/schema.ts';
import type { RunReport } from '../core/report/report.ts';

/** Where executions run: in this process (local) or in AWS Step Functions (remote). Same inputs, same outputs. */
export interface Engine {
  snapshot(manifest: Manifest, args: SnapshotArgs): Promise<ExecutionResult>;
  /** A rollback; an undo (`args.undo`) names only the pipeline, not a manifest file. */
  rollback(manifest: Pick<Manifest, 'pipeline'>, args: RollbackArgs): Promise<ExecutionResult>;
  /** A rollback drill into scratch targets (statemachines/drill.asl.json). */
  drill(manifest: Manifest, args: SnapshotArgs): Promise<ExecutionResult>;
}

/** Where the engine finds the ledger, the state bucket and the deployed state machines. */
export interface EngineOptions {
  ledgerTable?: string;
  stateBucket?: string;
  snapshotArn?: string;
  rollbackArn?: string;
  drillArn?: string;
  json: boolean;
  /** The manifest file: `custom` units' `module` handlers are found relative to it (local runs). */
  manifestFile?: string;
}

export interface SnapshotArgs {
  deploymentId: string;
  requestedBy: string;
  reason: string;
  /** Execution name. */
  name: string;
  /**
   * Snapshots: return once every unit records (`in-place`, deployment IN_PLACE: the deploy may start; the execution
   * seals on) or only when sealed (the default).
   */
  until?: 'in-place' | 'sealed';
}

export interface RollbackArgs extends Omit<SnapshotArgs, 'deploymentId'> {
  /** The deployment whose restore points to go back to; exactly one of this, `toTime` and `undo`. */
  deploymentId?: string;
  /** Roll back to the state at this ISO-8601 UTC time (a derived deployment `at-…`); the manifest is sent with it. */
  toTime?: string;
  /** The run to undo (`etl-rollback undo <run>`): the machine rolls back to the derived deployment `undo-<run>`. */
  undo?: string;
  units?: string[];
  cascade: boolean;
  dryRun: boolean;
  /** Start outside the manifest's maintenance windows. */
  urgent?: boolean;
  /** The run id of a failed run to resume (its plan is taken over; `units` and `cascade` are then not sent). */
  resume?: string;
}

export type ExecutionResult =
  | { status: 'SUCCEEDED'; name: string; output: unknown }
  | { status: 'FAILED'; name: string; error: string; cause: string; report?: RunReport };

/**
 * Execution names for runs started by hand: `<kind>-<pipeline>-<deployment>-<UTC time>-<random>`, at most 80
 * characters of [A-Za-z0-9_-], so a person recognises the run in the console and two runs never share a name.
 * The rollback's run id is this name.
 */
export function defaultRunName(kind: string, pipeline: string, deploymentId: string, at: Date = new Date()): string {
  const stamp = `${at.toISOString().replace(/[-:.]/g, '')}-${randomBytes(2).toString('hex')}`;
  const clean = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '_');
  const head = `${kind}-${clean(pipeline)}-${clean(deploymentId)}`.slice(0, 80 - stamp.length - 1);
  return `${head}-${stamp}`;
}

/** The rollback machine's input, exactly as a console user would type it; the CLI's runs are `manual`. */
export function rollbackInput(manifest: Pick<Manifest, 'pipeline'>, args: RollbackArgs): Record<string, unknown> {
  return {
    pipeline: manifest.pipeline,
    ...(args.undo !== undefined ? { undo: args.undo } : args.toTime !== undefined ? { toTime: args.toTime, manifest } : { deploymentId: args.deploymentId }),
    ...(args.resume ? { resume: args.resume } : args.undo !== undefined ? {} : { ...(args.units ? { units: args.units } : {}), cascade: args.cascade }),
    dryRun: args.dryRun,
    reason: args.reason,
    requestedBy: args.requestedBy,
    ...(args.urgent ? { urgent: true } : {}),
    trigger: { kind: 'manual' },
  };
}

/**
 * Who runs the CLI, for the audit trail when `--requested-by` / `--by` is not given: `$USER`, `$LOGNAME`, then the
 * operating system's account name (containers and CI often set neither variable).
 */
export function currentUser(): string {
  const fromEnv = process.env.USER ?? process.env.LOGNAME;
  if (fromEnv?.trim()) return fromEnv.trim();
  try {
    return userInfo().username || 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The drill machine's input, as the drill schedule sends it too (with `deploymentId: "latest"`). */
export function drillInput(manifest: Manifest, args: SnapshotArgs): Record<string, unknown> {
  return { pipeline: manifest.pipeline, deploymentId: args.deploymentId, requestedBy: args.requestedBy, reason: args.reason, trigger: { kind: 'manual' } };
}
