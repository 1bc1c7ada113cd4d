import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ListObjectVersionsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Context } from 'aws-lambda';
import { Ledger } from '../../core/ledger/ledger.ts';
import type { RunReport } from '../../core/report/report.ts';
import { uniqueName } from '../support/aws.ts';
import { badDeploy, createScenario, type Scenario } from '../support/scenario.ts';

// This file's own ledger table and state bucket (the handlers read them at first import).
process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

/**
 * A drill never stands in the way of a real rollback: it does not take the pipeline's lock, it yields when a rollback
 * or snapshot holds it, and a rollback started while a drill runs goes through.
 */
describe('drills and the pipeline lock: a real incident wins', () => {
  let s: Scenario;
  let ledger: Ledger;
  let runLocal: typeof import('../../cli/local-runner.ts').runLocal;
  let verifyDrillStage: typeof import('../../lambdas/verify-drill-stage.ts').handler;
  const deployment = 'd-lock';

  beforeAll(async () => {
    s = await createScenario();
    expect((await s.cli('snapshot', s.manifestPath, '--deployment', deployment, '--local')).code).toBe(0);
    await badDeploy(s);
    ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    ({ runLocal } = await import('../../cli/local-runner.ts'));
    ({ handler: verifyDrillStage } = await import('../../lambdas/verify-drill-stage.ts'));
  });
  afterAll(async () => s?.drop());

  it('a drill started while a rollback holds the lock yields with exit 3, makes nothing and leaves the lock alone', async () => {
    await ledger.acquireLock(s.pipeline, 'rollback-held-by-an-incident', deployment, 600);
    try {
      const r = await s.cli('drill', s.manifestPath, '--deployment', deployment, '--local', '--json');
      expect(r.code, r.stderr).toBe(3);
      const out = JSON.parse(r.stdout) as { error: string; cause: string; report: RunReport };
      expect(out.error).toBe('DrillYieldedError');
      expect(out.cause).toContain('rollback-held-by-an-incident');
      expect(out.report.status).toBe('REFUSED');
      expect((await ledger.getLock(s.pipeline))?.holder).toBe('rollback-held-by-an-incident');
      expect((await s.sql.query("SELECT 1 FROM pg_namespace WHERE nspname LIKE 'etl_rollback_drill_%'")).rowCount).toBe(0);
    } finally {
      await ledger.releaseLock(s.pipeline, 'rollback-held-by-an-incident');
    }
  });

  it('a rollback that starts while a drill runs is not refused; the drill stops at its next step and removes its scratch targets', async () => {
    let locked = false;
    const name = `drill-${s.pipeline}-${Date.now()}`;
    const out = await runLocal('drill', { pipeline: s.pipeline, deploymentId: deployment }, {
      name,
      handlers: {
        // After stage 1 (mart) is rehearsed and verified, an incident: a rollback takes the lock before stage 2 starts.
        VerifyDrillStage: async (event: unknown, context: Context) => {
          const result = await verifyDrillStage(event, context);
          await ledger.acquireLock(s.pipeline, 'rollback-incident', deployment, 600);
          locked = true;
          return result;
        },
      },
    });
    expect(locked).toBe(true);
    expect(out).toMatchObject({ status: 'FAILED', error: 'DrillYieldedError' });
    await ledger.releaseLock(s.pipeline, 'rollback-incident');
    // The drill held no lock: the real rollback runs and succeeds.
    const rollback = await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local');
    expect(rollback.code, rollback.stderr).toBe(0);
    const stored = await s.s3.send(new ListObjectVersionsCommand({ Bucket: process.env.ETL_ROLLBACK_STATE_BUCKET, Prefix: `drills/${name}/` }));
    expect([...(stored.Versions ?? []), ...(stored.DeleteMarkers ?? [])]).toEqual([]);
    expect((await s.sql.query("SELECT 1 FROM pg_namespace WHERE nspname LIKE 'etl_rollback_drill_%'")).rowCount).toBe(0);
  });

  it('a drill and a rollback at the same time: the rollback is never refused because of the drill', async () => {
    await badDeploy(s);
    let rollbackCode: number | undefined;
    const name = `drill-${s.pipeline}-${Date.now()}-b`;
    const out = await runLocal('drill', { pipeline: s.pipeline, deploymentId: deployment }, {
      name,
      handlers: {
        // The whole rollback runs between two steps of the drill (the drill's first gate and its next stage).
        VerifyDrillStage: async (event: unknown, context: Context) => {
          const result = await verifyDrillStage(event, context);
          if (rollbackCode === undefined) rollbackCode = (await s.cli('rollback', s.manifestPath, '--deployment', deployment, '--local')).code;
          return result;
        },
      },
    });
    expect(rollbackCode).toBe(0);
    // The rollback released its lock before the drill's next step: the drill went on and passed.
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    expect((await s.rows('staging.orders')).length).toBe(500);
  });
});
