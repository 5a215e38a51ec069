import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // One copy of graphql: type-graphql and Apollo load the CommonJS build, so tests must too.
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql/index.js') }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/build.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: true,
    // Vitest's default, a worker per core but one, runs one file at a time on two cores; the suite spends much of
    // its time waiting on child processes, databases and timers, so a second file fills the idle core.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
