import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GlueClient } from '@aws-sdk/client-glue';
import { CreateDBInstanceCommand, DescribeDBInstancesCommand, RDSClient, type DBInstance } from '@aws-sdk/client-rds';
import { rdsInstanceAdapter } from '../../core/adapters/rds-instance.ts';
import { runShort, TAG, tagMap } from '../../core/adapters/rds/names.ts';
import { isoUtc } from '../../core/adapters/rds/window.ts';
import type { AdapterContext, RestorePoint } from '../../core/adapters/types.ts';
import { ensureLedgerTable, Ledger } from '../../core/ledger/ledger.ts';
import { postgresTableAdapter } from '../../core/adapters/postgres-table.ts';
import { temporaryIdentifier } from '../../core/adapters/rds/temporary-copy.ts';
import { postgresTableUnitSchema, rdsInstanceUnitSchema } from '../../core/manifest/schema.ts';
import { mysqlConnector, postgresConnector, type PostgresConnector } from '../../core/runtime/connections.ts';
import type { Connection } from '../../core/manifest/schema.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';
import type { RunReport } from '../../core/report/report.ts';
import { ensureStateBucket, StateStore, stateKeys } from '../../core/runtime/state-store.ts';
import { testS3, uniqueName } from '../support/aws.ts';

// The point an RDS unit's asOf resolves, put in a derived deployment (`at-<time>`, as the plan of a `--to` rollback
// makes it), rolled back by the ordinary staged state machine with the real handlers: restore pends and polls through
// the Wait loop, the point-in-time copy is swapped in (an RDS unit) or read and merged (a table unit), the gate verifies
// it. moto's RDS makes instances available at once; for the table, a second local database stands in for the
// point-in-time copy (moto's endpoints do not resolve): the connector's connectTo opens it.

process.env.ETL_ROLLBACK_LEDGER_TABLE = uniqueName('ledger');
process.env.ETL_ROLLBACK_STATE_BUCKET = uniqueName('state');

const NO_WAITS = { 'Wait for capture': 0, 'Wait for restore': 0 };
const rds = new RDSClient({});

async function instance(id: string): Promise<DBInstance | undefined> {
  try {
    return (await rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: id }))).DBInstances?.[0];
  } catch (error) {
    if ((error as Error).name === 'DBInstanceNotFoundFault') return undefined;
    throw error;
  }
}

describe('--to an RDS instance: a derived deployment rolled back by the staged state machine', () => {
  const pipeline = uniqueName('ledgerapp');
  const instanceId = uniqueName('ledger-db');
  let runLocal: typeof import('../../cli/local-runner.ts').runLocal;

  beforeAll(async () => {
    await ensureLedgerTable(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    await ensureStateBucket(testS3(), process.env.ETL_ROLLBACK_STATE_BUCKET!);
    ({ runLocal } = await import('../../cli/local-runner.ts'));
    await rds.send(
      new CreateDBInstanceCommand({ DBInstanceIdentifier: instanceId, Engine: 'postgres', DBInstanceClass: 'db.t3.small', AllocatedStorage: 30, MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', BackupRetentionPeriod: 7 }),
    );
  });

  it('restores to the time, swaps, verifies; the original is kept as -pre-rollback-<run>', async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const at = new Date(Date.now() - 100);
    const deploymentId = `at-${isoUtc(new Date(Math.floor(at.getTime() / 1000) * 1000)).replace(/[-:]/g, '')}`;
    const manifest = { pipeline, units: [{ id: 'db', type: 'rds-instance', instanceId }] };
    const s3 = testS3();
    const ctx: AdapterContext = {
      pipeline,
      deploymentId,
      s3,
      rds,
      glue: new GlueClient({}),
      stateBucket: process.env.ETL_ROLLBACK_STATE_BUCKET!,
      postgres: { connect: () => Promise.reject(new Error('unused')) },
      mysql: { connect: () => Promise.reject(new Error('unused')) },
      retentionDays: 14,
      now: () => new Date(),
      log: { info: () => undefined, warn: () => undefined },
    };
    const { point } = await rdsInstanceAdapter.asOf!(rdsInstanceUnitSchema.parse(manifest.units[0]), at, ctx);

    // The derived deployment, as the plan of a `--to` rollback records it.
    const manifestKey = stateKeys.manifest(pipeline, deploymentId);
    await new StateStore(s3, process.env.ETL_ROLLBACK_STATE_BUCKET!).putJson(manifestKey, manifest);
    const ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    await ledger.registerDeployment({ pipeline, deploymentId, manifestKey, units: ['db'], origin: { kind: 'time', at: isoUtc(at) } });
    await ledger.putRestorePoint(pipeline, deploymentId, point as unknown as RestorePoint);
    await ledger.setDeploymentStatus(pipeline, deploymentId, 'READY');

    const runId = uniqueName('run-to');
    const out = await runLocal('rollback', { pipeline, deploymentId }, { name: runId, waitTimeOverrides: NO_WAITS });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    const report = (out as { output: RunReport }).output;
    expect(report.stages.map((st) => st.status)).toEqual(['VERIFIED']);
    expect(report.stages[0]!.units[0]!.keptAt).toBe(`DB instance ${instanceId}-pre-rollback-${runShort(runId)}`);

    const live = (await instance(instanceId))!;
    expect(tagMap(live.TagList)).toMatchObject({ [TAG.restoredFrom]: `pitr:${isoUtc(at)}`, [TAG.run]: runId });
    expect(live).toMatchObject({ DBInstanceClass: 'db.t3.small', AllocatedStorage: 30, DBInstanceStatus: 'available' });
    expect((await instance(`${instanceId}-pre-rollback-${runShort(runId)}`))!.DeletionProtection).toBe(true);
  });
});

describe('--to a postgres-table scope: a derived deployment rolled back by the staged state machine', () => {
  const pipeline = uniqueName('orderstime');
  const sourceId = uniqueName('orders-src');
  let prod: TestDatabase;
  let atT: TestDatabase;
  let runLocal: typeof import('../../cli/local-runner.ts').runLocal;
  /** The real connector (its rdsOf reads the manifest's `rds`), whose connectTo reaches the stand-in for the copy. */
  const connectors = {
    postgres: (connections: Record<string, Connection>): PostgresConnector => ({
      ...postgresConnector(connections),
      connectTo: async () => {
        const c = new pg.Client({ connectionString: atT.url, application_name: 'etl-rollback' });
        await c.connect();
        return c;
      },
    }),
  };

  beforeAll(async () => {
    ({ runLocal } = await import('../../cli/local-runner.ts'));
    prod = await createTestDatabase('etlrb_to');
    atT = await createTestDatabase('etlrb_to_pitr');
    await rds.send(
      new CreateDBInstanceCommand({ DBInstanceIdentifier: sourceId, Engine: 'postgres', DBInstanceClass: 'db.t3.small', AllocatedStorage: 20, MasterUsername: 'etl', MasterUserPassword: 'not-a-secret-1', BackupRetentionPeriod: 3 }),
    );
  });
  afterAll(async () => {
    await atT?.drop();
    await prod?.drop();
  });

  it('reads the scope at T from the copy, merges only the differing rows, verifies, deletes the copy', async () => {
    for (const db of [prod, atT]) {
      const c = await db.client();
      await c.query(`CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, amount numeric(10,2))`);
      await c.query(`INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 60) g`);
    }
    const sql = await prod.client();
    await sql.query(`UPDATE orders SET amount = 0 WHERE id IN (3, 4, 6)`); // 3 and 6 in scope, 4 outside
    await sql.query(`DELETE FROM orders WHERE id = 9`);
    await new Promise((r) => setTimeout(r, 1100));
    const at = new Date(Date.now() - 100);
    const deploymentId = 'at-20261129T093000Z';
    const manifest = {
      pipeline,
      connections: { warehouse: { engine: 'postgres', url: prod.url, rds: { instanceId: sourceId } } },
      units: [{ id: 'orders-eu', type: 'postgres-table', connection: 'warehouse', table: 'orders', where: `region = 'eu'` }],
    };
    const s3 = testS3();
    const ctx: AdapterContext = {
      pipeline,
      deploymentId,
      s3,
      rds,
      glue: new GlueClient({}),
      stateBucket: process.env.ETL_ROLLBACK_STATE_BUCKET!,
      postgres: connectors.postgres({ warehouse: { engine: 'postgres', url: prod.url, rds: { instanceId: sourceId } } }),
      mysql: { connect: () => Promise.reject(new Error('unused')) },
      retentionDays: 14,
      now: () => new Date(),
      log: { info: () => undefined, warn: () => undefined },
    };
    const { point } = await postgresTableAdapter.asOf!(postgresTableUnitSchema.parse(manifest.units[0]), at, ctx);
    const manifestKey = stateKeys.manifest(pipeline, deploymentId);
    await new StateStore(s3, process.env.ETL_ROLLBACK_STATE_BUCKET!).putJson(manifestKey, manifest);
    const ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
    await ledger.registerDeployment({ pipeline, deploymentId, manifestKey, units: ['orders-eu'], origin: { kind: 'time', at: isoUtc(at) } });
    await ledger.putRestorePoint(pipeline, deploymentId, point as unknown as RestorePoint);
    await ledger.setDeploymentStatus(pipeline, deploymentId, 'READY');

    const outside = (await sql.query(`SELECT * FROM orders WHERE region <> 'eu' ORDER BY id`)).rows;
    const runId = uniqueName('run-to-pg');
    const out = await runLocal('rollback', { pipeline, deploymentId }, { name: runId, waitTimeOverrides: NO_WAITS, deps: { connectors: { postgres: connectors.postgres, mysql: mysqlConnector } } });
    expect(out.status, JSON.stringify(out)).toBe('SUCCEEDED');
    const report = (out as { output: RunReport }).output;
    expect(report.stages.map((st) => st.status)).toEqual(['VERIFIED']);
    expect(report.stages[0]!.units[0]!.changes).toMatchObject({ dbInstancesRestoredToPointInTime: 1, rowsExtracted: 20, rowsUpdated: 2, rowsInserted: 1, temporaryCopiesDeleted: 1 });

    const atTSql = await atT.client();
    expect((await sql.query(`SELECT * FROM orders WHERE region = 'eu' ORDER BY id`)).rows).toEqual((await atTSql.query(`SELECT * FROM orders WHERE region = 'eu' ORDER BY id`)).rows);
    expect((await sql.query(`SELECT * FROM orders WHERE region <> 'eu' ORDER BY id`)).rows).toEqual(outside);
    expect(await instance(temporaryIdentifier({ instanceId: sourceId }, runId, 'orders-eu'))).toBeUndefined();
    expect((await instance(sourceId))!.DBInstanceStatus).toBe('available');
  });
});
