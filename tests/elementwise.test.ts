/**
 * Element-wise primitives: fill, random, cast, every unary and binary op, and where.
 * The CPU reference at values worked out by hand (so a broken oracle cannot pass everything); then
 * WebGPU against it on fresh random inputs with broadcasting of every kind (a trailing [3,1,5]+[4,1],
 * scalar + tensor, [1] + [7,13], rank 5 with both sides broadcast, size-1 and prime sizes), outliers
 * of ±1e3..1e4 where the op allows them, tensors split over a lowered binding limit, and flat ops on
 * tensors larger than one real binding (40 M elements = 160 MB on lavapipe's 128 MiB).
 *
 * Tolerance: relative error < 1e-4 with the default floor (1e-3 of the largest |expected|). add, sub,
 * mul, div, max, min, gt, eq, where, neg, relu and abs are exact in f32 on both sides (the CPU
 * computes in float64 and rounds once), so they meet it with room; exp, log, sqrt, tanh and pow go
 * through the GPU's built-ins (WGSL allows exp 3 + 2|x| ulp: 1e-5 at x = 80).
 */
import { describe, expect, it } from 'vitest';
import type { Backend, BinaryOp, DType, Storage, UnaryOp } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { normalAt, uniformAt } from '../src/tensor/cpu/random.js';
import { add, cast, div, equal, greater, maximum, minimum, mul, pow, sub, sum, tanh, where } from '../src/tensor/ops.js';
import { broadcastShapes, padToRank, sizeOf } from '../src/tensor/shape.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose, maxRelativeError } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

const UNARY_OPS: UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'tanh', 'relu', 'abs'];
const BINARY_OPS: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'pow', 'gt', 'eq'];

/** Replaces about 2% of x by ±lo..hi (sign kept). */
function withOutliers(x: Float32Array, seed: number, stream: number, lo = 1e3, hi = 1e4): Float32Array {
  const pick = randomArray(x.length, seed, stream, 0, 1);
  const big = randomArray(x.length, seed, stream + 1, lo, hi);
  for (let i = 0; i < x.length; i++) if (pick[i] < 0.02) x[i] = x[i] < 0 ? -big[i] : big[i];
  return x;
}

/** Inputs in each unary op's domain, with outliers where the result stays finite. */
function unaryInput(op: UnaryOp, size: number, seed: number): Float32Array {
  switch (op) {
    case 'exp': return withOutliers(randomArray(size, seed, 1, -20, 20), seed, 2, 60, 80);
    case 'log': return withOutliers(randomArray(size, seed, 1, 1e-3, 10), seed, 2);
    case 'sqrt': return withOutliers(randomArray(size, seed, 1, 0, 10), seed, 2);
    case 'tanh': return withOutliers(randomArray(size, seed, 1, -6, 6), seed, 2);
    default: return withOutliers(randomArray(size, seed, 1, -3, 3), seed, 2);
  }
}

/** Operands in each binary op's domain: b away from 0 for div, positive bases for pow, many ties for eq/max/min/gt. */
function binaryInputs(op: BinaryOp, aSize: number, bSize: number, seed: number): [Float32Array, Float32Array] {
  switch (op) {
    case 'div': {
      const b = randomArray(bSize, seed, 4, 0.5, 2).map((v, i) => (i % 2 === 0 ? v : -v));
      return [withOutliers(randomArray(aSize, seed, 3, -3, 3), seed, 5), withOutliers(b, seed, 7)];
    }
    case 'pow': return [randomArray(aSize, seed, 3, 0.1, 10), randomArray(bSize, seed, 4, -3, 3)];
    case 'eq': case 'gt': case 'max': case 'min': {
      // Small integers, so equal pairs are frequent wherever the broadcast lines elements up.
      const ints = (n: number, stream: number) => randomArray(n, seed, stream, -3, 3).map(Math.round);
      return [ints(aSize, 3), ints(bSize, 4)];
    }
    default: return [withOutliers(randomArray(aSize, seed, 3, -3, 3), seed, 5), withOutliers(randomArray(bSize, seed, 4, -3, 3), seed, 7)];
  }
}

async function readAndRelease(backend: Backend, ...storages: Storage[]): Promise<Float32Array> {
  const data = await backend.read(storages[0]);
  for (const s of storages) backend.release(s);
  return data instanceof Float32Array ? data : Float32Array.from(data);
}

async function runUnary(backend: Backend, op: UnaryOp, x: Float32Array): Promise<Float32Array> {
  const xs = backend.upload(x);
  const out = backend.unary(op, xs);
  return readAndRelease(backend, out, xs);
}

/** The backend op on broadcastable shapes, padded to the output's rank as the Backend contract says. */
async function runBinary(backend: Backend, op: BinaryOp, a: Float32Array, aShape: number[], b: Float32Array, bShape: number[]): Promise<Float32Array> {
  const outShape = broadcastShapes(aShape, bShape);
  const as = backend.upload(a);
  const bs = backend.upload(b);
  const out = backend.binary(op, as, padToRank(aShape, outShape.length), bs, padToRank(bShape, outShape.length), outShape);
  return readAndRelease(backend, out, as, bs);
}

async function runWhere(backend: Backend, c: Float32Array, cShape: number[], a: Float32Array, aShape: number[], b: Float32Array, bShape: number[]): Promise<Float32Array> {
  const outShape = broadcastShapes(broadcastShapes(cShape, aShape), bShape);
  const r = outShape.length;
  const [cs, as, bs] = [c, a, b].map((x) => backend.upload(x));
  const out = backend.where(cs, padToRank(cShape, r), as, padToRank(aShape, r), bs, padToRank(bShape, r), outShape);
  return readAndRelease(backend, out, cs, as, bs);
}

/** Shapes [a, b] that broadcast in every way the engine meets. */
const BROADCASTS: [number[], number[]][] = [
  [[3, 1, 5], [4, 1]], // trailing-aligned, both sides broadcast, ranks differ
  [[], [7, 13]], // a scalar (rank 0) on the left
  [[7, 13], []], // and on the right
  [[1], [7, 13]], // a one-element vector
  [[7, 13], [7, 13]], // same shape: the flat kernel
  [[8, 12], [8, 12]], // the flat kernel, four elements a thread
  [[], [8, 12]], // and a scalar on the left
  [[1, 1], [1, 1]], // size 1 everywhere
  [[127], [127]],
  [[13, 1], [1, 131]], // an outer product of primes
  [[2, 1, 3, 1, 5], [1, 4, 1, 6, 1]], // rank 5, every axis broadcast on one side
  [[2, 3, 1, 4, 5], [3, 7, 1, 5]], // rank 5 against rank 4
  [[65537], [1]], // past 256 workgroups, scalar on the right
];

describe('the CPU reference at values worked out by hand', () => {
  it('unary ops', async () => {
    const x = Float32Array.of(-2, -0.5, 0, 0.5, 4);
    const at = (op: UnaryOp, v: Float32Array = x) => runUnary(cpu, op, v);
    expect(Array.from(await at('neg'))).toEqual([2, 0.5, -0, -0.5, -4]);
    expect(Array.from(await at('relu'))).toEqual([0, 0, 0, 0.5, 4]);
    expect(Array.from(await at('abs'))).toEqual([2, 0.5, 0, 0.5, 4]);
    expect(Array.from(await at('sqrt', Float32Array.of(0, 0.25, 4, 9)))).toEqual([0, 0.5, 2, 3]);
    expect(Array.from(await at('exp', Float32Array.of(0, 1)))).toEqual([1, Math.fround(Math.E)]);
    expect(Array.from(await at('log', Float32Array.of(1, Math.fround(Math.E))))[0]).toBe(0);
    expect((await at('tanh', Float32Array.of(0, 1e4, -1e4)))).toEqual(Float32Array.of(0, 1, -1));
  });

  it('binary ops, pow with negative bases and integer exponents', async () => {
    const a = Float32Array.of(-2, -2, -2, 3, 0, 2, -1.5);
    const b = Float32Array.of(3, 2, -1, 2, 0, 3, 4);
    const at = (op: BinaryOp) => runBinary(cpu, op, a, [7], b, [7]).then(Array.from);
    expect(await at('add')).toEqual([1, 0, -3, 5, 0, 5, 2.5]);
    expect(await at('sub')).toEqual([-5, -4, -1, 1, 0, -1, -5.5]);
    expect(await at('mul')).toEqual([-6, -4, 2, 6, 0, 6, -6]);
    expect(await at('max')).toEqual([3, 2, -1, 3, 0, 3, 4]);
    expect(await at('min')).toEqual([-2, -2, -2, 2, 0, 2, -1.5]);
    expect(await at('gt')).toEqual([0, 0, 0, 1, 0, 0, 0]);
    expect(await at('eq')).toEqual([0, 0, 0, 0, 1, 0, 0]);
    // (-2)³ = -8, (-2)² = 4, (-2)⁻¹ = -0.5, 3² = 9, 0⁰ = 1, 2³ = 8, (-1.5)⁴ = 5.0625.
    expect(await at('pow')).toEqual([-8, 4, -0.5, 9, 1, 8, 5.0625]);
    const [q] = await at('div');
    expect(q).toBeCloseTo(-2 / 3, 6);
  });

  it('broadcasts [3,1] with [1,4] as an outer sum', async () => {
    const out = await runBinary(cpu, 'add', Float32Array.of(0, 10, 20), [3, 1], Float32Array.of(1, 2, 3, 4), [1, 4]);
    expect(Array.from(out)).toEqual([1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24]);
  });

  it('where picks a where cond != 0, broadcasting all three', async () => {
    const out = await runWhere(cpu, Float32Array.of(1, 0, 2), [3, 1], Float32Array.of(5, 6), [1, 2], Float32Array.of(-1), []);
    expect(Array.from(out)).toEqual([5, 6, -1, -1, 5, 6]);
  });

  it('fill, cast (truncating toward zero) and random (the hash, uniform in [0, 1))', async () => {
    expect(Array.from(await cpu.read(cpu.fill(3, 2.5, 'f32')))).toEqual([2.5, 2.5, 2.5]);
    const i = await cpu.read(cpu.fill(2, -7, 'i32'));
    expect(i).toBeInstanceOf(Int32Array);
    expect(Array.from(i)).toEqual([-7, -7]);
    const toInt = await cpu.read(cpu.cast(cpu.upload(Float32Array.of(2.7, -2.7, 0.5, -0.5, 1e6)), 'i32'));
    expect(Array.from(toInt)).toEqual([2, -2, 0, 0, 1000000]);
    expect(Array.from(await cpu.read(cpu.cast(cpu.upload(Int32Array.of(-3, 16777217)), 'f32')))).toEqual([-3, 16777216]);
    const u = await cpu.read(cpu.random(4, 42, 'uniform'));
    expect(Array.from(u)).toEqual([0, 1, 2, 3].map((k) => uniformAt(42, k)));
    expect(Array.from(await cpu.read(cpu.random(2, 42, 'normal')))).toEqual([0, 1].map((k) => Math.fround(normalAt(42, k))));
  });
});

describe('random numbers: statistics of 1e5 draws, on every backend', () => {
  for (const [name, backend] of [['cpu', cpu], ['webgpu', gpu]] as const) {
    it.runIf(backend !== null)(`${name}: uniform in [0, 1) with mean 1/2 and std 1/√12; normal with mean 0, std 1, 68.3% within ±1`, async () => {
      const b: Backend = backend!;
      const seed = freshSeed();
      const n = 100_000;
      const stats = (x: Float32Array) => {
        let s = 0, s2 = 0, within = 0, lo = Infinity, hi = -Infinity;
        for (const v of x) {
          s += v; s2 += v * v; within += Math.abs(v) < 1 ? 1 : 0; lo = Math.min(lo, v); hi = Math.max(hi, v);
        }
        const mean = s / x.length;
        return { mean, std: Math.sqrt(s2 / x.length - mean * mean), within: within / x.length, lo, hi };
      };
      // Tolerances are 5 standard errors at n = 1e5: uniform mean 0.289/√n = 9e-4, its std 4.7e-4;
      // normal mean 1/√n = 3.2e-3, std √(1/2n) = 2.2e-3, P(|x| < 1) √(0.68·0.32/n) = 1.5e-3.
      const u = await readAndRelease(b, b.random(n, seed, 'uniform'));
      const su = stats(u);
      const msg = `seed ${seed}`;
      expect(su.lo, msg).toBeGreaterThanOrEqual(0);
      expect(su.hi, msg).toBeLessThan(1);
      expect(Math.abs(su.mean - 0.5), msg).toBeLessThan(4.6e-3);
      expect(Math.abs(su.std - 1 / Math.sqrt(12)), msg).toBeLessThan(2.4e-3);
      const z = await readAndRelease(b, b.random(n, seed, 'normal'));
      const sz = stats(z);
      expect(Math.abs(sz.mean), msg).toBeLessThan(0.016);
      expect(Math.abs(sz.std - 1), msg).toBeLessThan(0.011);
      expect(Math.abs(sz.within - 0.6827), msg).toBeLessThan(7.5e-3);
      expect(z.every(Number.isFinite), msg).toBe(true);
    });

    it.runIf(backend !== null)(`${name}: different seeds give different numbers, the same seed the same`, async () => {
      const b: Backend = backend!;
      const seed = freshSeed();
      for (const distribution of ['uniform', 'normal'] as const) {
        const x = await readAndRelease(b, b.random(10_000, seed, distribution));
        const again = await readAndRelease(b, b.random(10_000, seed, distribution));
        const other = await readAndRelease(b, b.random(10_000, seed + 1, distribution));
        expect(again).toEqual(x);
        let same = 0;
        for (let i = 0; i < x.length; i++) same += x[i] === other[i] ? 1 : 0;
        expect(same, `seed ${seed}: ${same} equal draws`).toBeLessThan(5);
      }
    });
  }
});

describe.runIf(gpu !== null)('element-wise ops on WebGPU equal the CPU reference', () => {
  const webgpu = gpu!;

  it('random: uniform bit for bit, normal within 1e-6 relative (same hash, same f32 uniforms)', async () => {
    const seed = freshSeed();
    for (const size of [1, 7, 257, 1_000_003]) {
      const u = await readAndRelease(webgpu, webgpu.random(size, seed, 'uniform'));
      expect(u, `seed ${seed}`).toEqual(await readAndRelease(cpu, cpu.random(size, seed, 'uniform')));
      // The kernel computes Box–Muller's log and sine from +, ×, ÷, sqrt and frexp only (WGSL's
      // built-ins may be off by 2^-21..2^-11 absolute): measured worst 3.5e-7 relative over 3e6
      // draws on lavapipe, near u1 = 1 (draws near 0) and at the cosine's zeros too.
      const z = await readAndRelease(webgpu, webgpu.random(size, seed, 'normal'));
      expectClose(z, await readAndRelease(cpu, cpu.random(size, seed, 'normal')), { tolerance: 1e-6, floor: 1e-6, seed });
    }
  });

  it('fill f32 and i32, cast both ways', async () => {
    for (const size of [1, 13, 65537]) {
      expect(Array.from(await readAndRelease(webgpu, webgpu.fill(size, -1.25, 'f32')))).toEqual(new Array(size).fill(-1.25));
      const ints = await webgpu.read(webgpu.fill(size, 123456789, 'i32'));
      expect(ints).toBeInstanceOf(Int32Array);
      expect(Array.from(ints)).toEqual(new Array(size).fill(123456789));
    }
    const seed = freshSeed();
    const x = withOutliers(randomArray(10007, seed, 1, -100, 100), seed, 2, 1e5, 1e7);
    x.set([2.7, -2.7, 0.5, -0.5, -0, 16777217]);
    const asInts = async (b: Backend) => b.read(b.cast(b.upload(x), 'i32'));
    const gpuInts = await asInts(webgpu);
    expect(gpuInts).toBeInstanceOf(Int32Array);
    expect(gpuInts, `seed ${seed}`).toEqual(await asInts(cpu));
    const ints = Int32Array.from(randomArray(10007, seed, 3, -(2 ** 30), 2 ** 30), Math.trunc);
    const asFloats = async (b: Backend) => b.read(b.cast(b.upload(ints), 'f32'));
    const gpuFloats = await asFloats(webgpu);
    expect(gpuFloats).toBeInstanceOf(Float32Array);
    expect(gpuFloats, `seed ${seed}`).toEqual(await asFloats(cpu));
    // Same dtype: a copy into fresh storage.
    const same = webgpu.cast(webgpu.upload(ints), 'i32');
    expect(same.dtype).toBe('i32');
    expect(await webgpu.read(same)).toEqual(ints);
  });

  for (const op of UNARY_OPS) {
    it(`${op} on ragged sizes (1, 7, 127, 129, 65537) and multiples of 4 (128, 65536: four a thread) with outliers`, async () => {
      const seed = freshSeed();
      for (const size of [1, 7, 127, 129, 65537, 128, 65536]) {
        const x = unaryInput(op, size, seed);
        expectClose(await runUnary(webgpu, op, x), await runUnary(cpu, op, x), { seed });
      }
    });
  }

  for (const op of BINARY_OPS) {
    it(`${op} with every kind of broadcasting`, async () => {
      const seed = freshSeed();
      for (const [aShape, bShape] of BROADCASTS) {
        const [a, b] = binaryInputs(op, sizeOf(aShape), sizeOf(bShape), seed);
        const actual = await runBinary(webgpu, op, a, aShape, b, bShape);
        const expected = await runBinary(cpu, op, a, aShape, b, bShape);
        expect(actual.length).toBe(sizeOf(broadcastShapes(aShape, bShape)));
        const err = maxRelativeError(actual, expected);
        expect(err, `${op} [${aShape}] with [${bShape}]: max relative error ${err} (replay with TEST_SEED=${seed})`).toBeLessThan(1e-4);
      }
    });
  }

  it('pow with negative bases: integer exponents keep the sign, fractional ones give NaN as Math.pow', async () => {
    const seed = freshSeed();
    const a = randomArray(1009, seed, 1, -5, 5);
    const b = randomArray(1009, seed, 2, -4, 4).map((v, i) => (i % 5 === 0 ? v : Math.round(v)));
    a.set([-2, -2, -2, 0, 0, -0.5]);
    b.set([3, 2, -1, 0, 2, -3]);
    const actual = await runBinary(webgpu, 'pow', a, [1009], b, [1009]);
    expect(Array.from(actual.subarray(0, 6))).toEqual([-8, 4, -0.5, 1, 0, -8]);
    const expected = await runBinary(cpu, 'pow', a, [1009], b, [1009]);
    // Fractional exponents of negative bases: NaN on both, at the same places; the rest within 1e-4.
    const nan = Array.from(expected, Number.isNaN);
    expect(nan.filter(Boolean).length, `seed ${seed}`).toBeGreaterThan(50);
    expect(Array.from(actual, Number.isNaN), `seed ${seed}`).toEqual(nan);
    expectClose(actual.filter((_, i) => !nan[i]), expected.filter((_, i) => !nan[i]), { seed });
  });

  it('where, broadcasting cond, a and b independently', async () => {
    const seed = freshSeed();
    const cases: [number[], number[], number[]][] = [
      [[7, 13], [7, 13], [7, 13]],
      [[3, 1], [1, 4], []],
      [[2, 1, 5], [1, 3, 1], [3, 5]],
      [[1], [129], [1]],
      [[2, 1, 3, 1, 5], [1, 4, 1, 6, 1], [5]],
    ];
    for (const [cShape, aShape, bShape] of cases) {
      const c = randomArray(sizeOf(cShape), seed, 1, 0, 1).map((v) => (v < 0.5 ? 0 : v < 0.75 ? 1 : -2));
      const a = withOutliers(randomArray(sizeOf(aShape), seed, 2), seed, 3);
      const b = withOutliers(randomArray(sizeOf(bShape), seed, 4), seed, 5);
      const actual = await runWhere(webgpu, c, cShape, a, aShape, b, bShape);
      expect(actual, `[${cShape}] ? [${aShape}] : [${bShape}], seed ${seed}`).toEqual(await runWhere(cpu, c, cShape, a, aShape, b, bShape));
    }
  });

  it('the Tensor-level ops dispatch the right backend op (scalars on either side)', async () => {
    const seed = freshSeed();
    const ah = withOutliers(randomArray(91, seed, 1), seed, 2);
    const bh = randomArray(13, seed, 3, 0.5, 2);
    const fns: [string, (a: Tensor, b: Tensor) => Tensor][] = [
      ['a + b', (a, b) => add(a, b)],
      ['2 - a·b', (a, b) => sub(2, mul(a, b))],
      ['a / b', (a, b) => div(a, b)],
      ['max(min(a, b), -0.5)', (a, b) => maximum(minimum(a, b), -0.5)],
      ['b³', (_, b) => pow(b, 3)],
      ['a > b ? a : (a == a)', (a, b) => where(greater(a, b), a, equal(a, a))],
    ];
    for (const [what, f] of fns) {
      const [actual, expected] = await Promise.all([webgpu, cpu].map((backend) => f(tensor(ah, [7, 13], { backend }), tensor(bh, [13], { backend })).toFloat32()));
      expectClose(actual, expected, { seed });
      if (what === '2 - a·b') expect(actual[20]).toBeCloseTo(2 - ah[20] * bh[7], 3);
    }
  });

  it('fill, random, cast and the flat and strided kernels split over a lowered binding limit (4 KiB, 256 B alignment)', async () => {
    const seed = freshSeed();
    const size = 10007;
    const a = withOutliers(randomArray(size, seed, 1), seed, 2);
    const b = randomArray(size, seed, 3, 0.5, 2);
    const results = await withBindingLimits(webgpu, 4096, 256, async (limited) => ({
      add: await runBinary(limited, 'add', a, [size], b, [size]),
      scalar: await runBinary(limited, 'mul', a, [size], Float32Array.of(-3.5), []),
      exp: await runUnary(limited, 'exp', b),
      uniform: await readAndRelease(limited, limited.random(size, seed, 'uniform')),
      normal: await readAndRelease(limited, limited.random(size, seed, 'normal')),
      fill: await readAndRelease(limited, limited.fill(size, 7, 'f32')),
      cast: await limited.read(limited.cast(limited.upload(a), 'i32')),
    }));
    expectClose(results.add, await runBinary(cpu, 'add', a, [size], b, [size]), { seed });
    expectClose(results.scalar, await runBinary(cpu, 'mul', a, [size], Float32Array.of(-3.5), []), { seed });
    expectClose(results.exp, await runUnary(cpu, 'exp', b), { seed });
    expect(results.uniform).toEqual(await readAndRelease(cpu, cpu.random(size, seed, 'uniform')));
    expectClose(results.normal, await readAndRelease(cpu, cpu.random(size, seed, 'normal')), { tolerance: 1e-6, floor: 1e-6, seed });
    expect(results.fill.every((v) => v === 7)).toBe(true);
    expect(results.cast).toEqual(await cpu.read(cpu.cast(cpu.upload(a), 'i32')));
  });

  it('flat ops over tensors larger than one binding: a + b and a · 3.5 of 40 M elements (160 MB)', async () => {
    const seed = freshSeed();
    const size = 40_000_000;
    expect(size * 4).toBeGreaterThan(webgpu.gpu.maxBindingBytes);
    // Two random periods of prime length, tiled: an element read from the wrong chunk or at the wrong
    // offset meets another element's partner (no chunk holds a whole number of either period).
    const pa = withOutliers(randomArray(1_000_003, seed, 1), seed, 2);
    const pb = randomArray(999_983, seed, 3);
    const a = new Float32Array(size);
    const b = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      a[i] = pa[i % pa.length];
      b[i] = pb[i % pb.length];
    }
    const as = webgpu.upload(a);
    const bs = webgpu.upload(b);
    const sum = await readAndRelease(webgpu, webgpu.binary('add', as, [size], bs, [size], [size]));
    const three = webgpu.upload(Float32Array.of(3.5));
    const scaled = await readAndRelease(webgpu, webgpu.binary('mul', as, [size], three, [1], [size]), as, bs, three);
    // f32 add and multiply are correctly rounded: every element must match exactly. Counting the
    // mismatches (rather than one expect per element) keeps a failure readable.
    let wrongSum = 0, wrongScaled = 0, firstWrong = -1;
    for (let i = 0; i < size; i++) {
      const okSum = sum[i] === Math.fround(a[i] + b[i]);
      const okScaled = scaled[i] === Math.fround(a[i] * 3.5);
      if (!okSum) wrongSum++;
      if (!okScaled) wrongScaled++;
      if ((!okSum || !okScaled) && firstWrong < 0) firstWrong = i;
    }
    expect({ wrongSum, wrongScaled, firstWrong }, `seed ${seed}`).toEqual({ wrongSum: 0, wrongScaled: 0, firstWrong: -1 });
  });
});

describe('i32 data', () => {
  for (const [name, backend] of [['cpu', cpu], ['webgpu', gpu]] as const) {
    it.runIf(backend !== null)(`${name}: upload and read keep the dtype; fill of ${'i32' satisfies DType} holds integers past 2^24`, async () => {
      const b: Backend = backend!;
      const ids = Int32Array.of(0, 50256, -1, 2 ** 31 - 1);
      const s = b.upload(ids);
      expect(s.dtype).toBe('i32');
      expect(await b.read(s)).toEqual(ids);
      expect(Array.from(await b.read(b.fill(3, 16777217, 'i32')))).toEqual([16777217, 16777217, 16777217]);
    });

    it.runIf(backend !== null)(`${name}: element-wise ops refuse i32 operands (WebGPU would read their bits as floats)`, async () => {
      const ids = tensor(Int32Array.of(1, 2, 3), [3], { backend: backend! });
      const x = tensor([1, 2, 3], [3], { backend: backend! });
      expect(() => add(ids, x)).toThrow(/add takes f32 tensors, got i32/);
      expect(() => equal(ids, 2)).toThrow(/eq takes f32/);
      expect(() => where(x, ids, 0)).toThrow(/where takes f32/);
      expect(() => tanh(ids)).toThrow(/tanh takes f32/);
      expect(() => sum(ids)).toThrow(/sum takes f32/);
      expect(Array.from(await equal(cast(ids, 'f32'), 2).data())).toEqual([0, 1, 0]);
    });
  }
});
