import mysql from 'mysql2/promise';
import pg from 'pg';
import { startMoto, type MotoServer } from '../../scripts/local-services.ts';
import { MYSQL_ADMIN_URL } from './mysql.ts';
import { POSTGRES_ADMIN_URL } from './postgres.ts';

/**
 * One moto server for the whole test run. Its endpoint reaches the code under test the way it would in
 * production: through the SDK's standard AWS_ENDPOINT_URL. Tests keep apart by unique bucket/table names.
 */
let moto: MotoServer | undefined;

export async function setup(): Promise<void> {
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL, connectionTimeoutMillis: 5000 });
  try {
    await admin.connect();
  } catch (error) {
    throw new Error(`the tests need PostgreSQL at ${POSTGRES_ADMIN_URL} (user postgres, trust auth): ${(error as Error).message}`, { cause: error });
  } finally {
    await admin.end().catch(() => undefined);
  }
  const url = new URL(MYSQL_ADMIN_URL.replace(/^mariadb:/, 'mysql:'));
  try {
    const c = await mysql.createConnection({ host: url.hostname, port: Number(url.port || 3306), user: decodeURIComponent(url.username), connectTimeout: 5000 });
    await c.end();
  } catch (error) {
    throw new Error(`the tests need MySQL/MariaDB at ${url.host} (user ${url.username}, no password): ${(error as Error).message}`, { cause: error });
  }
  moto = await startMoto();
  process.env.AWS_ENDPOINT_URL = moto.endpoint;
  process.env.AWS_REGION = 'us-east-1';
  process.env.AWS_ACCESS_KEY_ID = 'testing';
  process.env.AWS_SECRET_ACCESS_KEY = 'testing';
  process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE = 'true';
  process.env.POWERTOOLS_DEV = 'false';
  process.env.POWERTOOLS_LOG_LEVEL = process.env.POWERTOOLS_LOG_LEVEL ?? 'SILENT';
  process.env.POWERTOOLS_METRICS_DISABLED = 'true';
}

export async function teardown(): Promise<void> {
  await moto?.stop();
}
