import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Dawn's addon crashes inside worker threads: every test file runs in its own child process.
    pool: 'forks',
    include: ['tests/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
