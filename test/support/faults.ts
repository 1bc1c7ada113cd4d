import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { RDSClient } from '@aws-sdk/client-rds';
import type { S3Client } from '@aws-sdk/client-s3';
import mysql from 'mysql2/promise';
import pg from 'pg';
import type { MysqlConnector, PostgresConnector } from '../../core/runtime/connections.ts';
import { MYSQL_ADMIN_URL } from './mysql.ts';
import { POSTGRES_ADMIN_URL } from './postgres.ts';

/**
 * The fault seam. Production code never sees it: SDK clients get one more middleware, and database connectors are
 * wrapped, then both are handed to the steps as their dependencies. Every write goes past `FaultPlan.hit`, which
 * records it (channel, kind, its ordinal among writes of that kind) and says whether this is the one to fail:
 * - `before`: the request never reaches the service (throttled, refused, connection reset before sending); for a
 *   database, the session is terminated from a second connection (pg_terminate_backend / KILL) just before the
 *   statement, which then fails;
 * - `after`: the service did the write and the answer is lost (a timeout, a reset after sending); for a database the
 *   session is terminated just after the statement returned, so whatever its open transaction held is rolled back.
 */

export type Channel = 's3' | 'dynamodb' | 'rds' | 'postgres' | 'mysql';
export type When = 'before' | 'after';

export interface WritePoint {
  channel: Channel;
  kind: string;
  /** 1-based: the nth write of this kind on this channel in the run. */
  n: number;
}

export const pointName = (p: WritePoint): string => `${p.channel} ${p.kind} #${p.n}`;

export class FaultPlan {
  private counts = new Map<string, number>();
  recorded: WritePoint[] = [];
  target: (WritePoint & { when: When }) | undefined;
  fired = false;

  /** A new run: counts from zero, with this target (none: record only). */
  arm(target?: WritePoint & { when: When }): void {
    this.counts.clear();
    this.recorded = [];
    this.target = target;
    this.fired = false;
  }

  hit(channel: Channel, kind: string): When | undefined {
    const key = `${channel} ${kind}`;
    const n = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, n);
    this.recorded.push({ channel, kind, n });
    const t = this.target;
    if (!t || this.fired || t.channel !== channel || t.kind !== kind || t.n !== n) return undefined;
    this.fired = true;
    return t.when;
  }
}

export function injectedFault(channel: Channel, kind: string, when: When): Error {
  return Object.assign(new Error(`injected fault ${when} ${channel} ${kind}`), { name: 'InjectedFault' });
}

const S3_WRITES = /^(Put|Copy|Delete|CompleteMultipartUpload|CreateMultipartUpload|UploadPart|AbortMultipartUpload|RestoreObject)/;
const DYNAMODB_WRITES = /^(Put|Update|Delete|BatchWrite|TransactWrite)/;
const RDS_WRITES = /^(Create|Restore|Modify|Delete|AddTags|RemoveTags|Reboot|Start|Stop|Promote|Copy|Failover)/;

/** Adds the fault middleware to a client (before retries: an injected fault is not retried by the SDK). */
export function withFaults<C extends S3Client | DynamoDBClient | RDSClient>(client: C, channel: 's3' | 'dynamodb' | 'rds', plan: FaultPlan): C {
  const writes = channel === 's3' ? S3_WRITES : channel === 'rds' ? RDS_WRITES : DYNAMODB_WRITES;
  (client.middlewareStack as S3Client['middlewareStack']).add(
    (next, context) => async (args) => {
      const kind = String(context.commandName ?? '').replace(/Command$/, '');
      if (!writes.test(kind)) return next(args);
      const when = plan.hit(channel, kind);
      if (when === 'before') throw injectedFault(channel, kind, when);
      const out = await next(args);
      if (when === 'after') throw injectedFault(channel, kind, when);
      return out;
    },
    { step: 'initialize', name: 'faultInjection' },
  );
  return client;
}

const SQL_WRITE = /^\s*(INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|COMMENT|GRANT|REVOKE|RENAME)\b/i;

/** The kind of a write statement (its first keyword; `SETVAL` for a sequence reset), or undefined for a read. */
export function sqlWriteKind(text: string): string | undefined {
  const m = SQL_WRITE.exec(text);
  if (m) return m[1]!.toUpperCase();
  return /\bsetval\s*\(/i.test(text) ? 'SETVAL' : undefined;
}

async function terminatePostgres(pid: number): Promise<void> {
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
  } finally {
    await admin.end();
  }
}

async function killMysql(id: number): Promise<void> {
  const url = new URL(MYSQL_ADMIN_URL.replace(/^mariadb:/, 'mysql:'));
  const admin = await mysql.createConnection({ host: url.hostname, port: Number(url.port || 3306), user: decodeURIComponent(url.username) });
  try {
    await admin.query(`KILL CONNECTION ${Number(id)}`);
  } finally {
    await admin.end();
  }
}

export function faultyPostgres(inner: PostgresConnector, plan: FaultPlan): PostgresConnector {
  return {
    async connect(name) {
      const client = await inner.connect(name);
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const pid = rows[0]!.pid;
      const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
      (client as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (...args: unknown[]) => {
        const first = args[0] as string | { text?: string } | undefined;
        const text = typeof first === 'string' ? first : first?.text;
        const kind = text ? sqlWriteKind(text) : undefined;
        const when = kind ? plan.hit('postgres', kind) : undefined;
        if (when === 'before') await terminatePostgres(pid);
        const out = await query(...args);
        if (when === 'after') {
          await terminatePostgres(pid);
          throw injectedFault('postgres', kind!, when);
        }
        return out;
      };
      return client;
    },
  };
}

export function faultyMysql(inner: MysqlConnector, plan: FaultPlan): MysqlConnector {
  return {
    async connect(name) {
      const connection = await inner.connect(name);
      const id = connection.threadId;
      const query = connection.query.bind(connection) as (...args: unknown[]) => Promise<unknown>;
      (connection as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (...args: unknown[]) => {
        const first = args[0] as string | { sql?: string } | undefined;
        const text = typeof first === 'string' ? first : first?.sql;
        const kind = text ? sqlWriteKind(text) : undefined;
        const when = kind ? plan.hit('mysql', kind) : undefined;
        if (when === 'before' && id !== null) await killMysql(id);
        const out = await query(...args);
        if (when === 'after' && id !== null) {
          await killMysql(id);
          throw injectedFault('mysql', kind!, when);
        }
        return out;
      };
      return connection;
    },
  };
}
