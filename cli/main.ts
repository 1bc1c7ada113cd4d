import { describeCapture } from '../core/adapters/capture-modes.ts';
import { describeFreeze } from '../core/adapters/freeze/unit-freeze.ts';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { EXIT, EXIT_BY_NAME, exitCodeOf, InputError } from '../core/errors.ts';
import { loadManifestFile } from '../core/manifest/load.ts';
import type { Manifest } from '../core/manifest/schema.ts';
import { planFlowchart } from '../core/plan/mermaid.ts';
import { planRollback } from '../core/plan/plan.ts';
import { renderReport, type RunReport } from '../core/report/report.ts';
import { deploymentIdForTime, parseToTime } from '../core/workflow/as-of.ts';
import { utcTime } from '../core/workflow/requests.ts';
import { currentUser, defaultRunName, type Engine, type EngineOptions, type ExecutionResult } from './engine.ts';
import { registerInspectCommands } from './inspect.ts';
import { registerRunbookCommand } from './runbook.ts';

/**
 * etl-rollback: validate and plan offline; snapshot and roll back either in this process (--local: the same
 * definitions and handlers as in AWS, against the endpoint in AWS_ENDPOINT_URL) or through the deployed
 * state machines. Exit codes: 0 done, 1 the run failed or was cancelled (it did not finish), 2 bad input, 3 refused.
 */

interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Asks a person a yes/no question; absent when nobody can answer (no terminal): what needs it then needs `--yes`. */
  confirm?(question: string): Promise<boolean>;
}

const stdio: Io = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  ...(process.stdin.isTTY ? { confirm: askYes } : {}),
};

function parseUnits(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const units = value.split(',').map((u) => u.trim()).filter(Boolean);
  if (units.length === 0) throw new InputError('--units: give at least one unit id (e.g. --units mart,staging)');
  return units;
}

function stagesText(manifest: Manifest, stages: string[][], reasons: Record<string, string>): string {
  const byId = new Map(manifest.units.map((u) => [u.id, u]));
  const lines = [`pipeline ${manifest.pipeline}: ${stages.length} stage(s), consumers first`];
  stages.forEach((stage, i) => {
    lines.push(`  stage ${i + 1}:`);
    for (const id of stage) {
      const u = byId.get(id)!;
      const where =
        u.type === 's3-prefix'
          ? `s3://${u.bucket}/${u.prefix}`
          : u.type === 'rds-instance'
            ? `db:${u.instanceId}`
            : u.type === 'rds-cluster'
              ? `cluster:${u.clusterId}`
              : u.type === 'glue-table'
                ? `glue:${u.catalogId ? `${u.catalogId}:` : ''}${u.database}.${u.table}`
                : u.type === 'custom'
                  ? `handler:${'lambdaArn' in u.handler ? u.handler.lambdaArn : `${u.handler.module}#${u.handler.export}`}`
                  : `${u.connection}:${u.table}`;
      lines.push(`    ${id} (${u.type} ${where})${reasons[id] && reasons[id] !== 'requested' ? ` — ${reasons[id]}` : ''}`);
      const capture = describeCapture(u);
      if (capture) lines.push(`      ${capture}`);
      const freeze = describeFreeze(u);
      if (freeze) lines.push(`      ${freeze}`);
    }
  });
  return lines.join('\n');
}

async function engineFor(local: boolean, opts: EngineOptions, io: Io): Promise<Engine> {
  const audit = (opts as EngineOptions & { auditBucket?: string }).auditBucket;
  if (local && audit) await (await import('./inspect.ts')).prepareLocalAudit(audit);
  if (local) {
    const { localEngine } = await import('./local-engine.ts');
    return localEngine(opts, io);
  }
  const { remoteEngine } = await import('./remote-engine.ts');
  return remoteEngine(opts, io);
}

/** The pipeline of a run, from the ledger (the CLI's `undo <run>` names only the run). Unknown run: bad input. */
async function pipelineOfRun(runId: string, ledgerTable: string | undefined): Promise<string> {
  const [{ DynamoDBClient }, { Ledger }, { readRuntimeConfig }] = await Promise.all([
    import('@aws-sdk/client-dynamodb'),
    import('../core/ledger/ledger.ts'),
    import('../core/runtime/config.ts'),
  ]);
  const table = ledgerTable ?? readRuntimeConfig().ledgerTable;
  const run = await new Ledger(new DynamoDBClient({}), table).getRun(runId);
  if (!run) throw new InputError(`undo ${runId}: there is no such run in the ledger (table ${table})`);
  return run.pipeline;
}

function exitForExecution(result: ExecutionResult): number {
  if (result.status === 'SUCCEEDED') return EXIT.ok;
  return EXIT_BY_NAME[result.error] ?? EXIT.failed;
}

export function buildProgram(io: Io = stdio, setExit: (code: number) => void = (c) => (process.exitCode = c)): Command {
  const program = new Command('etl-rollback')
    .description('Restore points before every ETL deploy; staged, verified, granular rollback.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride();

  const engineOptions = (cmd: Command) =>
    cmd
      .option('--local', 'run the state machine definitions in this process (AWS APIs at AWS_ENDPOINT_URL)', false)
      .option('--json', 'print the result as JSON on stdout', false)
      .addOption(new Option('--ledger-table <name>', 'ledger DynamoDB table').env('ETL_ROLLBACK_LEDGER_TABLE'))
      .addOption(new Option('--state-bucket <name>', 'state S3 bucket').env('ETL_ROLLBACK_STATE_BUCKET'))
      .addOption(new Option('--audit-bucket <name>', 'audit S3 bucket for reports (with --local: created with Object Lock if missing)').env('ETL_ROLLBACK_AUDIT_BUCKET'))
      .addOption(new Option('--requested-by <who>', 'who asks (recorded in the audit trail)').env('USER'))
      .option('--reason <text>', 'why (recorded in the audit trail)', '');

  /** A rollback's (or undo's) result: its report, and why it stopped if it did; the exit code from the error's name. */
  const printRun = (result: ExecutionResult, json: boolean, kind: 'rollback' | 'undo') => {
    const report = result.status === 'SUCCEEDED' ? (result.output as RunReport) : result.report;
    if (json) io.out(JSON.stringify({ status: result.status, ...(result.status === 'FAILED' ? { error: result.error, cause: result.cause } : {}), report }, null, 2));
    else {
      if (report) io.out(renderReport(report));
      if (result.status === 'FAILED') {
        const what = result.error === 'LockHeldError' ? 'refused' : result.error.startsWith('Approval') ? 'not approved' : result.error === 'RunCancelled' ? 'cancelled' : 'failed';
        io.err(`${kind} ${what}: ${result.error}: ${result.cause}`);
      }
    }
    setExit(exitForExecution(result));
  };

  program
    .command('validate')
    .description('check a manifest; print its rollback stages')
    .argument('<manifest>', 'manifest YAML file')
    .action(async (file: string) => {
      const manifest = await loadManifestFile(file);
      const plan = planRollback(manifest, {});
      io.out(`${file}: valid`);
      io.out(stagesText(manifest, plan.stages, plan.reasons));
    });

  program
    .command('plan')
    .description('print the rollback stages for the units asked for (offline)')
    .argument('<manifest>', 'manifest YAML file')
    .option('--units <ids>', 'comma-separated unit ids (default: all)')
    .option('--no-cascade', 'do not add the consumers of the units asked for')
    .addOption(new Option('--format <format>', 'text, json ({"stages": [[...], ...], ...}) or mermaid (a flowchart of the stages and dependencies)').choices(['text', 'json', 'mermaid']).default('text'))
    .option('--json', 'the same as --format json', false)
    .action(async (file: string, opts: { units?: string; cascade: boolean; json: boolean; format: 'text' | 'json' | 'mermaid' }) => {
      const manifest = await loadManifestFile(file);
      const plan = planRollback(manifest, { units: parseUnits(opts.units), cascade: opts.cascade });
      const format = opts.json ? 'json' : opts.format;
      if (format === 'json') io.out(JSON.stringify({ stages: plan.stages, scope: plan.scope, reasons: plan.reasons }));
      else if (format === 'mermaid') io.out(planFlowchart(manifest, plan));
      else io.out(stagesText(manifest, plan.stages, plan.reasons));
    });

  engineOptions(
    program
      .command('snapshot')
      .description('take a restore point of every unit before a deploy')
      .argument('<manifest>', 'manifest YAML file')
      .requiredOption('--deployment <id>', 'deployment id (e.g. the release tag or CI run id)')
      .addOption(
        new Option('--until <point>', 'return when the restore points are in place (every unit recording: the deploy may start; copy-on-write tables seal while it runs) or sealed')
          .choices(['in-place', 'sealed'])
          .default('sealed'),
      )
      .addOption(new Option('--state-machine-arn <arn>', 'deployed snapshot state machine').env('ETL_ROLLBACK_SNAPSHOT_STATE_MACHINE_ARN')),
  ).action(async (file: string, opts: { deployment: string; until: 'in-place' | 'sealed'; local: boolean; json: boolean; ledgerTable?: string; stateBucket?: string; requestedBy?: string; reason: string; stateMachineArn?: string }) => {
    if (opts.local && opts.until === 'in-place') {
      throw new InputError(
        '--until in-place needs the deployed snapshot state machine (without --local): a local snapshot seals in this process, so it returns only when sealed; it prints when the restore points are in place',
      );
    }
    const manifest = await loadManifestFile(file);
    const engine = await engineFor(opts.local, { ...opts, snapshotArn: opts.stateMachineArn, manifestFile: file }, io);
    const result = await engine.snapshot(manifest, {
      deploymentId: opts.deployment,
      requestedBy: opts.requestedBy ?? currentUser(),
      reason: opts.reason,
      name: defaultRunName('snapshot', manifest.pipeline, opts.deployment),
      until: opts.until,
    });
    if (opts.json) io.out(JSON.stringify(result, null, 2));
    else if (result.status === 'SUCCEEDED' && (result.output as { status?: string }).status === 'IN_PLACE') {
      const inPlace = result.output as { sealing?: string[]; executionArn?: string };
      io.out(`restore points of ${manifest.pipeline}/${opts.deployment} in place: the deploy may start`);
      if (inPlace.sealing?.length) io.out(`  sealing ${inPlace.sealing.join(', ')} while it runs (a rollback waits for the seal): ${inPlace.executionArn ?? ''}`.trimEnd());
    } else if (result.status === 'SUCCEEDED') {
      const sealed = result.output as { points: { unitId: string; type: string; count: number }[] };
      io.out(`restore point of ${manifest.pipeline}/${opts.deployment} sealed:`);
      for (const p of sealed.points) io.out(`  ${p.unitId} (${p.type}): ${p.count} ${p.type === 's3-prefix' ? 'objects' : p.type === 'glue-table' ? 'partitions' : p.type === 'custom' ? 'recorded by its handler' : 'rows'}`);
    } else io.err(`snapshot failed: ${result.error}: ${result.cause}`);
    setExit(exitForExecution(result));
  });

  engineOptions(
    program
      .command('rollback')
      .description('roll back units of a deployment, stage by stage, each stage verified')
      .argument('<manifest>', 'manifest YAML file (names the pipeline; the deployed manifest is what is restored)')
      .option('--deployment <id>', 'the deployment whose restore points to go back to (or --to)')
      .option('--to <time>', 'roll back to the state at this ISO-8601 UTC time (e.g. 2026-11-29T09:30:00Z), from the services\' own history, when no restore point was taken')
      .option('--yes', 'with --to: start without asking for confirmation of what each unit resolved to (needed without a terminal)', false)
      .option('--units <ids>', 'comma-separated unit ids (default: all)')
      .option('--no-cascade', 'do not add the consumers of the units asked for')
      .option('--dry-run', 'print what would change; change nothing', false)
      .option('--urgent', 'start now even outside the manifest\'s maintenance windows (approval is still asked for)', false)
      .option('--resume <run>', 'resume a failed or cancelled run of this deployment: its stages again, the units it verified skipped (not with --units / --no-cascade)')
      .addOption(new Option('--state-machine-arn <arn>', 'deployed rollback state machine').env('ETL_ROLLBACK_ROLLBACK_STATE_MACHINE_ARN')),
  ).action(
    async (
      file: string,
      opts: { deployment?: string; to?: string; yes: boolean; units?: string; cascade: boolean; dryRun: boolean; urgent: boolean; resume?: string; local: boolean; json: boolean; ledgerTable?: string; stateBucket?: string; requestedBy?: string; reason: string; stateMachineArn?: string },
    ) => {
      const manifest = await loadManifestFile(file);
      const units = parseUnits(opts.units);
      if ((opts.deployment === undefined) === (opts.to === undefined)) {
        throw new InputError('rollback: give exactly one of --deployment <id> (its restore points) or --to <ISO-8601 UTC time> (the state at that time)');
      }
      if (opts.resume !== undefined && opts.to !== undefined) {
        throw new InputError(`--resume ${opts.resume}: do not give --to with it; resume a rollback to a time with the deployment it made (--deployment at-…, printed in its report)`);
      }
      if (opts.resume !== undefined && (units !== undefined || !opts.cascade)) {
        throw new InputError(`--resume ${opts.resume}: do not give --units or --no-cascade with it; a resumed run takes the plan of the run it resumes, as it was`);
      }
      const at = opts.to !== undefined ? checkToTime(opts.to) : undefined;
      // Fail on unknown units here, before any AWS call.
      planRollback(manifest, { units, cascade: opts.cascade });
      const confirmFirst = at !== undefined && !opts.dryRun && !opts.yes;
      if (confirmFirst && !io.confirm) {
        throw new InputError(`--to ${opts.to}: without a terminal to confirm what each unit resolved to, give --yes (see it first with --dry-run)`);
      }
      const engine = await engineFor(opts.local, { ...opts, rollbackArn: opts.stateMachineArn, manifestFile: file }, io);
      const target = at !== undefined ? deploymentIdForTime(at) : opts.deployment!;
      const args = {
        ...(at !== undefined ? { toTime: at.toISOString() } : { deploymentId: opts.deployment! }),
        units,
        cascade: opts.cascade,
        urgent: opts.urgent,
        ...(opts.resume !== undefined ? { resume: opts.resume } : {}),
        requestedBy: opts.requestedBy ?? currentUser(),
        reason: opts.reason,
      };
      if (confirmFirst) {
        // What each unit resolves to (and would change) first, from a dry run; then the person decides.
        const preview = await engine.rollback(manifest, { ...args, dryRun: true, name: defaultRunName('dryrun', manifest.pipeline, target) });
        if (preview.status !== 'SUCCEEDED') {
          io.err(`rollback to ${at!.toISOString()} cannot be planned: ${preview.error}: ${preview.cause}`);
          setExit(exitForExecution(preview));
          return;
        }
        io.out(renderReport(preview.output as RunReport));
        if (!(await io.confirm!(`roll back ${manifest.pipeline} to ${at!.toISOString()} as shown above? [y/N] `))) {
          io.err('not confirmed: nothing was changed');
          setExit(EXIT.refused);
          return;
        }
      }
      const result = await engine.rollback(manifest, {
        ...args,
        dryRun: opts.dryRun,
        // A resumed run is a new run: a new execution name, its run records the one it resumes.
        name: defaultRunName(opts.dryRun ? 'dryrun' : opts.resume !== undefined ? 'resume' : 'rollback', manifest.pipeline, target),
      });
      printRun(result, opts.json, 'rollback');
    },
  );

  engineOptions(
    program
      .command('undo')
      .description('put back the state a rollback run replaced, through the same staged rollback; an undo is itself undoable')
      .argument('<run>', 'the run id of the rollback (or undo) to undo')
      .option('--pipeline <name>', 'the pipeline of the run (default: read from the ledger)')
      .option('--dry-run', 'print what would be put back; change nothing', false)
      .option('--urgent', 'start now even outside the manifest\'s maintenance windows (approval is still asked for)', false)
      .option('--resume <run>', 'resume a failed undo of the same run: its stages again, the units it verified skipped')
      .addOption(new Option('--state-machine-arn <arn>', 'deployed rollback state machine').env('ETL_ROLLBACK_ROLLBACK_STATE_MACHINE_ARN')),
  ).action(
    async (
      runId: string,
      opts: { pipeline?: string; dryRun: boolean; urgent: boolean; resume?: string; local: boolean; json: boolean; ledgerTable?: string; stateBucket?: string; requestedBy?: string; reason: string; stateMachineArn?: string },
    ) => {
      const engine = await engineFor(opts.local, { ...opts, rollbackArn: opts.stateMachineArn }, io);
      const pipeline = opts.pipeline ?? (await pipelineOfRun(runId, opts.ledgerTable));
      const result = await engine.rollback(
        { pipeline },
        {
          undo: runId,
          cascade: true,
          dryRun: opts.dryRun,
          urgent: opts.urgent,
          ...(opts.resume !== undefined ? { resume: opts.resume } : {}),
          requestedBy: opts.requestedBy ?? currentUser(),
          reason: opts.reason,
          name: defaultRunName(opts.dryRun ? 'undo-dryrun' : 'undo', pipeline, runId),
        },
      );
      printRun(result, opts.json, 'undo');
    },
  );

  engineOptions(
    program
      .command('drill')
      .description('rehearse the staged rollback of a deployment into scratch targets, every gate checked, then remove them (production is only read)')
      .argument('<manifest>', 'manifest YAML file (names the pipeline; the deployed manifest is what is rehearsed)')
      .option('--deployment <id>', 'the deployment whose restore points to rehearse, or "latest"')
      .option('--clean-up <run>', 'only remove what drill <run> left behind (its execution stopped before its cleanup finished), in this process')
      .addOption(new Option('--state-machine-arn <arn>', 'deployed drill state machine').env('ETL_ROLLBACK_DRILL_STATE_MACHINE_ARN')),
  ).action(async (file: string, opts: { deployment?: string; cleanUp?: string; local: boolean; json: boolean; ledgerTable?: string; stateBucket?: string; requestedBy?: string; reason: string; stateMachineArn?: string }) => {
    const manifest = await loadManifestFile(file);
    if (opts.cleanUp !== undefined) {
      // Runs the drill's own cleanup here (against AWS_ENDPOINT_URL, or AWS): the same code, wherever the drill ran.
      await engineFor(true, opts, io);
      const { cleanUpDrill } = await import('./drill-cleanup.ts');
      const { removed } = await cleanUpDrill({ runId: opts.cleanUp, pipeline: manifest.pipeline }, io);
      if (opts.json) io.out(JSON.stringify({ runId: opts.cleanUp, removed }));
      else io.out(removed.length > 0 ? `removed what drill ${opts.cleanUp} left:\n${removed.map((r) => `  ${r}`).join('\n')}` : `drill ${opts.cleanUp} left nothing to remove`);
      setExit(EXIT.ok);
      return;
    }
    if (opts.deployment === undefined) throw new InputError('drill: give --deployment <id> (or "latest"), or --clean-up <run>');
    const engine = await engineFor(opts.local, { ...opts, drillArn: opts.stateMachineArn }, io);
    const result = await engine.drill(manifest, {
      deploymentId: opts.deployment,
      requestedBy: opts.requestedBy ?? currentUser(),
      reason: opts.reason,
      name: defaultRunName('drill', manifest.pipeline, opts.deployment),
    });
    const report = result.status === 'SUCCEEDED' ? (result.output as RunReport) : result.report;
    if (opts.json) io.out(JSON.stringify({ status: result.status, ...(result.status === 'FAILED' ? { error: result.error, cause: result.cause } : {}), report }, null, 2));
    else {
      if (report) io.out(renderReport(report));
      if (result.status === 'FAILED') io.err(`drill ${result.error === 'DrillYieldedError' ? 'yielded' : 'failed'}: ${result.error}: ${result.cause}`);
    }
    setExit(exitForExecution(result));
  });

  for (const decision of ['approve', 'reject'] as const) {
    const cmd = program
      .command(decision)
      .description(decision === 'approve' ? 'approve a rollback run waiting for approval; it goes on' : 'reject a rollback run waiting for approval; it stops, nothing touched')
      .argument('<run>', 'the run id (the execution name, printed when the run asks for approval)')
      .option('--local', 'the run is a local one (rollback --local): only record the decision in the ledger, where it waits', false)
      .option('--json', 'print the result as JSON on stdout', false)
      .addOption(new Option('--ledger-table <name>', 'ledger DynamoDB table').env('ETL_ROLLBACK_LEDGER_TABLE'))
      .addOption(new Option('--by <who>', 'who decides (recorded in the audit trail)').env('USER'));
    if (decision === 'reject') cmd.requiredOption('--reason <text>', 'why (recorded in the audit trail)');
    else cmd.option('--reason <text>', 'why (recorded in the audit trail)', '');
    cmd.action(async (runId: string, opts: { local: boolean; json: boolean; ledgerTable?: string; by?: string; reason: string }) => {
      const { answerApproval } = await import('./approvals.ts');
      const by = opts.by ?? currentUser();
      const result = await answerApproval({ runId, decision, by, reason: opts.reason, local: opts.local, ledgerTable: opts.ledgerTable });
      if (opts.json) io.out(JSON.stringify({ ...result, by, reason: opts.reason }));
      else io.out(`run ${runId} ${result.status.toLowerCase()} by ${by}${result.already ? ' (already recorded)' : ''}${opts.reason ? `: ${opts.reason}` : ''}`);
      setExit(EXIT.ok);
    });
  }

  program
    .command('cancel')
    .description('ask a rollback run to stop at its next safe point (between stages, or while it waits); --resume continues it')
    .argument('<run>', 'the run id (the execution name)')
    .option('--local', 'the run is a local one (rollback --local): only record the request in the ledger, where it looks', false)
    .option('--json', 'print the result as JSON on stdout', false)
    .addOption(new Option('--ledger-table <name>', 'ledger DynamoDB table').env('ETL_ROLLBACK_LEDGER_TABLE'))
    .addOption(new Option('--by <who>', 'who asks (recorded in the audit trail)').env('USER'))
    .option('--reason <text>', 'why (recorded in the audit trail)', '')
    .action(async (runId: string, opts: { local: boolean; json: boolean; ledgerTable?: string; by?: string; reason: string }) => {
      const { cancelRun, cancelText } = await import('./cancel.ts');
      const result = await cancelRun({ runId, by: opts.by ?? currentUser(), reason: opts.reason, local: opts.local, ledgerTable: opts.ledgerTable });
      io.out(opts.json ? JSON.stringify(result) : cancelText(result));
      setExit(EXIT.ok);
    });

  registerInspectCommands(program, io, setExit);
  registerRunbookCommand(program, io, setExit);

  return program;
}

/** `--to`: an ISO-8601 time with an explicit UTC offset, not in the future (the same rule as the request's `toTime`). */
function checkToTime(value: string): Date {
  const parsed = utcTime.safeParse(value);
  if (!parsed.success) throw new InputError(`--to ${JSON.stringify(value)}: ${parsed.error.issues[0]?.message ?? 'not an ISO-8601 UTC time'}`);
  return parseToTime(value, new Date(), '--to');
}

/** Asks on the terminal; true only for "y" or "yes". */
async function askYes(question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

/** Runs the CLI; returns the exit code (never throws). */
export async function main(argv: string[], io: Io = stdio): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(io, (c) => (code = c));
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.exitCode === 0 ? EXIT.ok : EXIT.badInput;
    }
    io.err(`etl-rollback: ${(error as Error).message}`);
    return exitCodeOf(error);
  }
}

/** The version in the project's package.json (the CLI runs from its source tree). */
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
