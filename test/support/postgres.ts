import pg from 'pg';
import { randomBytes } from 'node:crypto';

/** The PostgreSQL server on this machine (trust auth). Override with TEST_POSTGRES_URL. */
export const POSTGRES_ADMIN_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  name: string;
  url: string;
  client(): Promise<pg.Client>;
  drop(): Promise<void>;
}

/**
 * "No table is dropped", checked by the server: every test database gets an event trigger on sql_drop that logs each
 * table dropped, by whom (application_name; etl-rollback's sessions say 'etl-rollback') and with what statement.
 * etl-rollback restores tables in place and drops only its own tables, in schema etl_rollback (released shadow
 * copies, undo logs, empty quarantines) and in a drill's scratch schemas etl_rollback_drill_<8 hex> (its scratch copies);
 * drop() fails the test file if it dropped anything else.
 */
const DROP_GUARD = `
  CREATE SCHEMA etl_guard;
  CREATE TABLE etl_guard.drops (at timestamptz NOT NULL DEFAULT now(), schema_name text, object_name text, app text, statement text);
  CREATE FUNCTION etl_guard.record_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO etl_guard.drops (schema_name, object_name, app, statement)
    SELECT o.schema_name, o.object_name, current_setting('application_name'), left(current_query(), 500)
      FROM pg_catalog.pg_event_trigger_dropped_objects() AS o
     WHERE o.object_type = 'table' AND o.original AND NOT o.is_temporary;
  END $$;
  CREATE EVENT TRIGGER etl_guard_drops ON sql_drop EXECUTE FUNCTION etl_guard.record_drop();`;

/** Creates a database of its own for one test file; drop() removes it (and ends stray sessions). */
export async function createTestDatabase(prefix = 'etlrb'): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = POSTGRES_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  try {
    await setup.query(DROP_GUARD);
  } finally {
    await setup.end();
  }
  const opened: pg.Client[] = [];
  return {
    name,
    url,
    async client() {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      opened.push(c);
      return c;
    },
    async drop() {
      await Promise.allSettled(opened.map((c) => c.end()));
      const check = new pg.Client({ connectionString: url });
      await check.connect();
      const dropped = await check
        .query<{ schema_name: string; object_name: string; statement: string }>(
          `SELECT schema_name, object_name, statement FROM etl_guard.drops WHERE app = 'etl-rollback' AND schema_name <> 'etl_rollback' AND schema_name !~ '^etl_rollback_drill_[0-9a-f]{8}$'`,
        )
        .then((r) => r.rows)
        .finally(() => check.end());
      const a = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
      if (dropped.length > 0) {
        throw new Error(`etl-rollback dropped table(s) of the database it protects: ${dropped.map((d) => `${d.schema_name}.${d.object_name} (${d.statement})`).join('; ')}`);
      }
    },
  };
}
