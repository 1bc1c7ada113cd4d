import { dirname, resolve } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import { Ledger, ensureLedgerTable } from '../core/ledger/ledger.ts';
import { StateStore, ensureStateBucket, stateKeys } from '../core/runtime/state-store.ts';
import type { RunReport } from '../core/report/report.ts';
import { readRuntimeConfig } from '../core/runtime/config.ts';
import { lambdaInvoker } from '../core/runtime/custom-invoker.ts';
import { localCustomInvoker } from './custom-handlers.ts';
import { drillInput, rollbackInput, type Engine, type EngineOptions, type ExecutionResult } from './engine.ts';
import { progressLine, retryLine, type RetryPolicy } from './progress.ts';
import { formatUtc } from '../core/manifest/time.ts';

interface Io {
  err(text: string): void;
}

/**
 * Local engine: the deployed definitions, run in this process with their real handlers, against the AWS
 * endpoint the SDK is pointed at (AWS_ENDPOINT_URL) and the databases in the manifest. Creates the ledger
 * table and state bucket if missing.
 */
export async function localEngine(opts: EngineOptions, io: Io): Promise<Engine> {
  // The handlers read their configuration when first imported: set it before importing them.
  if (opts.ledgerTable) process.env.ETL_ROLLBACK_LEDGER_TABLE = opts.ledgerTable;
  if (opts.stateBucket) process.env.ETL_ROLLBACK_STATE_BUCKET = opts.stateBucket;
  // S3-compatible endpoints (moto, MinIO) have no virtual-host DNS: default to path-style addressing there.
  if ((process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3) && process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE === undefined) {
    process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE = 'true';
  }
  // Handler logs: warnings and errors only, on stderr (Powertools writes those with console.warn/error), so
  // stdout stays the CLI's own; metrics have no CloudWatch to go to locally. Both can be turned back on.
  process.env.POWERTOOLS_LOG_LEVEL ??= 'WARN';
  process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
  const config = readRuntimeConfig();
  const s3 = new S3Client({ forcePathStyle: config.s3ForcePathStyle });
  const dynamo = new DynamoDBClient({});
  await ensureLedgerTable(dynamo, config.ledgerTable);
  await ensureStateBucket(s3, config.stateBucket);
  const { runLocal } = await import('./local-runner.ts');
  const ledger = new Ledger(dynamo, config.ledgerTable);
  const store = new StateStore(s3, config.stateBucket);
  // custom units: module handlers run in this process, found relative to the manifest file; Lambda ones by the SDK.
  const manifestDir = opts.manifestFile ? dirname(resolve(opts.manifestFile)) : process.cwd();
  const deps = { invokeCustom: localCustomInvoker(manifestDir, lambdaInvoker(new LambdaClient({ maxAttempts: 3 }))) };

  // A retried state fails first (StateFailed, with the error), then is retried (StateRetried, with the policy).
  const failed = new Map<string, { name: string; cause: string }>();
  const onEvent = (event: {
    type: string;
    state?: { name: string; input: unknown };
    index?: number;
    Error?: string;
    Cause?: unknown;
    retry?: { attempt: number; retrier: RetryPolicy };
  }) => {
    const at = event.state ? `${event.state.name}#${event.index ?? ''}` : '';
    if (event.type === 'StateEntered' && event.state) {
      const line = progressLine(event.state.name, event.state.input);
      if (line) io.err(line);
    } else if (event.type === 'StateFailed' && event.state) {
      failed.set(at, { name: event.Error ?? 'Error', cause: typeof event.Cause === 'string' ? event.Cause : JSON.stringify(event.Cause ?? '') });
    } else if (event.type === 'StateRetried' && event.state && event.retry) {
      io.err(retryLine(event.state.name, event.state.input, failed.get(at), event.retry.attempt, event.retry.retrier));
    }
  };

  async function failedReport(runId: string): Promise<RunReport | undefined> {
    const run = await ledger.getRun(runId);
    return run?.reportKey ? store.getJson<RunReport>(run.reportKey) : undefined;
  }

  return {
    async snapshot(manifest, args): Promise<ExecutionResult> {
      const input = { pipeline: manifest.pipeline, deploymentId: args.deploymentId, manifest, requestedBy: args.requestedBy, reason: args.reason };
      // Ctrl-C stops a snapshot at once (there is no safe point to wait for: a capture is redone whole by the next run).
      const stopNow = new AbortController();
      const release = trapSignals(io, { stopNow: () => stopNow.abort() });
      try {
        const out = await runLocal('snapshot', input, { name: args.name, onEvent, deps, signal: stopNow.signal });
        if (stopNow.signal.aborted) {
          // As StopExecution in AWS: the definition's failure path did not run; its cleanup does that part.
          io.err('› stopped: marking the deployment FAILED unless it was sealed, releasing the lock');
          const [{ cleanUpStoppedSnapshot }, { deps: handlerDeps }] = await Promise.all([import('../core/workflow/snapshot.ts'), import('../lambdas/task.ts')]);
          const ids = { pipeline: manifest.pipeline, deploymentId: args.deploymentId };
          const cleanup = await cleanUpStoppedSnapshot({ ...handlerDeps, ...deps }, { ...ids, executionName: args.name, status: 'ABORTED', by: 'Ctrl-C' });
          const deployment = await ledger.getDeployment(ids.pipeline, ids.deploymentId);
          return {
            status: 'FAILED',
            name: args.name,
            error: deployment?.error?.name ?? 'SnapshotStopped',
            cause: deployment?.error?.message ?? `stopped by Ctrl-C (deployment ${cleanup.outcome === 'unknown' ? 'not registered yet' : (deployment?.status ?? 'unknown')})`,
          };
        }
        return { ...out, name: args.name };
      } finally {
        release();
      }
    },
    async rollback(manifest, args): Promise<ExecutionResult> {
      const stopNow = new AbortController();
      const release = trapSignals(io, {
        // First Ctrl-C: a cancel request, as `etl-rollback cancel` records it; the run stops at its next safe point.
        cancel: async (signal) => {
          await ledger.requestCancel({ runId: args.name, requestedBy: args.requestedBy, reason: `${signal} in the terminal of the local run`, requestedAt: formatUtc(new Date()) });
        },
        stopNow: () => stopNow.abort(),
      });
      try {
        const out = await runLocal('rollback', rollbackInput(manifest, args), { name: args.name, onEvent, deps, signal: stopNow.signal });
        if (stopNow.signal.aborted) {
          // Stopped at once: the definition's failure path did not run; the cleanup StopExecution gets in AWS does its part.
          io.err('› stopped: resuming the pipeline\'s triggers, recording the run, releasing the lock');
          const [{ cleanUpStoppedRun }, { deps: handlerDeps }] = await Promise.all([import('../core/workflow/cancel.ts'), import('../lambdas/task.ts')]);
          const cleanup = await cleanUpStoppedRun({ ...handlerDeps, ...deps }, { runId: args.name, status: 'ABORTED', by: 'a second Ctrl-C' });
          const run = await ledger.getRun(args.name);
          return { status: 'FAILED', name: args.name, error: run?.error?.name ?? 'RunCancelled', cause: run?.error?.message ?? 'stopped before the run was recorded', report: cleanup.report ?? (await failedReport(args.name)) };
        }
        if (out.status === 'SUCCEEDED') return { ...out, name: args.name };
        return { ...out, name: args.name, report: await failedReport(args.name) };
      } finally {
        release();
      }
    },
    async drill(manifest, args): Promise<ExecutionResult> {
      const out = await runLocal('drill', drillInput(manifest, args), { name: args.name, onEvent });
      if (out.status === 'SUCCEEDED') return { ...out, name: args.name };
      // A drill is not a rollback run in the ledger: its report is found by its key.
      return { ...out, name: args.name, report: await store.getJson<RunReport>(stateKeys.report(manifest.pipeline, args.name)) };
    },
  };
}

/**
 * Ctrl-C (SIGINT) and SIGTERM during a local rollback. The first one asks the run to stop at its next safe point (a
 * cancel request in the ledger: the run then ends through its own failure path, CANCELLED, exit 1); the second stops
 * the execution at once, and the engine runs the cleanup StopExecution gets in AWS (triggers resumed, run recorded
 * CANCELLED "stopped mid-stage", lock released). Later signals are ignored while that cleanup runs: a third Ctrl-C must
 * not leave the pipeline paused and locked. Without `cancel` (a snapshot), the first one stops the execution at once.
 * Returns the function that removes the handlers.
 */
function trapSignals(io: Io, on: { cancel?(signal: string): Promise<void>; stopNow(): void }): () => void {
  let count = 0;
  const handle = (signal: NodeJS.Signals) => {
    count += 1;
    if (count === 1 && on.cancel) {
      io.err('cancelling at the next safe point (Ctrl-C again to stop now)');
      on.cancel(signal).catch((error: unknown) => io.err(`could not record the cancel request: ${(error as Error).message}; Ctrl-C again to stop now`));
    } else if (count === (on.cancel ? 2 : 1)) {
      io.err('stopping now (the cleanup still runs)');
      on.stopNow();
    }
  };
  process.on('SIGINT', handle);
  process.on('SIGTERM', handle);
  return () => {
    process.off('SIGINT', handle);
    process.off('SIGTERM', handle);
  };
}
