import type { Context } from 'aws-lambda';

/** A task handler as the local runner calls it (a test's replacement for one of the real ones). */
export type Handler = (event: unknown, context: Context) => Promise<unknown>;

/**
 * A gate a replaced handler waits at until the test opens it: `wait()` (in the handler) announces the arrival and
 * waits; `reached` resolves when the run arrives there; `open()` lets it go on.
 */
export function gate() {
  let open!: () => void;
  let arrive!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const reached = new Promise<void>((r) => (arrive = r));
  return { open, reached, wait: async () => (arrive(), opened) };
}
