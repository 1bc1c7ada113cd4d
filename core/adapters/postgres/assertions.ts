import type pg from 'pg';
import type { Check } from '../types.ts';

export interface Assertion {
  name: string;
  sql: string;
  timeoutSeconds: number;
}

/**
 * Runs the unit's SQL assertions, each in its own READ ONLY transaction with a statement timeout. The query must
 * return a first row whose first column is true. Anything else (false, NULL, no row, an error, the timeout) is a
 * failed check carrying what was seen, never a thrown error: the gate reports it with the other checks.
 * The query is sent with the extended protocol, which takes exactly one statement, so `…; COMMIT; DELETE …` cannot
 * step out of the read-only transaction.
 */
export async function runAssertions(client: pg.Client, assertions: readonly Assertion[]): Promise<Check[]> {
  const checks: Check[] = [];
  for (const a of assertions) {
    const name = `assertion:${a.name}`;
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      await client.query(`SET LOCAL statement_timeout = ${Math.round(a.timeoutSeconds * 1000)}`);
      const result = await client.query({ text: a.sql, queryMode: 'extended', rowMode: 'array' } as pg.QueryConfig & { queryMode: 'extended' });
      const first = (result.rows[0] as unknown[] | undefined)?.[0];
      const ok = first === true;
      const actual = result.rows.length === 0 ? 'no row' : first === null || first === undefined ? 'null' : String(first);
      checks.push({ name, ok, expected: 'true', actual, ...(ok ? {} : { detail: `${a.sql} returned ${actual}` }) });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      checks.push({ name, ok: false, expected: 'true', actual: `error: ${message}`, detail: `${a.sql} failed${/statement timeout/.test(message) ? ` after ${a.timeoutSeconds} s` : ''}` });
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
    }
  }
  return checks;
}
