import type mysql from 'mysql2/promise';
import { InputError } from '../../errors.ts';
import { findTable, select } from '../mysql/sql.ts';

/**
 * Write freeze of a mysql-table unit: the table-level write privileges (INSERT, UPDATE, DELETE, and DROP, which TRUNCATE
 * needs) the named accounts hold are read and returned first (the caller keeps them in the state bucket before anything
 * is revoked), then revoked; lifting grants back exactly what was recorded (with GRANT OPTION where the account had it).
 * MySQL and MariaDB apply a table privilege change at the client's next statement, so a session the writer already
 * holds is refused too.
 *
 * Only table-level grants can be taken away for one table: an account that can also write through a database-wide or
 * global grant is refused at freeze time, naming the account and the grant, before anything is revoked.
 *
 * Accounts are written `user` or `user@host` (host "%" when omitted), as in `'user'@'host'`.
 */

export const FROZEN_MYSQL_PRIVILEGES = ['INSERT', 'UPDATE', 'DELETE', 'DROP'] as const;

export interface MysqlGrant {
  db: string;
  table: string;
  /** `'user'@'host'`, as information_schema writes it. */
  grantee: string;
  privilege: string;
  grantable: boolean;
}

/** `user@host` → `'user'@'host'` (host "%" when omitted). */
export function mysqlAccount(name: string): string {
  const at = name.lastIndexOf('@');
  const user = at >= 0 ? name.slice(0, at) : name;
  const host = at >= 0 ? name.slice(at + 1) : '%';
  return `'${user.replace(/'/g, "''")}'@'${host.replace(/'/g, "''")}'`;
}

const quoted = (grantee: string): string => grantee;
const tableSql = (db: string, table: string): string => `\`${db.replace(/`/g, '``')}\`.\`${table.replace(/`/g, '``')}\``;

/** The table-level write privileges of `accounts` on the table; refuses accounts that also write through wider grants. */
export async function readMysqlWriteGrants(conn: mysql.Connection, table: string, accounts: string[]): Promise<MysqlGrant[]> {
  const found = await findTable(conn, table);
  if (!found) throw new InputError(`cannot freeze table "${table}": it does not exist`);
  const grantees = accounts.map(mysqlAccount);
  const known = await select<{ grantee: string }>(conn, `SELECT CONCAT("'", User, "'@'", Host, "'") AS grantee FROM mysql.user`);
  const missing = accounts.filter((_, i) => !known.some((k) => k.grantee === grantees[i]));
  if (missing.length > 0) throw new InputError(`cannot freeze table "${table}": freeze.revokeFrom names account(s) that do not exist: ${missing.join(', ')}`);
  const wider = [
    ...(await select<{ grantee: string; privilege: string }>(
      conn,
      `SELECT GRANTEE AS grantee, PRIVILEGE_TYPE AS privilege FROM information_schema.SCHEMA_PRIVILEGES
        WHERE TABLE_SCHEMA = ? AND GRANTEE IN (?) AND PRIVILEGE_TYPE IN (?)`,
      [found.db, grantees, [...FROZEN_MYSQL_PRIVILEGES]],
    )).map((r) => `${r.grantee} has ${r.privilege} on database ${found.db}`),
    ...(await select<{ grantee: string; privilege: string }>(
      conn,
      `SELECT GRANTEE AS grantee, PRIVILEGE_TYPE AS privilege FROM information_schema.USER_PRIVILEGES
        WHERE GRANTEE IN (?) AND PRIVILEGE_TYPE IN (?)`,
      [grantees, [...FROZEN_MYSQL_PRIVILEGES]],
    )).map((r) => `${r.grantee} has global ${r.privilege}`),
  ];
  if (wider.length > 0) {
    throw new InputError(`cannot freeze table "${table}": revoking table grants would not stop every named account (${wider.join('; ')}); nothing was revoked`);
  }
  const rows = await select<{ grantee: string; privilege: string; grantable: string }>(
    conn,
    `SELECT GRANTEE AS grantee, PRIVILEGE_TYPE AS privilege, IS_GRANTABLE AS grantable FROM information_schema.TABLE_PRIVILEGES
      WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND GRANTEE IN (?) AND PRIVILEGE_TYPE IN (?) ORDER BY GRANTEE, PRIVILEGE_TYPE`,
    [found.db, found.name, grantees, [...FROZEN_MYSQL_PRIVILEGES]],
  );
  return rows.map((r) => ({ db: found.db, table: found.name, grantee: r.grantee, privilege: r.privilege, grantable: r.grantable === 'YES' }));
}

/**
 * Revokes the recorded privileges. Idempotent: MySQL refuses to revoke a grant that does not exist, so each privilege
 * still held (read again) is revoked on its own.
 */
export async function applyMysqlFreeze(conn: mysql.Connection, recorded: MysqlGrant[]): Promise<void> {
  for (const g of recorded) {
    const [held] = await select<{ n: number }>(
      conn,
      `SELECT COUNT(*) AS n FROM information_schema.TABLE_PRIVILEGES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND GRANTEE = ? AND PRIVILEGE_TYPE = ?`,
      [g.db, g.table, g.grantee, g.privilege],
    );
    if (Number(held?.n ?? 0) > 0) await conn.query(`REVOKE ${g.privilege} ON ${tableSql(g.db, g.table)} FROM ${quoted(g.grantee)}`);
  }
}

/** Grants back exactly what was recorded. Idempotent. */
export async function grantMysqlBack(conn: mysql.Connection, grants: MysqlGrant[]): Promise<void> {
  for (const g of grants) {
    await conn.query(`GRANT ${g.privilege} ON ${tableSql(g.db, g.table)} TO ${quoted(g.grantee)}${g.grantable ? ' WITH GRANT OPTION' : ''}`);
  }
}
