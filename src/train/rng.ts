/** The seeded PRNG lives in src/tensor/rng.ts, where sampling (src/gpt) can use it too; re-exported for src/train. */
export { Rng } from '../tensor/rng.js';
