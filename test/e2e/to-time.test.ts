import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PutBucketLifecycleConfigurationCommand } from '@aws-sdk/client-s3';
import { GlueClient } from '@aws-sdk/client-glue';
import { RDSClient } from '@aws-sdk/client-rds';
import { main } from '../../cli/main.ts';
import { loadManifestFile } from '../../core/manifest/load.ts';
import { deriveDeploymentAt } from '../../core/workflow/as-of.ts';
import type { WorkflowDeps } from '../../core/workflow/deps.ts';
import { Ledger } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { rollbackRequestSchema } from '../../core/workflow/requests.ts';
import { testDynamo, uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

interface RollbackJson {
  status: string;
  error?: string;
  cause?: string;
  report: RunReport;
}

/**
 * `rollback --to <time>` with no restore point ever taken: the bad deploy happens, then the prefix is rolled back to the
 * time before it through the rollback state machine (derived deployment at-…, resolved from the version history).
 */
describe('rollback --to a time, no restore point taken (state machine, handlers, moto)', () => {
  let s: Scenario;
  let before: Map<string, string>;
  let at: string;

  beforeAll(async () => {
    s = await createScenario();
    before = await s.objects();
    // T: after the seed, in an earlier second than the bad deploy (S3 history has one-second resolution).
    at = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 1000 - (Date.parse(at) % 1000) + 30));
    await badDeploy(s);
  });
  afterAll(async () => s?.drop());

  it('refuses bad input before touching anything: future time, no "Z", --deployment with --to, --to with --resume, no --yes without a terminal, units without history', async () => {
    const versions = await s.versionCounts();
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const cases: [string[], RegExp][] = [
      [['--to', future, '--units', 'raw', '--no-cascade', '--yes'], /--to: .* is in the future/],
      [['--to', '2026-11-29T09:30:00', '--units', 'raw', '--no-cascade', '--yes'], /--to "2026-11-29T09:30:00": must be an ISO-8601 UTC time with an explicit "Z"/],
      [['--to', '2026-11-29T09:30:00+01:00', '--yes'], /explicit "Z"/],
      [['--to', at, '--deployment', 'd-1', '--yes'], /give exactly one of --deployment <id> .* or --to/],
      [['--yes'], /give exactly one of --deployment <id> .* or --to/],
      [['--to', at, '--resume', 'run-1', '--yes'], /--resume run-1: do not give --to with it/],
      [['--to', at, '--units', 'raw', '--no-cascade'], /without a terminal to confirm .* give --yes/],
    ];
    for (const [args, message] of cases) {
      const r = await s.cli('rollback', s.manifestPath, ...args, '--local', '--json');
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
    // raw's consumers are PostgreSQL tables: a table is resolved from a point-in-time restore of the RDS instance or
    // cluster its connection names, and this manifest's connection names none, so --to with the cascade is refused by
    // the plan, naming the unit and the fix, before anything is restored.
    const r = await s.cli('rollback', s.manifestPath, '--to', at, '--units', 'raw', '--yes', '--local', '--json');
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as RollbackJson;
    expect(out.error).toBe('PreflightError');
    expect(out.cause).toMatch(/postgres-table unit "(staging|mart)": a rollback to a time reads the table from a point-in-time restore/);
    expect(out.cause).toMatch(/connection "\S+" does not name one\. Add "rds"/);
    expect(await s.versionCounts()).toEqual(versions);
  });

  it('the request schema: exactly one of deploymentId and toTime, an explicit UTC offset, the manifest only with a time', () => {
    const ok = (r: object) => rollbackRequestSchema.safeParse({ pipeline: 'orders', ...r }).success;
    expect(ok({ deploymentId: 'd-1' })).toBe(true);
    expect(ok({ toTime: '2026-11-29T09:30:00Z' })).toBe(true);
    expect(ok({ toTime: '2026-11-29T09:30:00.250+00:00', manifest: {} })).toBe(true);
    expect(ok({})).toBe(false);
    expect(ok({ deploymentId: 'd-1', toTime: '2026-11-29T09:30:00Z' })).toBe(false);
    expect(ok({ toTime: '2026-11-29T09:30:00' })).toBe(false);
    expect(ok({ toTime: '2026-02-30T09:30:00Z' })).toBe(false);
    expect(ok({ toTime: '2026-11-29T09:30:00Z', resume: 'r-1' })).toBe(false);
    expect(ok({ deploymentId: 'd-1', manifest: {} })).toBe(false);
  });

  it('a dry run shows what the prefix resolved to and what would change, and changes nothing', async () => {
    const versions = await s.versionCounts();
    const r = await s.cli('rollback', s.manifestPath, '--to', at, '--units', 'raw', '--no-cascade', '--dry-run', '--local', '--json');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as RollbackJson;
    const derived = `at-${at.slice(0, 19).replace(/[-:]/g, '')}Z`;
    expect(out.report.deploymentId).toBe(derived);
    const raw = out.report.stages.flatMap((st) => st.units).find((u) => u.unitId === 'raw')!;
    // The seed has 4 objects under raw/orders/; the bad deploy overwrote 2, deleted 1 and added 1.
    expect(raw.notes[0]).toBe(`s3://${s.bucket}/raw/orders/ as of ${at.slice(0, 19)}.000Z: 4 keys, 4 differ from now (2 back to an older version, 1 deleted since, 1 added since)`);
    expect(raw.notes[1]).toMatch(/^restorable window of s3:\/\/.*: \[since versioning was enabled, /);
    expect(raw.changes).toMatchObject({ objectsCopied: 2, deleteMarkersRemoved: 1, objectsDeleted: 1 });
    expect(await s.versionCounts()).toEqual(versions);
    // The derived deployment is in the ledger, from a time, READY, with a point for the unit.
    const ledger = new Ledger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    const d = await ledger.requireDeployment(s.pipeline, derived);
    expect(d.origin).toEqual({ kind: 'time', at: `${at.slice(0, 19)}.000Z` });
    expect(d.status).toBe('READY');
    expect((await ledger.listRestorePoints(s.pipeline, derived)).map((p) => [p.unitId, p.count])).toEqual([['raw', 4]]);
    // Not a deploy: an automatic trigger or a `latest` drill never takes it for the pipeline's latest deployment.
    expect(await ledger.latestDeployment(s.pipeline)).toBeUndefined();
  });

  it('a console input carries no manifest: it takes the latest deployment\'s, and with none (derived ones do not count) it is refused, naming the fix', async () => {
    const { runLocal } = await import('../../cli/local-runner.ts');
    const out = await runLocal('rollback', { pipeline: s.pipeline, toTime: at, units: ['raw'], cascade: false, dryRun: true }, { name: uniqueName('console') });
    expect(out.status).toBe('FAILED');
    if (out.status !== 'FAILED') return;
    expect(out.error).toBe('InputError');
    expect(out.cause).toContain(`pipeline "${s.pipeline}" has no deployment to take its manifest from: send the manifest with the request`);
  });

  it('on a terminal, --to shows what each unit resolved to and asks first; declined, nothing changes (exit 3)', async () => {
    const versions = await s.versionCounts();
    let out = '';
    let err = '';
    const asked: string[] = [];
    const code = await main(['rollback', s.manifestPath, '--to', at, '--units', 'raw', '--no-cascade', '--local'], {
      out: (t) => (out += `${t}\n`),
      err: (t) => (err += `${t}\n`),
      confirm: async (question) => {
        asked.push(question);
        return false;
      },
    });
    expect(code, err).toBe(3);
    expect(asked).toEqual([`roll back ${s.pipeline} to ${at.slice(0, 19)}.000Z as shown above? [y/N] `]);
    expect(out).toContain(`s3://${s.bucket}/raw/orders/ as of ${at.slice(0, 19)}.000Z: 4 keys, 4 differ from now`);
    expect(err).toContain('not confirmed: nothing was changed');
    expect(await s.versionCounts()).toEqual(versions);
  });

  it('rolls the prefix back to its state at the time, verified, with the replaced versions kept; a second run writes nothing', async () => {
    const damaged = await s.versionCounts();
    const r = await s.cli('rollback', s.manifestPath, '--to', at, '--units', 'raw', '--no-cascade', '--yes', '--local', '--json');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const out = JSON.parse(r.stdout) as RollbackJson;
    expect(out.report.status).toBe('SUCCEEDED');
    expect(out.report.stages.map((st) => [st.units.map((u) => u.unitId), st.status])).toEqual([[['raw'], 'VERIFIED']]);
    // The prefix (and its neighbour, untouched) read back equal to the state at T.
    expect(await s.objects()).toEqual(before);
    // Nothing lost: every key has at least as many versions and markers as before (the bad versions are noncurrent).
    const after = await s.versionCounts();
    for (const [key, n] of damaged) {
      if (key.startsWith('raw/orders/2026-11-02')) expect(after.get(key), key).toBe(n - 1); // uncovered: its delete marker removed
      else expect(after.get(key), key).toBeGreaterThanOrEqual(n);
    }
    const again = await s.cli('rollback', s.manifestPath, '--to', at, '--units', 'raw', '--no-cascade', '--yes', '--local', '--json');
    expect(again.code).toBe(0);
    expect((JSON.parse(again.stdout) as RollbackJson).report.totals.writes).toBe(0);
    expect(await s.versionCounts()).toEqual(after);
  });

  it('a derivation that crashed part-way (manifest written, point not stored) converges when run again: same point, READY', async () => {
    class CrashingLedger extends Ledger {
      crashes = 1;
      override async putRestorePoint(...args: Parameters<Ledger['putRestorePoint']>) {
        if (this.crashes-- > 0) throw new Error('crashed before the point was stored');
        return super.putRestorePoint(...args);
      }
    }
    const ledger = new CrashingLedger(testDynamo(), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    const deps: WorkflowDeps = {
      ledger,
      s3: s.s3,
      rds: new RDSClient({}),
      glue: new GlueClient({}),
      stateBucket: process.env.ETL_ROLLBACK_STATE_BUCKET!,
      now: () => new Date(),
      log: { info: () => undefined, warn: () => undefined },
    };
    const earlier = new Date(Date.parse(at) - 1000).toISOString();
    const request = { pipeline: s.pipeline, toTime: earlier, manifest: await loadManifestFile(s.manifestPath), units: ['raw'], cascade: false, requestedBy: 'test', reason: '' };
    await expect(deriveDeploymentAt(deps, request)).rejects.toThrow('crashed before the point was stored');
    const id = `at-${earlier.slice(0, 19).replace(/[-:]/g, '')}Z`;
    expect((await ledger.requireDeployment(s.pipeline, id)).status).toBe('SNAPSHOTTING');
    expect(await ledger.listRestorePoints(s.pipeline, id)).toEqual([]);
    const again = await deriveDeploymentAt(deps, request);
    const third = await deriveDeploymentAt(deps, request);
    expect(again.deploymentId).toBe(id);
    expect((await ledger.requireDeployment(s.pipeline, id)).status).toBe('READY');
    const points = await ledger.listRestorePoints(s.pipeline, id);
    expect(points).toHaveLength(1);
    // The same resolution (the window's end, "now", moves on; what the prefix held at the time does not).
    expect(third.resolutions[0]!.shows[0]).toBe(again.resolutions[0]!.shows[0]);
    expect(points[0]!.capturedAt).toBe(`${earlier.slice(0, 19)}.000Z`);
  });

  it('refuses a time before the lifecycle window, naming the window, and changes nothing', async () => {
    await s.s3.send(
      new PutBucketLifecycleConfigurationCommand({ Bucket: s.bucket, LifecycleConfiguration: { Rules: [{ ID: 'month', Status: 'Enabled', Filter: { Prefix: 'raw/' }, NoncurrentVersionExpiration: { NoncurrentDays: 30 } }] } }),
    );
    const versions = await s.versionCounts();
    const early = new Date(Date.now() - 40 * 86_400_000).toISOString();
    const r = await s.cli('rollback', s.manifestPath, '--to', early, '--units', 'raw', '--no-cascade', '--yes', '--local', '--json');
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as RollbackJson;
    expect(out.error).toBe('OutsideRestorableWindowError');
    expect(out.cause).toContain(`s3://${s.bucket}/raw/orders/ cannot be rolled back to ${early.slice(0, 19)}.000Z: its restorable window is [`);
    expect(out.cause).toContain('lifecycle rule "month" expires noncurrent versions after 30 day(s)');
    expect(await s.versionCounts()).toEqual(versions);
  });
});
