/**
 * The matmul tuner: measures the variants of autotune.ts's table on one shape and records the
 * fastest there. Its own module because it runs matmul.ts's kernels, which read that table.
 */
import type { MatmulShape } from '../tensor/backend.js';
import {
  currentVariant, isTuned, MATMUL_KERNEL_VERSION, MATMUL_VARIANT_NAMES, MATMUL_VARIANTS, rememberTune, variantSupported,
  type MatmulVariantName,
} from './autotune.js';
import type { Gpu } from './gpu.js';
import { adapterTraits, matmulWith } from './matmul.js';

export interface TuneResult {
  variant: MatmulVariantName;
  /** Best GFLOP/s per candidate on the tuning shape (empty when the choice was already settled). */
  gflops: Partial<Record<MatmulVariantName, number>>;
  measured: boolean;
}

export interface TuneOptions {
  /** Measure even when a choice is remembered. */
  force?: boolean;
  /** Defaults to every variant this adapter supports. */
  candidates?: readonly MatmulVariantName[];
  /** [m, k, n]; GPT-2's MLP input projection at 256 tokens by default. */
  shape?: [number, number, number];
  /** Timed runs per candidate, taken in turns so that a busy machine slows all of them alike. */
  rounds?: number;
  log?: (line: string) => void;
}

/**
 * Measures the candidates on a representative shape and remembers the fastest (in memory and in
 * the cache file), so later processes skip this. A candidate whose result disagrees with the first
 * one's is dropped (a guard on the subgroup assumptions of the sharing variants). A no-op when the
 * choice is already settled, unless `force`.
 */
export async function autotuneMatmul(gpu: Gpu, options: TuneOptions = {}): Promise<TuneResult> {
  const traits = adapterTraits(gpu);
  if (!options.force && isTuned(traits)) return { variant: currentVariant(traits), gflops: {}, measured: false };
  const { shape = [256, 768, 3072], rounds = 3, log } = options;
  const candidates = (options.candidates ?? MATMUL_VARIANT_NAMES).filter((name) => variantSupported(MATMUL_VARIANTS[name], traits));
  if (candidates.length === 0) throw new Error('autotuneMatmul: no candidate runs on this adapter');
  const [m, k, n] = shape;
  const s: MatmulShape = { batch: 1, m, k, n, transA: false, transB: false, broadcastB: true };
  // Deterministic data: the tuner gives the same answer for the same timings.
  const data = (size: number, salt: number) => Float32Array.from({ length: size }, (_, i) => (((i + salt) * 7919) % 1009) / 1009 - 0.5);
  const a = gpu.upload(data(m * k, 1));
  const b = gpu.upload(data(k * n, 2));
  const best = new Map<MatmulVariantName, number>();
  try {
    let reference: Float32Array | null = null;
    const valid: MatmulVariantName[] = [];
    for (const name of candidates) {
      const c = matmulWith(gpu, MATMUL_VARIANTS[name], a, b, null, s); // compiles, warms up
      const out = (await gpu.read(c)) as Float32Array;
      gpu.release(c);
      reference ??= out;
      if (maxRelativeDifference(out, reference) > 1e-3) log?.(`matmul tune: ${name} disagrees with ${candidates[0]}, dropped`);
      else valid.push(name);
    }
    for (let round = 0; round < rounds; round++) {
      for (const name of valid) {
        const start = performance.now();
        gpu.release(matmulWith(gpu, MATMUL_VARIANTS[name], a, b, null, s));
        await gpu.sync();
        const ms = performance.now() - start;
        best.set(name, Math.min(best.get(name) ?? Infinity, ms));
      }
    }
  } finally {
    gpu.release(a);
    gpu.release(b);
  }
  const gflops: Partial<Record<MatmulVariantName, number>> = {};
  for (const [name, ms] of best) {
    gflops[name] = (2 * m * k * n) / (ms * 1e6);
    log?.(`matmul tune: ${name} ${gflops[name].toFixed(2)} GFLOP/s`);
  }
  const [variant] = [...best].reduce((x, y) => (y[1] < x[1] ? y : x));
  rememberTune(gpu.description, {
    variant, gflops, shape, version: MATMUL_KERNEL_VERSION, measuredAt: new Date().toISOString(),
  });
  return { variant, gflops, measured: true };
}

function maxRelativeDifference(x: Float32Array, y: Float32Array): number {
  let scale = 0;
  for (const v of y) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / (Math.abs(y[i]) + 1e-3 * scale));
  return Number.isNaN(worst) ? Infinity : worst;
}
