import type mysql from 'mysql2/promise';
import { GlueClient } from '@aws-sdk/client-glue';
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
    glue: new GlueClient({ region: 'us-east-1' }),
    stateBucket: 'unused-by-mysql-table',
    postgres: { connect: () => Promise.reject(new Error('this adapter must not open PostgreSQL connections')) },
    mysql: ids.mysql,
    retentionDays: 14,
    now: () => new Date('2024-05-01T12:00:00.000Z'),
    log: { info: () => undefined, warn: () => undefined },
  };
}

/**
 * Every row of `database.table` (those matching `where`) as text, binary values in hex and NULL unquoted, sorted:
 * equal arrays mean equal tables, duplicates included.
 */
export async function mysqlRows(conn: mysql.Connection, database: string, table: string, where = 'TRUE'): Promise<string[]> {
  const [cols] = await conn.query<mysql.RowDataPacket[]>(
    'SELECT COLUMN_NAME AS c, DATA_TYPE AS t FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
    [database, table],
  );
  const binary = /binary|blob|bit|geometry/i;
  const q = (name: unknown) => `\`${String(name).replace(/`/g, '``')}\``;
  const fields = cols.map(({ c, t }) => (binary.test(String(t)) ? `IFNULL(CONCAT('0x', HEX(${q(c)})), 'NULL')` : `QUOTE(${q(c)})`));
  const [rows] = await conn.query<mysql.RowDataPacket[]>(`SELECT CONCAT_WS(',', ${fields.join(', ')}) AS r FROM ${q(database)}.${q(table)} WHERE ${where} ORDER BY CAST(r AS BINARY)`);
  return rows.map((r) => String(r.r));
}
