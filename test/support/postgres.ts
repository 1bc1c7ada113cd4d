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
      const a = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}
