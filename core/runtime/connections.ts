import pg from 'pg';
import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { InputError } from '../errors.ts';
import type { Connection } from '../manifest/schema.ts';

/** Opens a PostgreSQL client for a connection named in the manifest. The caller ends it. */
export interface PostgresConnector {
  connect(connectionName: string): Promise<pg.Client>;
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

/**
 * Resolves manifest connections: a `url` as-is (local runs), a `secretArn` through Secrets Manager (AWS).
 * Secrets are fetched once per connector and never logged.
 */
export function postgresConnector(
  connections: Record<string, Connection>,
  secrets?: SecretsManagerClient,
): PostgresConnector {
  const resolved = new Map<string, Promise<pg.ClientConfig>>();

  async function resolve(name: string): Promise<pg.ClientConfig> {
    const connection = connections[name];
    if (!connection) {
      throw new InputError(`connection "${name}" is not defined in the manifest (known: ${Object.keys(connections).join(', ') || 'none'})`);
    }
    if (connection.engine !== 'postgres') {
      throw new InputError(`connection "${name}" is a ${connection.engine} connection, not postgres`);
    }
    if ('url' in connection) return { connectionString: connection.url };
    if (!secrets) throw new InputError(`connection "${name}" uses a secret, but no Secrets Manager client was given`);
    const out = await secrets.send(new GetSecretValueCommand({ SecretId: connection.secretArn }));
    const parsed = dbSecretSchema.safeParse(JSON.parse(out.SecretString ?? '{}'));
    if (!parsed.success) throw new InputError(`secret of connection "${name}" lacks host/username/password`);
    const s = parsed.data;
    return { host: s.host, port: s.port ?? 5432, user: s.username, password: s.password, database: s.dbname ?? s.database ?? 'postgres', ssl: { rejectUnauthorized: true } };
  }

  return {
    async connect(name) {
      let config = resolved.get(name);
      if (!config) {
        config = resolve(name);
        resolved.set(name, config);
        config.catch(() => resolved.delete(name));
      }
      const client = new pg.Client({ ...(await config), application_name: 'etl-rollback' });
      await client.connect();
      return client;
    },
  };
}
