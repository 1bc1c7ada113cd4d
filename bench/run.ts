/**
 * Benchmark: etl-rollback's restores against the tools a team would use without it, on real local services (moto for
 * S3, PostgreSQL), in one run, on identical data. Prints figures; asserts no timings.
 *
 *   npm run bench -- [--only s3|pg|mysql] [--objects 20000] [--changed 1] [--rows 1000000] [--object-bytes 1024]
 *
 * S3 (bench/s3.ts): etl-rollback vs s3-pit-restore vs a naive full copy, requests counted at the server by moto's own
 * request recorder (bench/moto-requests.ts). PostgreSQL (bench/pg.ts): etl-rollback vs pg_dump -Fc -t + pg_restore
 * --clean, rows written read from pg_stat_user_tables. See bench/README.md.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { S3Client } from '@aws-sdk/client-s3';
import { COPY_CONCURRENCY } from '../core/adapters/s3-prefix.ts';
import { benchPointInTimeMerge } from './pitr-merge.ts';
import { startMoto, startPostgres, type MotoServer, type PostgresServer } from '../scripts/local-services.ts';
import { cleanUp, fmtBytes, fmtInt, fmtSec, onCleanup, parseOptions, progress } from './common.ts';
import { MotoRecorder } from './moto-requests.ts';
import { mysqlSection } from './mysql.ts';
import { pgSection, type PgSummary } from './pg.ts';
import { S3_PIT_RESTORE_VERSION, SdkCounter, s3Section, type S3Summary } from './s3.ts';

process.once('SIGINT', () => {
  console.error('\ninterrupted: cleaning up');
  void cleanUp().finally(() => process.exit(130));
});

async function motoVersion(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('.venv/bin/python', ['-c', 'import moto; print(moto.__version__)']);
    return stdout.trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const started = performance.now();
  const suffix = randomBytes(4).toString('hex');

  let s3Summary: S3Summary | undefined;
  let pgSummary: PgSummary | undefined;
  let moto: MotoServer | undefined;
  let server: PostgresServer | undefined;

  if (opts.only === undefined || opts.only === 's3') {
    // moto's request recorder writes its log here (it is off until the bench starts it around one tool).
    const recordings = mkdtempSync(path.join(os.tmpdir(), 'etl-rollback-bench-moto-'));
    onCleanup(`remove ${recordings}`, async () => rmSync(recordings, { recursive: true, force: true }));
    process.env.MOTO_RECORDER_FILEPATH = path.join(recordings, 'requests.jsonl');
    progress('starting moto');
    moto = await startMoto();
    const m = moto;
    // moto is ours and in memory: stopping it discards the buckets (no per-object cleanup needed).
    onCleanup('stop moto', () => m.stop());
  }
  // The S3 section's adapter context wants an S3 client even when only PostgreSQL runs (never called then).
  const s3 = new S3Client({
    endpoint: moto?.endpoint ?? 'http://127.0.0.1:9',
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
  });
  onCleanup('destroy S3 client', async () => s3.destroy());

  if (moto) {
    const sdk = new SdkCounter();
    sdk.install(s3);
    s3Summary = await s3Section(s3, sdk, new MotoRecorder(moto.endpoint), moto.endpoint, suffix, opts);
  }
  if (opts.only === undefined || opts.only === 'pg') {
    progress('starting PostgreSQL (this machine\'s, else embedded)');
    server = await startPostgres();
    const srv = server;
    onCleanup('stop PostgreSQL', () => srv.stop());
    pgSummary = await pgSection(server, s3, suffix, opts);
    // The data path of a rollback to a time (no restore point): the unit's rows read from a point-in-time copy (a second
    // database here) and merged in. At most 100,000 rows: it reads the whole scope from the copy, row by row.
    const rows = Math.min(opts.rows, 100_000);
    progress(`PostgreSQL: rollback to a time, the extract-and-merge from a point-in-time copy (${fmtInt(rows)} rows, ${opts.changed}% differing)`);
    const pitr = await benchPointInTimeMerge({ rows, changedPercent: opts.changed, adminUrl: server.adminUrl });
    const c = pitr.changes;
    console.log(
      `\nPostgreSQL table, rollback to a time (--to, no restore point): ${fmtInt(pitr.rows)} rows, ${pitr.changedPercent}% differing; ` +
        `the point-in-time copy itself is RDS work (minutes on AWS) and not timed here`,
    );
    console.log(
      `  extract from the copy + merge + verify: ${fmtSec(pitr.seconds)} s; rows written ${fmtInt((c.rowsInserted ?? 0) + (c.rowsUpdated ?? 0) + (c.rowsDeleted ?? 0))} ` +
        `(${fmtInt(c.rowsUpdated ?? 0)} updated, ${fmtInt(c.rowsDeleted ?? 0)} deleted, ${fmtInt(c.rowsInserted ?? 0)} inserted), ${fmtInt(c.rowsQuarantined ?? 0)} replaced rows quarantined`,
    );
  }

  if (opts.only === undefined || opts.only === 'mysql') await mysqlSection(s3, suffix, opts);

  const cpu = os.cpus();
  console.log('\nEnvironment');
  console.log(`  node ${process.version} on ${os.platform()} ${os.arch()}, ${cpu.length} CPU(s) ${cpu[0]?.model.trim() ?? ''}`);
  if (moto) {
    console.log(
      `  moto ${await motoVersion()} (${moto.endpoint}); S3: N=${fmtInt(opts.objects)} objects of ${fmtBytes(opts.objectBytes)}, ${opts.changed}% changed; ` +
        `${COPY_CONCURRENCY} copies in flight for etl-rollback, ${opts.workers} for the naive restore and s3-pit-restore ${S3_PIT_RESTORE_VERSION} (--max-workers)`,
    );
    console.log('  S3 requests: counted at the server by moto\'s request recorder (/moto-api/recorder), the same way for every tool; wall time includes the recorder\'s logging');
  }
  if (server && pgSummary) {
    console.log(`  PostgreSQL ${pgSummary.version} (${server.embedded ? 'embedded' : 'this machine\'s'}); R=${fmtInt(opts.rows)} rows, ${opts.changed}% changed; pg tools: ${pgSummary.tools}`);
  }
  console.log(`  timings are wall-clock, not asserted; one run each, except the PostgreSQL restores at --changed: the median of ${opts.repeat} runs`);

  console.log('\nRatios (other tool / etl-rollback: 163x = the other tool needed 163 times as much)');
  for (const l of [...(s3Summary?.lines ?? []), ...(pgSummary?.lines ?? [])]) console.log(l);
  console.log(`\ntotal wall time ${fmtSec((performance.now() - started) / 1000)} s (setup included; cleanup follows)`);
}

try {
  await main();
} catch (error) {
  process.exitCode = 1;
  console.error(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
} finally {
  progress('cleaning up');
  await cleanUp();
}
