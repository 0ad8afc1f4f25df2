/**
 * The `rows` matmul variant (A·Bᵀ or A·B for a few rows, B read once for all of them; decoding's
 * output head and x·W) against the CPU reference, B transposed and not: ragged shapes (M past a
 * multiple of the rows a workgroup holds, K no multiple of 4 or of a lane slice or of the depths an
 * untransposed pass takes, N odd and past a multiple of the columns a workgroup walks, K = 0), f32
 * f16 and bf16 B, bias, a shared or per-batch B, the fused epilogue, splits over a small binding limit
 * (N, and K with accumulation); and which products the backend sends to it.
 */
import { describe, expect, it } from 'vitest';
import { adapterTraits, matmulPlan, matmulWith, type MatmulOptions, type MatmulVariant } from '../src/kernels/matmul.js';
import { rowsVariant } from '../src/kernels/matmul-tune.js';
import type { Gpu } from '../src/kernels/gpu.js';
import type { Backend, HalfDType, MatmulShape } from '../src/tensor/backend.js';
import { narrowTo, roundTo } from '../src/tensor/half.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

interface Problem {
  shape: MatmulShape;
  a: Float32Array;
  b: Float32Array;
  bias: Float32Array | null;
  residual: Float32Array | null;
  /** B's storage: f32, or a 16-bit type B's values are already rounded to. */
  bDType: 'f32' | HalfDType;
}

interface ProblemOptions {
  broadcastB?: boolean;
  bias?: boolean;
  bDType?: 'f32' | HalfDType;
  residual?: boolean;
  transB?: boolean;
}

function problem(batch: number, m: number, k: number, n: number, seed: number, { broadcastB = true, bias = false, bDType = 'f32', residual = false, transB = true }: ProblemOptions = {}): Problem {
  const b = randomArray((broadcastB ? 1 : batch) * n * k, seed, 2);
  return {
    shape: { batch, m, k, n, transA: false, transB, broadcastB },
    a: randomArray(batch * m * k, seed, 1),
    b: bDType === 'f32' ? b : roundTo(bDType, b),
    bias: bias ? randomArray(n, seed, 3) : null,
    residual: residual ? randomArray(batch * m * n, seed, 4) : null,
    bDType,
  };
}

/** C through the backend's matmul. */
async function runOn(backend: Backend, pr: Problem, gelu = false): Promise<Float32Array> {
  const a = backend.upload(pr.a);
  const b = backend.upload(pr.bDType === 'f32' ? pr.b : narrowTo(pr.bDType, pr.b));
  const bias = pr.bias ? backend.upload(pr.bias) : null;
  const residual = pr.residual ? backend.upload(pr.residual) : undefined;
  const c = backend.matmul(a, b, bias, pr.shape, { gelu, residual });
  const out = (await backend.read(c)) as Float32Array;
  for (const x of [a, b, bias, residual, c]) if (x) backend.release(x);
  return out;
}

/** C with a given variant on WebGPU. */
async function runVariant(g: Gpu, v: MatmulVariant, pr: Problem, { gelu = false, ...options }: MatmulOptions & { gelu?: boolean } = {}): Promise<Float32Array> {
  const a = g.upload(pr.a);
  const b = g.upload(pr.bDType === 'f32' ? pr.b : narrowTo(pr.bDType, pr.b));
  expect(b.dtype).toBe(pr.bDType);
  const bias = pr.bias ? g.upload(pr.bias) : null;
  const residual = pr.residual ? g.upload(pr.residual) : undefined;
  const c = matmulWith(g, v, a, b, bias, pr.shape, options, { gelu, residual });
  const out = (await g.read(c)) as Float32Array;
  for (const x of [a, b, bias, residual, c]) if (x) g.release(x);
  return out;
}

/** [batch, m, k, n]: M = 1, 3, 16 (a full group), 17 and 37 (a ragged last group); K ragged, aligned, 0, past an untransposed pass; N odd, past 64. */
const SHAPES: [number, number, number, number][] = [
  [1, 1, 1, 1], [1, 1, 5, 7], [1, 3, 13, 301], [1, 16, 256, 257], [1, 17, 130, 99], [1, 37, 33, 131], [2, 5, 64, 65], [1, 4, 67, 200], [1, 3, 0, 5], [1, 12, 1027, 20],
];

describe.runIf(gpu !== null)('the rows matmul variant equals the CPU reference', () => {
  const backend = gpu!;
  const g = backend.gpu;
  const lanes = adapterTraits(g).subgroupMinSize;
  const supported = () => rowsVariant(g, problem(1, 1, 1, 1, 0).shape) !== null;
  /** Rows a workgroup holds: one and the most, with columns a workgroup walks: many and a few. */
  const variants = (): MatmulVariant[] => [[1, 64], [16, 3]].map(([tm, tn]) => ({ kind: 'rows', tm, tn, wgx: lanes, wgy: 1, bk: 0, share: 0 }));

  for (const transB of [true, false]) {
    const layout = transB ? 'B transposed' : 'B untransposed';
    for (const bDType of ['f32', 'f16', 'bf16'] as const) {
      it(`ragged shapes, a shared and a per-batch B, with and without bias: ${layout}, in ${bDType}`, async ({ skip }) => {
        if (!supported()) skip('the rows variant needs subgroups this adapter lacks');
        for (const v of variants()) {
          for (const [index, [batch, m, k, n]] of SHAPES.entries()) {
            const seed = freshSeed();
            const pr = problem(batch, m, k, n, seed, { bDType, bias: index % 2 === 0, broadcastB: index % 3 !== 0, transB });
            expectClose(await runVariant(g, v, pr), await runOn(cpu, pr), { seed });
          }
        }
      });
    }

    it(`applies the fused epilogue: bias, then gelu, then the residual: ${layout}`, async ({ skip }) => {
      if (!supported()) skip('the rows variant needs subgroups this adapter lacks');
      // K = 300 takes an untransposed B several passes: the epilogue applies once, after the last.
      for (const [batch, m, k, n] of [[1, 11, 13, 301], [2, 17, 300, 65]]) {
        const seed = freshSeed();
        const pr = problem(batch, m, k, n, seed, { bias: true, residual: true, transB });
        const v = rowsVariant(g, pr.shape)!;
        expectClose(await runVariant(g, v, pr, { gelu: true }), await runOn(cpu, pr, true), { seed });
      }
    });

    it(`splits over a small binding limit: columns of B, and K with accumulation: ${layout}`, async ({ skip }) => {
      if (!supported()) skip('the rows variant needs subgroups this adapter lacks');
      const maxBindingBytes = 16 * 1024;
      // Transposed: B [90, 70] (25 KB, f32) and [190, 70] (27 KB, f16 / bf16) split along N; B [3, 5000] has rows longer than a binding, which splits K.
      // Untransposed: B [70, 90] and [70, 190] split along K, accumulating; B [5000, 3] too.
      for (const [m, k, n, bDType] of [[20, 70, 90, 'f32'], [20, 70, 190, 'f16'], [20, 70, 190, 'bf16'], [2, 5000, 3, 'f32']] as const) {
        const seed = freshSeed();
        const pr = problem(1, m, k, n, seed, { bias: true, bDType, residual: true, transB });
        const v: MatmulVariant = { kind: 'rows', tm: 2, tn: 8, wgx: lanes, wgy: 1, bk: 0, share: 0 };
        const plan = matmulPlan(g, v, pr.shape, { maxBindingBytes }, bDType);
        expect(plan.chunks.length).toBeGreaterThan(1);
        if (k === 5000 || !transB) expect(plan.chunks.some((ch) => ch.accumulate)).toBe(true);
        expectClose(await runVariant(g, v, pr, { maxBindingBytes, gelu: true }), await runOn(cpu, pr, true), { seed });
      }
    });
  }

  it('the backend sends x·Wᵀ with up to 128 rows and x·W with 9 to 64 to it, and the rest to the tuned variant', ({ skip }) => {
    if (!supported()) skip('the rows variant needs subgroups this adapter lacks');
    const shape = (m: number, k: number, transB: boolean): MatmulShape => ({ batch: 1, m, k, n: 50257, transA: false, transB, broadcastB: true });
    expect(rowsVariant(g, shape(1, 256, true))).toMatchObject({ kind: 'rows', tm: 1, wgx: lanes });
    expect(rowsVariant(g, shape(16, 768, true))).toMatchObject({ kind: 'rows', tm: 16 });
    expect(rowsVariant(g, shape(64, 256, true))).toMatchObject({ kind: 'rows', tm: 16 });
    expect(rowsVariant(g, shape(128, 64, true))).toMatchObject({ kind: 'rows', tm: 16 });
    expect(rowsVariant(g, shape(129, 256, true))).toBeNull();
    expect(rowsVariant(g, shape(8, 256, false))).toBeNull();
    expect(rowsVariant(g, shape(9, 256, false))).toMatchObject({ kind: 'rows', tm: 16 });
    expect(rowsVariant(g, shape(64, 1024, false))).toMatchObject({ kind: 'rows', tm: 16 });
    expect(rowsVariant(g, shape(65, 256, false))).toBeNull();
  });

  it('the backend\'s matmul of a few rows by a transposed B equals the CPU reference', async ({ skip }) => {
    if (!supported()) skip('the rows variant needs subgroups this adapter lacks');
    // K = 768 with 16 rows is longer than a lane holds: several dispatches, all but the first accumulating.
    for (const [m, k, n] of [[1, 256, 1001], [16, 768, 301], [7, 96, 513], [69, 64, 1037], [128, 40, 257]]) {
      const seed = freshSeed();
      const pr = problem(1, m, k, n, seed);
      const chunks = matmulPlan(g, rowsVariant(g, pr.shape)!, pr.shape).chunks;
      expect(chunks.map((ch) => ch.accumulate)).toEqual(chunks.map((_, i) => i > 0));
      expect(chunks.length > 1).toBe(m === 16);
      expectClose(await runOn(backend, pr), await runOn(cpu, pr), { seed });
    }
  });
});
