import { defineConfig } from 'vitest/config';

/** Kernel tests run twice: batched (the default) and with a submit after every dispatch. */
const KERNEL_TESTS = [
  'elementwise', 'reduce-layout', 'matmul', 'matmul-rows', 'layernorm', 'gelu', 'softmax', 'embedding', 'adamw', 'attention', 'cross-entropy', 'half-weights',
].map((name) => `tests/${name}.test.ts`);

export default defineConfig({
  test: {
    // Dawn's addon crashes inside worker threads: every test file runs in its own child process.
    pool: 'forks',
    testTimeout: 300_000,
    hookTimeout: 120_000,
    projects: [
      { extends: true, test: { name: 'batched', include: ['tests/**/*.test.ts'] } },
      { extends: true, test: { name: 'immediate', include: KERNEL_TESTS, env: { GPT2_WEBGPU_IMMEDIATE: '1' } } },
    ],
  },
});
