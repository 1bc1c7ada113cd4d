/** Shared by the bench's sections: options, formatting, progress, cleanup. */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { GlueClient } from '@aws-sdk/client-glue';
import { RDSClient } from '@aws-sdk/client-rds';
import type { AdapterContext, Check } from '../core/adapters/types.ts';

// ---------------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------------

export const DEFAULTS = { objects: 20_000, rows: 1_000_000, changed: 1, objectBytes: 1024, pgTimeout: 600, workers: 16, repeat: 5 };

export interface Options {
  only: 's3' | 'pg' | 'mysql' | undefined;
  objects: number;
  rows: number;
  changed: number;
  objectBytes: number;
  pgTimeout: number;
  fullReload: boolean;
  workers: number;
  /** Runs of each PostgreSQL restore (and its deploy) at the main percentage: the median is reported. */
  repeat: number;
}

export const USAGE = `usage: npm run bench -- [--only s3|pg|mysql] [--objects N] [--changed P] [--rows N] [--object-bytes B]
                        [--no-full-reload] [--pg-timeout S] [--workers W] [--repeat N]

  --only s3|pg|mysql  run one section only (default: all, S3 first; mysql: copy-on-write on this
                    machine's MariaDB, ETL_ROLLBACK_BENCH_MYSQL_URL, skipped when none answers)
  --objects N       objects under the S3 prefix (default ${DEFAULTS.objects.toLocaleString('en-US')})
  --changed P       percent changed by the bad deploy, S3 and PostgreSQL (default ${DEFAULTS.changed}):
                    half modified, a quarter deleted, a quarter added
  --rows N          rows in the PostgreSQL table (default ${DEFAULTS.rows.toLocaleString('en-US')})
  --object-bytes B  size of each S3 object (default ${DEFAULTS.objectBytes})
  --no-full-reload  skip the PostgreSQL 100%-changed case
  --pg-timeout S    cancel an etl-rollback table restore still running after S seconds (default ${DEFAULTS.pgTimeout})
  --workers W       requests in flight for the S3 naive restore and s3-pit-restore --max-workers
                    (default ${DEFAULTS.workers}, the adapter's own copy concurrency)
  --repeat N        PostgreSQL: the bad deploy and each restore of it (etl-rollback copy, copy-on-write,
                    pg_restore) N times at --changed; the median and the range are printed (default ${DEFAULTS.repeat})`;

export function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      objects: { type: 'string' },
      rows: { type: 'string' },
      changed: { type: 'string' },
      'object-bytes': { type: 'string' },
      'pg-timeout': { type: 'string' },
      'no-full-reload': { type: 'boolean' },
      workers: { type: 'string' },
      repeat: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, fallback: number, min: number): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw.replace(/[_,]/g, ''));
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}\n${USAGE}`);
    return n;
  };
  const changed = values.changed === undefined ? DEFAULTS.changed : Number(values.changed);
  if (!Number.isFinite(changed) || changed <= 0 || changed > 100) {
    throw new Error(`--changed must be a number above 0 and at most 100, got ${JSON.stringify(values.changed)}\n${USAGE}`);
  }
  if (values.only !== undefined && values.only !== 's3' && values.only !== 'pg' && values.only !== 'mysql') {
    throw new Error(`--only must be s3, pg or mysql, got ${JSON.stringify(values.only)}\n${USAGE}`);
  }
  return {
    only: values.only,
    objects: int('objects', values.objects, DEFAULTS.objects, 1),
    rows: int('rows', values.rows, DEFAULTS.rows, 4),
    changed,
    objectBytes: int('object-bytes', values['object-bytes'], DEFAULTS.objectBytes, 1),
    pgTimeout: int('pg-timeout', values['pg-timeout'], DEFAULTS.pgTimeout, 1),
    fullReload: !values['no-full-reload'],
    workers: int('workers', values.workers, DEFAULTS.workers, 1),
    repeat: int('repeat', values.repeat, DEFAULTS.repeat, 1),
  };
}

/** How many of `total` a deploy changing `percent` touches: half modified, a quarter deleted, a quarter added. */
export function changeMix(total: number, percent: number): { modified: number; added: number; deleted: number } {
  const changed = Math.max(1, Math.min(total, Math.round((total * percent) / 100)));
  const deleted = Math.floor(changed / 4);
  const added = Math.floor(changed / 4);
  return { modified: changed - added - deleted, added, deleted };
}

/**
 * Runs `work` while a writer makes `write` (one short write transaction, rolled back) again and again: the slowest of
 * those writes is how long `work` held writers off.
 */
export async function whileWriting<T>(write: () => Promise<void>, work: () => Promise<T>): Promise<{ result: T; seconds: number; held: number; writes: number }> {
  let running = true;
  let held = 0;
  let writes = 0;
  const probing = (async () => {
    while (running) {
      const w = performance.now();
      await write();
      held = Math.max(held, (performance.now() - w) / 1000);
      writes += 1;
    }
  })();
  const t = performance.now();
  const result = await work().finally(() => (running = false));
  const seconds = (performance.now() - t) / 1000;
  await probing;
  return { result, seconds, held, writes };
}

// ---------------------------------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------------------------------

export const fmtInt = (n: number): string => n.toLocaleString('en-US');
export const fmtSec = (s: number): string => s.toFixed(s < 10 ? 3 : s < 100 ? 2 : 1);
export const fmtBytes = (b: number): string =>
  b < 1024 ? `${b} B` : b < 1024 ** 2 ? `${(b / 1024).toFixed(1)} KiB` : b < 1024 ** 3 ? `${(b / 1024 ** 2).toFixed(1)} MiB` : `${(b / 1024 ** 3).toFixed(2)} GiB`;

export function printTable(title: string, headers: string[], rows: string[][], rightAligned: Set<number>): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(' | ')} |`;
  console.log(`\n${title}`);
  console.log(line(headers));
  console.log(`|${widths.map((w, i) => (rightAligned.has(i) ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`);
  for (const r of rows) console.log(line(r));
}

/** The median of timings (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? 0 : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** `0.119` for one run; `0.119 (0.112–0.131)` for the median of several and their range. */
export function fmtRuns(xs: number[]): string {
  if (xs.length <= 1) return fmtSec(xs[0] ?? 0);
  return `${fmtSec(median(xs))} (${fmtSec(Math.min(...xs))}–${fmtSec(Math.max(...xs))})`;
}

/** `other / ours`, read as "how many times ours": `163x`, `1.2x`, `0.50x`. */
export function times(other: number, ours: number): string {
  if (ours === 0) return other === 0 ? '1x (both 0)' : `n/a (ours 0, other ${fmtInt(other)})`;
  const r = other / ours;
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)}x${r < 1 ? ' (less than etl-rollback)' : ''}`;
}

export function checksLine(checks: Check[]): string {
  const failed = checks.filter((c) => !c.ok);
  return failed.length === 0 ? `verified (${checks.map((c) => c.name).join(', ')})` : `NOT VERIFIED: ${failed.map((c) => `${c.name} expected ${c.expected} got ${c.actual}`).join('; ')}`;
}

export const progress = (line: string): void => void process.stderr.write(`› ${line}\n`);

/** Prints `label: done/total` to stderr every `everyMs` while `work` runs. */
export async function withProgress<T>(label: string, total: number, done: () => number, work: Promise<T>, everyMs = 15_000): Promise<T> {
  const started = Date.now();
  const timer = setInterval(() => {
    const n = done();
    process.stderr.write(`    ${label}: ${fmtInt(n)} / ${fmtInt(total)} after ${Math.round((Date.now() - started) / 1000)} s\n`);
  }, everyMs);
  try {
    return await work;
  } finally {
    clearInterval(timer);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const silentLog = { info: () => undefined, warn: () => undefined };

/** The parts of an adapter context neither section uses: an RDS client that is never called, no MySQL. */
export function unusedServices(): Pick<AdapterContext, 'rds' | 'glue' | 'mysql' | 'retentionDays'> {
  return {
    rds: new RDSClient({ region: 'us-east-1', credentials: { accessKeyId: 'unused', secretAccessKey: 'unused' } }),
    glue: new GlueClient({ region: 'us-east-1', credentials: { accessKeyId: 'unused', secretAccessKey: 'unused' } }),
    mysql: { connect: () => Promise.reject(new Error('the bench uses no MySQL')) },
    retentionDays: 7,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Cleanup: everything started or created is undone once, also on Ctrl-C
// ---------------------------------------------------------------------------------------------------------------------

const cleanups: { what: string; fn: () => Promise<void> }[] = [];
let cleaned = false;

export function onCleanup(what: string, fn: () => Promise<void>): void {
  cleanups.push({ what, fn });
}

export async function cleanUp(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const { what, fn } of cleanups.reverse()) {
    try {
      await fn();
    } catch (error) {
      console.error(`cleanup: ${what} failed: ${(error as Error).message}`);
    }
  }
}
