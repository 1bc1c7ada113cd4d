import { TableBusyError } from '../errors.ts';
import type { Unit } from '../manifest/schema.ts';

/**
 * Tables at least this large (PostgreSQL's pg_total_relation_size: heap, indexes, TOAST) are captured copy-on-write
 * when the unit does not set `capture` and copy-on-write can protect them (core/adapters/postgres/copy-on-write.ts).
 */
export const COPY_ON_WRITE_ABOVE_BYTES = 1024 ** 3;

/** How long a table lock is waited for, and how often it is tried (PostgreSQL lock_timeout, MySQL lock_wait_timeout). */
export interface TableLockWait {
  /** One try's wait, in milliseconds (MySQL waits whole seconds, at least one). */
  timeoutMs: number;
  tries: number;
  /** Pause between two tries, in milliseconds. */
  pauseMs: number;
}

/**
 * The install's table lock (PostgreSQL LOCK TABLE … SHARE ROW EXCLUSIVE, MySQL LOCK TABLES … READ) waits for every
 * transaction that has written the table, and every writer that comes after it queues behind it. So one try waits
 * 2 s at most (then the writers it held go on), and it tries 5 times, a second apart: a long open write transaction
 * makes the install fail in about 15 s, naming it, instead of stalling the table's writers for as long as it stays open.
 */
export const INSTALL_LOCK: TableLockWait = { timeoutMs: 2000, tries: 5, pauseMs: 1000 };

/**
 * A restore's table lock, the same way. PostgreSQL: SHARE ROW EXCLUSIVE (writers queue behind it), ACCESS EXCLUSIVE
 * when the columns are put back too (then readers queue as well); MySQL: the locking read over the rows it may
 * rewrite, and LOCK TABLES … WRITE for a schema restore. A lock request that waits holds up everything queued behind
 * it, and a function that times out can leave its session waiting on the server. So each try waits 2 s at most, 5
 * tries; then the restore fails with TableBusyError (nothing written, naming who holds the table), and the rollback
 * machine tries the unit again later, the queue drained in between (its Retry on TableBusyError).
 */
export const RESTORE_LOCK: TableLockWait = { timeoutMs: 2000, tries: 5, pauseMs: 1000 };

/** How an engine tells a lock wait that ran out, and who held the table then (each as one line, oldest first). */
export interface LockWaitReader {
  isLockTimeout: (error: unknown) => boolean;
  holders: () => Promise<string[]>;
}

/**
 * Runs `attempt` (one try, its lock wait bounded by the caller's server setting) until it does not fail with a lock
 * timeout, at most `lock.tries` times, `lock.pauseMs` apart; after the last, throws TableBusyError with the message
 * `busy` makes from the sessions that held the table. Each try must leave nothing behind when it fails (its
 * transaction rolled back).
 */
export async function withLockTries<T>(lock: TableLockWait, engine: LockWaitReader, busy: (holders: string) => string, attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n += 1) {
    try {
      return await attempt();
    } catch (error) {
      if (!engine.isLockTimeout(error)) throw error;
      if (n >= lock.tries) throw new TableBusyError(busy((await engine.holders().catch(() => [])).join('; ') || 'they ended meanwhile'));
      await new Promise((resolve) => setTimeout(resolve, lock.pauseMs));
    }
  }
}

/** A size in GiB, MiB or KiB. */
export const gib = (bytes: number): string =>
  bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : bytes >= 1024 ** 2 ? `${(bytes / 1024 ** 2).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;

/** How a table unit's restore point will be taken, as far as the manifest says (the plan prints it); undefined for other units. */
export function describeCapture(unit: Unit): string | undefined {
  if (unit.type !== 'postgres-table' && unit.type !== 'mysql-table') return undefined;
  if (unit.capture !== undefined) return `capture: ${unit.capture} (the unit sets it)`;
  return unit.type === 'postgres-table'
    ? `capture: chosen at snapshot by the table's size: copy-on-write at ${gib(COPY_ON_WRITE_ABOVE_BYTES)} or more when it can protect the table, else copy`
    : 'capture: copy (the default at any size for MySQL/MariaDB)';
}
