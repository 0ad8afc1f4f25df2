/**
 * Cross-entropy over the vocabulary: the CPU reference against central differences in float64, the
 * WebGPU kernel against the CPU reference (ragged rows, V = 1, 5, 1000, 50257, outliers, weights of 0,
 * logits past one binding), and the Tensor-level op's mask handling.
 */
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/tensor/backend.js';
import { backward } from '../src/tensor/autograd.js';
import { tensor } from '../src/tensor/create.js';
import { crossEntropyRows } from '../src/tensor/cpu/cross-entropy.js';
import { crossEntropy } from '../src/tensor/fused.js';
import { mul } from '../src/tensor/ops.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose, maxRelativeError } from './helpers/close.js';
import { freshSeed, randomArray, randomInts } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

interface Case {
  logits: Float32Array;
  targets: Int32Array;
  weights: Float32Array;
  rows: number;
  vocab: number;
}

/** Random logits in [lo, hi), random targets, weights mask/count with about a quarter of the rows masked. */
function randomCase(rows: number, vocab: number, seed: number, lo = -4, hi = 4): Case {
  const logits = randomArray(rows * vocab, seed, 1, lo, hi);
  const targets = randomInts(rows, seed, 2, vocab);
  const mask = Float32Array.from(randomArray(rows, seed, 3, 0, 1), (u, r) => (u < 0.25 && r > 0 ? 0 : 1));
  const count = mask.reduce((a, b) => a + b, 0);
  return { logits, targets, weights: mask.map((m) => m / count), rows, vocab };
}

async function run(backend: Backend, c: Case): Promise<{ loss: number; dLogits: Float32Array }> {
  const logits = backend.upload(c.logits);
  const targets = backend.upload(c.targets);
  const weights = backend.upload(c.weights);
  const out = backend.crossEntropy(logits, targets, weights, c.rows, c.vocab);
  const loss = (await backend.read(out.loss))[0];
  const dLogits = (await backend.read(out.dLogits)) as Float32Array;
  for (const s of [logits, targets, weights, out.loss, out.dLogits]) backend.release(s);
  return { loss, dLogits };
}

/** The softmax part of the gradient, p·w = dLogits + w·onehot, where the one-hot's 1 would hide the error of p at the target. */
function softmaxPart(dLogits: Float32Array, c: Case): Float64Array {
  const p = Float64Array.from(dLogits);
  for (let r = 0; r < c.rows; r++) p[r * c.vocab + c.targets[r]] += c.weights[r];
  return p;
}

/**
 * The kernel against the CPU reference: the loss, dLogits as a whole, and the softmax part alone with a
 * floor of 1e-12·w, so probabilities of 1e-5 (V = 50257) are held to 1e-4 relative error too.
 */
function expectMatches(actual: { loss: number; dLogits: Float32Array }, expected: { loss: number; dLogits: Float32Array }, c: Case, seed: number): void {
  expectClose([actual.loss], [expected.loss], { seed });
  expectClose(actual.dLogits, expected.dLogits, { seed });
  const maxWeight = Math.max(...c.weights);
  expectClose(softmaxPart(actual.dLogits, c), softmaxPart(expected.dLogits, c), { seed, floor: 1e-12 * maxWeight });
}

describe('cross-entropy CPU reference', () => {
  it('matches central differences of its loss in float64', () => {
    const seed = freshSeed();
    const rows = 4;
    const vocab = 9;
    const logits = Float64Array.from(randomArray(rows * vocab, seed, 1, -3, 3));
    const targets = randomInts(rows, seed, 2, vocab);
    const weights = [0.5, 0, 0.25, 0.25];
    const grad = new Float64Array(rows * vocab);
    crossEntropyRows(logits, targets, weights, rows, vocab, grad);
    const numeric = new Float64Array(rows * vocab);
    const h = 1e-5;
    const scratch = new Float64Array(rows * vocab);
    for (let i = 0; i < logits.length; i++) {
      const x = logits[i];
      logits[i] = x + h;
      const plus = crossEntropyRows(logits, targets, weights, rows, vocab, scratch);
      logits[i] = x - h;
      const minus = crossEntropyRows(logits, targets, weights, rows, vocab, scratch);
      logits[i] = x;
      numeric[i] = (plus - minus) / (2 * h);
    }
    // Central differences in float64 with h = 1e-5 are good to ~1e-10 here.
    expectClose(grad, numeric, { tolerance: 1e-7, seed });
    expect(grad.subarray(vocab, 2 * vocab).every((g) => g === 0), 'a row of weight 0 has zero gradient').toBe(true);
  });

  it('gives log V for uniform logits and is exact for logits of magnitude 1e4', () => {
    const vocab = 1000;
    const grad = new Float64Array(2 * vocab);
    const logits = new Float64Array(2 * vocab).fill(1e4);
    logits[vocab + 3] = 1e4 + 5; // the second row: one logit 5 above the rest
    const loss = crossEntropyRows(logits, [7, 3], [0.5, 0.5], 2, vocab, grad);
    const second = Math.log(Math.exp(5) + vocab - 1) - 5;
    expect(loss).toBeCloseTo(0.5 * Math.log(vocab) + 0.5 * second, 12);
    expect(grad[7]).toBeCloseTo(0.5 * (1 / vocab - 1), 12);
  });

  it('rejects a counted target outside the vocabulary', () => {
    expect(() => crossEntropyRows([1, 2, 3], [3], [1], 1, 3, new Float64Array(3))).toThrow(/row 0 has weight 1 but target 3 is outside the vocabulary \[0, 3\)/);
  });
});

describe.runIf(gpu !== null)('cross-entropy on WebGPU equals the CPU reference', () => {
  const webgpu = gpu!;

  for (const [rows, vocab] of [[1, 1], [1, 5], [7, 5], [33, 1000], [7, 50257], [129, 1000]] as const) {
    it(`[${rows}, ${vocab}]`, async () => {
      const seed = freshSeed();
      const c = randomCase(rows, vocab, seed);
      expectMatches(await run(webgpu, c), await run(cpu, c), c, seed);
    });
  }

  it('outliers: rows in [-1000, 1000], all-equal rows, logits of magnitude 1e4', async () => {
    const seed = freshSeed();
    const vocab = 50257;
    const rows = 5;
    const c = randomCase(rows, vocab, seed, -1000, 1000);
    c.logits.fill(3.5, vocab, 2 * vocab); // row 1: all equal
    c.logits.set(randomArray(vocab, seed, 4, 1e4 - 8, 1e4 + 8), 2 * vocab); // row 2: around 1e4
    c.logits.set(randomArray(vocab, seed, 5, -1e4, 1e4), 3 * vocab); // row 3: spread over ±1e4
    c.logits.fill(-1e4, 4 * vocab, 5 * vocab); // row 4: all -1e4
    c.weights.set([0.2, 0.2, 0.2, 0.2, 0.2]);
    expectMatches(await run(webgpu, c), await run(cpu, c), c, seed);
  });

  it('keeps the loss of logits around 1e4 to f32 precision of the loss, not of the logits', async () => {
    // loss = (max − x[t]) + log Σ exp(x − max): the difference is exact for logits this close and the
    // log is ~11, so the loss is good to ~1e-7; (max + log sum) − x[t] would round at 1e4's ulp
    // (1e-3) and miss by up to 5e-5 relative. One row per call, so no average hides a bad row.
    const seed = freshSeed();
    for (let row = 0; row < 4; row++) {
      const c = randomCase(1, 50257, seed + row, 1e4 - 2, 1e4 + 2);
      const { loss } = await run(webgpu, c);
      expectClose([loss], [(await run(cpu, c)).loss], { seed, tolerance: 1e-5 });
    }
  });

  it('all-zero weights give loss 0 and a zero gradient', async () => {
    const seed = freshSeed();
    const c = randomCase(9, 1000, seed);
    // Leave garbage in the pool first, so zeros must be written, not inherited.
    await run(webgpu, c);
    c.weights.fill(0);
    const { loss, dLogits } = await run(webgpu, c);
    expect(loss).toBe(0);
    expect(dLogits.every((g) => g === 0)).toBe(true);
  });

  it('rows split into binding windows (limit lowered to 40 KiB, offsets aligned to 256 B)', async () => {
    const seed = freshSeed();
    const c = randomCase(37, 1001, seed); // 9 rows a window, none of them starting on an aligned element
    const actual = await withBindingLimits(webgpu, 40 * 1024, 256, (limited) => run(limited, c));
    expectMatches(actual, await run(cpu, c), c, seed);
  });

  it('logits larger than one binding ([700, 50257] = 141 MB)', async () => {
    const seed = freshSeed();
    const rows = 700;
    const vocab = 50257;
    expect(rows * vocab * 4).toBeGreaterThan(webgpu.gpu.maxBindingBytes);
    const c = randomCase(rows, vocab, seed, -6, 6);
    const actual = await run(webgpu, c);
    const expected = await run(cpu, c);
    expectClose([actual.loss], [expected.loss], { seed });
    // Rows at both ends and around every window boundary (alignment of 16 B: 4 elements).
    const rowsPerWindow = Math.floor((webgpu.gpu.maxBindingBytes / 4 - webgpu.gpu.bindingAlignment / 4 + 1) / vocab);
    const check = new Set([0, 1, rows - 1]);
    for (let b = rowsPerWindow; b < rows; b += rowsPerWindow) [b - 1, b, b + 1].forEach((r) => r < rows && check.add(r));
    for (const r of check) {
      const a = actual.dLogits.subarray(r * vocab, (r + 1) * vocab);
      const e = expected.dLogits.subarray(r * vocab, (r + 1) * vocab);
      expect(maxRelativeError(a, e), `row ${r} (replay with TEST_SEED=${seed})`).toBeLessThan(1e-4);
    }
  });
});

describe('crossEntropy at the Tensor level', () => {
  const backends: [string, Backend | null][] = [['cpu', cpu], ['webgpu', gpu]];
  for (const [name, backend] of backends) {
    it.runIf(backend !== null)(`${name}: the mean over masked rows, and its gradient through backward`, async () => {
      const b = backend!;
      const seed = freshSeed();
      const rows = 6;
      const vocab = 11;
      const logitsData = randomArray(rows * vocab, seed, 1, -2, 2);
      const targetsData = randomInts(rows, seed, 2, vocab);
      const mask = Float32Array.of(1, 1, 0, 1, 0, 1);
      const logits = tensor(logitsData, [2, 3, vocab], { backend: b, requiresGrad: true });
      const loss = crossEntropy(logits, tensor(targetsData, [2, 3], { backend: b }), mask);
      backward(loss);
      const grad = new Float64Array(rows * vocab);
      const expected = crossEntropyRows(logitsData, targetsData, Array.from(mask, (m) => m / 4), rows, vocab, grad);
      expectClose([await loss.item()], [expected], { seed });
      expectClose(await logits.grad!.toFloat32(), grad, { seed });
    });

    it.runIf(backend !== null)(`${name}: a loss scaled before backward scales its gradient (the rule passes dLogits on unscaled only for backward's seed)`, async () => {
      const b = backend!;
      const seed = freshSeed();
      const rows = 5;
      const vocab = 13;
      const logitsData = randomArray(rows * vocab, seed, 1, -2, 2);
      const targetsData = randomInts(rows, seed, 2, vocab);
      const mask = Float32Array.of(1, 0, 1, 1, 1);
      const logits = tensor(logitsData, [rows, vocab], { backend: b, requiresGrad: true });
      backward(mul(crossEntropy(logits, tensor(targetsData, [rows], { backend: b }), mask), 2.5));
      const grad = new Float64Array(rows * vocab);
      crossEntropyRows(logitsData, targetsData, Array.from(mask, (m) => m / 4), rows, vocab, grad);
      expectClose(await logits.grad!.toFloat32(), grad.map((g) => 2.5 * g), { seed });
    });

    it.runIf(backend !== null)(`${name}: a mask that selects nothing and f32 targets are clear errors`, () => {
      const b = backend!;
      const logits = tensor(new Float32Array(2 * 5), [2, 5], { backend: b });
      const targets = tensor(Int32Array.of(1, 2), [2], { backend: b });
      expect(() => crossEntropy(logits, targets, new Float32Array(2))).toThrow('crossEntropy: the loss mask selects no position (every target is padding)');
      expect(() => crossEntropy(logits, tensor(Float32Array.of(1, 2), [2], { backend: b }), Float32Array.of(1, 1))).toThrow('crossEntropy targets must be i32, got f32');
    });
  }
});
