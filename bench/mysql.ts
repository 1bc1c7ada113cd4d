/**
 * MySQL/MariaDB copy-on-write (issue 8): what the deploy waits for at capture, the whole capture (the table
 * share-locked while it is counted and summed) against the snapshot machine's two halves (install, then the seal read
 * while the deploy may write), with a writer probing the table meanwhile; then the restore of a 1% deploy. On this
 * machine's MariaDB (ETL_ROLLBACK_BENCH_MYSQL_URL, default mysql://root@127.0.0.1:3306); skipped, saying so, when none
 * answers. Prints figures; asserts nothing.
 */
import { performance } from 'node:perf_hooks';
import mysql from 'mysql2/promise';
import { mysqlTable } from '../core/adapters/mysql-table.ts';
import { holdWriters, type HoldBy } from '../core/adapters/mysql/copy-on-write.ts';
import type { AdapterContext } from '../core/adapters/types.ts';
import { mysqlTableUnitSchema } from '../core/manifest/schema.ts';
import { mysqlConnector } from '../core/runtime/connections.ts';
import type { S3Client } from '@aws-sdk/client-s3';
import { changeMix, fmtInt, fmtSec, onCleanup, progress, silentLog, unusedServices, whileWriting, type Options } from './common.ts';

export async function mysqlSection(s3: S3Client, suffix: string, opts: Options): Promise<void> {
  const base = new URL(process.env.ETL_ROLLBACK_BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306');
  const options = { host: base.hostname, port: Number(base.port || 3306), user: decodeURIComponent(base.username), password: decodeURIComponent(base.password) };
  let admin: mysql.Connection;
  try {
    admin = await mysql.createConnection(options);
  } catch (error) {
    console.log(`\nMySQL/MariaDB copy-on-write: skipped, no server answers at ${base.host} (${(error as Error).message}); set ETL_ROLLBACK_BENCH_MYSQL_URL`);
    return;
  }
  const db = `bench_${suffix}`;
  await admin.query(`CREATE DATABASE \`${db}\``);
  onCleanup(`drop MySQL database ${db}`, async () => {
    // The copy-on-write guard's foreign key into the database would stop DROP DATABASE: release drops it first.
    await admin.query(`DROP DATABASE IF EXISTS \`${db}\``).catch(() => undefined);
    await admin.end();
  });
  const [[version]] = await admin.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v');
  const sql = await mysql.createConnection({ ...options, database: db });
  onCleanup('close the MySQL session', () => sql.end());
  const R = opts.rows;
  progress(`MySQL ${String(version?.v)}: seeding ${fmtInt(R)} rows in ${db}.orders`);
  await sql.query(`CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(64) NOT NULL, amount DECIMAL(12,2) NOT NULL, ordered_at DATETIME(3) NOT NULL, note VARCHAR(64)) ENGINE=InnoDB`);
  for (let from = 1; from <= R; from += 1_000_000) {
    const to = Math.min(R, from + 999_999);
    await sql.query(
      `INSERT INTO orders SELECT seq, CONCAT('customer-', (seq * 7919) % 50000), ((seq * 37) % 100000) / 100.0, '2024-01-01' + INTERVAL seq * 13 SECOND, MD5(seq) FROM seq_${from}_to_${to}`,
    );
  }
  await sql.query('ANALYZE TABLE orders');
  const url = `mysql://${encodeURIComponent(options.user)}${options.password ? `:${encodeURIComponent(options.password)}` : ''}@${options.host}:${options.port}/${db}`;
  const unit = mysqlTableUnitSchema.parse({ id: 'orders', type: 'mysql-table', connection: 'warehouse', table: `${db}.orders`, capture: 'copy-on-write' });
  // A user with every privilege on the two databases but not PROCESS: it cannot read the InnoDB table id, so its
  // restore cannot prove the log whole and reads the table for its checks, as every restore did before that proof.
  const plain = `etlrb_noproc_${suffix}`.slice(0, 32);
  await admin.query(`CREATE USER '${plain}'@'${options.host}'`);
  onCleanup(`drop MySQL user ${plain}`, async () => {
    await admin.query(`DROP USER IF EXISTS '${plain}'@'${options.host}'`).catch(() => undefined);
  });
  await admin.query(`GRANT ALL PRIVILEGES ON \`${db}\`.* TO '${plain}'@'${options.host}'`);
  await admin.query(`GRANT ALL PRIVILEGES ON \`etl_rollback\`.* TO '${plain}'@'${options.host}'`);
  const plainUrl = `mysql://${plain}@${options.host}:${options.port}/${db}`;
  const ctx = (deploymentId: string, connectAs = url): AdapterContext => ({
    pipeline: 'bench',
    deploymentId,
    runId: `run-${deploymentId}`,
    s3,
    stateBucket: 'unused-by-mysql-table',
    ...unusedServices(),
    postgres: { connect: () => Promise.reject(new Error('the MySQL section uses no PostgreSQL')) },
    mysql: mysqlConnector({ warehouse: { engine: 'mysql', url: connectAs } }),
    now: () => new Date(),
    log: silentLog,
  });

  /** Runs `work` while a writer updates one row again and again (rolled back): the slowest write is how long writers were held off. */
  async function probed<T>(work: () => Promise<T>) {
    const probe = await mysql.createConnection({ ...options, database: db });
    const write = async () => {
      await probe.query('START TRANSACTION');
      await probe.query('UPDATE orders SET amount = amount WHERE id = 1');
      await probe.query('ROLLBACK');
    };
    return whileWriting(write, work).finally(() => probe.end());
  }

  // The whole capture: triggers, then the table share-locked while it is counted and summed.
  progress('MySQL: copy-on-write capture, whole (the table share-locked while it is read), a writer probing meanwhile');
  const whole = await probed(() => mysqlTable.capture(unit, ctx(`d-${suffix}-whole`)));
  await mysqlTable.release(unit, whole.result, ctx(`d-${suffix}-whole`));

  // The snapshot machine's way: install (the deploy may start), the deploy, the seal read meanwhile, the restore.
  progress('MySQL: copy-on-write install (the triggers and the baseline; nothing read), a writer probing meanwhile');
  const c = ctx(`d-${suffix}-cow`);
  const installed = await probed(() => mysqlTable.install(unit, c));
  const mix = changeMix(R, opts.changed);
  progress(`MySQL ${opts.changed}%: the bad deploy through the triggers (${fmtInt(mix.modified)} updated, ${fmtInt(mix.deleted)} deleted, ${fmtInt(mix.added)} inserted), the seal read while it runs`);
  const s0 = performance.now();
  const sealing = mysqlTable.capture(unit, c).then((point) => ({ point, seconds: (performance.now() - s0) / 1000 }));
  const step = Math.max(1, Math.floor(R / (mix.modified + mix.deleted)));
  const deploy = async () => {
    await sql.query(`UPDATE orders SET customer = CONCAT('bad ', customer), amount = 999999.99 WHERE id % ${step} = 0 AND id <= ${step * mix.modified}`);
    await sql.query(`DELETE FROM orders WHERE id % ${step} = 1 AND id <= ${step * mix.deleted}`);
    await sql.query(`INSERT INTO orders SELECT ${R} + seq, 'added by bad deploy', 0, '2030-01-01', NULL FROM seq_1_to_${Math.max(1, mix.added)}`);
  };
  await deploy();
  const sealed = await sealing;
  // What holding the deploy's writers off costs the restore, each way, on the damaged table (then rolled back): every
  // row of the table locked, as the restore did before, against the undo log's rows, as a proven restore does now.
  const holding: Record<HoldBy, number> = { table: 0, log: 0 };
  {
    const conn = await mysql.createConnection({ ...options, database: db });
    try {
      for (const by of ['table', 'log'] as const) {
        await conn.query('START TRANSACTION');
        const t = performance.now();
        await holdWriters(conn, { sql: `\`${db}\`.\`orders\`` }, sealed.point.details.shadowTable.split('.').map((n) => `\`${n}\``).join('.'), by);
        holding[by] = (performance.now() - t) / 1000;
        await conn.query('ROLLBACK');
      }
    } finally {
      await conn.end();
    }
  }
  // A rollback as the state machine runs it records first what it replaces (for undo): the rows at the logged keys.
  const recordOf = async (tag: string, connectAs = url) => {
    const rc = { ...ctx(`undo-run-${suffix}-${tag}`, connectAs), runId: `run-${suffix}-${tag}` };
    const t = performance.now();
    const record = await mysqlTable.undoRecord(unit, rc, sealed.point);
    const seconds = (performance.now() - t) / 1000;
    const ok = (await mysqlTable.verify(unit, record, rc)).every((x) => x.ok);
    await mysqlTable.release(unit, record, rc);
    return { seconds, ok };
  };
  progress(`MySQL ${opts.changed}%: the record of what the rollback replaces (for undo), then the copy-on-write restore`);
  const recorded = await recordOf('cow');
  const r0 = performance.now();
  const out = await mysqlTable.restore(unit, sealed.point, { ...c, runId: `run-${suffix}-cow` });
  const restoreSeconds = (performance.now() - r0) / 1000;
  const checks = await mysqlTable.verify(unit, sealed.point, c);
  // The same deploy again, restored by the user without PROCESS: the checks read the table.
  progress(`MySQL ${opts.changed}%: the same deploy again, restored by a user without the PROCESS privilege (the checks read the table)`);
  // The deploy's own write time through the triggers (no seal running now), against the same deploy on the same rows
  // once the point is released (no triggers), below.
  const timed = async () => {
    const t = performance.now();
    await deploy();
    return (performance.now() - t) / 1000;
  };
  const withTriggers = await timed();
  const recordedRead = await recordOf('cow-read', plainUrl);
  const r1 = performance.now();
  const read = await mysqlTable.restore(unit, sealed.point, { ...ctx(`d-${suffix}-cow`, plainUrl), runId: `run-${suffix}-cow-read` });
  const readSeconds = (performance.now() - r1) / 1000;
  const readChecks = await mysqlTable.verify(unit, sealed.point, c);
  await mysqlTable.release(unit, sealed.point, c);
  progress(`MySQL ${opts.changed}%: the same deploy again, the point released (no triggers), for the triggers' overhead`);
  const withoutTriggers = await timed();
  const proof = (notes: string[]) => (notes.some((n) => /the table was not read/.test(n)) ? 'the log proven whole, checks at the logged keys' : 'the checks read the table');

  const inPlace = installed.seconds;
  console.log(`\nMySQL/MariaDB table, copy-on-write (${String(version?.v)}; ${fmtInt(R)} rows, id BIGINT PK, varchar, decimal, datetime, varchar)`);
  console.log(`  whole capture (the deploy waits for all of it): ${fmtSec(whole.seconds)} s; writers held off ${fmtSec(whole.held)} s at most (the slowest of ${fmtInt(whole.writes)} probe writes)`);
  console.log(
    `  in two halves: install ${fmtSec(inPlace)} s (what the deploy waits for); writers held off ${fmtSec(installed.held)} s at most (of ${fmtInt(installed.writes)} probe writes); ` +
      `then the seal ${fmtSec(sealed.seconds)} s, read while the deploy wrote`,
  );
  console.log(
    `  restore of the ${opts.changed}% deploy: ${fmtSec(restoreSeconds)} s, ${fmtInt(out.writes)} rows written (${proof(out.notes)}); ${checks.every((x) => x.ok) ? 'verified' : 'NOT VERIFIED'} (${checks.map((x) => x.name).join(', ')})`,
  );
  console.log(
    `  the same deploy restored by a user without PROCESS: ${fmtSec(readSeconds)} s, ${fmtInt(read.writes)} rows written (${proof(read.notes)}); ${readChecks.every((x) => x.ok) ? 'verified' : 'NOT VERIFIED'}`,
  );
  console.log(
    `  the record of what the rollback replaces (for undo), made before the restore: ${fmtSec(recorded.seconds)} s with the log proven whole (count and checksum carried from the capture at the logged keys), ` +
      `${fmtSec(recordedRead.seconds)} s by the user without PROCESS (the table read); ${recorded.ok && recordedRead.ok ? 'both verified against the table' : 'NOT VERIFIED'}`,
  );
  console.log(
    `  holding the deploy's writers off for the restore: every row of the table locked (FOR UPDATE) ${fmtSec(holding.table)} s, the undo log's rows locked ${fmtSec(holding.log)} s ` +
      `(the proven restore's way: each write waits in its trigger; the other restore's way is the table's)`,
  );
  console.log(`  MySQL copy-on-write restore, proven (the log locked, checks at the logged keys) vs not (the table locked and read): ${(readSeconds / restoreSeconds).toFixed(2)}x faster`);
  console.log(`  MySQL copy-on-write restore's writer lock, the undo log's rows vs every row of the table: ${(holding.table / holding.log).toFixed(1)}x faster`);
  const overhead = withTriggers / withoutTriggers;
  console.log(
    `  MySQL copy-on-write deploy write overhead: ${overhead.toFixed(2)}x the deploy's write time without triggers (${fmtSec(withTriggers)} s against ${fmtSec(withoutTriggers)} s, one run each; ` +
      `goal: within 2x) ${overhead <= 2 ? 'MET' : 'NOT MET'}; the row triggers write each changed row's pre-image (an UPDATE also its new key)`,
  );
  console.log(`  MySQL copy-on-write capture, what the deploy waits for (install): ${fmtSec(inPlace)} s (goal: under 1 s at any size) ${inPlace < 1 ? 'MET' : 'NOT MET'}; the whole capture: ${fmtSec(whole.seconds)} s`);
}
