import type pg from 'pg';
import { literal } from './sql.ts';
import { sequencePosition, type OwnedSequence } from './catalog.ts';

/**
 * Sequence positions. Capture records the owned sequences' `last_value`/`is_called`; restore sets them back after the
 * rows, as the transaction's last statements.
 *
 * `setval` is not transactional: if the transaction later rolled back, the sequence would stay moved. That is still
 * correct here because (1) it runs last, after every row write and check could have failed, so only a failing COMMIT
 * can leave it set without the rows; (2) it sets the captured value, not a relative one, so it is idempotent and the
 * rerun that a failed restore calls for sets the same value again alongside the rows; and (3) a sequence position
 * only ever needs to be "not behind the table's values": after the restore the table holds the captured rows, whose
 * values the captured position already covered. Only sequences that differ are set, so a rerun writes nothing.
 */
export async function sequencesToReset(client: pg.Client, captured: OwnedSequence[]): Promise<OwnedSequence[]> {
  const out: OwnedSequence[] = [];
  for (const s of captured) {
    const { rows } = await client.query<{ oid: string | null }>('SELECT pg_catalog.to_regclass($1)::text AS oid', [s.name]);
    if (rows[0]?.oid == null) continue; // dropped with its column by the deploy; re-adding does not bring it back
    const now = await sequencePosition(client, s.name);
    if (now.lastValue !== s.lastValue || now.isCalled !== s.isCalled) out.push(s);
  }
  return out;
}

export async function resetSequences(client: pg.Client, sequences: OwnedSequence[]): Promise<void> {
  for (const s of sequences) {
    await client.query(`SELECT pg_catalog.setval(${literal(s.name)}::regclass, ${literal(s.lastValue)}::bigint, ${s.isCalled ? 'true' : 'false'})`);
  }
}
