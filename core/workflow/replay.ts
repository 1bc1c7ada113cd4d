import { z } from 'zod';
import { InputError } from '../errors.ts';
import type { ReplayRecord } from '../ledger/ledger.ts';
import { jsonSchema, renderReplayInput, type Json, type Replay } from '../manifest/replay.ts';
import type { Manifest, Unit } from '../manifest/schema.ts';
import { deployedManifest, type CaughtError, type WorkflowDeps } from './deps.ts';

/**
 * Replay after restore. Every stage has passed its gate; "Prepare replay" renders the manifest's input template with
 * the restored scope, "Replay pipeline" (`states:startExecution.sync:2`) runs the pipeline's own ETL state machine and
 * waits for it, and "Record replay" keeps how it ended on the run. A replay that fails or times out fails the run with
 * ReplayFailedError; the data stays restored and verified (the report says so, and is not partial).
 */

interface RunIds {
  runId: string;
  pipeline: string;
  deploymentId: string;
}

/** What the Choice states read (`$.replay`). */
export interface ReplayState {
  configured: boolean;
  approval: boolean;
  timeoutSeconds: number;
}

export function replayState(manifest: Manifest): ReplayState {
  const r = manifest.replay;
  return { configured: r !== undefined, approval: r?.approval ?? false, timeoutSeconds: (r?.timeoutMinutes ?? 60) * 60 };
}

/** The most Step Functions takes as an execution input (256 KiB, UTF-8). */
const MAX_INPUT_BYTES = 256 * 1024;

/** "Prepare replay"'s output: the parameters of "Replay pipeline". */
export const preparedReplaySchema = z.strictObject({
  stateMachineArn: z.string().min(1),
  /** The execution name: the run's, so a retried start finds the execution it started. */
  name: z.string().regex(/^[A-Za-z0-9_-]{1,80}$/),
  input: z.record(z.string(), jsonSchema).refine((i) => Buffer.byteLength(JSON.stringify(i), 'utf8') <= MAX_INPUT_BYTES, 'the rendered replay input is larger than 256 KiB'),
  timeoutSeconds: z.number().int().min(1),
});
export type PreparedReplay = z.infer<typeof preparedReplaySchema>;

/** A unit's partition scope, as the replay input's `{{partitions}}` names it; undefined for a unit that has none. */
function partitionScope(unit: Unit): Json | undefined {
  if (unit.type === 'postgres-table' || unit.type === 'mysql-table') {
    if (unit.partition === undefined && unit.where === undefined) return undefined;
    return { ...(unit.partition !== undefined ? { partition: unit.partition } : {}), ...(unit.where !== undefined ? { where: unit.where } : {}) };
  }
  if (unit.type === 'glue-table' && unit.partitions !== undefined) return { partitions: unit.partitions };
  return undefined;
}

/** The replay's execution name: the run id, cut to Step Functions' 80 characters with `-replay` kept. */
export function replayExecutionName(runId: string): string {
  return `${runId.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 73)}-replay`;
}

/** The ARN an execution of `stateMachineArn` named `name` has. */
export function executionArnOf(stateMachineArn: string, name: string): string {
  return `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;
}

/** Renders the input and says what "Replay pipeline" starts; the run records the replay as RUNNING. */
export function prepareReplayInput(replay: Replay, scope: { runId: string; pipeline: string; deploymentId: string; units: string[] }, manifest: Manifest): PreparedReplay {
  const byId = new Map(manifest.units.map((u) => [u.id, u]));
  const partitions: Record<string, Json> = {};
  for (const id of scope.units) {
    const unit = byId.get(id);
    const p = unit ? partitionScope(unit) : undefined;
    if (p !== undefined) partitions[id] = p;
  }
  const input = renderReplayInput(replay.input, { ...scope, partitions });
  const parsed = preparedReplaySchema.safeParse({ stateMachineArn: replay.stateMachineArn, name: replayExecutionName(scope.runId), input, timeoutSeconds: replay.timeoutMinutes * 60 });
  if (!parsed.success) throw new InputError(`replay of ${scope.pipeline}: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'input'}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** "Prepare replay". */
export async function prepareReplay(deps: WorkflowDeps, ids: RunIds): Promise<PreparedReplay> {
  const run = await deps.ledger.requireRun(ids.runId);
  const manifest = await deployedManifest(deps, ids.pipeline, ids.deploymentId);
  if (!manifest.replay) throw new InputError(`pipeline "${ids.pipeline}" has no replay in the manifest of deployment "${ids.deploymentId}"`);
  const prepared = prepareReplayInput(manifest.replay, { runId: run.runId, pipeline: run.pipeline, deploymentId: run.deploymentId, units: run.stages.flatMap((s) => s.units) }, manifest);
  const replay: ReplayRecord = { stateMachineArn: prepared.stateMachineArn, executionArn: executionArnOf(prepared.stateMachineArn, prepared.name), status: 'RUNNING', startDate: deps.now().toISOString() };
  await deps.ledger.updateRun(ids.runId, { replay });
  deps.log.info('replay prepared', { runId: ids.runId, stateMachineArn: prepared.stateMachineArn, name: prepared.name });
  return prepared;
}

/** A date as Step Functions hands it over (epoch milliseconds or seconds in JSON, or text), as ISO-8601 UTC. */
const sfnDate = z.union([z.number(), z.string()]).transform((v) => new Date(typeof v === 'number' ? (v > 1e11 ? v : v * 1000) : v).toISOString());

/** The part of a `.sync:2` output (DescribeExecution's answer) the run keeps. */
export const syncExecutionSchema = z.looseObject({
  ExecutionArn: z.string().min(1),
  Status: z.string().min(1),
  StartDate: sfnDate.optional(),
  StopDate: sfnDate.optional(),
  Error: z.string().optional(),
  Cause: z.string().optional(),
});

/**
 * "Record replay" (with `result`) and "Record replay failure" (with `error`, the Catch of "Replay pipeline"). A failure
 * returns the error the run then fails with, `{Error: 'ReplayFailedError', Cause}`, for the failure path's `$.error`.
 */
export async function recordReplay(
  deps: WorkflowDeps,
  input: RunIds & { result?: unknown; error?: CaughtError },
): Promise<{ executionArn?: string; status: string } | { Error: 'ReplayFailedError'; Cause: string }> {
  const run = await deps.ledger.requireRun(input.runId);
  const before = run.replay;
  if (input.result !== undefined) {
    const parsed = syncExecutionSchema.safeParse(input.result);
    if (!parsed.success) throw new InputError(`the replay's result does not read as an execution: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const e = parsed.data;
    const replay: ReplayRecord = {
      stateMachineArn: before?.stateMachineArn ?? e.ExecutionArn.replace(/:execution:([^:]+):[^:]+$/, ':stateMachine:$1'),
      executionArn: e.ExecutionArn,
      status: e.Status,
      ...(e.StartDate ?? before?.startDate ? { startDate: e.StartDate ?? before?.startDate } : {}),
      stopDate: e.StopDate ?? deps.now().toISOString(),
    };
    await deps.ledger.updateRun(input.runId, { replay });
    deps.log.info('replay ended', { runId: input.runId, executionArn: e.ExecutionArn, status: e.Status });
    return { executionArn: e.ExecutionArn, status: e.Status };
  }
  // Step Functions' Cause of a failed `.sync` task is the execution's description as JSON; a timeout's is text.
  const caught = input.error ?? {};
  let described: z.infer<typeof syncExecutionSchema> | undefined;
  try {
    const parsed = syncExecutionSchema.safeParse(JSON.parse(caught.Cause ?? ''));
    if (parsed.success) described = parsed.data;
  } catch {
    /* a text cause */
  }
  const timedOut = caught.Error === 'States.Timeout' || caught.Error === 'States.HeartbeatTimeout';
  // No replay prepared yet: the failure is that of "Request replay approval" (rejected, or no decision in time).
  if (!before) {
    const manifest = await deployedManifest(deps, input.pipeline, input.deploymentId);
    const status = 'NOT_APPROVED';
    const why = timedOut ? 'no approval decision in time' : `${caught.Error ?? 'Error'}${caught.Cause ? `: ${caught.Cause}` : ''}`;
    await deps.ledger.updateRun(input.runId, {
      replay: { stateMachineArn: manifest.replay?.stateMachineArn ?? '', status, stopDate: deps.now().toISOString(), error: { name: caught.Error ?? 'Error', message: caught.Cause ?? '' } },
    });
    deps.log.warn('replay not approved', { runId: input.runId, error: caught.Error });
    return { Error: 'ReplayFailedError', Cause: `data restored and verified; replay not approved (${why}): no execution started` };
  }
  const status = described?.Status ?? (timedOut ? 'TIMED_OUT' : 'FAILED');
  const why = described?.Error ? `${described.Error}${described.Cause ? `: ${described.Cause}` : ''}` : timedOut ? `no result within the replay's timeout (${caught.Error})` : `${caught.Error ?? 'Error'}${caught.Cause ? `: ${caught.Cause}` : ''}`;
  const executionArn = described?.ExecutionArn ?? before.executionArn;
  const replay: ReplayRecord = {
    stateMachineArn: before.stateMachineArn,
    ...(executionArn ? { executionArn } : {}),
    status,
    ...(described?.StartDate ?? before.startDate ? { startDate: described?.StartDate ?? before.startDate } : {}),
    stopDate: described?.StopDate ?? deps.now().toISOString(),
    error: { name: described?.Error ?? caught.Error ?? 'Error', message: described?.Cause ?? caught.Cause ?? '' },
  };
  await deps.ledger.updateRun(input.runId, { replay });
  const cause = `data restored and verified; replay failed: execution ${executionArn ?? '(not started)'} ${status}: ${why}`;
  deps.log.warn('replay failed', { runId: input.runId, executionArn, status });
  return { Error: 'ReplayFailedError', Cause: cause };
}
