import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StateMachine } from 'aws-local-stepfunctions';
import type { Context } from 'aws-lambda';
import { handler as acquireLock } from '../lambdas/acquire-lock.ts';
import { handler as beginSnapshot } from '../lambdas/begin-snapshot.ts';
import { handler as captureUnit } from '../lambdas/capture-unit.ts';
import { handler as describeChanges } from '../lambdas/describe-changes.ts';
import { handler as finishRun } from '../lambdas/finish-run.ts';
import { handler as planRollback } from '../lambdas/plan-rollback.ts';
import { handler as recordFailure } from '../lambdas/record-failure.ts';
import { handler as releaseLock } from '../lambdas/release-lock.ts';
import { handler as restoreUnit } from '../lambdas/restore-unit.ts';
import { handler as sealSnapshot } from '../lambdas/seal-snapshot.ts';
import { handler as verifyStage } from '../lambdas/verify-stage.ts';

/**
 * Runs the state machine definitions that CDK deploys, unchanged, in this process: aws-local-stepfunctions
 * interprets the ASL, and each Task is served by the same handler code that runs in Lambda.
 */
export type MachineName = 'snapshot' | 'rollback';

/** One event of a local execution (state entered, map iteration, retry, ...). */
export type EventLog = ReturnType<StateMachine['run']>['eventLogs'] extends AsyncGenerator<infer E> ? E : never;

type LambdaHandler = (event: unknown, context: Context) => Promise<unknown>;

/** `${<Name>FunctionArn}` substitution → the handler CDK deploys behind it. */
export const HANDLERS: Record<string, LambdaHandler> = {
  BeginSnapshot: beginSnapshot,
  CaptureUnit: captureUnit,
  SealSnapshot: sealSnapshot,
  RecordFailure: recordFailure,
  PlanRollback: planRollback,
  DescribeChanges: describeChanges,
  AcquireLock: acquireLock,
  RestoreUnit: restoreUnit,
  VerifyStage: verifyStage,
  FinishRun: finishRun,
  ReleaseLock: releaseLock,
};

const here = dirname(fileURLToPath(import.meta.url));
export const STATE_MACHINE_DIR = resolve(here, '..', 'statemachines');

export function definitionPath(name: MachineName): string {
  return resolve(STATE_MACHINE_DIR, `${name}.asl.json`);
}

interface AslState {
  Type: string;
  Resource?: string;
  ItemProcessor?: { States: Record<string, AslState> };
  Iterator?: { States: Record<string, AslState> };
  Branches?: { States: Record<string, AslState> }[];
}

/** Every Task state (at any depth) with the substitution its Resource names. */
export function taskStates(definition: { States: Record<string, AslState> }): { state: string; substitution: string }[] {
  const found: { state: string; substitution: string }[] = [];
  const walk = (states: Record<string, AslState>) => {
    for (const [name, state] of Object.entries(states)) {
      if (state.Type === 'Task') {
        const m = /^\$\{(\w+)FunctionArn\}$/.exec(state.Resource ?? '');
        if (!m) throw new Error(`Task state "${name}" has Resource ${state.Resource}; expected \${<Name>FunctionArn}`);
        found.push({ state: name, substitution: m[1]! });
      }
      const inner = state.ItemProcessor ?? state.Iterator;
      if (inner) walk(inner.States);
      for (const b of state.Branches ?? []) walk(b.States);
    }
  };
  walk(definition.States);
  return found;
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
}

/** Loads a definition, fills its substitutions with local ARNs, and serves every Task with its real handler. */
export function loadLocalMachine(name: MachineName, handlers: Record<string, LambdaHandler> = HANDLERS) {
  const text = readFileSync(definitionPath(name), 'utf8');
  const raw = JSON.parse(text) as { States: Record<string, AslState> };
  const overrides: Record<string, (input: unknown) => Promise<unknown>> = {};
  for (const { state, substitution } of taskStates(raw)) {
    const h = handlers[substitution];
    if (!h) throw new Error(`no local handler for \${${substitution}FunctionArn} (Task state "${state}")`);
    overrides[state] = (input) => h(input, lambdaContext(substitution));
  }
  const resolved = text.replace(/\$\{(\w+)FunctionArn\}/g, (_, n: string) => `arn:aws:lambda:us-east-1:000000000000:function:etl-rollback-${n}`);
  const unresolved = /\$\{[^}]+\}/.exec(resolved);
  if (unresolved) throw new Error(`${name}.asl.json has an unresolved substitution ${unresolved[0]}`);
  return { definition: JSON.parse(resolved) as object, overrides };
}

export async function runLocal(name: MachineName, input: unknown, options: RunOptions): Promise<ExecutionOutcome> {
  const handlers = { ...HANDLERS, ...(options.handlers ?? {}) } as Record<string, LambdaHandler>;
  const { definition, overrides } = loadLocalMachine(name, handlers);
  const machine = new StateMachine(definition as never, { validationOptions: { checkPaths: true, checkArn: true } });
  const execution = machine.run(input as never, {
    overrides: { taskResourceLocalHandlers: overrides as never, ...(options.waitTimeOverrides ? { waitTimeOverrides: options.waitTimeOverrides } : {}) },
    context: { Execution: { Name: options.name, Id: `arn:aws:states:local:000000000000:execution:${name}:${options.name}`, Input: input, StartTime: new Date().toISOString() } } as never,
  });
  const pump = (async () => {
    if (!options.onEvent) return;
    for await (const event of execution.eventLogs) options.onEvent(event);
  })();
  try {
    const output = await execution.result;
    await pump.catch(() => undefined);
    return { status: 'SUCCEEDED', output };
  } catch (error) {
    await pump.catch(() => undefined);
    const inner = (error as { cause?: { name?: string; message?: string } }).cause;
    return { status: 'FAILED', error: inner?.name ?? (error as Error).name, cause: inner?.message ?? (error as Error).message };
  }
}
