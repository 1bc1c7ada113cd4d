import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { type Command, Option } from 'commander';
import { EXIT, InputError } from '../core/errors.ts';
import { Ledger } from '../core/ledger/ledger.ts';
import { loadManifestFile } from '../core/manifest/load.ts';
import { completeDeployment } from '../core/workflow/change-capture.ts';
import { ensureAuditBucket, type ObjectLockMode } from '../core/report/audit.ts';
import { currentUser } from './engine.ts';
import { readRuntimeConfig } from '../core/runtime/config.ts';
import { parseUtcTime } from '../core/manifest/time.ts';
import type { ExpiredListing, ReleaseOutcome } from '../core/workflow/release.ts';
import { pipelineHistory, pipelineStatus, type HistoryEntry, type PipelineStatus } from '../core/workflow/status.ts';

/**
 * `status`, `history` and `release`: what an on-call engineer asks at 3 a.m. Status and history read the ledger directly
 * (locally with --local against AWS_ENDPOINT_URL, or in AWS with the stack's table): no state machine is involved.
 * `release --local` runs the release definition in this process, as the daily schedule runs it in AWS.
 */

interface Io {
  out(text: string): void;
  err(text: string): void;
}

/** Default retention of a local audit bucket (the stack's default too). */
export const LOCAL_AUDIT_RETENTION_DAYS = 365;

function localEnvironment(opts: { ledgerTable?: string; stateBucket?: string }): void {
  if (opts.ledgerTable) process.env.ETL_ROLLBACK_LEDGER_TABLE = opts.ledgerTable;
  if (opts.stateBucket) process.env.ETL_ROLLBACK_STATE_BUCKET = opts.stateBucket;
  if ((process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3) && process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE === undefined) {
    process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE = 'true';
  }
  process.env.POWERTOOLS_LOG_LEVEL ??= 'WARN';
  process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
}

/**
 * `--audit-bucket` on a local run: the handlers write reports there (ETL_ROLLBACK_AUDIT_BUCKET, read when they are first
 * imported), and the bucket is created with Object Lock (GOVERNANCE, 365 days) if it does not exist.
 */
export async function prepareLocalAudit(bucket: string, opts: { mode?: ObjectLockMode; days?: number } = {}): Promise<void> {
  process.env.ETL_ROLLBACK_AUDIT_BUCKET = bucket;
  localEnvironment({});
  const config = readRuntimeConfig();
  await ensureAuditBucket(new S3Client({ forcePathStyle: config.s3ForcePathStyle }), bucket, { mode: opts.mode ?? 'GOVERNANCE', days: opts.days ?? LOCAL_AUDIT_RETENTION_DAYS });
}

function ledgerFor(opts: { local: boolean; ledgerTable?: string }): Ledger {
  if (opts.local) localEnvironment(opts);
  const config = readRuntimeConfig({ ...process.env, ...(opts.ledgerTable ? { ETL_ROLLBACK_LEDGER_TABLE: opts.ledgerTable } : {}) });
  return new Ledger(new DynamoDBClient({}), config.ledgerTable);
}

function ago(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} days`;
}

export function renderStatus(s: PipelineStatus): string {
  const lines = [`pipeline ${s.pipeline} (as of ${s.at})`];
  lines.push(s.lock ? `  lock: held by ${s.lock.holder} (deployment ${s.lock.deploymentId}, since ${s.lock.acquiredAt}, expires ${s.lock.expiresAt})` : '  lock: free');
  const d = s.latestDeployment;
  if (d) {
    lines.push(`  latest deployment: ${d.deploymentId} ${d.status} (registered ${d.createdAt}${d.requestedBy ? ` by ${d.requestedBy}` : ''}${d.reason ? `: ${d.reason}` : ''})`);
    if (d.restorePoints.length === 0) lines.push('    no restore points');
    for (const p of d.restorePoints) lines.push(`    ${p.unitId} (${p.type}): ${p.count} ${p.type === 's3-prefix' ? 'objects' : p.type === 'glue-table' ? 'partitions' : p.type === 'custom' ? 'recorded by its handler' : p.type.endsWith('-table') ? 'rows' : 'items'}, captured ${p.capturedAt}`);
    if (d.release) lines.push(`    released ${d.release.releasedAt} by ${d.release.releasedBy}: ${d.release.units.flatMap((u) => u.deleted).join('; ')}`);
  } else lines.push('  latest deployment: none');
  const r = s.lastRun;
  if (r) {
    lines.push(
      `  last run: ${r.runId} ${r.dryRun ? 'DRY_RUN' : r.status}${r.partial ? ' (PARTIAL)' : ''} of ${r.deploymentId}, started ${r.startedAt}${r.endedAt ? `, ended ${r.endedAt}` : ''}, by ${r.requestedBy}${r.reason ? ` (${r.reason})` : ''}, ${r.writes} writes`,
    );
    if (r.error) lines.push(`    error: ${r.error.name}: ${r.error.message.split('\n')[0]}`);
  } else lines.push('  last run: none');
  lines.push(
    s.secondsSinceLastRestorePoint !== undefined
      ? `  last restore point: ${s.lastRestorePointAt} (${ago(s.secondsSinceLastRestorePoint)} ago)`
      : '  last restore point: none usable (no sealed, unreleased deployment)',
  );
  return lines.join('\n');
}

export function renderHistory(pipeline: string, entries: HistoryEntry[]): string {
  const lines = [`history of ${pipeline}, newest first:`];
  for (const e of entries) {
    if (e.kind === 'deployment') lines.push(`  ${e.at}  deployment ${e.deploymentId}  ${e.result}  by ${e.who}${e.why ? ` — ${e.why}` : ''}`);
    else {
      const how = [e.trigger ? `started by ${e.trigger.kind === 'manual' ? 'hand' : e.trigger.source ?? 'an event'}` : '', e.resumedFrom ? `resumes ${e.resumedFrom}` : '']
        .filter(Boolean)
        .join(', ');
      lines.push(`  ${e.at}  ${e.dryRun ? 'dry run' : 'rollback'} ${e.runId} of ${e.deploymentId}  ${e.result}, ${e.writes ?? 0} writes  by ${e.who}${e.why ? ` — ${e.why}` : ''}${how ? `  (${how})` : ''}`);
    }
  }
  return lines.join('\n');
}

interface ReleaseSummary {
  now: string;
  released: ReleaseOutcome[];
  skipped: ExpiredListing['skipped'];
  kept: number;
}

function renderRelease(s: ReleaseSummary): string {
  const lines = [`release as of ${s.now}: ${s.released.filter((r) => r.released).length} deployment(s) released, ${s.skipped.length} kept on purpose, ${s.kept} not expired`];
  for (const r of s.released) {
    if (r.released) lines.push(`  released ${r.pipeline}/${r.deploymentId}: ${r.record?.units.flatMap((u) => u.deleted).join('; ') || 'nothing to delete'}`);
    else if (r.skipped) lines.push(`  left ${r.pipeline}/${r.deploymentId}: ${r.skipped.reason}`);
    else lines.push(`  FAILED ${r.pipeline}/${r.deploymentId}: ${r.record?.units.filter((u) => u.error).map((u) => `${u.unitId}: ${u.error!.message}`).join('; ') ?? JSON.stringify((r as { error?: unknown }).error)}`);
  }
  for (const k of s.skipped) lines.push(`  kept ${k.pipeline}/${k.deploymentId} (${k.status}, expired ${k.expiredAt}): ${k.reason}`);
  return lines.join('\n');
}

const tableOption = () => new Option('--ledger-table <name>', 'ledger DynamoDB table').env('ETL_ROLLBACK_LEDGER_TABLE');

/** Adds `status`, `history` and `release` to the program. */
export function registerInspectCommands(program: Command, io: Io, setExit: (code: number) => void): void {
  program
    .command('status')
    .description('lock holder, latest deployment and its restore points, last run, time since the last restore point')
    .argument('<pipeline>', 'pipeline name (as in the manifest)')
    .option('--local', 'read the ledger at AWS_ENDPOINT_URL (moto, a sandbox)', false)
    .option('--json', 'print the status as JSON on stdout', false)
    .addOption(tableOption())
    .action(async (pipeline: string, opts: { local: boolean; json: boolean; ledgerTable?: string }) => {
      const status = await pipelineStatus({ ledger: ledgerFor(opts), now: () => new Date() }, pipeline);
      io.out(opts.json ? JSON.stringify(status, null, 2) : renderStatus(status));
      setExit(EXIT.ok);
    });

  program
    .command('history')
    .description("a pipeline's deployments and rollback runs, newest first: who, why, result, writes")
    .argument('<pipeline>', 'pipeline name (as in the manifest)')
    .option('--limit <n>', 'at most this many entries', '20')
    .option('--local', 'read the ledger at AWS_ENDPOINT_URL (moto, a sandbox)', false)
    .option('--json', 'print the entries as JSON on stdout', false)
    .addOption(tableOption())
    .action(async (pipeline: string, opts: { limit: string; local: boolean; json: boolean; ledgerTable?: string }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new InputError(`--limit: expected a whole number of at least 1, got "${opts.limit}"`);
      const entries = await pipelineHistory({ ledger: ledgerFor(opts), now: () => new Date() }, pipeline, limit);
      io.out(opts.json ? JSON.stringify({ pipeline, entries }, null, 2) : renderHistory(pipeline, entries));
      setExit(EXIT.ok);
    });

  program
    .command('unlock')
    .description("break a pipeline's lock left by a run that died (it also expires by itself); recorded with who and why")
    .argument('<pipeline>', 'pipeline name (as in the manifest)')
    .requiredOption('--reason <text>', 'why the lock is broken (kept in the ledger)')
    .addOption(new Option('--requested-by <who>', 'who breaks it').env('USER'))
    .option('--local', 'use the ledger at AWS_ENDPOINT_URL (moto, a sandbox)', false)
    .addOption(tableOption())
    .action(async (pipeline: string, opts: { reason: string; requestedBy?: string; local: boolean; ledgerTable?: string }) => {
      if (opts.reason.trim() === '') throw new InputError('--reason: say why the lock is broken (it is kept in the ledger)');
      const { broken } = await ledgerFor(opts).breakLock(pipeline, opts.requestedBy ?? currentUser(), opts.reason);
      io.out(
        broken
          ? `lock of ${pipeline} broken: it was held by run "${broken.holder}" (deployment ${broken.deploymentId}, since ${broken.acquiredAt}); recorded`
          : `${pipeline} is not locked; nothing to do`,
      );
      setExit(EXIT.ok);
    });

  program
    .command('complete')
    .description('declare a deploy complete: its change capture (s3-prefix units with capture: change-log) stops recording')
    .argument('<manifest>', 'path to the manifest (YAML or JSON)')
    .requiredOption('--deployment <id>', 'the deployment whose deploy has finished')
    .addOption(new Option('--requested-by <who>', 'who declares it').env('USER'))
    .option('--local', 'use the ledger at AWS_ENDPOINT_URL (moto, a sandbox)', false)
    .option('--json', 'print the result as JSON on stdout', false)
    .addOption(tableOption())
    .action(async (file: string, opts: { deployment: string; requestedBy?: string; local: boolean; json: boolean; ledgerTable?: string }) => {
      const manifest = await loadManifestFile(file);
      const ledger = ledgerFor(opts);
      const by = `cli:${opts.requestedBy ?? currentUser()}`;
      const result = await completeDeployment({ ledger, now: () => new Date(), log: { info: () => undefined, warn: () => undefined } }, { pipeline: manifest.pipeline, deploymentId: opts.deployment, by });
      if (opts.json) io.out(JSON.stringify(result));
      else if (!result.window) io.out(`deployment ${opts.deployment} of ${manifest.pipeline} captures no changes (no s3-prefix unit with capture: change-log); nothing to close`);
      else if (result.closed) io.out(`deployment ${opts.deployment} of ${manifest.pipeline} complete: change capture closed at ${result.window.closedAt} (open since ${result.window.openedAt})`);
      else io.out(`deployment ${opts.deployment} of ${manifest.pipeline} was already complete: change capture closed at ${result.window.closedAt} by ${result.window.closedBy}`);
      setExit(EXIT.ok);
    });

  program
    .command('release')
    .description('release the restore points whose retention has ended (what the daily job does), in this process')
    .requiredOption('--local', 'run the release definition in this process (AWS APIs at AWS_ENDPOINT_URL)')
    .option('--now <iso>', 'release as of this time instead of now: ISO-8601 UTC with Z (e.g. 2026-12-31T00:00:00Z); other offsets are refused')
    .option('--json', 'print the summary as JSON on stdout', false)
    .addOption(tableOption())
    .addOption(new Option('--state-bucket <name>', 'state S3 bucket').env('ETL_ROLLBACK_STATE_BUCKET'))
    .action(async (opts: { now?: string; json: boolean; ledgerTable?: string; stateBucket?: string }) => {
      const now = opts.now !== undefined ? parseUtcTime(opts.now, '--now') : undefined;
      localEnvironment(opts);
      const { runLocal } = await import('./local-runner.ts');
      const name = `release-${new Date().toISOString().replace(/[-:.]/g, '')}`;
      const out = await runLocal('release', now ? { now: now.toISOString() } : {}, { name });
      if (out.status !== 'SUCCEEDED') {
        io.err(`release failed: ${out.error}: ${out.cause}`);
        setExit(EXIT.failed);
        return;
      }
      const summary = out.output as ReleaseSummary;
      io.out(opts.json ? JSON.stringify(summary, null, 2) : renderRelease(summary));
      const failed = summary.released.some((r) => !r.released && !r.skipped);
      setExit(failed ? EXIT.failed : EXIT.ok);
    });
}
