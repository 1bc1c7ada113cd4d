import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StateMachine } from 'aws-local-stepfunctions';
import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { handler as acquireLock } from '../lambdas/acquire-lock.ts';
import { handler as beginSnapshot } from '../lambdas/begin-snapshot.ts';
import { handler as captureUnit } from '../lambdas/capture-unit.ts';
import { handler as checkWindow } from '../lambdas/check-window.ts';
import { handler as checkCancel } from '../lambdas/check-cancel.ts';
import { handler as pauseTriggers } from '../lambdas/pause-triggers.ts';
import { handler as requestApproval } from '../lambdas/request-approval.ts';
import { handler as resumeTriggers } from '../lambdas/resume-triggers.ts';
import { deps as handlerDeps } from '../lambdas/task.ts';
import type { WorkflowDeps } from '../core/workflow/deps.ts';
import { cancelledError } from '../core/workflow/cancel-request.ts';
import { handler as describeChanges } from '../lambdas/describe-changes.ts';
import { handler as finishRun } from '../lambdas/finish-run.ts';
import { handler as planRollback } from '../lambdas/plan-rollback.ts';
import { handler as recordFailure } from '../lambdas/record-failure.ts';
import { handler as releaseLock } from '../lambdas/release-lock.ts';
import { handler as restoreShard } from '../lambdas/restore-shard.ts';
import { handler as restoreUnit } from '../lambdas/restore-unit.ts';
import { handler as markInPlace } from '../lambdas/mark-in-place.ts';
import { handler as sealSnapshot } from '../lambdas/seal-snapshot.ts';
import { handler as verifyStage } from '../lambdas/verify-stage.ts';
import { handler as listExpiredDeployments } from '../lambdas/list-expired-deployments.ts';
import { handler as releaseDeployment } from '../lambdas/release-deployment.ts';
import { handler as planDrill } from '../lambdas/plan-drill.ts';
import { handler as rehearseUnit } from '../lambdas/rehearse-unit.ts';
import { handler as verifyDrillStage } from '../lambdas/verify-drill-stage.ts';
import { handler as cleanupDrill } from '../lambdas/cleanup-drill.ts';
import { handler as finishDrill } from '../lambdas/finish-drill.ts';
import { handler as prepareReplay } from '../lambdas/prepare-replay.ts';
import { handler as recordReplay } from '../lambdas/record-replay.ts';
import { handler as freezeStage } from '../lambdas/freeze-stage.ts';
import { handler as liftFreezes } from '../lambdas/lift-freezes.ts';
import { DescribeExecutionCommand, SFNClient, StartExecutionCommand, StopExecutionCommand, type DescribeExecutionCommandOutput } from '@aws-sdk/client-sfn';

/**
 * Runs the state machine definitions that CDK deploys, unchanged, in this process: aws-local-stepfunctions
 * interprets the ASL, and each Task is served by the same handler code that runs in Lambda.
 */
/** `restore-shards` is the child of the rollback machine's Distributed Map (run by the runner once per batch). */
export type MachineName = 'snapshot' | 'rollback' | 'release' | 'restore-shards' | 'drill';

/** One event of a local execution (state entered, map iteration, retry, ...). */
export type EventLog = ReturnType<StateMachine['run']>['eventLogs'] extends AsyncGenerator<infer E> ? E : never;

/** A task handler; `withDeps` (taskHandler's) gives the same handler with some dependencies replaced (the clock). */
type LambdaHandler = ((event: unknown, context: Context) => Promise<unknown>) & { withDeps?: (patch: Partial<WorkflowDeps>) => (event: unknown, context: Context) => Promise<unknown> };

/** `${<Name>FunctionArn}` substitution → the handler CDK deploys behind it. */
export const HANDLERS: Record<string, LambdaHandler> = {
  BeginSnapshot: beginSnapshot,
  CaptureUnit: captureUnit,
  MarkInPlace: markInPlace,
  SealSnapshot: sealSnapshot,
  RecordFailure: recordFailure,
  PlanRollback: planRollback,
  DescribeChanges: describeChanges,
  AcquireLock: acquireLock,
  RestoreUnit: restoreUnit,
  RestoreShard: restoreShard,
  VerifyStage: verifyStage,
  FinishRun: finishRun,
  ReleaseLock: releaseLock,
  CheckWindow: checkWindow,
  CheckCancel: checkCancel,
  RequestApproval: requestApproval,
  PauseTriggers: pauseTriggers,
  ResumeTriggers: resumeTriggers,
  ListExpiredDeployments: listExpiredDeployments,
  ReleaseDeployment: releaseDeployment,
  PlanDrill: planDrill,
  RehearseUnit: rehearseUnit,
  VerifyDrillStage: verifyDrillStage,
  CleanupDrill: cleanupDrill,
  FinishDrill: finishDrill,
  PrepareReplay: prepareReplay,
  RecordReplay: recordReplay,
  FreezeStage: freezeStage,
  LiftFreezes: liftFreezes,
};

/** The Lambda service integration whose task waits for a callback with its task token (approval). */
export const WAIT_FOR_TASK_TOKEN = 'arn:aws:states:::lambda:invoke.waitForTaskToken';

/**
 * The Step Functions integration that starts another state machine's execution and waits for it to end (replay). There
 * is no Step Functions service behind aws-local-stepfunctions: the runner serves these tasks itself, against the Step
 * Functions API the SDK reaches (AWS_ENDPOINT_URL), see startExecutionSync.
 */
export const START_EXECUTION_SYNC = 'arn:aws:states:::states:startExecution.sync:2';

const here = dirname(fileURLToPath(import.meta.url));
export const STATE_MACHINE_DIR = resolve(here, '..', 'statemachines');

export function definitionPath(name: MachineName): string {
  return resolve(STATE_MACHINE_DIR, `${name}.asl.json`);
}

interface AslState {
  Type: string;
  Resource?: string;
  Parameters?: { FunctionName?: unknown };
  Seconds?: number;
  Timestamp?: string;
  SecondsPath?: string;
  TimestampPath?: string;
  /**
   * A Distributed Map's processor may name its definition file instead of listing its states (`DefinitionFile`, a
   * file of statemachines/): CDK composes the file in at synth; the local runner runs it once per batch.
   */
  ItemProcessor?: { States?: Record<string, AslState>; StartAt?: string; DefinitionFile?: string; ProcessorConfig?: { Mode?: string } };
  ItemsPath?: string;
  ItemSelector?: unknown;
  ItemReader?: unknown;
  ItemBatcher?: { MaxItemsPerBatch?: number; BatchInput?: Record<string, unknown> };
  MaxConcurrency?: number;
  Iterator?: { States: Record<string, AslState> };
  Branches?: { States: Record<string, AslState> }[];
}

/**
 * Every Task state (at any depth) with the substitution its function ARN names: the Resource itself, or, for a
 * `lambda:invoke.waitForTaskToken` task, its FunctionName (`callback: true`: the task ends when a callback answers).
 * A `states:startExecution.sync:2` task names no function: the runner serves it (top-level states only).
 */
export function taskStates(definition: { States: Record<string, AslState> }): { state: string; substitution: string; callback: boolean }[] {
  const found: { state: string; substitution: string; callback: boolean }[] = [];
  const walk = (states: Record<string, AslState>, nested: boolean) => {
    for (const [name, state] of Object.entries(states)) {
      if (state.Type === 'Task' && state.Resource === START_EXECUTION_SYNC) {
        // Served by the runner itself (startExecutionSync), not by a handler.
        if (nested) throw new Error(`Task state "${name}" (${START_EXECUTION_SYNC}) runs locally only at the top level of a definition`);
      } else if (state.Type === 'Task') {
        const callback = state.Resource === WAIT_FOR_TASK_TOKEN;
        const arn = callback ? state.Parameters?.FunctionName : state.Resource;
        const m = /^\$\{(\w+)FunctionArn\}$/.exec(typeof arn === 'string' ? arn : '');
        if (!m) throw new Error(`Task state "${name}" has Resource ${state.Resource}; expected \${<Name>FunctionArn} (or ${WAIT_FOR_TASK_TOKEN} with that FunctionName)`);
        found.push({ state: name, substitution: m[1]!, callback });
      }
      const inner = processorStates(state);
      if (inner) walk(inner, true);
      for (const b of state.Branches ?? []) walk(b.States, true);
    }
  };
  walk(definition.States, false);
  return found;
}

/** The states of a Map's processor: listed inline, or those of its `DefinitionFile`. */
function processorStates(state: AslState): Record<string, AslState> | undefined {
  const inner = state.ItemProcessor ?? state.Iterator;
  if (!inner) return undefined;
  const file = (inner as { DefinitionFile?: string }).DefinitionFile;
  if (file) return (JSON.parse(readFileSync(resolve(STATE_MACHINE_DIR, file), 'utf8')) as { States: Record<string, AslState> }).States;
  return inner.States;
}

function lambdaContext(functionName: string): Context {
  const deadline = Date.now() + 15 * 60 * 1000;
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: crypto.randomUUID(),
    logGroupName: `/local/${functionName}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => deadline - Date.now(),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

export type ExecutionOutcome =
  | { status: 'SUCCEEDED'; output: unknown }
  | { status: 'FAILED'; error: string; cause: string };

export interface RunOptions {
  /** The execution name; the rollback uses it as its run id. */
  name: string;
  /** Called for every execution event, for progress output. */
  onEvent?: (event: EventLog) => void;
  /** Replace a handler by substitution name (fault injection in tests). */
  handlers?: Partial<Record<string, LambdaHandler>>;
  /**
   * Milliseconds to wait in a Wait state instead of its Seconds/SecondsPath, by state name (applies inside Map too):
   * `{ 'Wait for capture': 0, 'Wait for restore': 0 }` runs the poll loops of RDS units without real waits.
   */
  waitTimeOverrides?: Record<string, number>;
  /**
   * Milliseconds a state's Retry waits before it runs the state again, by state name, instead of its IntervalSeconds
   * and BackoffRate: `{ 'Restore unit': 0 }` retries at once. Default: the definition's intervals, waited for real.
   */
  retryIntervalOverrides?: Record<string, number>;
  /**
   * The clock every handler reads (`deps.now`), injected through the handlers' `withDeps`. A clock that can
   * `advanceTo` makes the run time-travel: each Wait state takes no real time and moves the clock to its end
   * (a Wait for the next maintenance window jumps to its opening). Default: the system clock, real waits.
   */
  clock?: LocalClock;
  /** Answers `.waitForTaskToken` tasks (approval). Default: the decision recorded in the ledger (`approve`/`reject`). */
  callbacks?: CallbackDriver;
  /**
   * Dependencies every real handler gets instead of its own (through `withDeps`): other SDK clients, a ledger on
   * another table, database connectors. Tests put faults into them; the handlers do not know.
   */
  deps?: Partial<WorkflowDeps>;
  /**
   * Stops the execution at once when aborted, wherever it is (Step Functions' StopExecution): the outcome is FAILED
   * with error `ExecutionAborted`. Nothing of the definition's own failure path runs; the caller cleans up
   * (core/workflow/cancel.ts), as the EventBridge rule on ABORTED does in AWS.
   */
  signal?: AbortSignal;
}

export interface LocalClock {
  now(): Date;
  advanceTo?(at: Date): void;
}

/** A clock that starts at `start` and moves only when told to (or when a time-travelling run passes a Wait). */
export function travelClock(start: Date): Required<LocalClock> & { advanceBy(ms: number): void } {
  let t = start.getTime();
  return {
    now: () => new Date(t),
    advanceTo: (at) => {
      t = Math.max(t, at.getTime());
    },
    advanceBy: (ms) => {
      t += ms;
    },
  };
}

/**
 * Step Functions answers a `.waitForTaskToken` task when someone calls SendTaskSuccess/SendTaskFailure with its token.
 * aws-local-stepfunctions has no token mechanism: the runner hands the token in the context (`$$.Task.Token`), calls
 * the task's handler (which stores it), then asks the driver for the answer: an output, or a thrown error whose
 * `name` the state's Catch matches (`ApprovalRejectedError`, `States.Timeout`).
 */
export interface CallbackDriver {
  wait(request: { state: string; token: string; payload: Record<string, unknown>; clock: () => Date; signal: AbortSignal }): Promise<unknown>;
}

const POLL_MS = 200;
/** The longest approval timeout a manifest may set (7 days). */
const CALLBACK_CEILING_SECONDS = 7 * 24 * 60 * 60;

function namedError(name: string, message: string): Error {
  const error = new Error(message);
  error.name = name;
  return error;
}

/**
 * The local answer to an approval: the decision `etl-rollback approve|reject <run> --local` records in the ledger
 * (from this process or another), polled; past the approval's deadline on the run's clock, `States.Timeout`.
 */
export function ledgerApprovals(ledger: WorkflowDeps['ledger'] = handlerDeps.ledger): CallbackDriver {
  return {
    async wait({ payload, clock, signal }) {
      // The run's approval, or another approval of the same run (`<run>-replay`, the replay's).
      const runId = String(payload.approvalId ?? payload.runId);
      for (;;) {
        if (signal.aborted) return undefined; // the execution ended without us (nobody reads this result)
        // Waiting for approval is a safe point: a run cancelled meanwhile stops here (its failure path cleans up).
        const cancel = await ledger.getCancelRequest(String(payload.runId));
        if (cancel) throw cancelledError(cancel, 'while waiting for approval (nothing restored)');
        const approval = await ledger.getApproval(runId);
        if (approval?.status === 'APPROVED') return { approved: true, by: approval.decidedBy, reason: approval.reason, at: approval.decidedAt };
        if (approval?.status === 'REJECTED') throw namedError('ApprovalRejectedError', `rejected by ${approval.decidedBy}${approval.reason ? `: ${approval.reason}` : ''}`);
        if (approval?.status === 'TIMED_OUT' || (approval && clock().getTime() > Date.parse(approval.deadline))) {
          throw namedError('States.Timeout', `no approval decision by ${approval.deadline}`);
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    },
  };
}

/** Loads a definition, fills its substitutions with local ARNs, and serves every Task with its real handler. */
export function loadLocalMachine(
  name: MachineName,
  handlers: Record<string, LambdaHandler> = HANDLERS,
  callback?: { driver: CallbackDriver; token: string; clock: () => Date; signal: AbortSignal },
) {
  const file = definitionPath(name);
  const text = readFileSync(file, 'utf8');
  const raw = JSON.parse(text) as { States: Record<string, AslState> };
  const overrides: Record<string, (input: unknown) => Promise<unknown>> = {};
  for (const { state, substitution, callback: waits } of taskStates(raw)) {
    const h = handlers[substitution];
    if (!h) throw new Error(`no local handler for \${${substitution}FunctionArn} (Task state "${state}")`);
    if (!waits) {
      overrides[state] = (input) => h(input, lambdaContext(substitution));
      continue;
    }
    overrides[state] = async (input) => {
      if (!callback) throw new Error(`Task state "${state}" waits for a task token: run it with runLocal`);
      // The Lambda integration's input is {FunctionName, Payload}; the function sees the Payload.
      const payload = ((input as { Payload?: Record<string, unknown> }).Payload ?? {}) as Record<string, unknown>;
      await h(payload, lambdaContext(substitution));
      return callback.driver.wait({ state, token: callback.token, payload, clock: callback.clock, signal: callback.signal });
    };
  }
  const resolved = text.replace(/\$\{(\w+)FunctionArn\}/g, (_, n: string) => `arn:aws:lambda:us-east-1:000000000000:function:etl-rollback-${n}`);
  const unresolved = /\$\{[^}]+\}/.exec(resolved);
  if (unresolved) throw new Error(`${name}.asl.json has an unresolved substitution ${unresolved[0]}`);
  const definition = JSON.parse(resolved) as { States: Record<string, AslState & { TimeoutSeconds?: number; TimeoutSecondsPath?: string }> };
  // One known divergence: aws-local-stepfunctions resolves TimeoutSecondsPath against the task's effective input
  // (after Parameters: {FunctionName, Payload}), Step Functions against the state's input. A callback task's deadline
  // is enforced locally by the callback driver, on the run's clock; the library only gets a ceiling.
  for (const { state, callback: waits } of taskStates(raw)) {
    const st = definition.States[state];
    if (waits && st?.TimeoutSecondsPath) {
      delete st.TimeoutSecondsPath;
      st.TimeoutSeconds = CALLBACK_CEILING_SECONDS;
    }
  }
  // `.sync:2` tasks: served by the runner (startExecutionSync). Step Functions resolves TimeoutSecondsPath against the
  // state's input; so that the runner can enforce the same deadline, the timeout travels in the task's Parameters
  // (resolved against the state's input, as Parameters are), and the library only gets a ceiling.
  for (const [state, st] of Object.entries(definition.States)) {
    if (st.Type !== 'Task' || st.Resource !== START_EXECUTION_SYNC) continue;
    const parameters: Record<string, unknown> = { ...((st.Parameters as Record<string, unknown> | undefined) ?? {}) };
    if (st.TimeoutSecondsPath) parameters[`${LOCAL_TIMEOUT_KEY}.$`] = st.TimeoutSecondsPath;
    else if (st.TimeoutSeconds !== undefined) parameters[LOCAL_TIMEOUT_KEY] = st.TimeoutSeconds;
    st.Parameters = parameters as AslState['Parameters'];
    delete st.TimeoutSecondsPath;
    st.TimeoutSeconds = CALLBACK_CEILING_SECONDS;
    overrides[state] = (input) => startExecutionSync(state, input, callback?.signal);
  }
  replaceDistributedMaps(definition.States, overrides, handlers, callback);
  return { definition: definition as object, overrides, waitStates: waitStates(raw.States) };
}

/** The Parameters key that carries a `.sync:2` task's timeout to the runner (local definitions only). */
const LOCAL_TIMEOUT_KEY = 'LocalTimeoutSeconds';
/** How often the runner asks Step Functions whether a started execution has ended. */
const SYNC_POLL_MS = 250;

const syncTaskInput = z.object({
  StateMachineArn: z.string().min(1),
  Name: z.string().min(1).optional(),
  Input: z.unknown().optional(),
  [LOCAL_TIMEOUT_KEY]: z.number().int().min(1).optional(),
});

const epochMs = (d: Date | undefined) => (d ? d.getTime() : undefined);
const parseJson = (text: string | undefined): unknown => {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
};

/** DescribeExecution's answer as `.sync:2` hands it over: dates in epoch milliseconds, Input and Output as JSON. */
function syncOutput(d: DescribeExecutionCommandOutput): Record<string, unknown> {
  return {
    ExecutionArn: d.executionArn,
    StateMachineArn: d.stateMachineArn,
    Name: d.name,
    Status: d.status,
    StartDate: epochMs(d.startDate),
    ...(d.stopDate ? { StopDate: epochMs(d.stopDate) } : {}),
    Input: parseJson(d.input),
    InputDetails: { Included: true },
    ...(d.output !== undefined ? { Output: parseJson(d.output), OutputDetails: { Included: true } } : {}),
    ...(d.error !== undefined ? { Error: d.error } : {}),
    ...(d.cause !== undefined ? { Cause: d.cause } : {}),
  };
}

/**
 * `arn:aws:states:::states:startExecution.sync:2`, served as Step Functions serves it: StartExecution with the task's
 * StateMachineArn, Name and Input (an object is sent as its JSON), then DescribeExecution until the execution ends.
 * SUCCEEDED: the description is the task's output. FAILED, TIMED_OUT or ABORTED: `States.TaskFailed` whose Cause is
 * the description as JSON. Past the state's timeout: the execution is stopped and the task fails with `States.Timeout`.
 * API errors keep their name under `StepFunctions.` (`StepFunctions.ExecutionAlreadyExistsException`).
 */
export async function startExecutionSync(state: string, input: unknown, signal?: AbortSignal): Promise<unknown> {
  const parsed = syncTaskInput.safeParse(input);
  if (!parsed.success) throw namedError('States.Runtime', `Task state "${state}": ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const task = parsed.data;
  const timeoutSeconds = task[LOCAL_TIMEOUT_KEY] ?? CALLBACK_CEILING_SECONDS;
  const deadline = Date.now() + timeoutSeconds * 1000;
  const sfn = new SFNClient({});
  const api = async <T>(send: () => Promise<T>): Promise<T> => {
    try {
      return await send();
    } catch (error) {
      throw namedError(`StepFunctions.${(error as Error).name}`, (error as Error).message);
    }
  };
  const started = await api(() =>
    sfn.send(
      new StartExecutionCommand({
        stateMachineArn: task.StateMachineArn,
        ...(task.Name ? { name: task.Name } : {}),
        ...(task.Input !== undefined ? { input: typeof task.Input === 'string' ? task.Input : JSON.stringify(task.Input) } : {}),
      }),
    ),
  );
  const executionArn = started.executionArn!;
  for (;;) {
    const described = await api(() => sfn.send(new DescribeExecutionCommand({ executionArn })));
    if (described.status !== 'RUNNING' && described.status !== 'PENDING_REDRIVE') {
      const output = syncOutput(described);
      if (described.status === 'SUCCEEDED') return output;
      throw namedError('States.TaskFailed', JSON.stringify(output));
    }
    if (signal?.aborted || Date.now() >= deadline) {
      const notStopped = await stopExecution(sfn, executionArn, `stopped by the task "${state}" that started it`);
      if (signal?.aborted) return undefined; // the run ended without us (nobody reads this result)
      throw namedError(
        'States.Timeout',
        `Task state "${state}": execution ${executionArn} did not end within ${timeoutSeconds} s${notStopped ? `, and could not be stopped (${notStopped}): stop it by hand` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(SYNC_POLL_MS, Math.max(1, deadline - Date.now()))));
  }
}

/**
 * Stops an execution the task gave up on, trying up to three times (a busy endpoint may fail one call): left running,
 * it would go on writing after the run has moved on. Returns why it could not be stopped, or undefined once it is
 * stopped (or has ended by itself).
 */
async function stopExecution(sfn: SFNClient, executionArn: string, cause: string): Promise<string | undefined> {
  let last = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      await sfn.send(new StopExecutionCommand({ executionArn, error: 'States.Timeout', cause }));
      return undefined;
    } catch (error) {
      last = `${(error as Error).name}: ${(error as Error).message}`;
      const now = await sfn.send(new DescribeExecutionCommand({ executionArn })).catch(() => undefined);
      if (now && now.status !== 'RUNNING' && now.status !== 'PENDING_REDRIVE') return undefined;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
  return last;
}

/**
 * aws-local-stepfunctions ignores a Distributed Map's ItemReader, ItemBatcher and ResultWriter and would run its
 * processor inline, item by item. So each DISTRIBUTED Map is swapped for a Task of the same name (same ResultPath,
 * ResultSelector, Retry, Catch and Next) served by the runner: it takes the items at ItemsPath, cuts them in batches
 * (ItemBatcher.MaxItemsPerBatch, BatchInput resolved against the Map's input), and runs the child definition file
 * (`ItemProcessor.DefinitionFile`, the file AWS runs as the child) once per batch with `{BatchInput, Items}`, at most
 * MaxConcurrency at once. Its output is the array of child outputs, in item order, as the Map's. A failed child fails
 * the Map with the child's error. ItemReader, ItemSelector and inline processors are refused: not used by our files.
 */
function replaceDistributedMaps(
  states: Record<string, AslState>,
  overrides: Record<string, (input: unknown) => Promise<unknown>>,
  handlers: Record<string, LambdaHandler>,
  callback: Parameters<typeof loadLocalMachine>[2],
): void {
  for (const [name, state] of Object.entries(states)) {
    for (const b of state.Branches ?? []) replaceDistributedMaps(b.States, overrides, handlers, callback);
    const processor = state.ItemProcessor;
    if (state.Type !== 'Map' || !processor) continue;
    if (processor.ProcessorConfig?.Mode !== 'DISTRIBUTED') {
      if (processor.States) replaceDistributedMaps(processor.States, overrides, handlers, callback);
      continue;
    }
    const file = processor.DefinitionFile;
    if (!file || state.ItemReader !== undefined || state.ItemSelector !== undefined) {
      throw new Error(`Map state "${name}": a DISTRIBUTED map runs locally only with ItemProcessor.DefinitionFile, ItemsPath and ItemBatcher (no ItemReader, no ItemSelector)`);
    }
    const child = file.replace(/\.asl\.json$/, '') as MachineName;
    const perBatch = Math.max(1, state.ItemBatcher?.MaxItemsPerBatch ?? 1);
    const batchInput = state.ItemBatcher?.BatchInput;
    const limit = state.MaxConcurrency && state.MaxConcurrency > 0 ? state.MaxConcurrency : Number.MAX_SAFE_INTEGER;
    overrides[name] = async (input) => {
      const items = readPath(input, state.ItemsPath ?? '$');
      if (!Array.isArray(items)) throw namedError('States.Runtime', `Map state "${name}": ItemsPath ${state.ItemsPath} is not an array`);
      const resolvedBatchInput = batchInput
        ? Object.fromEntries(Object.entries(batchInput).map(([k, v]) => (k.endsWith('.$') ? [k.slice(0, -2), readPath(input, String(v))] : [k, v])))
        : undefined;
      const batches: unknown[] = [];
      for (let i = 0; i < items.length; i += perBatch) {
        const slice = items.slice(i, i + perBatch);
        batches.push(state.ItemBatcher ? { ...(resolvedBatchInput ? { BatchInput: resolvedBatchInput } : {}), Items: slice } : slice[0]);
      }
      const outputs: unknown[] = new Array(batches.length);
      let next = 0;
      const worker = async () => {
        while (next < batches.length) {
          const i = next++;
          const { definition, overrides: childOverrides } = loadLocalMachine(child, handlers, callback);
          const machine = new StateMachine(definition as never, { validationOptions: { checkPaths: true, checkArn: true } });
          outputs[i] = await machine.run(batches[i] as never, { overrides: { taskResourceLocalHandlers: childOverrides as never } }).result.catch((error: unknown) => {
            const inner = (error as { cause?: Error }).cause;
            throw inner ?? error;
          });
        }
      };
      await Promise.all(Array.from({ length: Math.min(limit, Math.max(1, batches.length)) }, worker));
      return outputs;
    };
    const task: Record<string, unknown> = {
      Type: 'Task',
      Comment: `local stand-in for the Distributed Map "${name}": runs ${file} once per batch`,
      Resource: 'arn:aws:lambda:us-east-1:000000000000:function:etl-rollback-LocalDistributedMap',
    };
    for (const k of ['InputPath', 'OutputPath', 'ResultPath', 'ResultSelector', 'Retry', 'Catch', 'Next', 'End']) {
      if (k in state) task[k] = (state as unknown as Record<string, unknown>)[k];
    }
    states[name] = task as unknown as AslState;
  }
}

/** Every Wait state, at any depth, by name. */
function waitStates(states: Record<string, AslState>, into: Record<string, AslState> = {}): Record<string, AslState> {
  for (const [name, state] of Object.entries(states)) {
    if (state.Type === 'Wait') into[name] = state;
    const inner = processorStates(state);
    if (inner) waitStates(inner, into);
    for (const b of state.Branches ?? []) waitStates(b.States, into);
  }
  return into;
}

/** `$.a.b` of a state's input: the only path shape our Wait states use. */
function readPath(input: unknown, path: string): unknown {
  let value = input;
  for (const key of path.replace(/^\$\.?/, '').split('.').filter(Boolean)) value = (value as Record<string, unknown> | undefined)?.[key];
  return value;
}

/** When a Wait state entered at `now` with `input` ends. */
function waitEnd(state: AslState, input: unknown, now: Date): Date | undefined {
  if (state.Seconds !== undefined) return new Date(now.getTime() + state.Seconds * 1000);
  if (state.Timestamp !== undefined) return new Date(state.Timestamp);
  if (state.SecondsPath) return new Date(now.getTime() + Number(readPath(input, state.SecondsPath)) * 1000);
  if (state.TimestampPath) return new Date(String(readPath(input, state.TimestampPath)));
  return undefined;
}

export async function runLocal(name: MachineName, input: unknown, options: RunOptions): Promise<ExecutionOutcome> {
  const clock = options.clock;
  const now = clock ? () => clock.now() : () => new Date();
  // The clock reaches every real handler through its dependencies; a test's replacement handler is used as given.
  const patch: Partial<WorkflowDeps> = { ...(options.deps ?? {}), ...(clock ? { now } : {}) };
  const wire = (h: LambdaHandler): LambdaHandler => (Object.keys(patch).length > 0 && h.withDeps ? h.withDeps(patch) : h);
  const handlers = Object.fromEntries(Object.entries({ ...HANDLERS, ...(options.handlers ?? {}) }).map(([k, h]) => [k, wire(h as LambdaHandler)])) as Record<string, LambdaHandler>;
  const ended = new AbortController();
  const token = `local-task-token-${options.name}-${crypto.randomUUID()}`;
  const { definition, overrides, waitStates: waits } = loadLocalMachine(name, handlers, {
    driver: options.callbacks ?? ledgerApprovals(),
    token,
    clock: now,
    signal: ended.signal,
  });
  // Time travel: Waits take 1 ms of real time (after their StateEntered event has moved the clock to their end; the
  // event reaches the pump below through promise callbacks, which run before any timer).
  const travel = clock?.advanceTo ? clock : undefined;
  const waitTimeOverrides = {
    ...(travel ? Object.fromEntries(Object.keys(waits).map((w) => [w, 1])) : {}),
    ...(options.waitTimeOverrides ?? {}),
  };
  const machine = new StateMachine(definition as never, { validationOptions: { checkPaths: true, checkArn: true } });
  const execution = machine.run(input as never, {
    overrides: {
      taskResourceLocalHandlers: overrides as never,
      ...(Object.keys(waitTimeOverrides).length > 0 ? { waitTimeOverrides } : {}),
      ...(options.retryIntervalOverrides ? { retryIntervalOverrides: options.retryIntervalOverrides } : {}),
    },
    context: {
      Execution: { Name: options.name, Id: `arn:aws:states:local:000000000000:execution:${name}:${options.name}`, Input: input, StartTime: now().toISOString() },
      // One token per execution: each .waitForTaskToken task (the approvals) runs at most once per run, and the local
      // driver answers it by its approval id in the ledger, not by its token.
      Task: { Token: token },
    } as never,
  });
  const stop = () => execution.abort();
  if (options.signal?.aborted) stop();
  options.signal?.addEventListener('abort', stop, { once: true });
  const pump = (async () => {
    if (!options.onEvent && !travel) return;
    for await (const event of execution.eventLogs) {
      if (travel && event.type === 'StateEntered') {
        const entered = (event as { state?: { name: string; input: unknown } }).state;
        const wait = entered ? waits[entered.name] : undefined;
        const end = wait && entered ? waitEnd(wait, entered.input, travel.now()) : undefined;
        if (end && !Number.isNaN(end.getTime())) travel.advanceTo!(end);
      }
      options.onEvent?.(event);
    }
  })();
  try {
    const output = await execution.result;
    await pump.catch(() => undefined);
    return { status: 'SUCCEEDED', output };
  } catch (error) {
    await pump.catch(() => undefined);
    if (options.signal?.aborted) return { status: 'FAILED', error: 'ExecutionAborted', cause: 'the execution was stopped at once' };
    const inner = (error as { cause?: { name?: string; message?: string } }).cause;
    return { status: 'FAILED', error: inner?.name ?? (error as Error).name, cause: inner?.message ?? (error as Error).message };
  } finally {
    options.signal?.removeEventListener('abort', stop);
    ended.abort();
  }
}
