/**
 * Soak: N consecutive cycles (default 100) of snapshot → random damage → rollback, over one pipeline holding every
 * data unit type (an S3 prefix; a PostgreSQL table in copy mode and one in copy-on-write; the same two on MySQL),
 * with a random write of the run made to fail in about a third of the cycles (a snapshot write or a rollback write,
 * before it is done or after with the answer lost), as the fault matrix does (test/support/faults.ts). After every
 * cycle: the data equals the state at the snapshot, the deploy's rows are in the runs' quarantine tables, the ledger
 * calls no run SUCCEEDED whose data is not at its restore point, and no request destroyed an object version (checked
 * at the server by the version guard). The previous cycle's restore points are released as the daily job would.
 *
 *   npm run soak -- [--cycles 100] [--seed 42]
 *
 * Needs MariaDB/MySQL at 127.0.0.1:3306 (root, no password; TEST_MYSQL_URL to change); PostgreSQL is this machine's
 * or an embedded one. RDS units are left out: moto's RDS keeps no data, so a damage to undo cannot be made there (the
 * RDS adapters have their own tests against moto).
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { startMoto, startPostgres } from '../../scripts/local-services.ts';
import { FaultPlan, faultyMysql, faultyPostgres, pointName, withFaults, type When, type WritePoint } from '../support/faults.ts';
import { MYSQL_ADMIN_URL } from '../support/mysql.ts';
import { startVersionGuard } from '../support/version-guard.ts';

const { values } = parseArgs({ options: { cycles: { type: 'string', default: '100' }, seed: { type: 'string' } } });
const CYCLES = Number(values.cycles);
const SEED = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
if (!Number.isInteger(CYCLES) || CYCLES < 1 || !Number.isInteger(SEED)) {
  console.error('usage: npm run soak -- [--cycles N] [--seed S]  (N and S whole numbers, N >= 1)');
  process.exit(2);
}

/** mulberry32: a small seeded generator, so a run can be repeated with its seed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]! };
}
const random = rng(SEED);
const progress = (t: string) => process.stderr.write(`› ${t}\n`);

const root = new URL('../..', import.meta.url).pathname;
const moto = await startMoto(root);
const guard = await startVersionGuard(moto.endpoint);
Object.assign(process.env, {
  AWS_ENDPOINT_URL: guard.endpoint,
  AWS_REGION: 'us-east-1',
  AWS_ACCESS_KEY_ID: 'soak',
  AWS_SECRET_ACCESS_KEY: 'soak',
  ETL_ROLLBACK_S3_FORCE_PATH_STYLE: 'true',
  ETL_ROLLBACK_LEDGER_TABLE: 'etl-rollback-soak-ledger',
  ETL_ROLLBACK_STATE_BUCKET: 'etl-rollback-soak-state',
  POWERTOOLS_LOG_LEVEL: 'SILENT',
  POWERTOOLS_METRICS_DISABLED: 'true',
});
const postgres = await startPostgres();

const cleanups: (() => Promise<unknown>)[] = [];
async function cleanup() {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await guard.stop();
  await moto.stop();
  await postgres.stop();
}

const suffix = random.int(1e9).toString(36);
const pipeline = `soak-${suffix}`;
const bucket = `soak-lake-${suffix}`;
const s3 = new S3Client({ forcePathStyle: true });

// PostgreSQL: a database of its own.
const pgName = `soak_${suffix}`;
{
  const admin = new pg.Client({ connectionString: postgres.adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${pgName}`);
  await admin.end();
}
const pgUrl = postgres.adminUrl.replace(/\/[^/]*$/, `/${pgName}`);
const pgSql = new pg.Client({ connectionString: pgUrl });
pgSql.on('error', () => undefined);
await pgSql.connect();
cleanups.push(async () => {
  await pgSql.end();
  const admin = new pg.Client({ connectionString: postgres.adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${pgName} WITH (FORCE)`);
  await admin.query(`DO $$ DECLARE t text; BEGIN FOR t IN SELECT quote_ident(relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'etl_rollback' AND c.relkind = 'r' AND obj_description(c.oid, 'pg_class') LIKE '%"pipeline":"${pipeline}"%' LOOP EXECUTE 'DROP TABLE etl_rollback.' || t; END LOOP; END $$`).catch(() => undefined);
  await admin.end();
});

// MySQL/MariaDB: a database of its own.
const myName = `soak_${suffix}`;
const myAdminUrl = new URL(MYSQL_ADMIN_URL.replace(/^mariadb:/, 'mysql:'));
let mySql: mysql.Connection;
try {
  mySql = await mysql.createConnection({ host: myAdminUrl.hostname, port: Number(myAdminUrl.port || 3306), user: decodeURIComponent(myAdminUrl.username), password: decodeURIComponent(myAdminUrl.password), dateStrings: true });
} catch (error) {
  console.error(`soak: needs MySQL/MariaDB at ${myAdminUrl.host} (user ${myAdminUrl.username}): ${(error as Error).message}`);
  await cleanup();
  process.exit(2);
}
await mySql.query(`CREATE DATABASE \`${myName}\``);
await mySql.query(`USE \`${myName}\``);
cleanups.push(async () => {
  const [guards] = await mySql.query<mysql.RowDataPacket[]>(`SELECT DISTINCT TABLE_NAME AS t FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = 'etl_rollback' AND UNIQUE_CONSTRAINT_SCHEMA = ?`, [myName]);
  for (const g of guards) await mySql.query(`DROP TABLE IF EXISTS etl_rollback.\`${String(g.t)}\``);
  await mySql.query(`DROP DATABASE IF EXISTS \`${myName}\``);
  await mySql.end();
});
const myUrl = `${MYSQL_ADMIN_URL.replace(/\/+$/, '')}/${myName}`;

// The data.
const KEYS = Array.from({ length: 10 }, (_, i) => `raw/k${i}.csv`);
await s3.send(new CreateBucketCommand({ Bucket: bucket }));
await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
for (const k of KEYS) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: k, Body: `good ${k}` }));
const PG_TABLES = ['staging', 'journal'];
const MY_TABLES = ['carts', 'wallet'];
for (const t of PG_TABLES) {
  await pgSql.query(`CREATE TABLE ${t} (id int PRIMARY KEY, v text NOT NULL)`);
  await pgSql.query(`INSERT INTO ${t} SELECT g, 'v' || g FROM generate_series(1, 200) g`);
}
for (const t of MY_TABLES) {
  await mySql.query(`CREATE TABLE ${t} (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL) ENGINE=InnoDB`);
  await mySql.query(`INSERT INTO ${t} SELECT seq, CONCAT('v', seq) FROM seq_1_to_200`);
}
const manifest = {
  pipeline,
  connections: { warehouse: { engine: 'postgres', url: pgUrl }, shop: { engine: 'mysql', url: myUrl } },
  units: [
    { id: 'raw', type: 's3-prefix', bucket, prefix: 'raw/' },
    { id: 'staging', type: 'postgres-table', connection: 'warehouse', table: 'public.staging', dependsOn: ['raw'] },
    { id: 'journal', type: 'postgres-table', connection: 'warehouse', table: 'public.journal', dependsOn: ['raw'], capture: 'copy-on-write' },
    { id: 'carts', type: 'mysql-table', connection: 'shop', table: `${myName}.carts`, dependsOn: ['raw'] },
    { id: 'wallet', type: 'mysql-table', connection: 'shop', table: `${myName}.wallet`, dependsOn: ['raw'], capture: 'copy-on-write' },
  ],
};

// The engine, with the fault seam in its dependencies.
const { runLocal } = await import('../../cli/local-runner.ts');
const { Ledger, ensureLedgerTable } = await import('../../core/ledger/ledger.ts');
const { ensureStateBucket } = await import('../../core/runtime/state-store.ts');
await ensureLedgerTable(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);
await ensureStateBucket(s3, process.env.ETL_ROLLBACK_STATE_BUCKET!);
const { mysqlConnector, postgresConnector } = await import('../../core/runtime/connections.ts');
const { releaseDeployment } = await import('../../core/workflow/release.ts');
const { deps: handlerDeps } = await import('../../lambdas/task.ts');
const { quarantineTableName: pgQuarantine } = await import('../../core/adapters/postgres/names.ts');
const { quarantineTableName: myQuarantine } = await import('../../core/adapters/mysql-table.ts');
const plan = new FaultPlan();
const deps = {
  s3: withFaults(new S3Client({ forcePathStyle: true }), 's3', plan),
  ledger: new Ledger(withFaults(new DynamoDBClient({}), 'dynamodb', plan), process.env.ETL_ROLLBACK_LEDGER_TABLE!),
  connectors: {
    postgres: ((c, s) => faultyPostgres(postgresConnector(c, s), plan)) as typeof postgresConnector,
    mysql: ((c, s) => faultyMysql(mysqlConnector(c, s), plan)) as typeof mysqlConnector,
  },
};
const ledger = new Ledger(new DynamoDBClient({}), process.env.ETL_ROLLBACK_LEDGER_TABLE!);

interface State {
  objects: Record<string, string>;
  tables: Record<string, string[]>;
}

async function state(): Promise<State> {
  const objects: Record<string, string> = {};
  const list = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'raw/' }));
  for (const v of list.Versions ?? []) {
    if (v.IsLatest) objects[v.Key!] = await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: v.Key! }))).Body!.transformToString();
  }
  const tables: Record<string, string[]> = {};
  for (const t of PG_TABLES) tables[t] = (await pgSql.query<{ r: string }>(`SELECT id || ':' || v AS r FROM ${t} ORDER BY id`)).rows.map((r) => r.r);
  for (const t of MY_TABLES) tables[t] = (await mySql.query<mysql.RowDataPacket[]>(`SELECT CONCAT(id, ':', v) AS r FROM ${t} ORDER BY id`))[0].map((r) => String(r.r));
  return { objects, tables };
}

/** Random damage to every unit; returns the deploy's rows as they stand before the rollback (`id:v`, v = bad…). */
async function damage(cycle: number): Promise<Record<string, string[]>> {
  for (const k of KEYS) {
    const roll = random.next();
    if (roll < 0.15) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: k, Body: `bad ${cycle} ${k}` }));
    else if (roll < 0.25) await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: k }));
  }
  for (let i = random.int(3); i > 0; i--) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `raw/new-${cycle}-${i}.csv`, Body: 'bad new' }));
  for (const t of PG_TABLES) {
    for (let i = 1 + random.int(6); i > 0; i--) {
      const id = 1 + random.int(200);
      const op = random.pick(['update', 'delete', 'insert', 'rekey'] as const);
      if (op === 'update') await pgSql.query(`UPDATE ${t} SET v = $2 WHERE id = $1`, [id, `bad-${cycle}`]);
      else if (op === 'delete') await pgSql.query(`DELETE FROM ${t} WHERE id = $1`, [id]);
      else if (op === 'insert') await pgSql.query(`INSERT INTO ${t} VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v`, [1000 + random.int(100), `bad-${cycle}`]);
      else await pgSql.query(`UPDATE ${t} SET id = id + 5000, v = $2 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM ${t} WHERE id = $1 + 5000)`, [id, `bad-${cycle}`]);
    }
  }
  for (const t of MY_TABLES) {
    for (let i = 1 + random.int(6); i > 0; i--) {
      const id = 1 + random.int(200);
      const op = random.pick(['update', 'delete', 'insert', 'rekey'] as const);
      if (op === 'update') await mySql.query(`UPDATE ${t} SET v = ? WHERE id = ?`, [`bad-${cycle}`, id]);
      else if (op === 'delete') await mySql.query(`DELETE FROM ${t} WHERE id = ?`, [id]);
      else if (op === 'insert') await mySql.query(`INSERT INTO ${t} VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)`, [1000 + random.int(100), `bad-${cycle}`]);
      else {
        const [taken] = await mySql.query<mysql.RowDataPacket[]>(`SELECT 1 FROM ${t} WHERE id = ?`, [id + 5000]);
        if (taken.length === 0) await mySql.query(`UPDATE ${t} SET id = id + 5000, v = ? WHERE id = ?`, [`bad-${cycle}`, id]);
      }
    }
  }
  const bad: Record<string, string[]> = {};
  for (const t of PG_TABLES) bad[t] = (await pgSql.query<{ r: string }>(`SELECT id || ':' || v AS r FROM ${t} WHERE v LIKE 'bad%' ORDER BY 1`)).rows.map((r) => r.r);
  for (const t of MY_TABLES) bad[t] = (await mySql.query<mysql.RowDataPacket[]>(`SELECT CONCAT(id, ':', v) AS r FROM ${t} WHERE v LIKE 'bad%' ORDER BY 1`))[0].map((r) => String(r.r));
  return bad;
}

/** The deploy's rows kept in these runs' quarantine tables, per table. */
async function quarantined(runIds: string[]): Promise<Record<string, Set<string>>> {
  const out: Record<string, Set<string>> = {};
  for (const t of PG_TABLES) {
    out[t] = new Set();
    for (const runId of runIds) {
      const q = pgQuarantine(pipeline, runId, t);
      if (!(await pgSql.query(`SELECT to_regclass('etl_rollback.${q}') AS r`)).rows[0].r) continue;
      for (const r of (await pgSql.query<{ r: string }>(`SELECT id || ':' || v AS r FROM etl_rollback.${q} WHERE v LIKE 'bad%'`)).rows) out[t].add(r.r);
    }
  }
  for (const t of MY_TABLES) {
    out[t] = new Set();
    for (const runId of runIds) {
      const q = myQuarantine(pipeline, runId, t);
      const [exists] = await mySql.query<mysql.RowDataPacket[]>(`SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'etl_rollback' AND TABLE_NAME = ?`, [q]);
      if (exists.length === 0) continue;
      for (const r of (await mySql.query<mysql.RowDataPacket[]>(`SELECT CONCAT(id, ':', v) AS r FROM etl_rollback.\`${q}\` WHERE v LIKE 'bad%'`))[0]) out[t].add(String(r.r));
    }
  }
  return out;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
let faultsInjected = 0;
let faultsPlanned = 0;
let locksBroken = 0;
const divergences: string[] = [];
let slowest = { cycle: 0, seconds: 0 };
let recordedRollback: WritePoint[] = [];
let recordedSnapshot: WritePoint[] = [];
let previous: string | undefined;
const started = performance.now();

try {
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    const t0 = performance.now();
    const deploymentId = `d-${cycle}`;
    const diverged = (what: string) => divergences.push(`cycle ${cycle}: ${what}`);
    const fault = cycle > 1 && random.next() < 1 / 3;
    const inSnapshot = fault && random.next() < 0.3;
    const when: When = random.next() < 0.5 ? 'before' : 'after';
    const baseline = await state();

    // Snapshot (a fault in some), taken again if it stopped.
    if (inSnapshot && recordedSnapshot.length > 0) {
      faultsPlanned += 1;
      plan.arm({ ...random.pick(recordedSnapshot), when });
    } else plan.arm();
    const snap = await runLocal('snapshot', { pipeline, deploymentId, manifest, requestedBy: 'soak' }, { name: `snap-${suffix}-${cycle}`, deps });
    if (plan.fired) faultsInjected += 1;
    if (!plan.target) recordedSnapshot = [...plan.recorded];
    plan.arm();
    if (snap.status !== 'SUCCEEDED') {
      const again = await runLocal('snapshot', { pipeline, deploymentId, manifest, requestedBy: 'soak' }, { name: `snap-${suffix}-${cycle}-again`, deps });
      if (again.status !== 'SUCCEEDED') {
        diverged(`the snapshot did not complete on a second try: ${JSON.stringify(again)}`);
        continue;
      }
    }

    const bad = await damage(cycle);
    const versionsBefore = ((await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'raw/' }))).Versions ?? []).length;

    // Rollback (a fault in some), then a clean run if it stopped or the lock was left.
    const first = `rb-${suffix}-${cycle}`;
    if (fault && !inSnapshot && recordedRollback.length > 0) {
      faultsPlanned += 1;
      plan.arm({ ...random.pick(recordedRollback), when });
    } else plan.arm();
    const r1 = await runLocal('rollback', { pipeline, deploymentId, requestedBy: 'soak', reason: `cycle ${cycle}` }, { name: first, deps });
    if (plan.fired) faultsInjected += 1;
    const target = plan.target;
    if (!target && r1.status === 'SUCCEEDED') recordedRollback = [...plan.recorded];
    plan.arm();
    const run1 = await ledger.getRun(first);
    if (run1?.status === 'SUCCEEDED' && !same(await state(), baseline)) diverged(`run ${first} is recorded SUCCEEDED but the data is not its restore point`);
    const runs = [first];
    if (r1.status !== 'SUCCEEDED' || run1?.status !== 'SUCCEEDED') {
      const lock = await ledger.getLock(pipeline);
      if (lock) {
        await ledger.breakLock(pipeline, 'soak', `run ${first} died holding the lock (${target ? `${target.when} ${pointName(target)}` : 'no fault'})`);
        locksBroken += 1;
      }
      const second = `${first}-again`;
      runs.push(second);
      const r2 = await runLocal('rollback', { pipeline, deploymentId, requestedBy: 'soak', reason: `cycle ${cycle}, again` }, { name: second, deps });
      if (r2.status !== 'SUCCEEDED') diverged(`the rerun did not succeed: ${JSON.stringify(r2)}`);
    }

    // The invariants.
    const after = await state();
    if (!same(after, baseline)) diverged(`the data is not the restore point (fault: ${target ? `${target.when} ${pointName(target)}` : 'none'})`);
    const kept = await quarantined(runs);
    for (const t of [...PG_TABLES, ...MY_TABLES]) {
      const lost = bad[t]!.filter((r) => !kept[t]!.has(r));
      if (lost.length > 0) diverged(`rows of the deploy lost from ${t}: ${lost.join(', ')}`);
    }
    const versionsAfter = ((await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'raw/' }))).Versions ?? []).length;
    if (versionsAfter < versionsBefore) diverged(`object versions went from ${versionsBefore} to ${versionsAfter}`);
    if (await ledger.getLock(pipeline)) diverged('the lock is still held after the cycle');
    const violations = guard.stats().violations.length;
    if (violations > 0) diverged(`${violations} object version(s) destroyed so far (version guard)`);

    // The previous deployment's restore points are released, as the daily job would once they expire.
    if (previous) {
      const released = await releaseDeployment(handlerDeps, { pipeline, deploymentId: previous, releasedBy: 'soak' });
      if (!released.released) diverged(`release of ${previous} skipped: ${JSON.stringify(released.skipped ?? released.record)}`);
    }
    previous = deploymentId;

    const seconds = (performance.now() - t0) / 1000;
    if (seconds > slowest.seconds) slowest = { cycle, seconds };
    if (cycle % 10 === 0 || cycle === CYCLES) progress(`cycle ${cycle}/${CYCLES}: ${faultsInjected} fault(s) injected, ${divergences.length} divergence(s)`);
  }
} finally {
  await cleanup();
}

const stats = guard.stats();
console.log(`soak: ${CYCLES} cycles (seed ${SEED}) over a pipeline with an S3 prefix and PostgreSQL and MySQL tables, each in copy and copy-on-write mode`);
console.log(`  faults injected: ${faultsInjected} (planned in ${faultsPlanned} cycles: a snapshot or rollback write, before or after it was done)`);
console.log(`  locks left by a run that died and broken: ${locksBroken}`);
console.log(`  object version deletions checked at the server: ${stats.checked} (${stats.markers} delete markers, ${stats.violations.length} data versions destroyed)`);
console.log(`  divergences: ${divergences.length} (goal: 0)`);
for (const d of divergences.slice(0, 20)) console.log(`    ${d}`);
console.log(`  slowest cycle: ${slowest.seconds.toFixed(2)} s (cycle ${slowest.cycle}); all cycles ${((performance.now() - started) / 1000).toFixed(1)} s`);
process.exit(divergences.length === 0 && stats.violations.length === 0 ? 0 : 1);
