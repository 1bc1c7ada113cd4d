import type pg from 'pg';
import { InputError } from '../../errors.ts';
import { findRelation } from '../postgres/catalog.ts';
import { ident } from '../postgres/sql.ts';

/**
 * Write freeze of a postgres-table unit: the write privileges (INSERT, UPDATE, DELETE, TRUNCATE) the named roles hold on
 * the table — and on each of its partitions, which a writer can target directly — are read and returned first (the
 * caller keeps them in the state bucket before anything is revoked), then revoked. Lifting grants back exactly what was
 * recorded, privilege by privilege, with the grant option where there was one: a role that had only INSERT gets only
 * INSERT back. PostgreSQL checks privileges at every statement, so a session the writer already holds is refused too.
 *
 * After revoking, the freeze checks that the role really cannot write any more (has_table_privilege): a role that still
 * can — through membership in another role, ownership, superuser, or a grant made by another grantor — is refused with
 * its name and how it can still write, and what was revoked is granted back, since the freeze would not hold.
 */

export const FROZEN_POSTGRES_PRIVILEGES = ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] as const;

export interface PostgresGrant {
  /** `schema.table` as quote_ident writes it. */
  relation: string;
  role: string;
  privilege: string;
  grantable: boolean;
}

async function relationsOf(client: pg.Client, table: string): Promise<{ oid: number; display: string }[]> {
  const rel = await findRelation(client, table);
  if (!rel) throw new InputError(`cannot freeze table "${table}": it does not exist`);
  const { rows } = await client.query<{ oid: number; display: string }>(
    `SELECT t.relid::oid::int AS oid, t.relid::regclass::text AS display
       FROM pg_catalog.pg_partition_tree($1::oid::regclass) t ORDER BY t.level, t.relid::regclass::text`,
    [rel.oid],
  );
  return rows.length > 0 ? rows : [{ oid: rel.oid, display: rel.display }];
}

async function requireRoles(client: pg.Client, roles: string[], table: string): Promise<void> {
  const { rows } = await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])', [roles]);
  const missing = roles.filter((r) => !rows.some((row) => row.rolname === r));
  if (missing.length > 0) throw new InputError(`cannot freeze table "${table}": freeze.revokeFrom names role(s) that do not exist: ${missing.join(', ')}`);
}

/** The write privileges granted directly to `roles` on the table and its partitions. */
export async function readPostgresWriteGrants(client: pg.Client, table: string, roles: string[]): Promise<PostgresGrant[]> {
  await requireRoles(client, roles, table);
  const grants: PostgresGrant[] = [];
  for (const rel of await relationsOf(client, table)) {
    const { rows } = await client.query<{ role: string; privilege: string; grantable: boolean }>(
      `SELECT r.rolname AS role, a.privilege_type AS privilege, bool_or(a.is_grantable) AS grantable
         FROM pg_catalog.pg_class c
         CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
         JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
        WHERE c.oid = $1 AND r.rolname = ANY($2::text[]) AND a.privilege_type = ANY($3::text[])
        GROUP BY r.rolname, a.privilege_type ORDER BY r.rolname, a.privilege_type`,
      [rel.oid, roles, [...FROZEN_POSTGRES_PRIVILEGES]],
    );
    for (const row of rows) grants.push({ relation: rel.display, role: row.role, privilege: row.privilege, grantable: row.grantable });
  }
  return grants;
}

/**
 * Revokes the write privileges of `roles` on the table and its partitions, then checks that none of them can still
 * write. Idempotent (revoking what is not granted is a no-op). `recorded` is what the caller recorded before: granted
 * back if the freeze cannot hold.
 */
export async function applyPostgresFreeze(client: pg.Client, table: string, roles: string[], recorded: PostgresGrant[]): Promise<void> {
  const relations = await relationsOf(client, table);
  const privileges = FROZEN_POSTGRES_PRIVILEGES.join(', ');
  for (const rel of relations) {
    for (const role of roles) await client.query(`REVOKE ${privileges} ON TABLE ${rel.display} FROM ${ident(role)}`);
  }
  const leaks: string[] = [];
  for (const rel of relations) {
    for (const role of roles) {
      const { rows } = await client.query<{ privilege: string; can: boolean; owner: boolean; superuser: boolean }>(
        `SELECT p AS privilege, pg_catalog.has_table_privilege($1, $2::oid, p) AS can,
                pg_catalog.pg_has_role($1, c.relowner, 'USAGE') AS owner, r.rolsuper AS superuser
           FROM unnest($3::text[]) p, pg_catalog.pg_class c, pg_catalog.pg_roles r
          WHERE c.oid = $2 AND r.rolname = $1`,
        [role, rel.oid, [...FROZEN_POSTGRES_PRIVILEGES]],
      );
      const still = rows.filter((r) => r.can);
      if (still.length > 0) {
        const how = still[0]!.superuser ? 'it is a superuser' : still[0]!.owner ? 'it owns the table (or is a member of its owner)' : 'through a role it is a member of, or a grant by another grantor';
        leaks.push(`role "${role}" can still ${still.map((r) => r.privilege).join(', ')} on ${rel.display} (${how})`);
      }
    }
  }
  if (leaks.length > 0) {
    await grantPostgresBack(client, recorded);
    throw new InputError(`cannot freeze table "${table}": revoking the table's grants does not stop every named role: ${leaks.join('; ')}. Its grants were put back; name the roles that write directly, or remove freeze`);
  }
}

/** Grants back exactly what was recorded. Idempotent (granting what is granted is a no-op). */
export async function grantPostgresBack(client: pg.Client, grants: PostgresGrant[]): Promise<void> {
  for (const g of grants) {
    await client.query(`GRANT ${g.privilege} ON TABLE ${g.relation} TO ${ident(g.role)}${g.grantable ? ' WITH GRANT OPTION' : ''}`);
  }
}
