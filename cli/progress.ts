/** Progress lines on stderr for long work, one per meaningful step, so stdout stays clean for --json. */
export function progressLine(stateName: string, input: unknown): string | undefined {
  const i = (input ?? {}) as {
    unitId?: string;
    stage?: number;
    current?: { stage?: { index: number; units: string[] } };
    capture?: { status?: string; waitSeconds?: number };
    restore?: { status?: string; waitSeconds?: number };
    rehearsal?: { status?: string; waitSeconds?: number };
    seal?: { status?: string };
    poll?: { count?: number };
  };
  switch (stateName) {
    case 'Register deployment':
      return '› registering deployment';
    case 'Capture unit':
      return `› capturing ${i.unitId}`;
    case 'Wait for capture':
      return `› waiting ${i.capture?.waitSeconds ?? '?'} s: ${i.capture?.status ?? i.unitId}`;
    case 'Wait for restore':
      return `› waiting ${i.restore?.waitSeconds ?? '?'} s: ${i.restore?.status ?? i.unitId}`;
    case 'Restore points in place':
      return '› every unit is recording';
    case 'Seal units': {
      const sealing = (i as { inPlace?: { sealing?: string[] } }).inPlace?.sealing ?? [];
      return sealing.length > 0 ? `› restore points in place: the deploy may start; sealing ${sealing.join(', ')} while it runs` : undefined;
    }
    case 'Seal unit':
      // Once per unit: a large table's seal comes back to this state between its key ranges ("Wait for seal").
      return (i.poll?.count ?? 0) === 0 ? `› sealing ${i.unitId}: count and checksum as it was when its triggers went in` : undefined;
    case 'Wait for seal':
      return `› ${i.seal?.status ?? `sealing ${i.unitId}`}`;
    case 'Seal restore points':
      return '› sealing restore points';
    case 'Plan rollback':
      return '› planning';
    case 'Describe changes':
      return '› computing what each unit would change (dry run)';
    case 'Acquire pipeline lock':
      return '› acquiring pipeline lock';
    case 'Check maintenance window':
      return '› checking the maintenance windows';
    case 'Wait for maintenance window':
      return `› outside every maintenance window: waiting until ${(i as { window?: { nextOpenAt?: string } }).window?.nextOpenAt ?? 'the next one opens'}`;
    case 'Request approval': {
      const runId = (i as { runId?: string }).runId ?? '<run>';
      return `› waiting for approval: etl-rollback approve ${runId} (or reject ${runId} --reason …)`;
    }
    case 'Pause pipeline triggers':
      return '› pausing the pipeline\'s triggers';
    case 'Resume pipeline triggers':
    case 'Resume pipeline triggers after failure':
      return '› resuming the pipeline\'s triggers';
    case 'Restore unit':
      return `› stage ${typeof i.stage === 'number' ? i.stage + 1 : '?'}: restoring ${i.unitId}`;
    case 'Verify stage':
      return i.current?.stage ? `› stage ${i.current.stage.index + 1}: verifying ${i.current.stage.units.join(', ')}` : '› verifying stage';
    case 'Record rollback failure':
    case 'Record snapshot failure':
      return '› recording failure';
    case 'Release lock':
    case 'Release lock after failure':
      return '› releasing lock';
    case 'Plan drill':
      return '› planning the drill';
    case 'Rehearse unit':
      return `› stage ${typeof i.stage === 'number' ? i.stage + 1 : '?'}: rehearsing ${i.unitId} in a scratch target`;
    case 'Wait for rehearsal':
      return `› waiting ${i.rehearsal?.waitSeconds ?? '?'} s: ${i.rehearsal?.status ?? i.unitId}`;
    case 'Verify scratch stage':
      return i.current?.stage ? `› stage ${i.current.stage.index + 1}: verifying the scratch copies of ${i.current.stage.units.join(', ')}` : '› verifying the scratch copies';
    case 'Clean up scratch targets':
      return '› removing the scratch targets';
    case 'Finish drill':
    case 'Record drill not started':
      return '› writing the drill report';
    default:
      return undefined;
  }
}

/** The retry policy of a state, as far as a progress line needs it (ASL Retrier). */
export interface RetryPolicy {
  IntervalSeconds?: number;
  MaxAttempts?: number;
  BackoffRate?: number;
  MaxDelaySeconds?: number;
}

/**
 * A state failed with an error its Retry names, and will run again: what failed (the cause's first line) and when it
 * runs again. `attempt` counts the retries so far, this one included. The engine waits the delay, not our code.
 */
export function retryLine(stateName: string, input: unknown, error: { name: string; cause: string } | undefined, attempt: number, policy: RetryPolicy): string {
  const unitId = (input as { unitId?: string } | null)?.unitId;
  const delay = Math.min((policy.IntervalSeconds ?? 1) * (policy.BackoffRate ?? 2) ** Math.max(0, attempt - 1), policy.MaxDelaySeconds ?? Number.POSITIVE_INFINITY);
  const what = error ? `${error.name}: ${error.cause.split('\n')[0]}` : 'failed';
  return `› ${stateName}${unitId ? ` (${unitId})` : ''}: ${what}\n  trying again (${attempt} of ${policy.MaxAttempts ?? 3}) in up to ${Math.round(delay)} s`;
}
