import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * Vitest starts the files it has no timings for (a fresh clone, as in CI) largest first. The fault matrix's halves are
 * small files that run for minutes each: started first, they take both workers while the rest waits its turn, instead
 * of running last, one beside the other, after everything else.
 */
class LongFilesFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const long = (f: TestSpecification): number => (/fault-matrix-rollback/.test(f.moduleId) ? 0 : 1);
    return sorted.sort((a, b) => long(a) - long(b));
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
    sequence: { sequencer: LongFilesFirst },
  },
});
