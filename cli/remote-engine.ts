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

/** Remote engine: starts an execution of the deployed state machine and follows it until it ends. */
export async function remoteEngine(opts: EngineOptions, io: Io): Promise<Engine> {
  const sfn = new SFNClient({});

  async function follow(executionArn: string): Promise<{ status: string; output?: string; error?: string; cause?: string }> {
    let nextToken: string | undefined;
    for (;;) {
      // Print the steps as they happen (TaskStateEntered events), then check whether the execution ended.
      do {
        const page = await sfn.send(new GetExecutionHistoryCommand({ executionArn, nextToken, maxResults: 200 }));
        for (const e of page.events ?? []) printEvent(e);
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

  async function start(arn: string | undefined, what: string, name: string, input: unknown): Promise<ExecutionResult> {
    if (!arn) throw new InputError(`--state-machine-arn (or ETL_ROLLBACK_${what.toUpperCase()}_STATE_MACHINE_ARN) is required without --local: the ARN of the deployed ${what} state machine (a stack output)`);
    const started = await sfn.send(new StartExecutionCommand({ stateMachineArn: arn, name, input: JSON.stringify(input) }));
    io.err(`› started ${started.executionArn}`);
    const end = await follow(started.executionArn!);
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
      return start(opts.snapshotArn, 'snapshot', args.name, { pipeline: manifest.pipeline, deploymentId: args.deploymentId, manifest, requestedBy: args.requestedBy, reason: args.reason });
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
