import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DescribeExecutionCommand, GetExecutionHistoryCommand, SFNClient, StartExecutionCommand, type HistoryEvent } from '@aws-sdk/client-sfn';
import { InputError } from '../core/errors.ts';
import { Ledger } from '../core/ledger/ledger.ts';
import { StateStore, stateKeys } from '../core/runtime/state-store.ts';
import type { RunReport } from '../core/report/report.ts';
import { readRuntimeConfig } from '../core/runtime/config.ts';
import { refuseModuleHandlers } from './custom-handlers.ts';
import { drillInput, rollbackInput, type Engine, type EngineOptions, type ExecutionResult } from './engine.ts';
import { progressLine } from './progress.ts';

interface Io {
  err(text: string): void;
}

const POLL_MS = 2000;

/** The snapshot state after which the deploy may start (its output's `inPlace`: status IN_PLACE, the units sealing). */
const IN_PLACE_STATE = 'Restore points in place';

/** Remote engine: starts an execution of the deployed state machine and follows it until it ends. */
export async function remoteEngine(opts: EngineOptions, io: Io): Promise<Engine> {
  const sfn = new SFNClient({});

  /**
   * Follows the execution until it ends, or until the state `stopAt` has exited (its output is then returned with
   * status `STOPPED_AT`): the execution goes on without us.
   */
  async function follow(executionArn: string, stopAt?: string): Promise<{ status: string; output?: string; error?: string; cause?: string }> {
    let nextToken: string | undefined;
    for (;;) {
      // Print the steps as they happen (TaskStateEntered events), then check whether the execution ended.
      do {
        const page = await sfn.send(new GetExecutionHistoryCommand({ executionArn, nextToken, maxResults: 200 }));
        for (const e of page.events ?? []) {
          printEvent(e);
          if (stopAt !== undefined && e.stateExitedEventDetails?.name === stopAt) return { status: 'STOPPED_AT', output: e.stateExitedEventDetails.output };
        }
        nextToken = page.nextToken;
        if (!nextToken) break;
      } while (nextToken);
      const d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
      if (d.status !== 'RUNNING' && d.status !== 'PENDING_REDRIVE') return { status: d.status ?? 'UNKNOWN', output: d.output, error: d.error, cause: d.cause };
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  const seen = new Set<number>();
  function printEvent(e: HistoryEvent): void {
    if (e.id === undefined || seen.has(e.id)) return;
    seen.add(e.id);
    const entered = e.stateEnteredEventDetails;
    if (e.type === 'TaskStateEntered' && entered?.name) {
      const line = progressLine(entered.name, entered.input ? JSON.parse(entered.input) : undefined);
      if (line) io.err(line);
    }
  }

  async function start(arn: string | undefined, what: string, name: string, input: unknown, stopAt?: string): Promise<ExecutionResult> {
    if (!arn) throw new InputError(`--state-machine-arn (or ETL_ROLLBACK_${what.toUpperCase()}_STATE_MACHINE_ARN) is required without --local: the ARN of the deployed ${what} state machine (a stack output)`);
    const started = await sfn.send(new StartExecutionCommand({ stateMachineArn: arn, name, input: JSON.stringify(input) }));
    io.err(`› started ${started.executionArn}`);
    const end = await follow(started.executionArn!, stopAt);
    if (end.status === 'STOPPED_AT') {
      const state = end.output ? (JSON.parse(end.output) as { inPlace?: unknown }) : {};
      return { status: 'SUCCEEDED', name, output: { ...(state.inPlace as object), executionArn: started.executionArn } };
    }
    if (end.status === 'SUCCEEDED') return { status: 'SUCCEEDED', name, output: end.output ? JSON.parse(end.output) : null };
    return { status: 'FAILED', name, error: end.error ?? end.status, cause: end.cause ?? '' };
  }

  async function failedReport(runId: string): Promise<RunReport | undefined> {
    if (!opts.ledgerTable || !opts.stateBucket) return undefined;
    const config = readRuntimeConfig();
    const ledger = new Ledger(new DynamoDBClient({}), opts.ledgerTable);
    const run = await ledger.getRun(runId);
    return run?.reportKey ? new StateStore(new S3Client({ forcePathStyle: config.s3ForcePathStyle }), opts.stateBucket).getJson<RunReport>(run.reportKey) : undefined;
  }

  return {
    snapshot: (manifest, args) => {
      refuseModuleHandlers(manifest);
      const input = { pipeline: manifest.pipeline, deploymentId: args.deploymentId, manifest, requestedBy: args.requestedBy, reason: args.reason };
      // --until in-place: back as soon as every unit records (statemachines/snapshot.asl.json); the seal goes on.
      return start(opts.snapshotArn, 'snapshot', args.name, input, args.until === 'in-place' ? IN_PLACE_STATE : undefined);
    },
    async rollback(manifest, args) {
      const result = await start(opts.rollbackArn, 'rollback', args.name, rollbackInput(manifest, args));
      return result.status === 'FAILED' ? { ...result, report: await failedReport(args.name) } : result;
    },
    async drill(manifest, args) {
      const result = await start(opts.drillArn, 'drill', args.name, drillInput(manifest, args));
      if (result.status !== 'FAILED' || !opts.stateBucket) return result;
      const config = readRuntimeConfig();
      const store = new StateStore(new S3Client({ forcePathStyle: config.s3ForcePathStyle }), opts.stateBucket);
      return { ...result, report: await store.getJson<RunReport>(stateKeys.report(manifest.pipeline, args.name)) };
    },
  };
}
