import type { WorkflowDeps } from '../core/workflow/deps.ts';

interface Io {
  out(text: string): void;
  err(text: string): void;
}

/** Most passes over a drill's scratch targets before giving up (an RDS copy takes minutes to delete). */
const MAX_PASSES = 120;

/**
 * `etl-rollback drill <manifest> --clean-up <run>`: removes what a drill left behind (its execution stopped before its
 * cleanup finished), in this process, with the drill handlers' own cleanup: only targets that prove to be that run's.
 * Idempotent: a second call finds nothing. Waits between passes while an RDS copy is being deleted.
 */
export async function cleanUpDrill(
  ids: { runId: string; pipeline: string },
  io: Io,
  options: { waitMs?: (seconds: number) => number; deps?: Partial<WorkflowDeps> } = {},
): Promise<{ removed: string[] }> {
  const { cleanupDrill } = await import('../core/workflow/drill.ts');
  const { deps } = await import('../lambdas/task.ts');
  const wired = { ...deps, ...(options.deps ?? {}) };
  const removed: string[] = [];
  for (let pass = 1; ; pass++) {
    const result = await cleanupDrill(wired, ids);
    removed.push(...result.removedNow.filter((r) => !removed.includes(r)));
    if (result.done) return { removed };
    if (pass >= MAX_PASSES) throw new Error(`scratch targets of drill ${ids.runId} are still being removed after ${pass} passes: ${result.status}; run the clean-up again later`);
    io.err(`› waiting ${result.waitSeconds} s: ${result.status}`);
    await new Promise((r) => setTimeout(r, options.waitMs ? options.waitMs(result.waitSeconds) : result.waitSeconds * 1000));
  }
}
