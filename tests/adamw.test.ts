/**
 * AdamW, torch.optim.AdamW semantics: the CPU reference against values derived by hand for two steps
 * of a 3-element parameter; WebGPU against the CPU reference over 10 steps on fresh random
 * parameters and gradients (weight decay on and off, ragged sizes and a multiple of 4, outliers), on a tensor past one
 * binding; the Tensor-level step's shape checks.
 */
import { describe, expect, it } from 'vitest';
import type { AdamWHyper, Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { adamwUpdate } from '../src/tensor/cpu/adamw.js';
import { adamwStep } from '../src/tensor/fused.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

const hyper = (step: number, weightDecay: number, lr = 1e-3): AdamWHyper => ({ lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay, step });

interface State {
  p: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/** `steps` updates from zero moments, with the gradients of step t in grads[t − 1]; returns p, m, v. */
async function run(backend: Backend, p0: Float32Array, grads: Float32Array[], weightDecay: number, lr?: number): Promise<State> {
  const p = backend.upload(p0);
  const m = backend.fill(p0.length, 0, 'f32');
  const v = backend.fill(p0.length, 0, 'f32');
  for (const [t, g] of grads.entries()) {
    const gs = backend.upload(g);
    backend.adamw(p, gs, m, v, hyper(t + 1, weightDecay, lr), null);
    backend.release(gs);
  }
  const out = { p: (await backend.read(p)) as Float32Array, m: (await backend.read(m)) as Float32Array, v: (await backend.read(v)) as Float32Array };
  for (const s of [p, m, v]) backend.release(s);
  return out;
}

describe('AdamW CPU reference', () => {
  // lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01; p0 = [1, −2, 0.5].
  // Step 1, g = [0.5, −1, 0]: p ← 0.999·p; m = 0.1·g, v = 0.001·g², so m̂ = g, v̂ = g² and
  //   p −= 0.1·g/(|g| + 1e-8): p1 = [0.999 − 0.05/0.50000001, −1.998 + 0.1/1.00000001, 0.4995]
  //   = [0.899000002, −1.898000001, 0.4995] (a zero gradient leaves only the decay).
  // Step 2, g = [−0.25, 2, 1]: m = 0.9·m + 0.1·g = [0.02, 0.11, 0.1],
  //   v = 0.999·v + 0.001·g² = [0.00031225, 0.004999, 0.001]; m̂ = m/0.19, v̂ = v/0.001999;
  //   e.g. element 0: m̂ = 0.105263158, √v̂ = 0.395225393, p2 = 0.999·0.899000002 − 0.1·0.105263158/0.395225393
  //   = 0.871467299. The values below are these formulas evaluated in float64.
  const p0 = [1, -2, 0.5];
  const grads = [[0.5, -1, 0], [-0.25, 2, 1]];
  const expected = {
    p: [[0.899000002, -1.898000001, 0.4995], [0.8714672987058463, -1.9327123534710748, 0.42458681869540704]],
    m: [[0.05, -0.1, 0], [0.02, 0.11, 0.1]],
    v: [[0.00025, 0.001, 0], [0.00031225, 0.004999, 0.001]],
  };
  const h = (step: number): AdamWHyper => ({ lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step });

  it('float64: two steps equal the hand-derived values', () => {
    const p = Float64Array.from(p0);
    const m = new Float64Array(3);
    const v = new Float64Array(3);
    for (let t = 0; t < 2; t++) {
      adamwUpdate(p, grads[t], m, v, h(t + 1));
      expectClose(p, expected.p[t], { tolerance: 1e-12 });
      expectClose(m, expected.m[t], { tolerance: 1e-12 });
      expectClose(v, expected.v[t], { tolerance: 1e-12 });
    }
  });

  it('f32 storage (the backend op): two steps equal the hand-derived values to f32 rounding', () => {
    const p = cpu.upload(Float32Array.from(p0));
    const m = cpu.fill(3, 0, 'f32');
    const v = cpu.fill(3, 0, 'f32');
    for (let t = 0; t < 2; t++) {
      cpu.adamw(p, cpu.upload(Float32Array.from(grads[t])), m, v, h(t + 1), null);
      // State rounded to f32 after each step: ~1e-7 relative.
      for (const [s, e] of [[p, expected.p[t]], [m, expected.m[t]], [v, expected.v[t]]] as const) {
        expectClose((s as unknown as { data: Float32Array }).data, e, { tolerance: 1e-6 });
      }
    }
  });

  it('rejects step 0 and mismatched sizes', () => {
    const p = cpu.upload(new Float32Array(3));
    expect(() => cpu.adamw(p, p, p, p, h(0), null)).toThrow(/step must be a positive integer/);
    expect(() => cpu.adamw(p, cpu.upload(new Float32Array(2)), p, p, h(1), null)).toThrow(/grad has 2 elements, the parameter 3/);
  });
});

describe.runIf(gpu !== null)('AdamW on WebGPU equals the CPU reference', () => {
  const webgpu = gpu!;
  for (const size of [1, 7, 129, 4099, 1000003, 4096]) {
    for (const weightDecay of [0.1, 0]) {
      it(`${size} elements, 10 steps, weight decay ${weightDecay}`, async () => {
        const seed = freshSeed();
        const p0 = randomArray(size, seed, 1, -1, 1);
        // Fresh gradients each step, mostly in [-1, 1), a few of 1e3 and a few exactly zero.
        const grads = Array.from({ length: 10 }, (_, t) => {
          const g = randomArray(size, seed, 10 + t, -1, 1);
          const pick = randomArray(size, seed, 30 + t, 0, 1);
          for (let i = 0; i < size; i++) g[i] = pick[i] < 0.01 ? 1e3 * Math.sign(g[i]) : pick[i] < 0.02 ? 0 : g[i];
          return g;
        });
        const actual = await run(webgpu, p0, grads, weightDecay);
        const expected = await run(cpu, p0, grads, weightDecay);
        // p moves by ~lr per step from values ~1: relative 1e-4 of p is ~1e-1 of a step, so p is
        // also checked through its displacement p − p0 (each step's f32 rounding is ~1e-7 of p,
        // ~1e-4 of one step's lr·m̂/√v̂ after 10 steps: held to 1e-3 relative above a floor of lr).
        expectClose(actual.p, expected.p, { seed });
        const moved = (s: State) => Float64Array.from(s.p, (x, i) => x - p0[i]);
        expectClose(moved(actual), moved(expected), { seed, tolerance: 1e-3, floor: 1e-3 });
        // m sums ten gradients of size ~1 whose f32 roundings (~6e-8 each) stay when they cancel to a
        // small m (size 1, seed 567109707: m = 1e-3 off by 2.4e-7): held to 1e-4 relative above 1e-2.
        expectClose(actual.m, expected.m, { seed, floor: 1e-2 });
        // v spans g² ~ 1e6 (outliers) down to ~1e-8: the default floor (1e-3 of the largest) would only
        // check the largest, so v is held to 1e-4 relative above 1e-12.
        expectClose(actual.v, expected.v, { seed, floor: 1e-12 });
      });
    }
  }

  it('chunks of a lowered binding limit (4 KiB, 256 B alignment)', async () => {
    const seed = freshSeed();
    const size = 10007;
    const p0 = randomArray(size, seed, 1, -1, 1);
    const grads = [randomArray(size, seed, 2, -1, 1), randomArray(size, seed, 3, -1, 1)];
    const actual = await withBindingLimits(webgpu, 4096, 256, (limited) => run(limited, p0, grads, 0.1, 1e-2));
    const expected = await run(cpu, p0, grads, 0.1, 1e-2);
    expectClose(actual.p, expected.p, { seed });
    expectClose(actual.m, expected.m, { seed });
    expectClose(actual.v, expected.v, { seed, floor: 1e-12 });
  });

  it('a tensor past one binding (34 M elements, 136 MB each of p, g, m, v)', async () => {
    const seed = freshSeed();
    const size = 34_000_001;
    expect(size * 4).toBeGreaterThan(webgpu.gpu.maxBindingBytes);
    // A prime-length random period, tiled: an element updated through the wrong chunk offset meets
    // another element's values. Two steps; the CPU reference runs on one period.
    const period = 100_003;
    const tile = (p: Float32Array) => {
      const out = new Float32Array(size);
      for (let at = 0; at < size; at += period) out.set(p.subarray(0, Math.min(period, size - at)), at);
      return out;
    };
    const p0 = randomArray(period, seed, 1, -1, 1);
    const grads = [randomArray(period, seed, 2, -1, 1), randomArray(period, seed, 3, -1, 1)];
    const actual = await run(webgpu, tile(p0), grads.map(tile), 0.1, 1e-2);
    const expected = await run(cpu, p0, grads, 0.1, 1e-2);
    expectClose(actual.p, tile(expected.p), { seed });
    expectClose(actual.m, tile(expected.m), { seed });
    expectClose(actual.v, tile(expected.v), { seed, floor: 1e-12 });
  });
});

describe('adamwStep at the Tensor level', () => {
  it('checks that grad, m and v match the parameter', () => {
    const p = tensor(new Float32Array(6), [2, 3], { backend: cpu });
    const ok = tensor(new Float32Array(6), [6], { backend: cpu });
    const bad = tensor(new Float32Array(5), [5], { backend: cpu });
    expect(() => adamwStep(p, bad, ok, ok, hyper(1, 0))).toThrow(/adamw: grad has shape \[5\], the parameter \[2,3\]/);
    expect(() => adamwStep(p, ok, ok, bad, hyper(1, 0))).toThrow(/adamw: v has shape \[5\]/);
    adamwStep(p, ok, ok, ok, hyper(1, 0));
  });
});
