/**
 * Matmul: the CPU reference at known values; every WebGPU variant against it on fresh random inputs
 * of ragged shapes (sizes that are no multiple of any tile or of 4), every transA/transB/broadcastB/
 * bias combination, inputs with outliers; the binding-split planner (pure checks at GPT-2's sizes,
 * and splits forced by a small binding limit), and operands over the real 128 MiB binding limit
 * (the GPT-2 output head and its gradients); the backward rule against central differences in
 * float64 and WebGPU's backward against the CPU's; the tuner's memory.
 *
 * Tolerances. The kernels accumulate in f32: each slab of K (4 or 8 terms) sums into a partial,
 * the partials sum in order. Against the float64 reference with the default floor (1e-3 of the
 * largest |C|), 127×129×65 on uniform [-1, 1) inputs measured median 3e-5, 99th percentile 6e-5,
 * worst 7.4e-5 over 400 draws (a plain running f32 sum: 1.0e-4); K = 768..1024 reaches ~1.3e-4 and
 * K = 50257 more; no f32 reduction order removes that. So 1e-4 holds for the shapes with K ≤ ~130;
 * the larger K cases say what they allow and why where they are.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { adapterTraits, matmulPlan, matmulWith, variantSupported } from '../src/kernels/matmul.js';
import {
  autotuneMatmul, currentVariant, forgetVariant, MATMUL_VARIANT_NAMES, MATMUL_VARIANTS, matmulVariant, slowdowns, type MatmulVariantName, type TuneProduct,
} from '../src/kernels/matmul-tune.js';
import { planMatmul, type MatmulChunk, type MatmulLimits } from '../src/kernels/matmul-plan.js';
import { backward } from '../src/tensor/autograd.js';
import type { Backend, MatmulShape } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { linear } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import { matmul, mul, sum } from '../src/tensor/ops.js';
import { geluAt, geluGradAt } from '../src/tensor/cpu/gelu.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { expectClose, maxRelativeError } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

const FLAGS = [false, true];
/** Every transA / transB / broadcastB / bias combination. */
const COMBOS = FLAGS.flatMap((transA) => FLAGS.flatMap((transB) => FLAGS.flatMap((broadcastB) => FLAGS.map((bias) => ({ transA, transB, broadcastB, bias })))));
const label = (s: MatmulShape, bias: boolean) =>
  `[${s.batch},${s.m},${s.k},${s.n}]${s.transA ? ' transA' : ''}${s.transB ? ' transB' : ''}${s.broadcastB ? ' broadcastB' : ''}${bias ? ' +bias' : ''}`;

interface Problem<T extends ArrayLike<number> = Float32Array> {
  shape: MatmulShape;
  a: T;
  b: T;
  bias: T | null;
}

/** Uniform in [-1, 1); with `outliers`, about 2% of the elements are ±1e3..1e4. */
function values(size: number, seed: number, stream: number, outliers: boolean): Float32Array {
  const x = randomArray(size, seed, stream);
  if (outliers) {
    const pick = randomArray(size, seed, stream + 100, 0, 1);
    const big = randomArray(size, seed, stream + 200, 1e3, 1e4);
    for (let i = 0; i < size; i++) if (pick[i] < 0.02) x[i] = x[i] < 0 ? -big[i] : big[i];
  }
  return x;
}

function problem(shape: MatmulShape, withBias: boolean, seed: number, outliers = false): Problem {
  const { batch, m, k, n } = shape;
  return {
    shape,
    a: values(batch * m * k, seed, 1, outliers),
    b: values((shape.broadcastB ? 1 : batch) * k * n, seed, 2, outliers),
    bias: withBias ? values(n, seed, 3, outliers) : null,
  };
}

/** op(A)[p, i, kk] and op(B)[p, kk, j] of a problem's flat arrays. */
function indexA(s: MatmulShape, p: number, i: number, kk: number): number {
  return p * s.m * s.k + (s.transA ? kk * s.m + i : i * s.k + kk);
}
function indexB(s: MatmulShape, p: number, kk: number, j: number): number {
  return (s.broadcastB ? 0 : p * s.k * s.n) + (s.transB ? j * s.k + kk : kk * s.n + j);
}

/** Float64 C and Σ|a||b| + |bias| (the scale of f32 rounding) at the given rows and columns of every batch. */
function reference(pr: Problem, rows: readonly number[], cols: readonly number[]): { c: Float64Array; scale: Float64Array } {
  const s = pr.shape;
  const c = new Float64Array(s.batch * rows.length * cols.length);
  const scale = new Float64Array(c.length);
  let o = 0;
  for (let p = 0; p < s.batch; p++) {
    for (const i of rows) {
      for (const j of cols) {
        let acc = pr.bias ? pr.bias[j] : 0;
        let abs = pr.bias ? Math.abs(pr.bias[j]) : 0;
        for (let kk = 0; kk < s.k; kk++) {
          const prod = pr.a[indexA(s, p, i, kk)] * pr.b[indexB(s, p, kk, j)];
          acc += prod;
          abs += Math.abs(prod);
        }
        c[o] = acc;
        scale[o++] = abs;
      }
    }
  }
  return { c, scale };
}

const allRows = (s: MatmulShape) => Array.from({ length: s.m }, (_, i) => i);
const allCols = (s: MatmulShape) => Array.from({ length: s.n }, (_, j) => j);

/** The same entries of a [batch, m, n] result. */
function pick(c: Float32Array, s: MatmulShape, rows: readonly number[], cols: readonly number[]): Float32Array {
  const out = new Float32Array(s.batch * rows.length * cols.length);
  let o = 0;
  for (let p = 0; p < s.batch; p++) for (const i of rows) for (const j of cols) out[o++] = c[(p * s.m + i) * s.n + j];
  return out;
}

/**
 * The bound f32 rounding allows a K-term dot product, elementwise: |ĉ − c| ≤ γ·Σ|a||b|, with
 * γ = 2·K·2⁻²⁴ (twice the classical worst case). It holds small elements to account that the
 * 1e-3·max floor of expectClose lets through when outliers make max|C| huge, and any missing or
 * misplaced term (of size |a||b|, not K·ε·Σ|a||b|) breaks it.
 */
function expectWithinRounding(actual: Float32Array, ref: { c: Float64Array; scale: Float64Array }, k: number, seed: number): void {
  const gamma = 2 * Math.max(k, 1) * 2 ** -24;
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - ref.c[i]) / (gamma * ref.scale[i] + 1e-30);
    worst = Number.isNaN(err) ? Infinity : Math.max(worst, err);
  }
  expect(worst, `error / rounding bound = ${worst.toFixed(2)} (replay with TEST_SEED=${seed})`).toBeLessThanOrEqual(1);
}

/**
 * Relative error ≤ 1e-4 with a floor of 1e-3 of C's scale: the largest |C| (expectClose's default)
 * or, if larger, C's standard deviation √K·rms(a)·rms(b) — with a handful of outputs (M = 1, N = 3)
 * the largest may be small by chance, and one output near zero then measures rounding, not a bug.
 */
function expectMatmulClose(actual: Float32Array, expected: Float32Array, pr: Problem, what: string): void {
  const rms = (x: Float32Array) => Math.sqrt(x.reduce((acc, v) => acc + v * v, 0) / Math.max(1, x.length));
  let largest = 0;
  for (const v of expected) largest = Math.max(largest, Math.abs(v));
  const floor = 1e-3 * Math.max(largest, Math.sqrt(pr.shape.k) * rms(pr.a) * rms(pr.b), 1e-30);
  expect(maxRelativeError(actual, expected, floor), what).toBeLessThanOrEqual(1e-4);
}

async function runOn(backend: Backend, pr: Problem): Promise<Float32Array> {
  const a = backend.upload(pr.a);
  const b = backend.upload(pr.b);
  const bias = pr.bias ? backend.upload(pr.bias) : null;
  const c = backend.matmul(a, b, bias, pr.shape);
  const out = (await backend.read(c)) as Float32Array;
  for (const x of [a, b, bias, c]) if (x) backend.release(x);
  return out;
}

describe('matmul CPU reference', () => {
  // [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]] = [[58,64],[139,154]], + bias [1,-1].
  const A = [1, 2, 3, 4, 5, 6];
  const At = [1, 4, 2, 5, 3, 6];
  const B = [7, 8, 9, 10, 11, 12];
  const Bt = [7, 9, 11, 8, 10, 12];
  const C = [59, 63, 140, 153];
  for (const { transA, transB } of COMBOS.filter((c) => !c.broadcastB && c.bias)) {
    it(`is A·B + bias by hand${transA ? ', A transposed' : ''}${transB ? ', B transposed' : ''}`, async () => {
      const s: MatmulShape = { batch: 1, m: 2, k: 3, n: 2, transA, transB, broadcastB: false };
      const out = await runOn(cpu, { shape: s, a: Float32Array.from(transA ? At : A), b: Float32Array.from(transB ? Bt : B), bias: Float32Array.from([1, -1]) });
      expect([...out]).toEqual(C);
    });
  }
  it('shares a broadcast B across the batch', async () => {
    const s: MatmulShape = { batch: 2, m: 2, k: 3, n: 2, transA: false, transB: false, broadcastB: true };
    const out = await runOn(cpu, { shape: s, a: Float32Array.from([...A, ...A.map((x) => 2 * x)]), b: Float32Array.from(B), bias: null });
    expect([...out]).toEqual([58, 64, 139, 154, 116, 128, 278, 308]);
  });

  it('the rounding bound catches a wrong term (the check can fail)', () => {
    const seed = freshSeed();
    const pr = problem({ batch: 1, m: 5, k: 9, n: 6, transA: false, transB: false, broadcastB: false }, false, seed);
    const ref = reference(pr, allRows(pr.shape), allCols(pr.shape));
    const broken = Float32Array.from(ref.c);
    broken[7] -= pr.a[indexA(pr.shape, 0, 1, 4)] * pr.b[indexB(pr.shape, 0, 4, 1)]; // C[1,1] without its kk = 4 term
    expect(() => expectWithinRounding(broken, ref, pr.shape.k, seed)).toThrow();
  });
});

/** The brief's shapes, a few rows of decoding (the tuned block shrinks to them), and K = 0 (C = bias). */
const SMALL: [number, number, number, number][] = [[1, 1, 1, 1], [1, 7, 13, 5], [1, 127, 129, 65], [3, 33, 17, 31], [1, 3, 130, 67], [2, 4, 0, 8]];

describe.runIf(gpu !== null)('matmul on WebGPU equals the CPU reference', () => {
  const backend = gpu!;

  for (const [batch, m, k, n] of SMALL) {
    it(`[${batch},${m},${k},${n}], every transA/transB/broadcastB/bias combination (tuned variant)`, async () => {
      for (const { bias, ...flags } of COMBOS) {
        const seed = freshSeed();
        const pr = problem({ batch, m, k, n, ...flags }, bias, seed);
        const expected = await runOn(cpu, pr);
        const actual = await runOn(backend, pr);
        expectMatmulClose(actual, expected, pr, `${label(pr.shape, bias)} (TEST_SEED=${seed})`);
      }
    });
  }

  it('inputs with outliers of 1e3..1e4, every combination', async () => {
    for (const [batch, m, k, n] of [[1, 127, 129, 65], [3, 33, 17, 31]]) {
      for (const { bias, ...flags } of COMBOS) {
        const seed = freshSeed();
        const pr = problem({ batch, m, k, n, ...flags }, bias, seed, true);
        const actual = await runOn(backend, pr);
        expectClose(actual, await runOn(cpu, pr), { seed });
        expectWithinRounding(actual, reference(pr, allRows(pr.shape), allCols(pr.shape)), k, seed);
      }
    }
  });
});

/** Ragged shapes (primes, 1s, 127/129, K = 0) and one aligned to 4 everywhere (the vec4 paths). */
const RAGGED: [number, number, number, number][] = [
  [1, 1, 1, 1], [1, 7, 13, 5], [1, 127, 129, 65], [3, 33, 17, 31], [1, 5, 1, 7], [1, 9, 6, 1], [1, 1, 131, 3], [2, 36, 64, 68], [1, 6, 0, 5],
];

describe.runIf(gpu !== null)('every matmul variant', () => {
  const backend = gpu!;
  const traits = () => adapterTraits(backend.gpu);

  async function runVariant(name: MatmulVariantName, pr: Problem, options = {}): Promise<Float32Array> {
    const g = backend.gpu;
    const a = g.upload(pr.a);
    const b = g.upload(pr.b);
    const bias = pr.bias ? g.upload(pr.bias) : null;
    const c = matmulWith(g, MATMUL_VARIANTS[name], a, b, bias, pr.shape, options);
    const out = (await g.read(c)) as Float32Array;
    for (const x of [a, b, bias, c]) if (x) g.release(x);
    return out;
  }

  for (const name of MATMUL_VARIANT_NAMES) {
    it(`${name} passes the ragged shapes in every transposition`, async ({ skip }) => {
      if (!variantSupported(MATMUL_VARIANTS[name], traits())) skip(`${name} needs subgroups this adapter lacks`);
      for (const [index, [batch, m, k, n]] of RAGGED.entries()) {
        for (const { transA, transB } of COMBOS.filter((c) => !c.broadcastB && !c.bias)) {
          const seed = freshSeed();
          const bias = index % 2 === 0;
          const pr = problem({ batch, m, k, n, transA, transB, broadcastB: batch > 1 && index % 3 === 0 }, bias, seed);
          const actual = await runVariant(name, pr);
          expectMatmulClose(actual, await runOn(cpu, pr), pr, `${name} ${label(pr.shape, bias)} (TEST_SEED=${seed})`);
        }
      }
    });
  }

  it('splits operands over a small binding limit: rows of A and C, columns of a transposed B, K with accumulation, batches', async () => {
    // 16 KiB bindings (4096 elements) against operands of 6300..40500 elements.
    const maxBindingBytes = 16 * 1024;
    const name = currentVariant(traits());
    for (const { bias, ...flags } of COMBOS) {
      const seed = freshSeed();
      const pr = problem({ batch: 3, m: 150, k: 70, n: 90, ...flags }, bias, seed);
      const plan = matmulPlan(backend.gpu, MATMUL_VARIANTS[name], pr.shape, { maxBindingBytes });
      expect(plan.chunks.length).toBeGreaterThan(1);
      // B [k, n] stored untransposed, or Aᵀ, can only shrink along K: those plans accumulate.
      if (!flags.transB || flags.transA) expect(plan.chunks.some((c) => c.accumulate)).toBe(true);
      const actual = await runVariant(name, pr, { maxBindingBytes });
      expectMatmulClose(actual, await runOn(cpu, pr), pr, `${label(pr.shape, bias)} (TEST_SEED=${seed})`);
    }
  });
});

// --- the epilogue: C = gelu(op(A)·op(B) + bias) + residual in the matmul's store ---

const EPILOGUES: { gelu: boolean; residual: boolean }[] = [
  { gelu: true, residual: false },
  { gelu: false, residual: true },
  { gelu: true, residual: true },
];
const epilogueLabel = (e: { gelu: boolean; residual: boolean }) => [e.gelu && 'gelu', e.residual && '+ residual'].filter(Boolean).join(' ');

/** The epilogue applied on the host to a plain product (the CPU reference's output), rounding as separate ops would. */
function applyEpilogue(plain: Float32Array, e: { gelu: boolean }, residual: Float32Array | null): Float32Array {
  return plain.map((z, i) => (e.gelu ? Math.fround(geluAt(z)) : z) + (residual ? residual[i] : 0));
}

describe('the matmul epilogue', () => {
  it('CPU: gelu of the product plus bias, then the residual', async () => {
    const seed = freshSeed();
    const pr = problem({ batch: 2, m: 3, k: 5, n: 4, transA: false, transB: true, broadcastB: true }, true, seed);
    const residual = randomArray(2 * 3 * 4, seed, 7);
    const plain = await runOn(cpu, pr);
    for (const e of EPILOGUES) {
      const r = cpu.upload(residual);
      const got = (await cpu.read(cpu.matmul(cpu.upload(pr.a), cpu.upload(pr.b), cpu.upload(pr.bias!), pr.shape, { gelu: e.gelu, residual: e.residual ? r : undefined }))) as Float32Array;
      // The reference rounds the product, GELU and the sum to f32 as the separate ops do: bitwise.
      expect(got).toEqual(applyEpilogue(plain, e, e.residual ? residual : null));
    }
  });

  it('refuses a residual of the wrong size, and any epilogue while recording a graph', () => {
    const a = tensor(new Float32Array(6), [2, 3], { backend: cpu, requiresGrad: true });
    const w = tensor(new Float32Array(12), [3, 4], { backend: cpu });
    expect(() => matmul(a, w, { epilogue: { gelu: true } })).toThrow(/epilogue is for inference/);
    expect(() => noGrad(() => matmul(a, w, { epilogue: { residual: tensor(new Float32Array(4), [4], { backend: cpu }) } }))).toThrow('matmul residual must be [2,4], got [4]');
  });

  it('linear() gives the same values fused (inference) and composed (recording), and the composed gradients equal a float64 reference', async () => {
    const seed = freshSeed();
    const [xs, ws, bs] = [randomArray(2 * 5 * 7, seed, 1), randomArray(7 * 6, seed, 2), randomArray(6, seed, 3)];
    const x = tensor(xs, [2, 5, 7], { backend: cpu, requiresGrad: true });
    const w = tensor(ws, [7, 6], { backend: cpu, requiresGrad: true });
    const b = tensor(bs, [6], { backend: cpu, requiresGrad: true });
    const r = tensor(randomArray(2 * 5 * 6, seed, 4), [2, 5, 6], { backend: cpu, requiresGrad: true });
    const fused = noGrad(() => linear(x, w, b, { gelu: true, residual: r }));
    const composed = linear(x, w, b, { gelu: true, residual: r });
    // The fused store rounds where each composed op does (product, GELU, sum): bitwise equal.
    expect(await composed.toFloat32()).toEqual(await fused.toFloat32());
    backward(sum(composed));
    // d/dr of sum(… + r) is 1 everywhere; x, W and b get GELU's gradient through the matmul.
    expect(Array.from(await r.grad!.toFloat32())).toEqual(new Array(60).fill(1));
    // z = x·W + b over 10 rows; dz = gelu'(z); dx = dz·Wᵀ, dW = xᵀ·dz, db = Σ_rows dz.
    const [rows, k, n] = [10, 7, 6];
    const dz = Array.from({ length: rows * n }, (_, i) => {
      let z = bs[i % n];
      for (let j = 0; j < k; j++) z += xs[Math.floor(i / n) * k + j] * ws[j * n + (i % n)];
      return geluGradAt(z);
    });
    const dx = Array.from({ length: rows * k }, (_, i) => {
      let acc = 0;
      for (let c = 0; c < n; c++) acc += dz[Math.floor(i / k) * n + c] * ws[(i % k) * n + c];
      return acc;
    });
    const dw = Array.from({ length: k * n }, (_, i) => {
      let acc = 0;
      for (let r = 0; r < rows; r++) acc += xs[r * k + Math.floor(i / n)] * dz[r * n + (i % n)];
      return acc;
    });
    const db = Array.from({ length: n }, (_, c) => {
      let acc = 0;
      for (let r = 0; r < rows; r++) acc += dz[r * n + c];
      return acc;
    });
    expectClose(await x.grad!.toFloat32(), dx, { seed });
    expectClose(await w.grad!.toFloat32(), dw, { seed });
    expectClose(await b.grad!.toFloat32(), db, { seed });
  });
});

describe.runIf(gpu !== null)('the matmul epilogue on WebGPU equals the CPU reference', () => {
  const backend = gpu!;

  async function runWith(pr: Problem, e: { gelu: boolean; residual: boolean }, residual: Float32Array, variant?: MatmulVariantName, options = {}): Promise<Float32Array> {
    const g = backend.gpu;
    const [a, b, r] = [g.upload(pr.a), g.upload(pr.b), g.upload(residual)];
    const bias = pr.bias ? g.upload(pr.bias) : null;
    const epilogue = { gelu: e.gelu, residual: e.residual ? r : undefined };
    const c = matmulWith(g, MATMUL_VARIANTS[variant ?? currentVariant(adapterTraits(g))], a, b, bias, pr.shape, options, epilogue);
    const out = (await g.read(c)) as Float32Array;
    for (const x of [a, b, r, bias, c]) if (x) g.release(x);
    return out;
  }

  async function check(pr: Problem, e: { gelu: boolean; residual: boolean }, seed: number, variant?: MatmulVariantName, options = {}): Promise<void> {
    const residual = randomArray(pr.shape.batch * pr.shape.m * pr.shape.n, seed, 7);
    const expected = applyEpilogue(await runOn(cpu, pr), e, e.residual ? residual : null);
    const actual = await runWith(pr, e, residual, variant, options);
    expectMatmulClose(actual, expected, pr, `${variant ?? 'tuned'} ${label(pr.shape, pr.bias !== null)} ${epilogueLabel(e)} (TEST_SEED=${seed})`);
  }

  // The store is one function for every variant; these three map threads to rows and columns
  // differently (subgroup-shared register blocks, 2-D register blocks, workgroup tiles). Each new
  // combination of flags compiles a pipeline, which is most of the time here.
  const shapes = [[1, 7, 13, 5], [3, 33, 17, 31], [2, 36, 64, 68]];
  for (const name of ['share8-8x4', 'block4x4-8x8', 'tiled8x8-16x16-k8'] as const) {
    it(`${name}: ragged and vec4 shapes, each epilogue`, async ({ skip }) => {
      if (!variantSupported(MATMUL_VARIANTS[name], adapterTraits(backend.gpu))) skip(`${name} needs subgroups this adapter lacks`);
      for (const [index, [batch, m, k, n]] of shapes.entries()) {
        const e = EPILOGUES[index];
        const seed = freshSeed();
        const pr = problem({ batch, m, k, n, transA: index % 2 === 1, transB: index % 4 < 2, broadcastB: batch > 1 && index % 3 === 0 }, index % 2 === 0, seed);
        await check(pr, e, seed, name);
      }
    });
  }

  it('the chunk that completes a split K applies it (16 KiB bindings: K accumulates over chunks)', async () => {
    for (const e of EPILOGUES) {
      for (const bias of FLAGS) {
        const seed = freshSeed();
        const pr = problem({ batch: 3, m: 150, k: 70, n: 90, transA: false, transB: false, broadcastB: false }, bias, seed);
        const plan = matmulPlan(backend.gpu, MATMUL_VARIANTS[currentVariant(adapterTraits(backend.gpu))], pr.shape, { maxBindingBytes: 16 * 1024 });
        expect(plan.chunks.some((c) => c.accumulate)).toBe(true);
        await check(pr, e, seed, undefined, { maxBindingBytes: 16 * 1024 });
      }
    }
  });
});

/** Every [start, start + size) of `ranges` tiles [0, total) exactly once. */
function expectTiles(ranges: [number, number][], total: number, what: string): void {
  const sorted = [...new Map(ranges.map((r) => [r[0], r])).values()].sort((x, y) => x[0] - y[0]);
  let next = 0;
  for (const [start, size] of sorted) {
    expect(start, `${what} starts where the previous ends`).toBe(next);
    expect(size).toBeGreaterThan(0);
    next = start + size;
  }
  expect(next, `${what} covers all ${total}`).toBe(total);
}

describe('the binding-split planner', () => {
  const limits: MatmulLimits = { maxBindingBytes: 128 * 1024 * 1024, alignment: 256, maxWorkgroups: 65535, rowsPerGroup: 8, colsPerGroup: 256 };
  const V = 50257;
  const cases: [string, MatmulShape][] = [
    ['x·W with W [768, 50257] (B over the limit)', { batch: 1, m: 1024, k: 768, n: V, transA: false, transB: false, broadcastB: true }],
    ['x·wteᵀ, wte [50257, 768] (the output head)', { batch: 1, m: 1024, k: 768, n: V, transA: false, transB: true, broadcastB: true }],
    ['dy·wte, dy [1024, 50257] (dx of the head)', { batch: 1, m: 1024, k: V, n: 768, transA: false, transB: false, broadcastB: true }],
    ['dyᵀ·x (dWte of the head)', { batch: 1, m: V, k: 1024, n: 768, transA: true, transB: false, broadcastB: true }],
    ['GPT-2 medium: x·wteᵀ at [8, 1024] tokens', { batch: 1, m: 8192, k: 1024, n: V, transA: false, transB: true, broadcastB: true }],
    ['a batch of 96 attention products, 4 MiB each', { batch: 96, m: 1024, k: 64, n: 1024, transA: false, transB: true, broadcastB: false }],
  ];
  for (const [what, s] of cases) {
    it(`${what}: windows fit and align, chunks tile the problem, the first K chunk writes`, () => {
      const plan = planMatmul(s, limits);
      const operandBytes = [s.batch * s.m * s.k, (s.broadcastB ? 1 : s.batch) * s.k * s.n, s.batch * s.m * s.n].map((e) => e * 4);
      if (operandBytes.some((b) => b > limits.maxBindingBytes)) expect(plan.chunks.length).toBeGreaterThan(1);
      for (const c of plan.chunks) {
        for (const w of [c.a, c.b, c.c, c.bias]) {
          expect(w.count * 4).toBeLessThanOrEqual(limits.maxBindingBytes);
          expect((w.first * 4) % limits.alignment).toBe(0);
          expect(w.offset).toBeLessThan(limits.alignment / 4);
        }
        expect(c.accumulate).toBe(c.k0 > 0);
      }
      const key = (c: MatmulChunk) => `${c.batch0},${c.m0},${c.n0}`;
      const byOutput = new Map<string, MatmulChunk[]>();
      for (const c of plan.chunks) byOutput.set(key(c), [...(byOutput.get(key(c)) ?? []), c]);
      for (const group of byOutput.values()) expectTiles(group.map((c) => [c.k0, c.k]), s.k, 'K');
      expectTiles(plan.chunks.map((c) => [c.m0, c.m]), s.m, 'M');
      expectTiles(plan.chunks.map((c) => [c.n0, c.n]), s.n, 'N');
      expectTiles(plan.chunks.map((c) => [c.batch0, c.batches]), s.batch, 'batch');
    });
  }
});

describe.runIf(gpu !== null)('matmul with operands over the 128 MiB binding limit', () => {
  const backend = gpu!;
  const V = 50257;

  /**
   * Checks whole rows and whole columns of C: the first and last, one at random, and those on both
   * sides of every chunk boundary of the plan. Tolerance: at K = 768..1024 whole rows of 50257
   * elements reach 1.3e-4 (f32 accumulation, see the top of this file), so 3e-4; at K = 50257
   * (12 chunks of 4096 accumulated in C, measured ≤ 2.3e-4) 5e-4. The elementwise rounding bound
   * holds everywhere as well.
   */
  async function checkBig(s: MatmulShape, seed: number, tolerance: number): Promise<void> {
    const variant = matmulVariant(backend.gpu);
    const plan = matmulPlan(backend.gpu, variant, s);
    expect(plan.chunks.length, 'the plan splits').toBeGreaterThan(1);
    const pr = problem(s, !s.transA, seed);
    const bytes = Math.max(pr.a.length, pr.b.length, s.m * s.n) * 4;
    expect(bytes, 'an operand exceeds one binding').toBeGreaterThan(backend.gpu.maxBindingBytes);
    const actual = await runOn(backend, pr);
    const edges = (starts: number[], size: number, salt: number) =>
      [...new Set([0, size - 1, Math.floor(randomArray(1, seed, salt, 0, 1)[0] * size), ...starts.flatMap((x) => [x - 1, x])])].filter((x) => x >= 0 && x < size).sort((x, y) => x - y);
    const rows = edges(plan.chunks.map((c) => c.m0), s.m, 7);
    const cols = edges(plan.chunks.map((c) => c.n0), s.n, 8);
    for (const [r, c] of [[rows, allCols(s)], [allRows(s), cols]]) {
      const ref = reference(pr, r, c);
      const got = pick(actual, s, r, c);
      expectClose(got, Float32Array.from(ref.c), { seed, tolerance });
      expectWithinRounding(got, ref, s.k, seed);
    }
  }

  it('x [1024, 768] · W [768, 50257]: B is 154 MB', async () => {
    await checkBig({ batch: 1, m: 1024, k: 768, n: V, transA: false, transB: false, broadcastB: true }, freshSeed(), 3e-4);
  });
  it('x [8·128, 768] · wte [50257, 768]ᵀ: the output head, split along N', async () => {
    await checkBig({ batch: 1, m: 1024, k: 768, n: V, transA: false, transB: true, broadcastB: true }, freshSeed(), 3e-4);
  });
  it('dy [1024, 50257] · wte [50257, 768]: the head\'s dx, split along M and K (206 MB A)', async () => {
    await checkBig({ batch: 1, m: 1024, k: V, n: 768, transA: false, transB: false, broadcastB: true }, freshSeed(), 5e-4);
  });
  it('dyᵀ · x: the head\'s dWte [50257, 768] (transposed 206 MB A split along K, 154 MB C along M)', async () => {
    await checkBig({ batch: 1, m: V, k: 1024, n: 768, transA: true, transB: false, broadcastB: true }, freshSeed(), 3e-4);
  });
});

// --- backward ---

/** Shapes of A and B as the Tensor-level op takes them. */
function tensorShapes(s: MatmulShape): { a: number[]; b: number[] } {
  const { batch, m, k, n } = s;
  return {
    a: [batch, ...(s.transA ? [k, m] : [m, k])],
    b: [...(s.broadcastB ? [] : [batch]), ...(s.transB ? [n, k] : [k, n])],
  };
}

/** loss = Σ (op(A)·op(B) + bias) ⊙ W in float64. */
function loss64(pr: Problem<ArrayLike<number>>, w: Float32Array): number {
  const s = pr.shape;
  let loss = 0;
  for (let p = 0; p < s.batch; p++) {
    for (let i = 0; i < s.m; i++) {
      for (let j = 0; j < s.n; j++) {
        let c = pr.bias ? pr.bias[j] : 0;
        for (let kk = 0; kk < s.k; kk++) c += pr.a[indexA(s, p, i, kk)] * pr.b[indexB(s, p, kk, j)];
        loss += c * w[(p * s.m + i) * s.n + j];
      }
    }
  }
  return loss;
}

/** The engine's gradients of Σ matmul(a, b, bias) ⊙ W on a backend. */
async function engineGrads(backend: Backend, pr: Problem, w: Float32Array): Promise<Float32Array[]> {
  const s = pr.shape;
  const shapes = tensorShapes(s);
  const a = tensor(pr.a, shapes.a, { backend, requiresGrad: true });
  const b = tensor(pr.b, shapes.b, { backend, requiresGrad: true });
  const bias = pr.bias ? tensor(pr.bias, [s.n], { backend, requiresGrad: true }) : undefined;
  const c = matmul(a, b, { transA: s.transA, transB: s.transB, bias });
  expect(c.shape).toEqual([s.batch, s.m, s.n]);
  backward(sum(mul(c, tensor(w, c.shape, { backend }))));
  const leaves = [a, b, ...(bias ? [bias] : [])];
  return Promise.all(leaves.map((t) => t.grad!.toFloat32()));
}

describe('the matmul backward rule', () => {
  const combos = COMBOS.map(({ bias, ...flags }) => ({ bias, shape: { batch: 2, m: 3, k: 4, n: 5, ...flags } }));

  for (const { bias, shape } of combos) {
    it(`matches central differences in float64: ${label(shape, bias)}`, async () => {
      const seed = freshSeed();
      const pr = problem(shape, bias, seed);
      const w = randomArray(shape.batch * shape.m * shape.n, seed, 9);
      const grads = await engineGrads(cpu, pr, w);
      // The loss is linear in each input, so a central difference is exact up to float64 rounding:
      // any step works; h = 1e-3 keeps the perturbed values representable in f32 terms alike.
      const h = 1e-3;
      const inputs = [pr.a, pr.b, ...(pr.bias ? [pr.bias] : [])];
      inputs.forEach((x, which) => {
        const numeric = new Float64Array(x.length);
        for (let i = 0; i < x.length; i++) {
          const wide = inputs.map((y) => Float64Array.from(y));
          const at = (delta: number) => {
            wide[which][i] = x[i] + delta;
            return loss64({ shape, a: wide[0], b: wide[1], bias: wide[2] ?? null }, w);
          };
          numeric[i] = (at(h) - at(-h)) / (2 * h);
        }
        expectClose(grads[which], numeric, { seed });
      });
    });
  }

  it.runIf(gpu !== null)('on WebGPU equals the CPU backward, every combination', async () => {
    for (const { bias, shape } of combos) {
      const seed = freshSeed();
      const pr = problem({ ...shape, m: 17, k: 9, n: 13 }, bias, seed);
      const w = randomArray(shape.batch * 17 * 13, seed, 9);
      const expected = await engineGrads(cpu, pr, w);
      const actual = await engineGrads(gpu!, pr, w);
      actual.forEach((g, i) => expectClose(g, expected[i], { seed }));
    }
  });
});

// --- the tuner ---

describe("the tuner's choice", () => {
  it('weighs each product by its fastest time: a little faster on the wide one loses to 2× slower on a narrow one', () => {
    // The times the tuner took on the wide projection and a head's two narrow products (ms).
    const times = [
      new Map([['wide-winner', 90], ['narrow-winner', 100], ['dropped', 50]]),
      new Map([['wide-winner', 40], ['narrow-winner', 20], ['dropped', 10]]),
      new Map([['wide-winner', 100], ['narrow-winner', 45]]),
    ];
    const factors = slowdowns(times);
    expect([...factors.keys()]).toEqual(['wide-winner', 'narrow-winner']);
    expect(factors.get('wide-winner')).toBeCloseTo(Math.cbrt(1 * 2 * (100 / 45)), 12);
    expect(factors.get('narrow-winner')).toBeCloseTo(Math.cbrt((100 / 90) * 1 * 1), 12);
  });
});

describe.runIf(gpu !== null)('the matmul tuner', () => {
  const backend = gpu!;
  const saved = { file: process.env.GPT2_MATMUL_TUNE_FILE, variant: process.env.GPT2_MATMUL_VARIANT };
  afterEach(() => {
    for (const [key, value] of [['GPT2_MATMUL_TUNE_FILE', saved.file], ['GPT2_MATMUL_VARIANT', saved.variant]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    forgetVariant(backend.gpu.description);
  });

  it('measures, remembers the fastest in memory and in its file, and reads it back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matmul-tune-'));
    try {
      const file = join(dir, 'matmul-tune.json');
      process.env.GPT2_MATMUL_TUNE_FILE = file;
      const traits = adapterTraits(backend.gpu);
      const candidates = MATMUL_VARIANT_NAMES.filter((name) => MATMUL_VARIANTS[name].kind === 'block' && variantSupported(MATMUL_VARIANTS[name], traits)).slice(0, 2);
      const products = [{ shape: [64, 96, 128], transA: false }, { shape: [128, 32, 64], transA: true }] satisfies TuneProduct[];
      const result = await autotuneMatmul(backend.gpu, { force: true, candidates, products, rounds: 1 });
      expect(result.measured).toBe(true);
      expect(candidates).toContain(result.variant);
      expect(Object.keys(result.gflops).sort()).toEqual([...candidates].sort());
      for (const rates of Object.values(result.gflops)) expect(rates.map((r) => r > 0)).toEqual([true, true]);
      expect(currentVariant(traits)).toBe(result.variant);
      const record = (JSON.parse(readFileSync(file, 'utf8')) as Record<string, { variant: string }>)[backend.gpu.description];
      expect(record.variant).toBe(result.variant);
      // A fresh process (simulated by forgetting) takes the file's choice without measuring.
      forgetVariant(backend.gpu.description);
      const again = await autotuneMatmul(backend.gpu);
      expect(again).toEqual({ variant: result.variant, gflops: {}, measured: false });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fits a register-block variant to the product: tm to few rows, lanes along N to a narrow C or a small grid', () => {
    process.env.GPT2_MATMUL_VARIANT = 'block8x4-64x1';
    const g = backend.gpu;
    expect(matmulVariant(g)).toEqual(MATMUL_VARIANTS['block8x4-64x1']);
    expect(matmulVariant(g, 1, 50257)).toMatchObject({ tm: 1, wgx: 64 });
    // The head's dW: [50257, 95]·[95, 64]: 16 lanes of 4 columns cover C's width.
    expect(matmulVariant(g, 50257, 64)).toMatchObject({ tm: 8, wgx: 16 });
    // Its dx: [95, 50257]·[50257, 64]: 12 workgroups of 16 lanes become 24 of 8.
    expect(matmulVariant(g, 95, 64)).toMatchObject({ tm: 8, wgx: 8 });
    process.env.GPT2_MATMUL_VARIANT = 'tiled8x8-16x16-k8';
    expect(matmulVariant(g, 95, 64)).toEqual(MATMUL_VARIANTS['tiled8x8-16x16-k8']);
  });

  it('is overridden by GPT2_MATMUL_VARIANT, and rejects names it does not know', () => {
    const traits = adapterTraits(backend.gpu);
    process.env.GPT2_MATMUL_VARIANT = 'block4x4-8x8';
    expect(currentVariant(traits)).toBe('block4x4-8x8');
    process.env.GPT2_MATMUL_VARIANT = 'block9x9';
    expect(() => currentVariant(traits)).toThrow(/not a matmul variant/);
  });
});
