/** Seeded host data for tests: each test draws fresh inputs from a seed it prints when it fails. */
import { uniformAt } from '../../src/tensor/cpu/random.js';

/** A seed that differs per run (fresh inputs), overridable with TEST_SEED to replay a failure. */
export function freshSeed(): number {
  return process.env.TEST_SEED ? Number(process.env.TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
}

/** Uniform in [lo, hi) from (seed, stream): different streams give independent arrays. */
export function randomArray(size: number, seed: number, stream: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(size);
  const s = (seed * 7919 + stream * 104729) >>> 0;
  for (let i = 0; i < size; i++) out[i] = lo + (hi - lo) * uniformAt(s, i);
  return out;
}

export function randomInts(size: number, seed: number, stream: number, below: number): Int32Array {
  return Int32Array.from(randomArray(size, seed, stream, 0, 1), (u) => Math.min(below - 1, Math.floor(u * below)));
}
