import mysql from 'mysql2/promise';
import { randomBytes } from 'node:crypto';

/** The MySQL/MariaDB server on this machine (user root, no password). Override with TEST_MYSQL_URL (no database part). */
export const MYSQL_ADMIN_URL = process.env.TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306';

export interface TestMysqlDatabase {
  name: string;
  /** `mysql://…/<name>`: a manifest connection URL for this database. */
  url: string;
  /** A connection to this database (time_zone '+00:00', utf8mb4); ended by drop(). */
  connection(): Promise<mysql.Connection>;
  /** Drops the database and every etl_rollback shadow/quarantine table made from its tables. */
  drop(): Promise<void>;
}

function adminOptions(database?: string): mysql.ConnectionOptions {
  const url = new URL(MYSQL_ADMIN_URL.replace(/^mariadb:/, 'mysql:'));
  return {
    host: url.hostname,
    port: url.port ? Number(url.port) : 3306,
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database,
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    charset: 'utf8mb4',
  };
}

/** Creates a database of its own for one test file; drop() removes it and what etl-rollback kept of it. */
export async function createTestMysqlDatabase(prefix = 'etlrb'): Promise<TestMysqlDatabase> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = await mysql.createConnection(adminOptions());
  try {
    await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`);
  } finally {
    await admin.end();
  }
  const url = `${MYSQL_ADMIN_URL.replace(/\/+$/, '')}/${name}`;
  const opened: mysql.Connection[] = [];
  return {
    name,
    url,
    async connection() {
      const c = await mysql.createConnection(adminOptions(name));
      await c.query("SET SESSION time_zone = '+00:00'");
      opened.push(c);
      return c;
    },
    async drop() {
      await Promise.allSettled(opened.map((c) => c.end()));
      const a = await mysql.createConnection(adminOptions());
      try {
        const [dbs] = await a.query<mysql.RowDataPacket[]>("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'etl_rollback'");
        if (dbs.length > 0) {
          // Shadow copies (sealed or half-made) of this database's tables, and the quarantine tables of their restores.
          const [points] = await a.query<mysql.RowDataPacket[]>(
            "SELECT shadow_table AS t FROM etl_rollback.restore_points WHERE source_table LIKE CONCAT(?, '.%')",
            [name],
          );
          const [quarantines] = await a.query<mysql.RowDataPacket[]>(
            "SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'etl_rollback' AND TABLE_COMMENT LIKE CONCAT('%\"table\":\"', ?, '.%')",
            [name],
          );
          // Copy-on-write guard tables: their foreign keys into this database would stop DROP DATABASE.
          const [guards] = await a.query<mysql.RowDataPacket[]>(
            "SELECT DISTINCT TABLE_NAME AS t FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = 'etl_rollback' AND UNIQUE_CONSTRAINT_SCHEMA = ?",
            [name],
          );
          for (const row of [...guards, ...points, ...quarantines]) await a.query(`DROP TABLE IF EXISTS etl_rollback.\`${String(row.t)}\``);
          await a.query("DELETE FROM etl_rollback.restore_points WHERE source_table LIKE CONCAT(?, '.%')", [name]);
        }
        await a.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await a.end();
      }
    },
  };
}

/**
 * A user that may only read one table (SELECT on it, nothing else), to show that a restore keeps the table's grants:
 * `count()` reads the table as that user. `drop()` removes the user.
 */
export async function createTableReader(database: string, table: string): Promise<{ user: string; count(): Promise<number>; drop(): Promise<void> }> {
  const user = `etlrb_rd_${randomBytes(4).toString('hex')}`;
  const admin = await mysql.createConnection(adminOptions());
  try {
    await admin.query(`CREATE USER '${user}'@'%'`);
    await admin.query(`GRANT SELECT ON \`${database}\`.\`${table}\` TO '${user}'@'%'`);
  } finally {
    await admin.end();
  }
  return {
    user,
    async count() {
      const c = await mysql.createConnection({ ...adminOptions(database), user, password: '' });
      try {
        const [rows] = await c.query<mysql.RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${table}\``);
        return Number(rows[0]?.n);
      } finally {
        await c.end();
      }
    },
    async drop() {
      const a = await mysql.createConnection(adminOptions());
      try {
        await a.query(`DROP USER IF EXISTS '${user}'@'%'`);
      } finally {
        await a.end();
      }
    },
  };
}
