import pg from 'pg';
import mysql from 'mysql2/promise';
import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { InputError } from '../errors.ts';
import type { Connection, ConnectionRds } from '../manifest/schema.ts';

/** A database server's address, as RDS reports it for an instance or cluster (`Endpoint.Address`, `Endpoint.Port`). */
export interface Endpoint {
  host: string;
  port: number;
}

/** Opens a PostgreSQL client for a connection named in the manifest. The caller ends it. */
export interface PostgresConnector {
  connect(connectionName: string): Promise<pg.Client>;
  /**
   * Opens a client to another server with the named connection's user, password and database: a temporary
   * point-in-time copy of the connection's RDS instance has the same credentials and databases at another endpoint.
   * Absent: a rollback to a time cannot read such a copy (refused with the reason).
   */
  connectTo?(connectionName: string, endpoint: Endpoint): Promise<pg.Client>;
  /** The RDS instance or Aurora cluster the manifest says holds the named connection's database (its `rds`), if any. */
  rdsOf?(connectionName: string): ConnectionRds | undefined;
}

/** Opens a MySQL/MariaDB connection for a connection named in the manifest. The caller ends it. */
export interface MysqlConnector {
  connect(connectionName: string): Promise<mysql.Connection>;
  /** As for PostgreSQL: the named connection's credentials and database, at another endpoint. */
  connectTo?(connectionName: string, endpoint: Endpoint): Promise<mysql.Connection>;
  rdsOf?(connectionName: string): ConnectionRds | undefined;
}

/** RDS-style secret as Secrets Manager stores it for a database. */
const dbSecretSchema = z.object({
  host: z.string(),
  port: z.coerce.number().int().optional(),
  username: z.string(),
  password: z.string(),
  dbname: z.string().optional(),
  database: z.string().optional(),
});

interface ResolvedSecret {
  host: string;
  port?: number;
  user: string;
  password: string;
  database?: string;
}

/** Reads an RDS-format database secret. The secret's values never appear in an error. */
async function readDbSecret(name: string, secretArn: string, secrets: SecretsManagerClient | undefined): Promise<ResolvedSecret> {
  if (!secrets) throw new InputError(`connection "${name}" uses a secret, but no Secrets Manager client was given`);
  const out = await secrets.send(new GetSecretValueCommand({ SecretId: secretArn }));
  let raw: unknown;
  try {
    raw = JSON.parse(out.SecretString ?? '{}');
  } catch {
    throw new InputError(`secret of connection "${name}" is not JSON in the RDS format (host, port, username, password, dbname)`);
  }
  const parsed = dbSecretSchema.safeParse(raw);
  if (!parsed.success) throw new InputError(`secret of connection "${name}" lacks host/username/password`);
  const s = parsed.data;
  return { host: s.host, port: s.port, user: s.username, password: s.password, database: s.dbname ?? s.database };
}

function connectionNamed(connections: Record<string, Connection>, name: string, engine: Connection['engine']): Connection {
  const connection = connections[name];
  if (!connection) {
    throw new InputError(`connection "${name}" is not defined in the manifest (known: ${Object.keys(connections).join(', ') || 'none'})`);
  }
  if (connection.engine !== engine) {
    throw new InputError(`connection "${name}" is a ${connection.engine} connection, not ${engine}`);
  }
  return connection;
}

/** Memoises a per-name async resolution; a failed one is retried next time. */
function memo<T>(resolve: (name: string) => Promise<T>): (name: string) => Promise<T> {
  const cache = new Map<string, Promise<T>>();
  return (name) => {
    let p = cache.get(name);
    if (!p) {
      p = resolve(name);
      cache.set(name, p);
      p.catch(() => cache.delete(name));
    }
    return p;
  };
}

/**
 * Resolves manifest connections: a `url` as-is (local runs), a `secretArn` through Secrets Manager (AWS).
 * Secrets are fetched once per connector and never logged.
 */
export function postgresConnector(
  connections: Record<string, Connection>,
  secrets?: SecretsManagerClient,
): PostgresConnector {
  const config = memo(async (name): Promise<pg.ClientConfig> => {
    const connection = connectionNamed(connections, name, 'postgres');
    if ('url' in connection) return { connectionString: connection.url };
    const s = await readDbSecret(name, connection.secretArn, secrets);
    return { host: s.host, port: s.port ?? 5432, user: s.user, password: s.password, database: s.database ?? 'postgres', ssl: { rejectUnauthorized: true } };
  });
  const open = async (settings: pg.ClientConfig) => {
    const client = new pg.Client({ ...settings, application_name: 'etl-rollback' });
    // A session that dies while idle (terminated, failover, network) emits 'error'; unheard, it would end the
    // process. Heard, the next query on the client fails with a clear error, which the step reports.
    client.on('error', () => undefined);
    await client.connect();
    return client;
  };
  return {
    async connect(name) {
      return open(await config(name));
    },
    async connectTo(name, endpoint) {
      const c = await config(name);
      if (c.connectionString === undefined) return open({ ...c, host: endpoint.host, port: endpoint.port });
      // The URL's host and port would win over separate fields: take its credentials and database apart instead.
      const url = new URL(c.connectionString);
      return open({
        host: endpoint.host,
        port: endpoint.port,
        user: decodeURIComponent(url.username) || undefined,
        password: decodeURIComponent(url.password) || undefined,
        database: decodeURIComponent(url.pathname.replace(/^\//, '')) || undefined,
      });
    },
    rdsOf(name) {
      return connectionNamed(connections, name, 'postgres').rds;
    },
  };
}

/** The same for MySQL/MariaDB connections (`mysql://` / `mariadb://` URLs, or an RDS secret). */
export function mysqlConnector(connections: Record<string, Connection>, secrets?: SecretsManagerClient): MysqlConnector {
  const config = memo(async (name): Promise<mysql.ConnectionOptions> => {
    const connection = connectionNamed(connections, name, 'mysql');
    if ('url' in connection) {
      const url = new URL(connection.url.replace(/^mariadb:/, 'mysql:'));
      return {
        host: url.hostname,
        port: url.port ? Number(url.port) : 3306,
        user: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
        database: url.pathname.replace(/^\//, '') || undefined,
      };
    }
    const s = await readDbSecret(name, connection.secretArn, secrets);
    return { host: s.host, port: s.port ?? 3306, user: s.user, password: s.password, database: s.database, ssl: {} };
  });
  const open = async (settings: mysql.ConnectionOptions) => {
    const connection = await mysql.createConnection({ ...settings, multipleStatements: false, dateStrings: true, supportBigNumbers: true, bigNumberStrings: true });
    // As for PostgreSQL: a connection killed while idle must fail its next query, not end the process.
    connection.on('error', () => undefined);
    return connection;
  };
  return {
    async connect(name) {
      return open(await config(name));
    },
    async connectTo(name, endpoint) {
      return open({ ...(await config(name)), host: endpoint.host, port: endpoint.port });
    },
    rdsOf(name) {
      return connectionNamed(connections, name, 'mysql').rds;
    },
  };
}
