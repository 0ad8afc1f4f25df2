/**
 * GELU (tanh approximation): the CPU reference against GPT-2's formula at known points and against
 * central differences in float64; WebGPU forward and backward against the CPU reference on ragged
 * sizes with outliers up to ±1e4, and on a tensor larger than one binding; the Tensor-level op's
 * backward rule on both backends.
 */
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/tensor/backend.js';
import { backward } from '../src/tensor/autograd.js';
import { tensor } from '../src/tensor/create.js';
import { geluAt, geluGradAt } from '../src/tensor/cpu/gelu.js';
import { gelu } from '../src/tensor/fused.js';
import { mul, sum } from '../src/tensor/ops.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

/** Uniform in [-6, 6) (the curved part), with about 2% of the elements set to ±1e3..1e4 when `outliers`. */
function randomInput(size: number, seed: number, outliers = true): Float32Array {
  const x = randomArray(size, seed, 1, -6, 6);
  if (outliers) {
    const pick = randomArray(size, seed, 2, 0, 1);
    const big = randomArray(size, seed, 3, 1e3, 1e4);
    for (let i = 0; i < size; i++) if (pick[i] < 0.02) x[i] = x[i] < 0 ? -big[i] : big[i];
  }
  return x;
}

async function run(backend: Backend, x: Float32Array, dy: Float32Array): Promise<{ y: Float32Array; dx: Float32Array }> {
  const xs = backend.upload(x);
  const dys = backend.upload(dy);
  const ys = backend.gelu(xs);
  const dxs = backend.geluBackward(xs, dys);
  const y = (await backend.read(ys)) as Float32Array;
  const dx = (await backend.read(dxs)) as Float32Array;
  for (const s of [xs, dys, ys, dxs]) backend.release(s);
  return { y, dx };
}

/**
 * y: the outliers make the largest |y| ~1e4, so the default floor (1e-3 of it) would hide errors in
 * the curved part: every element is held to 1e-4 relative, with an absolute floor of 1e-6 (y = x·s is
 * a product, accurate to a few f32 ulps everywhere, even in the negative tail where y ~ 1e-6).
 * dx: the default floor (1e-3 of the largest |dx| ≈ 1e-3, as |gelu'| ≤ 1.13 and |dy| < 1). gelu' = s +
 * 2x·s(1 − s)·… crosses zero at x ≈ −0.75 as a difference of two terms ~0.2, so there f32 can only
 * give ~1e-8 absolute (measured: 1.3e-8, i.e. 5e-3 relative to a dx of 2e-6).
 */
function expectGeluClose(actual: { y: Float32Array; dx: Float32Array }, expected: { y: Float32Array; dx: Float32Array }, seed: number): void {
  expectClose(actual.y, expected.y, { seed, floor: 1e-6 });
  expectClose(actual.dx, expected.dx, { seed });
}

describe('GELU CPU reference', () => {
  it("is GPT-2's tanh formula at known points", () => {
    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), evaluated by hand in float64.
    expect(geluAt(0)).toBe(0);
    expect(geluAt(1)).toBeCloseTo(0.8411919906082768, 14);
    expect(geluAt(-1)).toBeCloseTo(-0.15880800939172324, 14);
    expect(geluAt(3)).toBeCloseTo(2.996362607918227, 14);
    expect(geluAt(1e4)).toBe(1e4);
    expect(geluAt(-1e4)).toBeCloseTo(0, 300);
    expect(geluGradAt(0)).toBe(0.5);
  });

  it('backward matches central differences in float64', () => {
    const seed = freshSeed();
    const x = randomInput(2000, seed, false);
    const h = 1e-3;
    const analytic = Float64Array.from(x, geluGradAt);
    const numeric = Float64Array.from(x, (v) => (8 * (geluAt(v + h) - geluAt(v - h)) - (geluAt(v + 2 * h) - geluAt(v - 2 * h))) / (12 * h));
    // Five-point central differences in float64, h = 1e-3: truncation ~h⁴ and rounding ~1e-16/h, both ~1e-12
    // (the 1e-3·max floor makes an absolute 1e-10 a relative 1e-7 where gelu' ≈ 0).
    expectClose(analytic, numeric, { tolerance: 1e-7, seed });
  });
});

describe.runIf(gpu !== null)('GELU on WebGPU equals the CPU reference', () => {
  const webgpu = gpu!;
  for (const size of [1, 2, 7, 127, 129, 256, 257, 65537, 1000003]) {
    it(`${size} elements with outliers: forward and backward`, async () => {
      const seed = freshSeed();
      const x = randomInput(size, seed);
      const dy = randomArray(size, seed, 4, -1, 1);
      const actual = await run(webgpu, x, dy);
      const expected = await run(cpu, x, dy);
      expectGeluClose(actual, expected, seed);
    });
  }

  it('saturates exactly: gelu(x) = x and gelu\'(x) = 1 for large x, 0 for very negative x', async () => {
    const x = Float32Array.of(1e4, 3e4, 1e30, 20, -1e4, -3e4, -1e30, -20);
    const { y, dx } = await run(webgpu, x, new Float32Array(x.length).fill(1));
    expect(Array.from(y.subarray(0, 4))).toEqual([1e4, 3e4, Math.fround(1e30), 20]);
    expect(Array.from(dx.subarray(0, 4))).toEqual([1, 1, 1, 1]);
    for (const v of [...y.subarray(4), ...dx.subarray(4)]) expect(Math.abs(v)).toBeLessThan(1e-30);
  });

  it('chunks of a lowered binding limit (4 KiB, 256 B alignment)', async () => {
    const seed = freshSeed();
    const x = randomInput(10007, seed);
    const dy = randomArray(10007, seed, 4, -1, 1);
    const actual = await withBindingLimits(webgpu, 4096, 256, (limited) => run(limited, x, dy));
    expectGeluClose(actual, await run(cpu, x, dy), seed);
  });

  it('a tensor larger than one binding (34 M elements = 136 MB)', async () => {
    const seed = freshSeed();
    const size = 34_000_003;
    expect(size * 4).toBeGreaterThan(webgpu.gpu.maxBindingBytes);
    // A random period of a prime length, tiled: an element read from the wrong chunk or offset gets
    // another element's value (a chunk holds no whole number of periods), and the CPU reference
    // runs on one period only.
    const period = 1_000_003;
    const xp = randomInput(period, seed);
    const dyp = randomArray(period, seed, 4, -1, 1);
    const tile = (p: Float32Array) => {
      const out = new Float32Array(size);
      for (let at = 0; at < size; at += period) out.set(p.subarray(0, Math.min(period, size - at)), at);
      return out;
    };
    const actual = await run(webgpu, tile(xp), tile(dyp));
    const expected = await run(cpu, xp, dyp);
    expectGeluClose(actual, { y: tile(expected.y), dx: tile(expected.dx) }, seed);
  });
});

describe('GELU at the Tensor level', () => {
  for (const [name, backend] of [['cpu', cpu], ['webgpu', gpu]] as const) {
    it.runIf(backend !== null)(`${name}: backward() through gelu gives dy·gelu'(x)`, async () => {
      const b = backend!;
      const seed = freshSeed();
      const shape = [3, 41];
      const xh = randomInput(123, seed, false);
      const dyh = randomArray(123, seed, 4, -1, 1);
      const x = tensor(xh, shape, { backend: b, requiresGrad: true });
      backward(sum(mul(gelu(x), tensor(dyh, shape, { backend: b }))));
      expectClose(await x.grad!.toFloat32(), Float64Array.from(xh, (v, i) => dyh[i] * geluGradAt(v)), { seed });
    });
  }
});
