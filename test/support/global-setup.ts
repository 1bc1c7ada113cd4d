import mysql from 'mysql2/promise';
import pg from 'pg';
import { startMoto, type MotoServer } from '../../scripts/local-services.ts';
import { MYSQL_ADMIN_URL } from './mysql.ts';
import { POSTGRES_ADMIN_URL } from './postgres.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REQUEST_LOG_ENV, startVersionGuard, type VersionGuard } from './version-guard.ts';
import { FAULTS_ENDPOINT_ENV } from './aws.ts';

/**
 * One moto server for the whole test run. Its endpoint reaches the code under test the way it would in
 * production: through the SDK's standard AWS_ENDPOINT_URL. Tests keep apart by unique bucket/table names.
 *
 * A second one serves the fault matrix alone (FAULTS_ENDPOINT_ENV): moto answers on one core, and the matrix, which
 * runs for most of the test run beside every other file, would otherwise queue behind them at the same server.
 */
let moto: MotoServer | undefined;
let guard: VersionGuard | undefined;
let faultsMoto: MotoServer | undefined;
let faultsGuard: VersionGuard | undefined;


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
  [moto, faultsMoto] = await Promise.all([startMoto(), startMoto()]);
  faultsGuard = await startVersionGuard(faultsMoto.endpoint);
  process.env[FAULTS_ENDPOINT_ENV] = faultsGuard.endpoint;
  // Every AWS request goes through the version guard, which checks at the server that none destroys a data version.
  // ...and every mutating S3 request is logged, so a test can prove at the wire what it never wrote (drills).
  const requestLog = join(mkdtempSync(join(tmpdir(), 'etl-rollback-s3-log-')), 'requests.jsonl');
  guard = await startVersionGuard(moto.endpoint, { requestLog });
  process.env[REQUEST_LOG_ENV] = requestLog;
  process.env.AWS_ENDPOINT_URL = guard.endpoint;
  process.env.AWS_REGION = 'us-east-1';
  process.env.AWS_ACCESS_KEY_ID = 'testing';
  process.env.AWS_SECRET_ACCESS_KEY = 'testing';
  process.env.ETL_ROLLBACK_S3_FORCE_PATH_STYLE = 'true';
  process.env.POWERTOOLS_DEV = 'false';
  process.env.POWERTOOLS_LOG_LEVEL = process.env.POWERTOOLS_LOG_LEVEL ?? 'SILENT';
  process.env.POWERTOOLS_METRICS_DISABLED = 'true';
}

export async function teardown(): Promise<void> {
  const both = [guard?.stats(), faultsGuard?.stats()].filter((x) => x !== undefined);
  await guard?.stop();
  await faultsGuard?.stop();
  await faultsMoto?.stop();
  const requestLog = process.env[REQUEST_LOG_ENV];
  if (requestLog) rmSync(dirname(requestLog), { recursive: true, force: true });
  await moto?.stop();
  if (both.length === 0) return;
  const stats = {
    checked: both.reduce((n, x) => n + x.checked, 0),
    markers: both.reduce((n, x) => n + x.markers, 0),
    allowed: both.reduce((n, x) => n + x.allowed, 0),
    violations: both.flatMap((x) => x.violations),
  };
  console.log(
    `version guard: ${stats.checked} version deletion(s) checked at the server: ${stats.markers} delete marker(s) removed, ` +
      `${stats.allowed} data version(s) deleted on purpose (restore-point files, or tests marked as destroying), ${stats.violations.length} data version(s) destroyed`,
  );
  if (stats.violations.length > 0) {
    throw new Error(
      `a request destroyed ${stats.violations.length} data version(s) (only delete markers may be removed by version id):\n` +
        stats.violations.map((v) => `  s3://${v.bucket}/${v.key} version ${v.versionId}: ${v.request} (${v.userAgent})`).join('\n'),
    );
  }
}
