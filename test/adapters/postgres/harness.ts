import pg from 'pg';
import type { z } from 'zod';
import { S3Client } from '@aws-sdk/client-s3';
import { GlueClient } from '@aws-sdk/client-glue';
import { RDSClient } from '@aws-sdk/client-rds';
import type { PostgresTableDetails } from '../../../core/adapters/postgres-table.ts';
import type { AdapterContext, RestorePoint } from '../../../core/adapters/types.ts';
import { postgresTableUnitSchema, type PostgresTableUnit } from '../../../core/manifest/schema.ts';
import type { PostgresConnector } from '../../../core/runtime/connections.ts';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.ts';

/** One database per test file, a client on it, and the adapter's context and unit builders. */
export interface PgHarness {
  db: TestDatabase;
  sql: pg.Client;
  connector: PostgresConnector;
  /** Writes counted by PostgreSQL inside each adapter transaction, read just before its COMMIT. */
  commits: { table: string; ins: number; upd: number; del: number }[];
  ctx(deploymentId: string, runId?: string): AdapterContext;
  unit(fields: Partial<z.input<typeof postgresTableUnitSchema>> & { id: string; table: string }): PostgresTableUnit;
  rowsOf(relation: string): Promise<string[]>;
  xminByKey(table: string, key?: string): Promise<Map<string, string>>;
  writesTo(table: string): { ins: number; upd: number; del: number };
  checksOk(adapter: { verify(u: PostgresTableUnit, p: RestorePoint<PostgresTableDetails>, c: AdapterContext): Promise<{ ok: boolean }[]> }, u: PostgresTableUnit, p: RestorePoint<PostgresTableDetails>, c: AdapterContext): Promise<boolean>;
}

export async function pgHarness(prefix: string, watch: string[] = []): Promise<PgHarness> {
  const db = await createTestDatabase(prefix);
  const sql = await db.client();
  const commits: PgHarness['commits'] = [];
  // A connector whose clients, just before each COMMIT, read pg_stat_xact_user_tables for the watched tables: the
  // rows that transaction inserted, updated and deleted, as PostgreSQL counted them (summed over partitions).
  const connector: PostgresConnector = {
    async connect() {
      const client = new pg.Client({ connectionString: db.url, application_name: 'etl-rollback' });
      await client.connect();
      const query = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>;
      (client as unknown as { query: unknown }).query = async (...args: unknown[]) => {
        if (args[0] === 'COMMIT') {
          for (const table of watch) {
            const { rows } = await query(
              `SELECT coalesce(sum(n_tup_ins), 0)::int AS ins, coalesce(sum(n_tup_upd), 0)::int AS upd, coalesce(sum(n_tup_del), 0)::int AS del
                 FROM pg_stat_xact_user_tables
                WHERE relid IN (SELECT relid FROM pg_partition_tree(to_regclass($1)) UNION SELECT to_regclass($1))`,
              [table],
            );
            const r = rows[0] as { ins: number; upd: number; del: number };
            if (r.ins + r.upd + r.del > 0) commits.push({ table, ...r });
          }
        }
        return query(...args);
      };
      return client;
    },
  };
  return {
    db,
    sql,
    connector,
    commits,
    ctx: (deploymentId, runId = `run-${deploymentId}`) => ({
      pipeline: 'sales',
      deploymentId,
      runId,
      s3: new S3Client({ region: 'us-east-1' }),
      rds: new RDSClient({ region: 'us-east-1' }),
      glue: new GlueClient({ region: 'us-east-1' }),
      stateBucket: 'unused-by-postgres-table',
      postgres: connector,
      mysql: { connect: () => Promise.reject(new Error('this adapter must not open MySQL connections')) },
      retentionDays: 14,
      now: () => new Date('2024-05-01T12:00:00.000Z'),
      log: { info: () => undefined, warn: () => undefined },
    }),
    unit: (fields) => postgresTableUnitSchema.parse({ type: 'postgres-table', connection: 'warehouse', ...fields }),
    async rowsOf(relation) {
      const { rows } = await sql.query<{ r: string }>(`SELECT t::text AS r FROM ${relation} AS t ORDER BY 1`);
      return rows.map((r) => r.r);
    },
    async xminByKey(table, key = 'id') {
      const { rows } = await sql.query<{ k: string; x: string }>(`SELECT ${key}::text AS k, xmin::text AS x FROM ${table}`);
      return new Map(rows.map((r) => [r.k, r.x]));
    },
    writesTo(table) {
      const last = commits.filter((c) => c.table === table).at(-1);
      return last ? { ins: last.ins, upd: last.upd, del: last.del } : { ins: 0, upd: 0, del: 0 };
    },
    async checksOk(adapter, u, p, c) {
      const checks = await adapter.verify(u, p, c);
      return checks.length > 0 && checks.every((ch) => ch.ok);
    },
  };
}
