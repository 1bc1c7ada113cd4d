import { writeFileSync } from 'node:fs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, ListObjectVersionsCommand } from '@aws-sdk/client-s3';
import type { Context } from 'aws-lambda';
import { parse, stringify } from 'yaml';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../core/ledger/ledger.ts';
import type { ReleaseOutcome, SkippedDeployment } from '../../core/workflow/release.ts';
import type { PipelineStatus } from '../../core/workflow/status.ts';
import { testS3, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

const DAY = 86_400_000;

interface ReleaseSummary {
  now: string;
  released: ReleaseOutcome[];
  skipped: SkippedDeployment[];
  kept: number;
}

/**
 * Three deployments of one pipeline: d-old (retention 14 days, never rolled back), d-recent (its manifest keeps restore
 * points 30 days) and d-failed (14 days, its latest rollback stopped at a failed gate). Fifteen days later only d-old may
 * go: its shadow tables are dropped and its version manifest deleted; the other two keep everything.
 */
describe('release: expired restore points are released and recorded, the others kept (state machine, handlers, moto, PostgreSQL)', () => {
  let s: Scenario;
  let ledger: Ledger;
  const s3 = testS3();
  const later = () => new Date(Date.now() + 15 * DAY).toISOString();
  // Its record of what it replaced (undo-<run>, see core/workflow/undo.ts) is kept as long as the run stays failed.
  const failedRun = uniqueName('run-failed');

  async function shadowTables(deploymentId: string): Promise<Record<string, boolean>> {
    const out: Record<string, boolean> = {};
    for (const p of await ledger.listRestorePoints(s.pipeline, deploymentId)) {
      if (p.type !== 'postgres-table') continue;
      const shadow = (p.details as { shadowTable: string }).shadowTable;
      out[p.unitId] = (await s.sql.query('SELECT to_regclass($1) IS NOT NULL AS present', [shadow])).rows[0].present as boolean;
    }
    return out;
  }

  async function versionManifests(deploymentId: string): Promise<number> {
    const list = await s3.send(new ListObjectVersionsCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET!, Prefix: `restore-points/${s.pipeline}/${deploymentId}/` }));
    return (list.Versions ?? []).length;
  }

  beforeAll(async () => {
    s = await createScenario();
    ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    // d-recent's manifest keeps restore points 30 days.
    const recentManifest = s.manifestPath.replace(/\.yaml$/, '-30d.yaml');
    writeFileSync(recentManifest, stringify({ ...parse(readFileSync(s.manifestPath, 'utf8')), retention: { days: 30 } }));
    for (const [file, id] of [
      [s.manifestPath, 'd-old'],
      [recentManifest, 'd-recent'],
      [s.manifestPath, 'd-failed'],
    ] as const) {
      const r = await s.cli('snapshot', file, '--deployment', id, '--local');
      expect(r.code, r.stderr).toBe(0);
    }
    // d-failed: a rollback whose staging gate fails (a lost write), so the run is FAILED and partial.
    await badDeploy(s);
    const { runLocal } = await import('../../cli/local-runner.ts');
    const { handler: realRestore } = await import('../../lambdas/restore-unit.ts');
    const lostWrite = async (event: unknown, context: Context) =>
      (event as { unitId: string }).unitId === 'staging' ? { unitId: 'staging', stage: 1, writes: 0, done: true, waitSeconds: 0, maxPolls: 1 } : realRestore(event, context);
    const out = await runLocal('rollback', { pipeline: s.pipeline, deploymentId: 'd-failed' }, { name: failedRun, handlers: { RestoreUnit: lostWrite } });
    expect(out).toMatchObject({ status: 'FAILED', error: 'VerificationFailedError' });
    expect((await ledger.getDeployment(s.pipeline, 'd-failed'))?.status).toBe('ROLLBACK_FAILED');
  });
  afterAll(async () => s?.drop());

  it('before their retention ends, nothing is released', async () => {
    const r = await s.cli('release', '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as ReleaseSummary;
    expect(summary.released).toEqual([]);
    expect(summary.skipped).toEqual([]);
    expect(summary.kept).toBeGreaterThanOrEqual(3);
  });

  it('a locked pipeline is never released: the expired deployment is listed as kept, with the holder', async () => {
    await ledger.acquireLock(s.pipeline, 'someone-elses-run', 'd-old', 600);
    try {
      const r = await s.cli('release', '--local', '--json', '--now', later());
      expect(r.code, r.stderr).toBe(0);
      const summary = JSON.parse(r.stdout) as ReleaseSummary;
      expect(summary.released).toEqual([]);
      expect(Object.fromEntries(summary.skipped.map((k) => [k.deploymentId, k.code]))).toEqual({ 'd-old': 'LOCKED', 'd-failed': 'ROLLBACK_FAILED', [`undo-${failedRun}`]: 'LAST_RUN_FAILED' });
    } finally {
      await ledger.releaseLock(s.pipeline, 'someone-elses-run');
    }
    expect((await ledger.getDeployment(s.pipeline, 'd-old'))?.status).toBe('READY');
    expect(await shadowTables('d-old')).toEqual({ staging: true, mart: true });
  });

  it('fifteen days later: d-old is released (shadow tables dropped, version manifest deleted) and recorded; d-recent and d-failed are kept', async () => {
    expect(await versionManifests('d-old')).toBeGreaterThan(0);
    const r = await s.cli('release', '--local', '--now', later());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 deployment\(s\) released, 2 kept on purpose, 1 not expired/);
    expect(r.stdout).toContain(`released ${s.pipeline}/d-old`);
    expect(r.stdout).toMatch(/kept .*\/d-failed .*latest rollback failed/);

    // Read back from the services.
    expect(await shadowTables('d-old')).toEqual({ staging: false, mart: false });
    expect(await versionManifests('d-old')).toBe(0);
    expect(await shadowTables('d-recent')).toEqual({ staging: true, mart: true });
    expect(await versionManifests('d-recent')).toBeGreaterThan(0);
    expect(await shadowTables('d-failed')).toEqual({ staging: true, mart: true });
    expect(await versionManifests('d-failed')).toBeGreaterThan(0);

    // Recorded: the ledger (status, release record), the audit copy (here the state bucket: no audit bucket configured).
    expect((await ledger.getDeployment(s.pipeline, 'd-old'))?.status).toBe('RELEASED');
    expect((await ledger.getDeployment(s.pipeline, 'd-recent'))?.status).toBe('READY');
    expect((await ledger.getDeployment(s.pipeline, 'd-failed'))?.status).toBe('ROLLBACK_FAILED');
    const record = (await ledger.getReleaseRecord(s.pipeline, 'd-old'))!;
    expect(record).toMatchObject({ ok: true, previousStatus: 'READY', retentionDays: 14 });
    expect(record.releasedBy).toMatch(/^release-/);
    expect(Object.fromEntries(record.units.map((u) => [u.unitId, u.deleted.join(' ')]))).toEqual({
      raw: expect.stringContaining(`restore-points/${s.pipeline}/d-old/raw/`),
      staging: expect.stringMatching(/etl_rollback\.rp_/),
      mart: expect.stringMatching(/etl_rollback\.rp_/),
    });
    const audit = await s3.send(new GetObjectCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET!, Key: `deployments/${s.pipeline}/d-old/release.json` }));
    expect(JSON.parse(await audit.Body!.transformToString())).toMatchObject({ deploymentId: 'd-old', ok: true });
  });

  it('a second release changes nothing, and status shows the latest usable restore point', async () => {
    const r = await s.cli('release', '--local', '--json', '--now', later());
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as ReleaseSummary).released).toEqual([]);
    const status = JSON.parse((await s.cli('status', s.pipeline, '--local', '--json')).stdout) as PipelineStatus;
    expect(status.latestDeployment?.deploymentId).toBe('d-failed');
    expect(status.lastRun?.status).toBe('FAILED');
    expect(status.lastRun?.partial).toBe(true);
  });

  it('refuses a --now that is not a time (exit 2)', async () => {
    expect((await s.cli('release', '--local', '--now', 'tomorrow')).code).toBe(2);
  });
});
