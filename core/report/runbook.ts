import type { RestorePoint } from '../adapters/types.ts';
import { estimateRollback, type RunEstimate } from '../plan/estimate.ts';
import type { Plan } from '../plan/plan.ts';
import { pricesFor } from '../plan/prices.ts';
import { throughputFrom, type Throughput } from '../plan/throughput.ts';
import type { Manifest } from '../manifest/schema.ts';
import { formatSeconds } from './estimate-text.ts';

/**
 * A runbook for a rollback: for each stage and unit, in the order the rollback takes them, what will be done, how to do
 * it by hand (the CLI command, the console input, short aws/psql equivalents), what to check afterwards (the gate and
 * the unit's own assertions), who approves, how long it should take, and what to do when a step fails. Pure: from the
 * manifest, its plan, and (with a deployment) the restore points in the ledger.
 */

/** A unit as the runbook reads it: any type, the fields of known ones (so a type added later still renders). */
type AnyUnit = Manifest['units'][number] | ({ id: string; type: string; dependsOn?: string[] } & Record<string, unknown>);

export interface RunbookInput {
  manifest: Manifest;
  plan: Plan;
  /** The manifest file as the operator passes it to the CLI. */
  manifestPath: string;
  /** Whether the consumers of the units asked for were added (`--no-cascade`: false). Default true. */
  cascade?: boolean;
  /** The deployment to roll back; absent: the commands say `<deployment>`. */
  deploymentId?: string;
  /** The deployment's restore points (from the ledger), by unit. */
  restorePoints?: readonly RestorePoint[];
  /** The pipeline's measured throughput (the ledger's history); default: the documented defaults. */
  throughput?: Throughput;
  /** How long a run holds the pipeline's lock before it expires by itself. */
  lockTtlSeconds?: number;
  /** The run this runbook was written for (the start notification links it). */
  runId?: string;
  /** When the runbook was made (estimates carry it). */
  madeAt?: string;
}

const code = (text: string) => `\`${text.replace(/`/g, "'")}\``;
const sh = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

function connectionEnv(name: string): string {
  return `${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_URL`;
}

/** What a rollback of the unit does, in a sentence or two; a type this file does not know gets the generic text. */
export function unitAction(unit: AnyUnit): string {
  const u = unit as Record<string, unknown>;
  switch (unit.type) {
    case 's3-prefix': {
      const where = `s3://${String(u.bucket)}/${String(u.prefix)}`;
      if (u.mode === 'copy') return `Copies the objects captured from ${where} back from the state bucket and removes objects the deploy added (the bucket keeps no versions). Writes only what differs.`;
      const log = u.capture === 'change-log' ? ' The keys logged during the deploy are restored first, without listing; then the full listing check repairs anything the log missed.' : '';
      return `Puts every object under ${where} back to the version captured before the deploy: a changed object gets its captured version copied on top, a delete marker the deploy added is removed, an object the deploy added gets a delete marker (its versions stay). Writes only what differs.${log}`;
    }
    case 'postgres-table':
    case 'mysql-table': {
      const scope = u.partition !== undefined ? ` (partition ${([] as unknown[]).concat(u.partition).join(', ')})` : u.where !== undefined ? ` (rows where ${String(u.where)})` : '';
      const how = u.capture === 'copy-on-write' ? "from the pre-images the triggers kept of the rows the deploy changed" : 'from the shadow copy taken before the deploy';
      return `Writes back the rows of ${String(u.table)}${scope} that differ ${how}, in one transaction; the rows it replaces are kept aside. Writes only what differs.`;
    }
    case 'rds-instance':
      return `Restores the snapshot of DB instance ${String(u.instanceId)} taken before the deploy to a new instance, then swaps it in under the same identifier (the current one is kept, renamed \`${String(u.instanceId)}-pre-rollback-<run>\`). Takes minutes to hours: the state machine polls.`;
    case 'rds-cluster':
      return `Restores the cluster snapshot of ${String(u.clusterId)} taken before the deploy (with a writer instance), then swaps it in under the same identifier (the current one is kept, renamed \`${String(u.clusterId)}-pre-rollback-<run>\`). Takes minutes to hours: the state machine polls.`;
    case 'glue-table':
      return `Puts the Glue table ${String(u.database)}.${String(u.table)} back as captured: its definition and ${u.partitions !== undefined ? `the partitions selected by \`${String(u.partitions)}\`` : 'its partitions'}, writing only what differs.`;
    default:
      return `Restores the unit with the adapter of its type (${code(unit.type)}): writes back what differs from its restore point, then its stage's gate compares it with the restore point.`;
  }
}

/** Short commands to look at (or do by hand) what the unit's restore does. */
function manualCommands(unit: AnyUnit): string[] {
  const u = unit as Record<string, unknown>;
  switch (unit.type) {
    case 's3-prefix':
      return [
        `aws s3api list-object-versions --bucket ${String(u.bucket)} --prefix ${sh(String(u.prefix))} --query '{versions: Versions[?IsLatest].[Key,VersionId], markers: DeleteMarkers[?IsLatest].[Key,VersionId]}'`,
        `aws s3api copy-object --bucket ${String(u.bucket)} --key <key> --copy-source '${String(u.bucket)}/<key>?versionId=<captured version>'`,
      ];
    case 'postgres-table':
      return [`psql "$${connectionEnv(String(u.connection))}" -c ${sh(`SELECT count(*) FROM ${String(u.table)}${u.where !== undefined ? ` WHERE ${String(u.where)}` : ''}`)}`];
    case 'mysql-table':
      return [`mysql "$${connectionEnv(String(u.connection))}" -e ${sh(`SELECT count(*) FROM ${String(u.table)}${u.where !== undefined ? ` WHERE ${String(u.where)}` : ''}`)}`];
    case 'rds-instance':
      return [
        `aws rds describe-db-instances --db-instance-identifier ${String(u.instanceId)} --query 'DBInstances[0].DBInstanceStatus'`,
        `aws rds describe-db-snapshots --db-instance-identifier ${String(u.instanceId)} --snapshot-type manual`,
      ];
    case 'rds-cluster':
      return [
        `aws rds describe-db-clusters --db-cluster-identifier ${String(u.clusterId)} --query 'DBClusters[0].Status'`,
        `aws rds describe-db-cluster-snapshots --db-cluster-identifier ${String(u.clusterId)} --snapshot-type manual`,
      ];
    case 'glue-table':
      return [
        `aws glue get-table --database-name ${sh(String(u.database))} --name ${sh(String(u.table))}${u.catalogId ? ` --catalog-id ${String(u.catalogId)}` : ''}`,
        `aws glue get-partitions --database-name ${sh(String(u.database))} --table-name ${sh(String(u.table))}${u.partitions !== undefined ? ` --expression ${sh(String(u.partitions))}` : ''}`,
      ];
    default:
      return [];
  }
}

/** Where the unit is, in one line. */
function unitWhere(unit: AnyUnit): string {
  const u = unit as Record<string, unknown>;
  switch (unit.type) {
    case 's3-prefix':
      return `s3://${String(u.bucket)}/${String(u.prefix)}`;
    case 'postgres-table':
    case 'mysql-table':
      return `${String(u.connection)}:${String(u.table)}`;
    case 'rds-instance':
      return `db:${String(u.instanceId)}`;
    case 'rds-cluster':
      return `cluster:${String(u.clusterId)}`;
    case 'glue-table':
      return `glue:${u.catalogId ? `${String(u.catalogId)}:` : ''}${String(u.database)}.${String(u.table)}`;
    default:
      return unit.type;
  }
}

const countWord = (type: string) => (type === 's3-prefix' ? 'objects' : type === 'glue-table' ? 'partitions' : type.startsWith('rds-') ? 'snapshot' : 'rows');

/** The worst case a restore point allows: every captured object or row written back. */
function worstCase(type: string, point: RestorePoint | undefined): Record<string, number> {
  if (!point) return {};
  if (type === 's3-prefix') return { objectsCopied: point.count };
  if (type === 'postgres-table' || type === 'mysql-table') return { rowsUpdated: point.count };
  return {};
}

/** The estimate the runbook quotes: the core estimate over the plan, with the worst case each restore point allows. */
export function runbookEstimate(input: RunbookInput): RunEstimate {
  const byId = new Map(input.manifest.units.map((u) => [u.id, u as AnyUnit]));
  const points = new Map((input.restorePoints ?? []).map((p) => [p.unitId, p]));
  return estimateRollback({
    stages: input.plan.stages.map((units, index) => ({
      index,
      units: units.map((unitId) => {
        const type = byId.get(unitId)?.type ?? 'unknown';
        return { unitId, type, changes: worstCase(type, points.get(unitId)) };
      }),
    })),
    throughput: input.throughput ?? throughputFrom([]),
    prices: pricesFor(''),
    madeAt: input.madeAt ?? new Date(0).toISOString(),
  });
}

function json(value: unknown, compact = false): string[] {
  return ['```json', ...(compact ? JSON.stringify(value) : JSON.stringify(value, null, 2)).split('\n'), '```'];
}

/** The runbook as Markdown. Every stage and every unit of the plan appears, in the plan's order. */
export function renderRunbook(input: RunbookInput): string {
  const { manifest, plan } = input;
  const deployment = input.deploymentId ?? '<deployment>';
  const byId = new Map(manifest.units.map((u) => [u.id, u as AnyUnit]));
  const points = new Map((input.restorePoints ?? []).map((p) => [p.unitId, p]));
  const policy = manifest.policy;
  const approval = policy?.approval;
  const approvalRequired = approval?.required ?? false;
  const estimate = runbookEstimate(input);
  const everything = plan.requested.length === manifest.units.length;
  const noCascade = input.cascade === false && !everything;
  const unitsFlag = everything ? '' : ` --units ${plan.requested.join(',')}${noCascade ? ' --no-cascade' : ''}`;
  const rollbackCmd = `etl-rollback rollback ${input.manifestPath} --deployment ${deployment}${unitsFlag} --reason "…"`;
  const lockHours = (input.lockTtlSeconds ?? 6 * 3600) / 3600;
  const out: string[] = [];

  out.push(`# Runbook: rollback of ${manifest.pipeline} / ${deployment}`, '');
  if (manifest.description) out.push(manifest.description, '');
  out.push('| | |', '|---|---|');
  out.push(`| pipeline | ${code(manifest.pipeline)} |`);
  out.push(`| deployment | ${code(deployment)} |`);
  if (input.runId) out.push(`| run | ${code(input.runId)} |`);
  out.push(`| units asked for | ${everything ? 'all' : plan.requested.join(', ')} |`);
  out.push(`| stages | ${plan.stages.length}, consumers first; each verified by its gate before the next starts |`);
  out.push(`| maintenance windows | ${policy?.windows.length ? policy.windows.join('; ') + ' (outside them the run waits, unless `--urgent`)' : 'none: any time'} |`);
  out.push(
    `| approval | ${approvalRequired ? `required within ${approval?.timeoutMinutes ?? 240} min: ${code('etl-rollback approve <run> --reason "…"')}${approval?.allowSelfApproval ? '' : ' by someone other than the requester'}` : 'not required'} |`,
  );
  const paused = [...(policy?.pause?.rules ?? []).map((r) => `rule ${r.eventBus === 'default' ? '' : `${r.eventBus}/`}${r.name}`), ...(policy?.pause?.schedules ?? []).map((s) => `schedule ${s.group}/${s.name}`)];
  out.push(`| paused while restoring | ${paused.length ? paused.join(', ') : 'nothing'} |`);
  out.push(`| expected duration | ${formatSeconds(estimate.totals.seconds)} (${estimate.basis.text}${input.restorePoints ? '; worst case: every captured object or row written back' : '; time per unit and gate, without the data moved'}) |`);
  if (manifest.replay) out.push(`| replay after restore | ${code(manifest.replay.stateMachineArn)}, at most ${manifest.replay.timeoutMinutes} min${manifest.replay.approval ? ', approved first' : ''} |`);
  out.push('');

  out.push('## Start', '');
  out.push('Look first (changes nothing, prints what each unit would write and the estimate):', '', '```sh', `${rollbackCmd.replace(' --reason "…"', '')} --dry-run`, '```', '');
  out.push('Then roll back:', '', '```sh', rollbackCmd, '```', '');
  out.push('Or in the Step Functions console: the rollback state machine (stack output `RollbackStateMachineArn`) → Start execution, with the input:', '');
  out.push(...json({ pipeline: manifest.pipeline, deploymentId: deployment, ...(everything ? {} : { units: plan.requested }), ...(noCascade ? { cascade: false } : {}), requestedBy: '<you>', reason: '<why>' }), '');
  const before: string[] = [];
  if (policy?.windows.length) before.push(`Maintenance window: the run waits (holding nothing) until one of ${policy.windows.join('; ')} opens; \`--urgent\` (console: \`"urgent": true\`) starts now.`);
  before.push(
    approvalRequired
      ? `Approval: after the lock is taken the run asks (notification "Approval Requested") and waits up to ${approval?.timeoutMinutes ?? 240} min. Approve: \`etl-rollback approve <run> --reason "…"\`${approval?.allowSelfApproval ? '' : ' (not by the requester)'}; reject: \`etl-rollback reject <run> --reason "…"\`. No decision in time: the run stops, nothing touched.`
      : 'Approval: not required by the policy.',
  );
  if (paused.length) before.push(`Pipeline triggers paused until the end (and re-enabled on failure too): ${paused.join(', ')}.`);
  out.push('Before the first stage:', '', ...before.map((b) => `- ${b}`), '');

  plan.stages.forEach((units, s) => {
    const stageEstimate = estimate.stages[s];
    out.push(`## Stage ${s + 1} of ${plan.stages.length}: ${units.join(', ')}`, '');
    out.push(`Units of this stage restore side by side; then the gate verifies each against its restore point.${stageEstimate ? ` Expected: ${formatSeconds(stageEstimate.seconds)}.` : ''}`, '');
    units.forEach((unitId, j) => {
      const unit = byId.get(unitId) ?? { id: unitId, type: 'unknown' };
      const u = unit as Record<string, unknown>;
      const point = points.get(unitId);
      const unitEstimate = stageEstimate?.units[j];
      const reason = plan.reasons[unitId];
      out.push(`### ${s + 1}.${j + 1} ${code(unitId)} (${unit.type}, ${unitWhere(unit)})`, '');
      if (reason && reason !== 'requested') out.push(`In scope: ${reason}.`, '');
      out.push(`- **What will be done:** ${unitAction(unit)}`);
      if (input.deploymentId) {
        out.push(
          point
            ? `- **Restore point:** ${point.type.startsWith('rds-') ? 'snapshot' : `${point.count} ${countWord(point.type)}`}, captured at ${point.capturedAt}${point.checksum ? `, checksum ${code(point.checksum.slice(0, 16))}` : ''}.`
            : `- **Restore point:** none in the ledger for deployment ${code(deployment)}: the rollback refuses to start (RestorePointMissingError).`,
        );
      }
      out.push(`- **By hand (this unit only):**`, '', '  ```sh', `  etl-rollback rollback ${input.manifestPath} --deployment ${deployment} --units ${unitId} --no-cascade --reason "…"`, '  ```', '');
      out.push('  Console input for the rollback state machine:', '');
      out.push(...json({ pipeline: manifest.pipeline, deploymentId: deployment, units: [unitId], cascade: false, requestedBy: '<you>', reason: '<why>' }, true).map((l) => `  ${l}`), '');
      const commands = manualCommands(unit);
      if (commands.length) out.push('  Look at it directly:', '', '  ```sh', ...commands.map((c) => `  ${c}`), '  ```', '');
      const checks = (u.checks as { count?: boolean; checksum?: boolean } | undefined) ?? { count: true, checksum: true };
      const gate: string[] = [];
      const counted = countWord(unit.type).replace(/s$/, '');
      if (checks.count !== false) gate.push(counted === 'snapshot' ? 'the restored database is available under its identifier' : `the ${counted} count equals the restore point's${point ? ` (${point.count})` : ''}`);
      if (checks.checksum !== false) gate.push("the content checksum equals the restore point's");
      out.push(`- **Check afterwards:** the gate after stage ${s + 1} checks that ${gate.length ? gate.join(' and ') : 'the unit is restored (count and checksum checks are off)'}.`);
      if (unit.type === 's3-prefix') out.push(`  By hand: the \`list-object-versions\` above shows the current version of each key; each must be the captured one.`);
      const assertions = (u.assertions as { name: string; sql: string }[] | undefined) ?? [];
      if (assertions.length) {
        out.push(`  The unit's assertions (each must return one row whose first column is true):`, '');
        for (const a of assertions) out.push(`  ${a.name}:`, '', '  ```sql', ...a.sql.trim().split('\n').map((l) => `  ${l}`), '  ```', '');
      }
      out.push(`- **Who approves:** ${approvalRequired ? `the run's approver (policy.approval${approval?.allowSelfApproval ? '' : ', not the requester'}), once, before stage 1` : 'nobody: the policy asks for no approval'}.`);
      out.push(`- **Expected duration:** ${unitEstimate ? `${formatSeconds(unitEstimate.restoreSeconds)} to restore, ${formatSeconds(unitEstimate.verifySeconds)} to verify` : 'no estimate'}.`);
      out.push(
        `- **If it fails:** the run stops here; later stages do not start, earlier ones stay restored and verified (the report flags the partial state). Fix the cause, then \`etl-rollback rollback ${input.manifestPath} --deployment ${deployment} --resume <run>\` (verified units are skipped, this one is restored again).`,
      );
      out.push('');
    });
    const then = s + 1 < plan.stages.length ? `stage ${s + 2} does not start` : manifest.replay ? 'the replay does not start' : 'the run does not finish';
    out.push(`**Gate after stage ${s + 1}:** every unit above must verify, else the run fails with VerificationFailedError and ${then}.`, '');
  });

  if (manifest.replay) {
    const r = manifest.replay;
    out.push('## Replay', '');
    out.push(`After the last gate the run starts the pipeline's own state machine ${code(r.stateMachineArn)} with the restored scope and waits up to ${r.timeoutMinutes} min.`);
    if (r.approval) out.push(`It asks for approval first: \`etl-rollback approve <run>-replay --reason "…"\`.`);
    out.push('Its input (rendered from the manifest with this run):', '', ...json(r.input), '');
    out.push('If the replay fails or times out, the run fails with ReplayFailedError: the data is restored and verified; rerun the pipeline by hand, or resume the run (`--resume <run>`: every unit is skipped, the replay runs again).', '');
  }

  out.push('## If something fails', '');
  out.push(`- **Resume:** \`etl-rollback rollback ${input.manifestPath} --deployment ${deployment} --resume <run>\`: the failed run's stages again, the units it verified skipped (each still re-verified by its gate).`);
  out.push(`- **Backstop:** the pipeline's triggers are re-enabled on failure too; the lock expires by itself after ${lockHours} h; the data each unit replaced is kept (the report names where).`);
  out.push(`- **Unlock** a lock left by a run that died: \`etl-rollback unlock ${manifest.pipeline} --reason "…"\`.`);
  out.push(`- **Where things are:** \`etl-rollback status ${manifest.pipeline}\`, \`etl-rollback history ${manifest.pipeline}\`; the run's report (JSON and Markdown) in the audit bucket.`);
  out.push('');
  return out.join('\n');
}
