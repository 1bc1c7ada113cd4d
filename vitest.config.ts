import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The fault matrix runs for a long time (two rollbacks for each of about 70 write points): started first, it takes one
 * worker from the start while the other works through the rest, instead of starting minutes in and running on alone at
 * the end. Vitest's own order (largest files first on a fresh clone, as in CI) is kept for the others.
 */
class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const longest = (f: TestSpecification): number => (f.moduleId.endsWith('/test/e2e/fault-matrix.test.ts') ? 0 : 1);
    return sorted.sort((a, b) => longest(a) - longest(b));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests share one moto server (state is namespaced per test by unique bucket/table names).
    fileParallelism: true,
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
  },
});
