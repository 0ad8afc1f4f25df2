/**
 * LayerNorm over the last axis: the CPU reference against a naive float64 formula (including rows of
 * large mean) and central differences in float64 for dx, dWeight and dBias; WebGPU forward (y, mean,
 * rstd) and backward (dx, dWeight, dBias) against the CPU reference on ragged shapes (dim = 1, primes,
 * 127/129, GPT-2's 768 and 1600; rows that make 1 to 64 rows per backward block), with outliers and
 * rows of large mean, bitwise determinism, rows split into binding windows; the Tensor-level op on both backends.
 */
import { describe, expect, it } from 'vitest';
import type { Backend, Storage } from '../src/tensor/backend.js';
import { backward } from '../src/tensor/autograd.js';
import { tensor } from '../src/tensor/create.js';
import { layerNormBackwardRows, layerNormRows } from '../src/tensor/cpu/layernorm.js';
import { layerNorm } from '../src/tensor/fused.js';
import { mul, sum } from '../src/tensor/ops.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose, maxRelativeError } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();
const EPS = 1e-5;

interface Inputs {
  x: Float32Array;
  weight: Float32Array;
  bias: Float32Array;
  dy: Float32Array;
}

/**
 * x uniform in [-2, 2) plus a per-row offset in [-3, 3); with `outliers`, about 2% of x set to
 * ±(1e3..1e4) and every fifth row shifted by 1e4 (a large mean over a small spread).
 */
function randomInputs(rows: number, dim: number, seed: number, outliers = false): Inputs {
  const x = randomArray(rows * dim, seed, 1, -2, 2);
  const offsets = randomArray(rows, seed, 2, -3, 3);
  for (let i = 0; i < x.length; i++) x[i] += offsets[Math.floor(i / dim)];
  if (outliers) {
    const pick = randomArray(rows * dim, seed, 3, 0, 1);
    const big = randomArray(rows * dim, seed, 4, 1e3, 1e4);
    for (let i = 0; i < x.length; i++) {
      if (Math.floor(i / dim) % 5 === 4) x[i] += 1e4;
      else if (pick[i] < 0.02) x[i] = x[i] < 0 ? -big[i] : big[i];
    }
  }
  return {
    x,
    weight: randomArray(dim, seed, 5, 0.5, 1.5),
    bias: randomArray(dim, seed, 6, -0.5, 0.5),
    dy: randomArray(rows * dim, seed, 7, -1, 1),
  };
}

type Results = Record<'y' | 'mean' | 'rstd' | 'dx' | 'dWeight' | 'dBias', Float32Array>;

async function readAll(backend: Backend, storages: Record<string, Storage>): Promise<Record<string, Float32Array>> {
  const out: Record<string, Float32Array> = {};
  for (const [key, s] of Object.entries(storages)) {
    out[key] = (await backend.read(s)) as Float32Array;
    backend.release(s);
  }
  return out;
}

/**
 * Forward, and backward from the CPU forward's mean and rstd (so the backward comparison does not
 * inherit the forward's rounding of the mean).
 */
async function run(backend: Backend, inp: Inputs, rows: number, dim: number): Promise<Results> {
  const [x, weight, bias, dy] = [inp.x, inp.weight, inp.bias, inp.dy].map((a) => backend.upload(a));
  const f = backend.layerNorm(x, weight, bias, rows, dim, EPS);
  const ref = cpu.layerNorm(cpu.upload(inp.x), cpu.upload(inp.weight), cpu.upload(inp.bias), rows, dim, EPS);
  const mean = backend.upload(await cpu.read(ref.mean));
  const rstd = backend.upload(await cpu.read(ref.rstd));
  const b = backend.layerNormBackward(dy, x, weight, mean, rstd, rows, dim);
  const out = await readAll(backend, { y: f.y, mean: f.mean, rstd: f.rstd, dx: b.dx, dWeight: b.dWeight, dBias: b.dBias });
  for (const s of [x, weight, bias, dy, mean, rstd]) backend.release(s);
  return out as Results;
}

function check(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, floor: number | undefined, seed: number): void {
  const err = maxRelativeError(actual, expected, floor);
  expect(err, `${name}: max relative error ${err.toExponential(2)} > ${tolerance} (replay with TEST_SEED=${seed})`).toBeLessThanOrEqual(tolerance);
}

/**
 * Relative error 1e-4 with the default floor (1e-3 of the largest), except:
 * - y = x̂·w + b: the two terms (up to ~3) cancel to y ≈ 0 in places, where f32 leaves an ulp or two
 *   of the terms (measured: 2.4e-7, i.e. 6e-5 relative at the default floor of ~4e-3): the floor
 *   is at least 1e-2 (1e-6 absolute, 4–8 ulps of the terms).
 * - mean: a row's mean is a sum of its elements, so its f32 rounding is a fraction of the row's
 *   largest |x|, not of the mean (a row of one outlier 5794 and mean 0.85 gets 0.85 ± 1.7e-4, a third
 *   of an ulp of 5794): each row's mean is compared in units of its largest |x|, with the floor at
 *   1e-3 of that unit (rows of mean 1e4 next to rows of mean ~0 are then each held to their own scale).
 * - dWeight, dBias: sums over the rows of dy·x̂ and dy with random signs, so the result (~√rows) is
 *   much smaller than the sum of the terms' sizes (~rows) that bounds the f32 rounding: the floor
 *   is 1e-2·√rows (measured over 5 seeds × 8 cases: up to 8.6e-5 relative with 1e-3·√rows).
 */
function expectLayerNormClose(actual: Results, expected: Results, x: Float32Array, rows: number, seed: number): void {
  const dim = x.length / rows;
  const scale = Float64Array.from({ length: rows }, (_, r) => x.subarray(r * dim, (r + 1) * dim).reduce((m, v) => Math.max(m, Math.abs(v)), 1e-30));
  const inUnits = (mean: Float32Array) => Float64Array.from(mean, (m, r) => m / scale[r]);
  check('mean', inUnits(actual.mean), inUnits(expected.mean), 1e-4, 1e-3, seed);
  const sums = 1e-2 * Math.sqrt(rows);
  const yFloor = Math.max(1e-2, 1e-3 * expected.y.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
  const floors: Partial<Record<keyof Results, number>> = { y: yFloor, rstd: undefined, dx: undefined, dWeight: sums, dBias: sums };
  for (const key of Object.keys(floors) as (keyof Results)[]) check(key, actual[key], expected[key], 1e-4, floors[key], seed);
}

describe('layerNorm CPU reference', () => {
  it('equals the formula in float64, also for rows of mean 1e4 and a constant row', () => {
    const seed = freshSeed();
    const dim = 9;
    const rows = 3;
    const x = Float64Array.from(randomArray(rows * dim, seed, 1, -1, 1));
    for (let c = 0; c < dim; c++) x[dim + c] += 1e4; // row 1: mean 1e4, spread 1
    x.fill(2.5, 2 * dim, 3 * dim); // row 2: constant, variance 0
    const weight = randomArray(dim, seed, 2, 0.5, 1.5);
    const bias = randomArray(dim, seed, 3, -0.5, 0.5);
    const y = new Float64Array(rows * dim);
    const mean = new Float64Array(rows);
    const rstd = new Float64Array(rows);
    layerNormRows(x, weight, bias, rows, dim, EPS, y, mean, rstd);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(x.subarray(r * dim, (r + 1) * dim));
      // The mean of the row's offsets from its first element, added back: exact enough at 1e4.
      const mu = row[0] + row.reduce((a, v) => a + (v - row[0]), 0) / dim;
      const variance = row.reduce((a, v) => a + (v - mu) ** 2, 0) / dim;
      expect(mean[r]).toBeCloseTo(mu, 10);
      expect(rstd[r]).toBeCloseTo(1 / Math.sqrt(variance + EPS), 8);
      expectClose(y.subarray(r * dim, (r + 1) * dim), row.map((v, c) => ((v - mu) / Math.sqrt(variance + EPS)) * weight[c] + bias[c]), { tolerance: 1e-9, seed });
    }
    expect(Array.from(y.subarray(2 * dim))).toEqual(Array.from(bias));
  });

  // With two elements x̂ = ±√(var/(var + eps)) hardly moves with x: dx ~ eps·rstd³ is ~1e-5 and the
  // differences' rounding would dominate; eps = 0.5 makes that case's gradient O(1).
  for (const [rows, dim, eps] of [[3, 7, EPS], [1, 1, EPS], [4, 2, 0.5], [2, 33, EPS]] as const) {
    it(`backward matches central differences in float64 ([${rows}, ${dim}], eps ${eps})`, () => {
      const seed = freshSeed();
      const inp = randomInputs(rows, dim, seed);
      const x = Float64Array.from(inp.x);
      const weight = Float64Array.from(inp.weight);
      const bias = Float64Array.from(inp.bias);
      const g = Float64Array.from(inp.dy);
      const y = new Float64Array(rows * dim);
      const mean = new Float64Array(rows);
      const rstd = new Float64Array(rows);
      // The loss Σ g ∘ layerNorm(x, w, b): its gradients are backward with dy = g.
      const loss = () => {
        layerNormRows(x, weight, bias, rows, dim, eps, y, mean, rstd);
        return y.reduce((a, v, i) => a + v * g[i], 0);
      };
      loss();
      const dx = new Float64Array(rows * dim);
      const dWeight = new Float64Array(dim);
      const dBias = new Float64Array(dim);
      layerNormBackwardRows(g, x, weight, mean.slice(), rstd.slice(), rows, dim, dx, dWeight, dBias);
      const h = 1e-5;
      const numeric = (input: Float64Array) =>
        Float64Array.from(input, (v, i) => {
          input[i] = v + h;
          const plus = loss();
          input[i] = v - h;
          const minus = loss();
          input[i] = v;
          return (plus - minus) / (2 * h);
        });
      // Float64 central differences with h = 1e-5: rounding ~1e-16·Σ|terms|/h ~ 1e-10 absolute, truncation
      // ~h²·|f'''| ~ 1e-10·rstd³ with rstd ≲ 2 here (with h = 1e-6, rounding alone measured 1.3e-6
      // relative at the floor); a wrong term in the formulas gives O(1).
      expectClose(dx, numeric(x), { tolerance: 1e-6, seed });
      expectClose(dWeight, numeric(weight), { tolerance: 1e-6, seed });
      expectClose(dBias, numeric(bias), { tolerance: 1e-6, seed });
    });
  }
});

describe.runIf(gpu !== null)('layerNorm on WebGPU equals the CPU reference', () => {
  const webgpu = gpu!;
  // Rows 1..300 make 1 row per backward block, 1000 makes 4, 17000 makes 64 (266 blocks).
  const shapes = [[1, 1], [5, 1], [1, 768], [7, 127], [129, 768], [3, 1600], [300, 129], [1000, 13], [17000, 5], [64, 2053]] as const;
  for (const [rows, dim] of shapes) {
    for (const outliers of [false, true]) {
      it(`[${rows}, ${dim}]${outliers ? ' with outliers and rows of mean 1e4' : ''}`, async () => {
        const seed = freshSeed();
        const inp = randomInputs(rows, dim, seed, outliers);
        expectLayerNormClose(await run(webgpu, inp, rows, dim), await run(cpu, inp, rows, dim), inp.x, rows, seed);
      });
    }
  }

  it('is bitwise deterministic', async () => {
    const seed = freshSeed();
    const inp = randomInputs(2049, 768, seed);
    const a = await run(webgpu, inp, 2049, 768);
    const b = await run(webgpu, inp, 2049, 768);
    for (const key of ['y', 'mean', 'rstd', 'dx', 'dWeight', 'dBias'] as const) expect(b[key]).toEqual(a[key]);
  });

  // Limits that split x, y, dy and dx (mean, rstd and the backward's partial sums, dim or more times
  // smaller, are bound whole): [2000, 33] in 3 windows of up to 991 rows, [3000, 5] in 4 of up to 806;
  // backward blocks of 8 and 12 rows, so each window ends in a short block.
  for (const [rows, dim, limit] of [[2000, 33, 131072], [3000, 5, 16384]] as const) {
    it(`[${rows}, ${dim}] split into binding windows (limit lowered to ${limit} B, 256 B alignment)`, async () => {
      const seed = freshSeed();
      const inp = randomInputs(rows, dim, seed, true);
      const actual = await withBindingLimits(webgpu, limit, 256, (limited) => run(limited, inp, rows, dim));
      expectLayerNormClose(actual, await run(cpu, inp, rows, dim), inp.x, rows, seed);
    });
  }
});

describe('layerNorm at the Tensor level', () => {
  for (const [name, backend] of [['cpu', cpu], ['webgpu', gpu]] as const) {
    it.runIf(backend !== null)(`${name}: backward() through layerNorm gives dx, dWeight, dBias`, async () => {
      const b = backend!;
      const seed = freshSeed();
      const [B, T, C] = [2, 5, 33];
      const inp = randomInputs(B * T, C, seed);
      const x = tensor(inp.x, [B, T, C], { backend: b, requiresGrad: true });
      const weight = tensor(inp.weight, [C], { backend: b, requiresGrad: true });
      const bias = tensor(inp.bias, [C], { backend: b, requiresGrad: true });
      const y = layerNorm(x, weight, bias);
      expect(y.shape).toEqual([B, T, C]);
      backward(sum(mul(y, tensor(inp.dy, [B, T, C], { backend: b }))));
      const expected = await run(cpu, inp, B * T, C);
      expectClose(await x.grad!.toFloat32(), expected.dx, { seed });
      expectClose(await weight.grad!.toFloat32(), expected.dWeight, { seed });
      expectClose(await bias.grad!.toFloat32(), expected.dBias, { seed });
    });
  }
});
