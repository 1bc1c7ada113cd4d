import type pg from 'pg';
import { rowText } from './sql.ts';

/**
 * Count and checksum of the rows a query lists, over `columns` (in that order).
 *
 * The checksum is the SUM over rows of the first 64 bits of md5(row text), as a signed bigint summed in numeric
 * (exact, no overflow). A sum does not depend on the order rows are read in (tables have none), and unlike XOR it
 * counts duplicates: two equal rows add their hash twice instead of cancelling out, so a duplicated row changes it.
 */
export async function countAndChecksum(client: pg.Client, rowsSql: string, columns: string[]): Promise<{ count: number; checksum: string }> {
  const { rows } = await client.query<{ n: string; checksum: string }>(
    `SELECT count(*)::text AS n, coalesce(sum(${rowHash(columns, 't')}), 0)::text AS checksum FROM (${rowsSql}) AS t`,
  );
  const row = rows[0];
  return { count: Number(row?.n ?? 0), checksum: row?.checksum ?? '0' };
}

/**
 * One row's term of the checksum (numeric): summed over rows it is countAndChecksum's checksum, so a checksum can be
 * carried from one state to another by subtracting the terms of the rows that left and adding those of the rows that
 * came (exact: numeric does not overflow).
 */
export const rowHash = (columns: string[], alias: string): string => `('x' || substr(md5(${rowText(columns, alias)}), 1, 16))::bit(64)::bigint::numeric`;
