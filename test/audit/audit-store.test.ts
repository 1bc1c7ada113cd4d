import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectVersionsCommand, PutBucketPolicyCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunReport } from '../../core/report/report.ts';
import type { HistoryEntry, PipelineStatus } from '../../core/workflow/status.ts';
import { AUDIT_DENIED_ACTIONS } from '../../infra/constructs/audit.ts';
import { testS3, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table, state bucket and audit bucket (the handlers read them at first import). The CLI's
// --audit-bucket (here through ETL_ROLLBACK_AUDIT_BUCKET) creates the audit bucket with Object Lock on moto.
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');
const AUDIT = uniqueName('audit');
process.env.ETL_ROLLBACK_AUDIT_BUCKET = AUDIT;

const DAY = 86_400_000;

describe('audit store: every run writes its report (JSON and Markdown) to an Object Lock bucket (moto)', () => {
  let s: Scenario;
  const s3 = testS3();
  const deployment = 'd-audit';
  let runId: string;

  beforeAll(async () => {
    s = await createScenario();
    const snap = await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local', '--requested-by', 'ci', '--reason', 'release 1.2');
    expect(snap.code, snap.stderr).toBe(0);
    await badDeploy(s);
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--requested-by', 'jane', '--reason', 'mart totals doubled');
    expect(r.code, r.stderr).toBe(0);
    runId = (JSON.parse(r.stdout) as { report: RunReport }).report.runId;
  });
  afterAll(async () => s?.drop());

  it('lands the report as JSON and Markdown under reports/<pipeline>/<runId>, each with Object Lock retention', async () => {
    const started = Date.now();
    for (const [ext, type] of [
      ['json', 'application/json'],
      ['md', 'text/markdown'],
    ] as const) {
      const key = `reports/${s.pipeline}/${runId}.${ext}`;
      // moto has no GetObjectRetention: the lock is read from HeadObject (as in AWS, for a caller allowed to see it).
      const head = await s3.send(new HeadObjectCommand({ Bucket: AUDIT, Key: key }));
      expect(head.ContentType).toContain(type);
      expect(head.ObjectLockMode).toBe('GOVERNANCE');
      const until = head.ObjectLockRetainUntilDate!.getTime();
      expect(until).toBeGreaterThan(started + 364 * DAY);
      expect(until).toBeLessThan(started + 366 * DAY);
    }
    const json = JSON.parse(await (await s3.send(new GetObjectCommand({ Bucket: AUDIT, Key: `reports/${s.pipeline}/${runId}.json` }))).Body!.transformToString()) as RunReport;
    expect(json).toMatchObject({ runId, pipeline: s.pipeline, deploymentId: deployment, status: 'SUCCEEDED', requestedBy: 'jane', reason: 'mart totals doubled', partial: false });
    // Per-stage timing, from the steps.
    for (const stage of json.stages) {
      expect(Date.parse(stage.endedAt!)).toBeGreaterThanOrEqual(Date.parse(stage.startedAt!));
      expect(stage.durationMs).toBeGreaterThanOrEqual(0);
    }
    const md = await (await s3.send(new GetObjectCommand({ Bucket: AUDIT, Key: `reports/${s.pipeline}/${runId}.md` }))).Body!.transformToString();
    expect(md).toContain(`# Rollback of ${s.pipeline.replace(/_/g, '\\_')} / ${deployment.replace(/_/g, '\\_')}: SUCCEEDED`);
    expect(md).toContain('| requested by | jane |');
    expect(md).toMatch(/## Stage 1: VERIFIED\n\n\d{4}-\d\d-\d\dT.* → .* \(\d+\.\d s\)/);
    expect(md).toContain('| staging | postgres-table | VERIFIED | rowsInserted 2, rowsUpdated 3, rowsDeleted 2');
  });

  it("writes the snapshot's summary per deployment, locked too", async () => {
    const key = `deployments/${s.pipeline}/${deployment}/snapshot.json`;
    const head = await s3.send(new HeadObjectCommand({ Bucket: AUDIT, Key: key }));
    expect(head.ObjectLockMode).toBe('GOVERNANCE');
    const summary = JSON.parse(await (await s3.send(new GetObjectCommand({ Bucket: AUDIT, Key: key }))).Body!.transformToString());
    expect(summary).toMatchObject({ pipeline: s.pipeline, deploymentId: deployment, status: 'READY' });
    expect(Object.fromEntries((summary.points as { unitId: string; count: number }[]).map((p) => [p.unitId, p.count]))).toEqual({ raw: 4, staging: 500, mart: 5 });
  });

  it('a locked report version cannot be deleted, and a rewrite makes a new version beside it (moto enforces DeleteObject by version)', async () => {
    const key = `reports/${s.pipeline}/${runId}.json`;
    const original = await (await s3.send(new GetObjectCommand({ Bucket: AUDIT, Key: key }))).Body!.transformToString();
    const [version] = (await s3.send(new ListObjectVersionsCommand({ Bucket: AUDIT, Prefix: key }))).Versions ?? [];
    await expect(s3.send(new DeleteObjectCommand({ Bucket: AUDIT, Key: key, VersionId: version!.VersionId }))).rejects.toMatchObject({ name: 'AccessDenied' });

    // "Overwriting" a key of a versioned bucket adds a version; the locked one keeps its bytes.
    await s3.send(new PutObjectCommand({ Bucket: AUDIT, Key: key, Body: '{"tampered":true}' }));
    const versions = (await s3.send(new ListObjectVersionsCommand({ Bucket: AUDIT, Prefix: key }))).Versions ?? [];
    expect(versions).toHaveLength(2);
    const kept = await (await s3.send(new GetObjectCommand({ Bucket: AUDIT, Key: key, VersionId: version!.VersionId }))).Body!.transformToString();
    expect(kept).toBe(original);
    await expect(s3.send(new DeleteObjectCommand({ Bucket: AUDIT, Key: key, VersionId: version!.VersionId }))).rejects.toMatchObject({ name: 'AccessDenied' });
  });

  it("the stack's bucket-policy Deny (the same actions) refuses deletes and retention changes, and still lets reports in", async () => {
    // moto 5.2.5 evaluates a bucket policy's Deny but not its Principal (seen: the Deny applies to every caller), so the
    // statement is put here without a principal condition that could not be checked; the template test proves that the
    // stack names exactly the run roles. Object Lock alone on moto does not stop DeleteObjects or a shortened retention.
    await s3.send(
      new PutBucketPolicyCommand({
        Bucket: AUDIT,
        Policy: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Sid: 'RunRolesNeverDeleteOrShortenRetention', Effect: 'Deny', Principal: { AWS: '*' }, Action: AUDIT_DENIED_ACTIONS, Resource: [`arn:aws:s3:::${AUDIT}`, `arn:aws:s3:::${AUDIT}/*`] }],
        }),
      }),
    );
    const key = `reports/${s.pipeline}/${runId}.md`;
    await expect(s3.send(new DeleteObjectCommand({ Bucket: AUDIT, Key: key }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 403 } });
    await s3.send(new PutObjectCommand({ Bucket: AUDIT, Key: `reports/${s.pipeline}/extra.json`, Body: '{}' }));
    const r = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local', '--json', '--dry-run');
    expect(r.code, r.stderr).toBe(0);
    const dry = (JSON.parse(r.stdout) as { report: RunReport }).report;
    expect((await s3.send(new HeadObjectCommand({ Bucket: AUDIT, Key: `reports/${s.pipeline}/${dry.runId}.md` }))).ObjectLockMode).toBe('GOVERNANCE');
  });

  it('status: lock, latest deployment with its restore points, last run, time since the last restore point', async () => {
    const r = await s.cli('status', s.pipeline, '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const status = JSON.parse(r.stdout) as PipelineStatus;
    expect(status.lock).toBeUndefined();
    expect(status.latestDeployment).toMatchObject({ deploymentId: deployment, status: 'ROLLED_BACK', requestedBy: 'ci', reason: 'release 1.2' });
    expect(status.latestDeployment!.restorePoints.map((p) => [p.unitId, p.count])).toEqual([
      ['mart', 5],
      ['raw', 4],
      ['staging', 500],
    ]);
    expect(status.lastRun).toMatchObject({ deploymentId: deployment, dryRun: true, status: 'DRY_RUN' });
    expect(status.secondsSinceLastRestorePoint).toBeGreaterThanOrEqual(0);
    expect(status.secondsSinceLastRestorePoint).toBeLessThan(600);

    const text = await s.cli('status', s.pipeline, '--local');
    expect(text.stdout).toContain('lock: free');
    expect(text.stdout).toMatch(/staging \(postgres-table\): 500 rows, captured /);
  });

  it('history: deployments and runs newest first, with who, why, result and writes, from the run index', async () => {
    const r = await s.cli('history', s.pipeline, '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const { entries } = JSON.parse(r.stdout) as { entries: HistoryEntry[] };
    expect(entries.map((e) => [e.kind, e.result])).toEqual([
      ['run', 'DRY_RUN'],
      ['run', 'SUCCEEDED'],
      ['deployment', 'ROLLED_BACK'],
    ]);
    expect(entries[1]).toMatchObject({ runId, who: 'jane', why: 'mart totals doubled', dryRun: false, trigger: { kind: 'manual' } });
    const text = (await s.cli('history', s.pipeline, '--local')).stdout;
    expect(text).toContain('(started by hand)');
    expect(entries[1]!.writes).toBeGreaterThan(7);
    expect(entries[2]).toMatchObject({ who: 'ci', why: 'release 1.2' });
    const limited = JSON.parse((await s.cli('history', s.pipeline, '--local', '--json', '--limit', '1')).stdout) as { entries: HistoryEntry[] };
    expect(limited.entries).toHaveLength(1);
  });

  it('status and history of an unknown pipeline, or a bad --limit, exit 2', async () => {
    expect((await s.cli('status', 'no-such-pipeline', '--local')).code).toBe(2);
    expect((await s.cli('history', 'no-such-pipeline', '--local')).code).toBe(2);
    expect((await s.cli('history', s.pipeline, '--local', '--limit', '0')).code).toBe(2);
  });
});
