/**
 * Softmax over the last axis: the CPU reference against a float64 naive softmax and central
 * differences; WebGPU forward and backward against the CPU reference on ragged shapes (one column,
 * primes, 127/129, both workgroup shapes, V = 50257), with outliers, rows of [-1000, 1000], all-equal
 * rows, and rows split into binding windows; the Tensor-level op's backward rule on both backends.
 */
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/tensor/backend.js';
import { backward } from '../src/tensor/autograd.js';
import { tensor } from '../src/tensor/create.js';
import { softmaxBackwardRows, softmaxRows } from '../src/tensor/cpu/softmax.js';
import { softmax } from '../src/tensor/fused.js';
import { mul, sum } from '../src/tensor/ops.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

/** Logits uniform in [-4, 4); with `outliers`, about 2% of them ±(1e3..1e4). */
function randomLogits(size: number, seed: number, outliers = false): Float32Array {
  const x = randomArray(size, seed, 1, -4, 4);
  if (outliers) {
    const pick = randomArray(size, seed, 2, 0, 1);
    const big = randomArray(size, seed, 3, 1e3, 1e4);
    for (let i = 0; i < size; i++) if (pick[i] < 0.02) x[i] = x[i] < 0 ? -big[i] : big[i];
  }
  return x;
}

interface Results {
  y: Float32Array;
  dx: Float32Array;
  /** The CPU's y that both backends' backward took. */
  yIn: Float32Array;
}

async function run(backend: Backend, x: Float32Array, dy: Float32Array, rows: number, dim: number): Promise<Results> {
  const xs = backend.upload(x);
  const ys = backend.softmax(xs, rows, dim);
  // Backward from the CPU's y, so the backward comparison does not inherit forward differences.
  const yRef = cpu.softmax(cpu.upload(x), rows, dim);
  const yHost = (await cpu.read(yRef)) as Float32Array;
  const yIn = backend.upload(yHost);
  const dys = backend.upload(dy);
  const dxs = backend.softmaxBackward(yIn, dys, rows, dim);
  const y = (await backend.read(ys)) as Float32Array;
  const dx = (await backend.read(dxs)) as Float32Array;
  for (const s of [xs, ys, yIn, dys, dxs]) backend.release(s);
  return { y, dx, yIn: yHost };
}

/**
 * y: relative error 1e-4 with an absolute floor of 1e-12: probabilities of 1e-5 (rows of 50257) and
 * far smaller are held to it too, which the default floor (1e-3 of the largest) would not do.
 * dx = y·(dy − Σdy·y), |dy| < 1: the error of an element is y times an ulp or two of the O(1)
 * numbers dy and Σ, not a fraction of dx itself: in a nearly one-hot row (outliers) the largest dx is
 * y_max·(dy_max − Σ) with Σ ≈ dy_max, tiny, and so is every other dx (measured over 10 seeds at
 * [33, 2053] with outliers: up to 1.0 relative under the default floor, 6e-8 absolute). So dx/y =
 * dy − Σ is held to 1e-4 relative above a floor of 1e-2 (1e-6 absolute, 8 ulps at 1) wherever
 * y ≥ 1e-30, and dx itself to the same absolute floor (it covers the rest, where y underflows).
 */
function expectSoftmaxClose(actual: Results, expected: Results, seed: number): void {
  expectClose(actual.y, expected.y, { seed, floor: 1e-12 });
  const overY = (r: Results) => Float64Array.from(r.dx, (d, i) => (r.yIn[i] >= 1e-30 ? d / r.yIn[i] : 0));
  expectClose(overY(actual), overY(expected), { seed, floor: 1e-2 });
  expectClose(actual.dx, expected.dx, { seed, floor: 1e-2 });
}

describe('softmax CPU reference', () => {
  it('equals a naive float64 softmax, and rows sum to 1', () => {
    const seed = freshSeed();
    const [rows, dim] = [5, 11];
    const x = randomLogits(rows * dim, seed);
    const y = new Float64Array(rows * dim);
    softmaxRows(x, rows, dim, y);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(x.subarray(r * dim, (r + 1) * dim));
      const total = row.reduce((a, v) => a + Math.exp(v), 0);
      expectClose(y.subarray(r * dim, (r + 1) * dim), row.map((v) => Math.exp(v) / total), { tolerance: 1e-14, seed });
      expect(y.subarray(r * dim, (r + 1) * dim).reduce((a, v) => a + v, 0)).toBeCloseTo(1, 14);
    }
  });

  it('is exact where exp would overflow: [-1000, 1000] gives [0, 1]', () => {
    const y = new Float64Array(2);
    softmaxRows([-1000, 1000], 1, 2, y);
    expect(Array.from(y)).toEqual([0, 1]);
  });

  it('backward matches central differences in float64', () => {
    const seed = freshSeed();
    const [rows, dim] = [3, 7];
    const x = Float64Array.from(randomLogits(rows * dim, seed));
    const g = Float64Array.from(randomArray(rows * dim, seed, 4, -1, 1));
    const y = new Float64Array(rows * dim);
    const loss = () => {
      softmaxRows(x, rows, dim, y);
      return y.reduce((a, v, i) => a + v * g[i], 0);
    };
    loss();
    const analytic = new Float64Array(rows * dim);
    softmaxBackwardRows(y.slice(), g, rows, dim, analytic);
    const h = 1e-5;
    const numeric = Float64Array.from(x, (v, i) => {
      x[i] = v + h;
      const plus = loss();
      x[i] = v - h;
      const minus = loss();
      x[i] = v;
      return (plus - minus) / (2 * h);
    });
    // Float64 central differences with h = 1e-5: truncation ~h² and rounding ~1e-16/h, both < 1e-9.
    expectClose(analytic, numeric, { tolerance: 1e-7, seed });
  });
});

describe.runIf(gpu !== null)('softmax on WebGPU equals the CPU reference', () => {
  const webgpu = gpu!;
  const shapes = [[1, 1], [7, 1], [3, 2], [7, 127], [5, 129], [13, 1024], [3, 1025], [33, 2053], [4, 50257], [1537, 128]] as const;
  for (const [rows, dim] of shapes) {
    for (const outliers of [false, true]) {
      it(`[${rows}, ${dim}]${outliers ? ' with outliers' : ''}: forward and backward`, async () => {
        const seed = freshSeed();
        const x = randomLogits(rows * dim, seed, outliers);
        const dy = randomArray(rows * dim, seed, 4, -1, 1);
        expectSoftmaxClose(await run(webgpu, x, dy, rows, dim), await run(cpu, x, dy, rows, dim), seed);
      });
    }
  }

  it('edge rows: [-1000, 1000], all equal, one huge logit among 50257, ±1e4', async () => {
    const dim = 50257;
    const rows = 4;
    const x = new Float32Array(rows * dim);
    x[0] = -1000;
    x[1] = 1000; // row 0: [-1000, 1000, 0, …]
    x.fill(3.5, dim, 2 * dim); // row 1: all equal
    x[2 * dim + 777] = 1e4; // row 2: one logit of 1e4 among zeros
    for (let i = 3 * dim; i < 4 * dim; i++) x[i] = i % 2 === 0 ? 1e4 : -1e4; // row 3: ±1e4
    const seed = freshSeed();
    const dy = randomArray(rows * dim, seed, 4, -1, 1);
    const actual = await run(webgpu, x, dy, rows, dim);
    expectSoftmaxClose(actual, await run(cpu, x, dy, rows, dim), seed);
    expect(actual.y[1]).toBe(1);
    expect(actual.y[0]).toBe(0);
    expectClose(actual.y.subarray(dim, 2 * dim), new Float32Array(dim).fill(1 / dim), { tolerance: 1e-5 });
    expect(actual.y[2 * dim + 777]).toBe(1);
    expect(actual.y.every(Number.isFinite)).toBe(true);

    const pair = await run(webgpu, Float32Array.of(-1000, 1000, 5, 5), Float32Array.of(1, 2, 3, 4), 2, 2);
    expect(Array.from(pair.y)).toEqual([0, 1, 0.5, 0.5]);
  });

  it('a single column gives ones and zero gradient', async () => {
    const x = Float32Array.of(-1e4, 0, 3, 1e4, 7);
    const { y, dx } = await run(webgpu, x, Float32Array.of(1, 2, 3, 4, 5), 5, 1);
    expect(Array.from(y)).toEqual([1, 1, 1, 1, 1]);
    expect(Array.from(dx)).toEqual([0, 0, 0, 0, 0]);
  });

  it('rows split into binding windows (limit lowered to 4 KiB, 256 B alignment: rows of 129 start unaligned)', async () => {
    const seed = freshSeed();
    const [rows, dim] = [37, 129];
    const x = randomLogits(rows * dim, seed, true);
    const dy = randomArray(rows * dim, seed, 4, -1, 1);
    const actual = await withBindingLimits(webgpu, 4096, 256, (limited) => run(limited, x, dy, rows, dim));
    expectSoftmaxClose(actual, await run(cpu, x, dy, rows, dim), seed);
  });
});

describe('softmax at the Tensor level', () => {
  for (const [name, backend] of [['cpu', cpu], ['webgpu', gpu]] as const) {
    it.runIf(backend !== null)(`${name}: backward() through softmax gives y·(dy − Σdy·y)`, async () => {
      const b = backend!;
      const seed = freshSeed();
      const shape = [2, 3, 37];
      const xh = randomLogits(222, seed);
      const dyh = randomArray(222, seed, 4, -1, 1);
      const x = tensor(xh, shape, { backend: b, requiresGrad: true });
      backward(sum(mul(softmax(x), tensor(dyh, shape, { backend: b }))));
      const y = new Float64Array(222);
      softmaxRows(xh, 6, 37, y);
      const expected = new Float64Array(222);
      softmaxBackwardRows(y, dyh, 6, 37, expected);
      expectClose(await x.grad!.toFloat32(), expected, { seed });
    });
  }
});
