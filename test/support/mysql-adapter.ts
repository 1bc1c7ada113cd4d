import { RDSClient } from '@aws-sdk/client-rds';
import { S3Client } from '@aws-sdk/client-s3';
import type { AdapterContext } from '../../core/adapters/types.ts';
import { mysqlTableUnitSchema, type MysqlTableUnit } from '../../core/manifest/schema.ts';
import type { MysqlConnector } from '../../core/runtime/connections.ts';

/** A mysql-table unit on the test connection `warehouse`, with any other fields given. */
export function mysqlUnit(id: string, table: string, extra: Record<string, unknown> = {}): MysqlTableUnit {
  return mysqlTableUnitSchema.parse({ id, type: 'mysql-table', connection: 'warehouse', table, ...extra });
}

/**
 * The context the mysql-table adapter runs in, for tests: a fixed clock, a silent log, and every client it must not
 * use either unused (S3, RDS) or failing loudly (PostgreSQL).
 */
export function mysqlAdapterContext(ids: { pipeline: string; deploymentId: string; runId?: string; mysql: MysqlConnector }): AdapterContext {
  return {
    pipeline: ids.pipeline,
    deploymentId: ids.deploymentId,
    runId: ids.runId ?? `run-${ids.deploymentId}`,
    s3: new S3Client({ region: 'us-east-1' }),
    rds: new RDSClient({ region: 'us-east-1' }),
    stateBucket: 'unused-by-mysql-table',
    postgres: { connect: () => Promise.reject(new Error('this adapter must not open PostgreSQL connections')) },
    mysql: ids.mysql,
    retentionDays: 14,
    now: () => new Date('2024-05-01T12:00:00.000Z'),
    log: { info: () => undefined, warn: () => undefined },
  };
}
