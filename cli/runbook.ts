import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { type Command, Option } from 'commander';
import { EXIT, InputError } from '../core/errors.ts';
import { Ledger } from '../core/ledger/ledger.ts';
import { loadManifestFile } from '../core/manifest/load.ts';
import { planRollback } from '../core/plan/plan.ts';
import { throughputFrom } from '../core/plan/throughput.ts';
import { renderRunbook } from '../core/report/runbook.ts';
import { readRuntimeConfig } from '../core/runtime/config.ts';
import { LOCK_TTL_SECONDS } from '../core/workflow/rollback.ts';

interface Io {
  out(text: string): void;
  err(text: string): void;
}

/**
 * `etl-rollback runbook <manifest> [--deployment <id>] [--units a,b]`: the rollback as a Markdown runbook, stage by
 * stage and unit by unit (core/report/runbook.ts). Offline, except with --deployment: then the deployment's restore
 * points and the pipeline's measured throughput come from the ledger (--local: the one at AWS_ENDPOINT_URL).
 */
export function registerRunbookCommand(program: Command, io: Io, setExit: (code: number) => void): void {
  program
    .command('runbook')
    .description('print the rollback as a Markdown runbook: per stage and unit what is done, by hand, what to check, who approves, how long, if it fails')
    .argument('<manifest>', 'manifest YAML file')
    .option('--deployment <id>', 'include this deployment\'s restore points (read from the ledger)')
    .option('--units <ids>', 'comma-separated unit ids (default: all)')
    .option('--no-cascade', 'do not add the consumers of the units asked for')
    .option('--local', 'read the ledger at AWS_ENDPOINT_URL (moto, a sandbox)', false)
    .addOption(new Option('--ledger-table <name>', 'ledger DynamoDB table').env('ETL_ROLLBACK_LEDGER_TABLE'))
    .action(async (file: string, opts: { deployment?: string; units?: string; cascade: boolean; local: boolean; ledgerTable?: string }) => {
      const manifest = await loadManifestFile(file);
      const units = opts.units?.split(',').map((u) => u.trim()).filter(Boolean);
      if (units !== undefined && units.length === 0) throw new InputError('--units: give at least one unit id (e.g. --units mart,staging)');
      const plan = planRollback(manifest, { units, cascade: opts.cascade });
      let ledgerFacts = {};
      if (opts.deployment) {
        if (opts.local && (process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3) && process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE === undefined) {
          process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE = 'true';
        }
        const config = readRuntimeConfig({ ...process.env, ...(opts.ledgerTable ? { ETL_ROLLBACK_LEDGER_TABLE: opts.ledgerTable } : {}) });
        const ledger = new Ledger(new DynamoDBClient({}), config.ledgerTable);
        await ledger.requireDeployment(manifest.pipeline, opts.deployment);
        const [restorePoints, samples] = await Promise.all([ledger.listRestorePoints(manifest.pipeline, opts.deployment), ledger.listThroughputSamples(manifest.pipeline)]);
        ledgerFacts = { deploymentId: opts.deployment, restorePoints, throughput: throughputFrom(samples) };
      }
      io.out(renderRunbook({ manifest, plan, manifestPath: file, cascade: opts.cascade, lockTtlSeconds: LOCK_TTL_SECONDS, madeAt: new Date().toISOString(), ...ledgerFacts }));
      setExit(EXIT.ok);
    });
}
