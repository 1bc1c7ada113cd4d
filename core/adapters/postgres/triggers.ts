import type pg from 'pg';
import { PreflightError } from '../../errors.ts';
import { ident } from './sql.ts';
import { userTriggers, type Relation, type UserTrigger, type UserTriggers } from './catalog.ts';

/**
 * User triggers during a restore.
 *
 * A restore is not a business write: it puts back rows that already went through the triggers once. An audit or
 * "updated_at" trigger firing for it would record the rollback as business activity, or change the very values being
 * restored. So by default (`'disable'`) the table's enabled user triggers are disabled inside the restore transaction
 * with `ALTER TABLE … DISABLE TRIGGER name` and put back to their exact state (enabled, ALWAYS) before commit.
 * Constraint triggers that PostgreSQL makes for foreign keys are not user triggers: FK enforcement stays on, in both
 * directions. The ALTER is transactional (a failed restore leaves the triggers as they were) and needs a SHARE ROW
 * EXCLUSIVE lock, which the restore holds anyway, so no other session's write can slip past the disabled triggers.
 *
 * `session_replication_role = replica` would do the same without naming triggers but needs superuser, and it also
 * turns off FK enforcement: not an option. `'fire'` keeps triggers firing (for tables whose triggers maintain data
 * the restore must keep consistent, e.g. a summary table kept by trigger).
 */
export type TriggerMode = 'disable' | 'fire';

const stateCommand: Record<string, string> = { O: 'ENABLE TRIGGER', D: 'DISABLE TRIGGER', R: 'ENABLE REPLICA TRIGGER', A: 'ENABLE ALWAYS TRIGGER' };

/** Disables the enabled user triggers of the table (and its partitions); returns what to put back. */
export async function suspendUserTriggers(client: pg.Client, table: Relation, unitId: string): Promise<UserTrigger[]> {
  const plan = await triggerSuspension(client, table, unitId);
  if (plan.disable.length > 0) await client.query(plan.disable.join('; '));
  return plan.saved;
}

/**
 * What suspendUserTriggers does, as statements for the caller to send with its own (one round trip for the writes):
 * `disable` before them, `resume` after them, in the same transaction. Reads the triggers (one round trip), unless the
 * caller read them already in the same transaction, under the table lock (`read`: userTriggersSql's row).
 */
export async function triggerSuspension(client: pg.Client, table: Relation, unitId: string, read?: UserTriggers): Promise<{ saved: UserTrigger[]; disable: string[]; resume: string[] }> {
  const { triggers: all, owner } = read ?? (await userTriggers(client, table.oid));
  // 'R' triggers fire only in replica sessions and 'D' ones never: only 'O' and 'A' would fire for the restore.
  const firing = all.filter((t) => t.enabled === 'O' || t.enabled === 'A');
  if (firing.length === 0) return { saved: [], disable: [], resume: [] };
  if (!owner) {
    throw new PreflightError(
      `unit "${unitId}": ${table.display} has user triggers (${firing.map((t) => t.name).join(', ')}) that must not fire for a restore, ` +
        'and disabling them needs the table owner\'s rights, which this connection does not have. Nothing was written. ' +
        'Connect as the owner (or a member of its role), or configure the adapter with triggers: "fire".',
    );
  }
  return {
    saved: all,
    disable: alterStatements(firing.map((t) => ({ relation: t.relation, action: `DISABLE TRIGGER ${ident(t.name)}` }))),
    resume: resumeStatements(all),
  };
}

/**
 * Puts every user trigger back to the state it had, parents first: on a partitioned table an ALTER of the parent's
 * trigger recurses into the partitions' clones, so each partition's own state is set again after its parent's.
 */
export async function resumeUserTriggers(client: pg.Client, saved: UserTrigger[]): Promise<void> {
  const statements = resumeStatements(saved);
  if (statements.length > 0) await client.query(statements.join('; '));
}

const resumeStatements = (saved: UserTrigger[]): string[] =>
  alterStatements(saved.map((t) => ({ relation: t.relation, action: `${stateCommand[t.enabled] ?? 'ENABLE TRIGGER'} ${ident(t.name)}` })));

/** The actions in order, one ALTER TABLE per run of the same relation (its actions comma-separated). */
function alterStatements(actions: Array<{ relation: string; action: string }>): string[] {
  const statements: string[] = [];
  let run: { relation: string; actions: string[] } | undefined;
  for (const a of actions) {
    if (run?.relation !== a.relation) {
      if (run) statements.push(`ALTER TABLE ${run.relation} ${run.actions.join(', ')}`);
      run = { relation: a.relation, actions: [] };
    }
    run.actions.push(a.action);
  }
  if (run) statements.push(`ALTER TABLE ${run.relation} ${run.actions.join(', ')}`);
  return statements;
}
