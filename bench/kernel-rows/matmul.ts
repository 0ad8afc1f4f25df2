/**
 * Bench rows for matmul at GPT-2 small's shapes over 1024 tokens (B·T = 8·128): the attention input
 * projection [1024, 768]·[768, 2304], the MLP [1024, 768]·[768, 3072] and [1024, 3072]·[3072, 768],
 * and the output head over the 50257-token vocabulary, both as [768, 50257] (B untransposed, 154 MB:
 * split over bindings) and in GPT-2's own layout x·wteᵀ with wte [50257, 768] (`matmul_transB`).
 * GFLOP/s = 2·M·K·N / time; no bias (the fused bias add costs one read of [N] per output row).
 * Decoding's products (`matmul_decode`, M = 1: GPT-2 small's c_attn [1, 768]·[768, 2304] and its head
 * x·wteᵀ with wte [50257, 768], 154 MB: split over bindings) read B once and do 2 FLOPs a float: they
 * report GB/s of B read, against the copy bandwidth (which counts bytes read + written).
 * With `variants`, every variant this adapter supports at [1024, 768]·[768, 3072] (`matmul:<name>`).
 */
import { medianMs } from '../harness.js';
import type { GpuStorage } from '../../src/kernels/gpu.js';
import { adapterTraits, matmulWith, variantSupported } from '../../src/kernels/matmul.js';
import { MATMUL_VARIANT_NAMES, MATMUL_VARIANTS, matmulVariant } from '../../src/kernels/matmul-tune.js';
import type { WebGpuBackend } from '../../src/kernels/webgpu-backend.js';
import type { Backend, MatmulShape, Storage } from '../../src/tensor/backend.js';
import { BENCH_SHAPES } from '../shapes.js';
import type { BenchRow } from './types.js';

const SHAPES: [number, number, number][] = [[1024, 768, 2304], [1024, 768, 3072], [1024, 3072, 768], [1024, 768, 50257]];

export async function matmulRows(backend: Backend, copyGbps: number, { variants = false } = {}): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const time = async (op: string, [m, k, n]: [number, number, number], run: (a: Storage, b: Storage, s: MatmulShape) => void, transB = false) => {
    const s: MatmulShape = { batch: 1, m, k, n, transA: false, transB, broadcastB: true };
    const a = backend.random(m * k, 1, 'normal');
    const b = backend.random(k * n, 2, 'normal');
    // The vocabulary-wide products take seconds a run on a software rasterizer: fewer runs there.
    const timing = n > 10000 ? { warmup: 1, runs: 3 } : { warmup: 1 };
    const ms = await medianMs(backend, () => run(a, b, s), timing);
    backend.release(a);
    backend.release(b);
    rows.push({ op, shape: [m, k, n], ms, gflops: (2 * m * k * n) / ms / 1e6 });
  };
  const viaBackend = (a: Storage, b: Storage, s: MatmulShape) => backend.release(backend.matmul(a, b, null, s));
  for (const shape of SHAPES) await time('matmul', shape, viaBackend);
  await time('matmul_transB', [1024, 768, 50257], viaBackend, true);
  for (const [shape, transB] of [[[1, 768, 2304], false], [[1, 768, 50257], true]] as const) {
    await time('matmul_decode', [...shape], viaBackend, transB);
    const row = rows[rows.length - 1];
    row.gbps = (4 * shape[1] * shape[2]) / row.ms / 1e6;
    row.fraction_of_copy = row.gbps / copyGbps;
    if (transB) row.op = 'matmul_decode_transB';
  }
  if (variants && backend.name === 'webgpu') {
    const { gpu } = backend as WebGpuBackend;
    for (const name of MATMUL_VARIANT_NAMES.filter((v) => variantSupported(MATMUL_VARIANTS[v], adapterTraits(gpu)))) {
      await time(`matmul:${name}`, [1024, 768, 3072], (a, b, s) => gpu.release(matmulWith(gpu, MATMUL_VARIANTS[name], a as GpuStorage, b as GpuStorage, null, s)));
    }
  }
  return rows;
}

/**
 * The head of a batched decode step (`matmul_head`: x·wteᵀ for m ∈ {1, 4, 16, 64} rows, at the bench
 * shapes' d 256 and GPT-2 small's 768), where one client's step has m = 1 and sixteen clients' m = 16:
 * GFLOP/s, and how many times one row's time the product of m rows takes (`of m = 1`).
 */
export async function headRows(backend: Backend): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const k of [256, 768]) {
    const n = 50257;
    const b = backend.random(n * k, 2, 'normal');
    let oneRowMs = NaN;
    for (const m of [1, 4, 16, 64]) {
      const s: MatmulShape = { batch: 1, m, k, n, transA: false, transB: true, broadcastB: true };
      const a = backend.random(m * k, 1, 'normal');
      const ms = await medianMs(backend, () => backend.release(backend.matmul(a, b, null, s)), { warmup: 1, runs: 5 });
      backend.release(a);
      if (m === 1) oneRowMs = ms;
      rows.push({ op: 'matmul_head', shape: [m, k, n], ms, gflops: (2 * m * k * n) / ms / 1e6, of_one_row: ms / oneRowMs });
    }
    backend.release(b);
  }
  return rows;
}

/**
 * A decode step's layer products x·W at the bench shapes (`matmul_layer`: d 256, W [in, out] as
 * GPT-2's Conv1D: c_attn [256, 768], attn.c_proj [256, 256], mlp.c_fc [256, 1024], mlp.c_proj
 * [1024, 256]) for m ∈ {1, 4, 13, 16, 64} rows (one client's step has m = 1, sixteen clients' about
 * 13 to 16), through the backend's matmul; on WebGPU, in turns with it, the tuned register-blocked
 * variant fitted to the shape (`matmul_layer_block`, what runs below 9 rows). GFLOP/s, and how many
 * times one row's time the product of m rows takes (`of_one_row`).
 */
export async function layerRows(backend: Backend): Promise<BenchRow[]> {
  const C = BENCH_SHAPES.default.n_embd;
  const gpu = backend.name === 'webgpu' ? (backend as WebGpuBackend).gpu : null;
  const rows: BenchRow[] = [];
  for (const [k, n] of [[C, 3 * C], [C, C], [C, 4 * C], [4 * C, C]]) {
    const b = backend.random(k * n, 2, 'normal');
    const oneRowMs: Record<string, number> = {};
    for (const m of [1, 4, 13, 16, 64]) {
      const s: MatmulShape = { batch: 1, m, k, n, transA: false, transB: false, broadcastB: true };
      const a = backend.random(m * k, 1, 'normal');
      const runs: [string, () => void][] = [['matmul_layer', () => backend.release(backend.matmul(a, b, null, s))]];
      if (gpu) runs.push(['matmul_layer_block', () => gpu.release(matmulWith(gpu, matmulVariant(gpu, m, n), a as GpuStorage, b as GpuStorage, null, s))]);
      for (const [op, run] of runs) {
        const ms = await medianMs(backend, run, { warmup: 1, runs: 7 });
        if (m === 1) oneRowMs[op] = ms;
        rows.push({ op, shape: [m, k, n], ms, gflops: (2 * m * k * n) / ms / 1e6, of_one_row: ms / oneRowMs[op] });
      }
      backend.release(a);
    }
    backend.release(b);
  }
  return rows;
}
