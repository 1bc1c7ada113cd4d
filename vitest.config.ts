import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests share one moto server (state is namespaced per test by unique bucket/table names).
    fileParallelism: true,
    maxWorkers: 2,
  },
});
