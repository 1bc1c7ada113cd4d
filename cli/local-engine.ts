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
import { progressLine } from './progress.ts';

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

  const onEvent = (event: { type: string; state?: { name: string; input: unknown } }) => {
    if (event.type === 'StateEntered' && event.state) {
      const line = progressLine(event.state.name, event.state.input);
      if (line) io.err(line);
    }
  };

  async function failedReport(runId: string): Promise<RunReport | undefined> {
    const run = await ledger.getRun(runId);
    return run?.reportKey ? store.getJson<RunReport>(run.reportKey) : undefined;
  }

  return {
    async snapshot(manifest, args): Promise<ExecutionResult> {
      const input = { pipeline: manifest.pipeline, deploymentId: args.deploymentId, manifest, requestedBy: args.requestedBy, reason: args.reason };
      const out = await runLocal('snapshot', input, { name: args.name, onEvent, deps });
      return out.status === 'SUCCEEDED' ? { ...out, name: args.name } : { ...out, name: args.name };
    },
    async rollback(manifest, args): Promise<ExecutionResult> {
      const out = await runLocal('rollback', rollbackInput(manifest, args), { name: args.name, onEvent, deps });
      if (out.status === 'SUCCEEDED') return { ...out, name: args.name };
      return { ...out, name: args.name, report: await failedReport(args.name) };
    },
    async drill(manifest, args): Promise<ExecutionResult> {
      const out = await runLocal('drill', drillInput(manifest, args), { name: args.name, onEvent });
      if (out.status === 'SUCCEEDED') return { ...out, name: args.name };
      // A drill is not a rollback run in the ledger: its report is found by its key.
      return { ...out, name: args.name, report: await store.getJson<RunReport>(stateKeys.report(manifest.pipeline, args.name)) };
    },
  };
}
