/**
 * Counter-based random numbers: element i is a hash of (seed, i), so the CPU and WebGPU backends
 * draw identical uniforms and any slice can be regenerated without replaying a stream.
 * The WGSL twin is in src/kernels/elementwise.ts (`pcgHash`).
 */

/** PCG-RXS-M-XS hash of a u32 (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020). */
export function pcgHash(x: number): number {
  const state = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

export function hashAt(seed: number, i: number): number {
  return pcgHash((pcgHash(seed) + i) >>> 0);
}

/** Uniform in [0, 1) with 24 bits, exactly representable in f32. */
export function uniformAt(seed: number, i: number): number {
  return (hashAt(seed, i) >>> 8) / 16777216;
}

/**
 * Standard normal by Box–Muller from the uniforms at 2i and 2i + 1: u1 in (0, 1] and u2 in [0, 1),
 * both exact in f32 (24-bit integers over 2^24), so WebGPU starts from the same numbers.
 */
export function normalAt(seed: number, i: number): number {
  const u1 = ((hashAt(seed, 2 * i) >>> 8) + 1) / 16777216;
  const u2 = (hashAt(seed, 2 * i + 1) >>> 8) / 16777216;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}
