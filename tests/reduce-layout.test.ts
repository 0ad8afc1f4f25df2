/**
 * Reductions (sum, max over one axis) and layout ops (permute, transpose, slice, pad, split, concat, reshape).
 * The CPU reference against independent float64 loops written here; WebGPU against the CPU on
 * fresh random inputs of ragged shapes (1×1, 7×13, 127×129×3, [2,3,4,5] over every axis, an axis of
 * 100000, more outputs than one grid dimension holds), every permutation of a rank-3 and a rank-4
 * tensor, slice/pad/split/concat round trips, i32 data through the layout kernels; reshape shares storage.
 *
 * Tolerances: max, permute, slice and pad move values and must be exact. Sums: the CPU accumulates
 * in float64, the GPU in f32 (64 strided partial sums, then a tree). Each sum is held to
 * |gpu - cpu| ≤ 1e-4·(|cpu| + 1e-3·Σ|x|): relative 1e-4, with a floor at the scale where cancellation
 * makes relative error meaningless (an f32 sum of n terms can be off by ~√n·2^-24·Σ|x| at best).
 */
import { describe, expect, it } from 'vitest';
import type { Backend, ReduceOp } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { concat, max, mean, pad, permute, reshape, slice, split, sum, transpose } from '../src/tensor/ops.js';
import { sizeOf, stridesOf } from '../src/tensor/shape.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();
const BACKENDS = [['cpu', cpu], ['webgpu', gpu]] as const;

/** Uniform in [-1, 1) with ~2% outliers of ±1e3..1e4. */
function values(size: number, seed: number, stream = 1, outliers = true): Float32Array {
  const x = randomArray(size, seed, stream);
  if (!outliers) return x;
  const pick = randomArray(size, seed, stream + 1, 0, 1);
  const big = randomArray(size, seed, stream + 2, 1e3, 1e4);
  for (let i = 0; i < size; i++) if (pick[i] < 0.02) x[i] = x[i] < 0 ? -big[i] : big[i];
  return x;
}

/** Float64 reduction over `axis` by explicit multi-indices (independent of the [outer, len, inner] view), and Σ|x| per output. */
function reference(op: ReduceOp, x: ArrayLike<number>, shape: readonly number[], axis: number): { out: Float64Array; scale: Float64Array } {
  const outShape = shape.map((d, i) => (i === axis ? 1 : d));
  const out = new Float64Array(sizeOf(outShape)).fill(op === 'sum' ? 0 : -Infinity);
  const scale = new Float64Array(out.length);
  const inStrides = stridesOf(shape);
  const outStrides = stridesOf(outShape);
  for (let i = 0; i < x.length; i++) {
    let o = 0;
    for (let d = 0; d < shape.length; d++) {
      const index = Math.floor(i / inStrides[d]) % shape[d];
      o += (d === axis ? 0 : index) * outStrides[d];
    }
    out[o] = op === 'sum' ? out[o] + x[i] : Math.max(out[o], x[i]);
    scale[o] += Math.abs(x[i]);
  }
  return { out, scale };
}

async function reduceOn(backend: Backend, op: ReduceOp, x: Float32Array, shape: number[], axis: number): Promise<Float32Array> {
  const xs = backend.upload(x);
  const out = backend.reduce(op, xs, shape, axis);
  const data = (await backend.read(out)) as Float32Array;
  backend.release(xs);
  backend.release(out);
  return data;
}

function expectReduced(op: ReduceOp, actual: Float32Array, expected: { out: Float64Array; scale: Float64Array }, what: string): void {
  expect(actual.length, what).toBe(expected.out.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const err = op === 'max'
      ? (actual[i] === Math.fround(expected.out[i]) ? 0 : Infinity)
      : Math.abs(actual[i] - expected.out[i]) / (Math.abs(expected.out[i]) + 1e-3 * expected.scale[i] + 1e-30);
    if (err > worst) [worst, at] = [err, i];
  }
  expect(worst, `${what}: worst error ${worst.toExponential(2)} at output ${at} (${actual[at]} vs ${expected.out[at]})`).toBeLessThanOrEqual(1e-4);
}

/** Every permutation of 0..n-1. */
function permutations(n: number): number[][] {
  if (n === 1) return [[0]];
  return permutations(n - 1).flatMap((p) => Array.from({ length: n }, (_, i) => [...p.slice(0, i), n - 1, ...p.slice(i)]));
}

/** Permute by explicit multi-indices: out[j_0..j_r] = x[i] with i_{perm[k]} = j_k. */
function permuteByHand(x: ArrayLike<number>, shape: readonly number[], perm: readonly number[]): number[] {
  const outShape = perm.map((p) => shape[p]);
  const inStrides = stridesOf(shape);
  const outStrides = stridesOf(outShape);
  const out = new Array<number>(x.length);
  for (let o = 0; o < x.length; o++) {
    let i = 0;
    for (let k = 0; k < perm.length; k++) i += (Math.floor(o / outStrides[k]) % outShape[k]) * inStrides[perm[k]];
    out[o] = x[i];
  }
  return out;
}

const REDUCE_CASES: [number[], number[]][] = [
  [[1, 1], [0, 1]],
  [[7, 13], [0, 1]],
  [[127, 129, 3], [0, 1, 2]],
  [[2, 3, 4, 5], [0, 1, 2, 3]],
  [[100_000], [0]],
  [[3, 100_000], [0, 1]],
  [[3, 70_001], [0]], // 70001 outputs: more workgroups than one grid dimension holds (65535)
  [[65537, 2], [1]],
  [[5, 9000, 3], [1]], // 15 outputs: the axis is cut into parts (the reduced parts are themselves reduced)
];

describe('reductions', () => {
  it('the CPU reference at values by hand', async () => {
    const x = Float32Array.of(1, 2, 3, 4, 5, 6); // [[1, 2, 3], [4, 5, 6]]
    expect(Array.from(await reduceOn(cpu, 'sum', x, [2, 3], 0))).toEqual([5, 7, 9]);
    expect(Array.from(await reduceOn(cpu, 'sum', x, [2, 3], 1))).toEqual([6, 15]);
    expect(Array.from(await reduceOn(cpu, 'max', Float32Array.of(-5, -2, -9, -1, -7, -3), [2, 3], 1))).toEqual([-2, -1]);
    expect(Array.from(await reduceOn(cpu, 'max', Float32Array.of(-5, -2, -9, -1, -7, -3), [2, 3], 0))).toEqual([-1, -2, -3]);
  });

  for (const [name, backend] of BACKENDS) {
    describe.runIf(backend !== null)(name, () => {
      for (const op of ['sum', 'max'] as const) {
        for (const [shape, axes] of REDUCE_CASES) {
          it(`${op} of [${shape}] over ${axes.length > 1 ? 'each axis' : `axis ${axes[0]}`}`, async () => {
            const seed = freshSeed();
            // Sums of 1e5 terms with 1e4 outliers would only test cancellation: outliers for max and short sums.
            const x = values(sizeOf(shape), seed, 1, op === 'max' || sizeOf(shape) < 100_000);
            for (const axis of axes) {
              expectReduced(op, await reduceOn(backend!, op, x, shape, axis), reference(op, x, shape, axis), `${op} [${shape}] axis ${axis}, seed ${seed}`);
            }
          });
        }
      }

      it('all-negative max (the identity is below every f32) and a long positive sum', async () => {
        const seed = freshSeed();
        const negatives = randomArray(7 * 13, seed, 1, -3.4e38, -1e38);
        negatives[13] = -3.4028234663852886e38; // -FLT_MAX itself
        expectReduced('max', await reduceOn(backend!, 'max', negatives, [7, 13], 1), reference('max', negatives, [7, 13], 1), `seed ${seed}`);
        const positives = randomArray(100_000, seed, 2, 0, 1);
        expectReduced('sum', await reduceOn(backend!, 'sum', positives, [100_000], 0), reference('sum', positives, [100_000], 0), `seed ${seed}`);
      });

      it('Tensor-level sum, max and mean: every axis, all axes, negative axes, keepDims', async () => {
        const seed = freshSeed();
        const xh = values(2 * 3 * 4 * 5, seed);
        const x = tensor(xh, [2, 3, 4, 5], { backend: backend! });
        const total = sum(x);
        expect(total.shape).toEqual([]);
        const all = reference('sum', xh, [120], 0);
        expectReduced('sum', await total.toFloat32(), all, `sum of all, seed ${seed}`);
        expect(sum(x, undefined, true).shape).toEqual([1, 1, 1, 1]);
        const byHand = reference('max', xh, [2, 3, 4, 5], 2);
        const m = max(x, -2);
        expect(m.shape).toEqual([2, 3, 5]);
        expectReduced('max', await m.toFloat32(), byHand, `max axis -2, seed ${seed}`);
        expect(max(x, 1, true).shape).toEqual([2, 1, 4, 5]);
        const avg = mean(x, 3);
        expect(avg.shape).toEqual([2, 3, 4]);
        const s = reference('sum', xh, [2, 3, 4, 5], 3);
        expectReduced('sum', await avg.toFloat32(), { out: s.out.map((v) => v / 5), scale: s.scale.map((v) => v / 5) }, `mean, seed ${seed}`);
        expect(await mean(tensor([1, 2, 3, 6], [2, 2], { backend: backend! })).item()).toBe(3);
      });
    });
  }
});

describe('layout ops', () => {
  it('the CPU reference at values by hand: transpose, slice, pad', async () => {
    const x = tensor([1, 2, 3, 4, 5, 6], [2, 3], { backend: cpu });
    expect(Array.from(await transpose(x).data())).toEqual([1, 4, 2, 5, 3, 6]);
    expect(Array.from(await slice(x, [0, 1], [2, 2]).data())).toEqual([2, 3, 5, 6]);
    expect(Array.from(await pad(tensor([7, 8], [1, 2], { backend: cpu }), [1, 1], [2, 3]).data())).toEqual([0, 0, 0, 0, 7, 8]);
    expect(Array.from(await concat([x, tensor([7, 8, 9], [1, 3], { backend: cpu })], 0).data())).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Array.from(await concat([x, tensor([7, 8], [2, 1], { backend: cpu })], 1).data())).toEqual([1, 2, 3, 7, 4, 5, 6, 8]);
    expect(() => concat([x, tensor([7, 8], [1, 2], { backend: cpu })], 0)).toThrow('concat along axis 0: [1,2] does not match [2,3]');
    // Rank 11 (past the GPU kernels' 8): the permutation check compares numbers, not strings ("10" < "2").
    const shape = [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3];
    const perm = [10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0];
    const p = permute(tensor([1, 2, 3, 4, 5, 6], shape, { backend: cpu }), perm);
    expect(p.shape).toEqual(perm.map((d) => shape[d]));
    expect(Array.from(await p.data())).toEqual([1, 4, 2, 5, 3, 6]);
  });

  for (const [name, backend] of BACKENDS) {
    describe.runIf(backend !== null)(name, () => {
      for (const shape of [[3, 5, 7], [2, 3, 5, 7]]) {
        it(`every permutation of [${shape}] (f32 and i32)`, async () => {
          const seed = freshSeed();
          const xh = values(sizeOf(shape), seed);
          const ih = Int32Array.from(randomArray(sizeOf(shape), seed, 5, -1e9, 1e9), Math.trunc);
          const x = tensor(xh, shape, { backend: backend! });
          const xi = tensor(ih, shape, { backend: backend! });
          for (const perm of permutations(shape.length)) {
            const out = permute(x, perm);
            expect(out.shape).toEqual(perm.map((p) => shape[p]));
            expect(Array.from(await out.data()), `perm [${perm}], seed ${seed}`).toEqual(permuteByHand(xh, shape, perm));
            const outI = permute(xi, perm);
            expect(outI.dtype).toBe('i32');
            expect(Array.from(await outI.data()), `i32 perm [${perm}]`).toEqual(permuteByHand(ih, shape, perm));
            out.dispose();
            outI.dispose();
          }
        });
      }

      it('transpose swaps the last two axes by default, any two when asked', async () => {
        const seed = freshSeed();
        const shape = [4, 127, 129];
        const xh = values(sizeOf(shape), seed);
        const x = tensor(xh, shape, { backend: backend! });
        expect(Array.from(await transpose(x).data())).toEqual(permuteByHand(xh, shape, [0, 2, 1]));
        expect(Array.from(await transpose(x, 0, 2).data())).toEqual(permuteByHand(xh, shape, [2, 1, 0]));
        expect(Array.from(await transpose(x, -3, 1).data())).toEqual(permuteByHand(xh, shape, [1, 0, 2]));
      });

      it('slice then pad back is x inside the window and 0 outside; split pieces padded back sum to x', async () => {
        const seed = freshSeed();
        const shape = [7, 13, 5];
        const xh = values(sizeOf(shape), seed);
        const x = tensor(xh, shape, { backend: backend! });
        const strides = stridesOf(shape);
        for (const [begin, size] of [[[2, 3, 1], [4, 9, 3]], [[0, 0, 0], [7, 13, 5]], [[6, 12, 4], [1, 1, 1]], [[0, 5, 0], [7, 1, 5]]]) {
          const s = slice(x, begin, size);
          const back = await pad(s, begin, shape).toFloat32();
          for (let i = 0; i < xh.length; i++) {
            const idx = shape.map((_, d) => Math.floor(i / strides[d]) % shape[d]);
            const inside = idx.every((v, d) => v >= begin[d] && v < begin[d] + size[d]);
            if (back[i] !== (inside ? xh[i] : 0)) {
              throw new Error(`slice [${begin}]+[${size}] then pad: element [${idx}] is ${back[i]}, expected ${inside ? xh[i] : 0} (seed ${seed})`);
            }
          }
        }
        for (const [axis, sizes] of [[0, [3, 4]], [1, [1, 5, 7]], [2, [2, 2, 1]], [-1, [5]]] as const) {
          const a = axis < 0 ? axis + shape.length : axis;
          const pieces = split(x, sizes, axis);
          expect(pieces.map((p) => p.shape[a])).toEqual([...sizes]);
          const rebuilt = new Float32Array(xh.length);
          let start = 0;
          for (const piece of pieces) {
            const padded = await pad(piece, shape.map((_, d) => (d === a ? start : 0)), shape).toFloat32();
            padded.forEach((v, i) => (rebuilt[i] += v));
            start += piece.shape[a];
          }
          expect(rebuilt, `split axis ${axis} into [${sizes}], seed ${seed}`).toEqual(xh);
          expect(await concat(pieces, axis).toFloat32(), `concat of split axis ${axis}, seed ${seed}`).toEqual(xh);
        }
      });

      it('slice and pad of i32 keep the dtype', async () => {
        const ids = tensor(Int32Array.of(1, 2, 3, 4, 5, 6), [2, 3], { backend: backend! });
        const s = slice(ids, [1, 1], [1, 2]);
        expect(s.dtype).toBe('i32');
        expect(Array.from(await s.data())).toEqual([5, 6]);
        const p = pad(s, [0, 1], [2, 3]);
        expect(p.dtype).toBe('i32');
        expect(Array.from(await p.data())).toEqual([0, 5, 6, 0, 0, 0]);
      });

      it('out-of-bounds slices and bad permutations are refused', () => {
        const x = tensor(new Float32Array(6), [2, 3], { backend: backend! });
        expect(() => slice(x, [1, 0], [2, 3])).toThrow(/out of bounds/);
        expect(() => slice(x, [0, -1], [1, 1])).toThrow(/out of bounds/);
        expect(() => permute(x, [0, 0])).toThrow(/permutation/);
        expect(() => permute(x, [1, 0, 2])).toThrow(/permutation/);
        expect(() => reshape(x, [4, 2])).toThrow(/cannot reshape/);
        // The CPU's strided copy would wrap a too-wide pad into the next row; WebGPU would drop it.
        expect(() => pad(x, [0, 1], [2, 3])).toThrow(/does not fit/);
        expect(() => pad(x, [-1, 0], [3, 3])).toThrow(/does not fit/);
        expect(() => pad(x, [0], [2])).toThrow(/does not fit/);
        expect(() => split(x, [1, 1], 1)).toThrow(/do not add up/);
      });

      it('reshape is free: the same storage, no new buffer, -1 inferred; the storage lives until the last handle goes', async () => {
        const seed = freshSeed();
        const xh = values(6 * 35, seed);
        const x = tensor(xh, [6, 35], { backend: backend! });
        const before = backend === gpu ? gpu!.gpu.memoryStats() : null;
        const y = reshape(x, [2, -1, 5]);
        const z = reshape(y, [210]);
        expect(y.shape).toEqual([2, 21, 5]);
        expect(y.storage).toBe(x.storage);
        expect(z.storage).toBe(x.storage);
        if (before) {
          const after = gpu!.gpu.memoryStats();
          expect(after.liveBuffers).toBe(before.liveBuffers);
          expect(after.createdBuffers).toBe(before.createdBuffers);
        }
        x.dispose();
        y.dispose();
        expect(await z.toFloat32()).toEqual(xh);
        if (before) {
          z.dispose();
          expect(gpu!.gpu.memoryStats().liveBuffers).toBe(before.liveBuffers - 1);
        }
      });
    });
  }
});

describe.runIf(gpu !== null)('reductions and layout on WebGPU equal the CPU reference', () => {
  const webgpu = gpu!;
  // A binding limit of 16 KiB (4096 f32, 256 B alignment): [37, 300] over axis 1 binds groups of whole
  // rows at unaligned starts; over axis 0, and a flat sum of 50001, no [len, inner] slab fits, so the
  // axis is cut into chunks whose partial results a second pass combines; [3, 9000, 2] over axis 1
  // chunks each outer index; [5, 3000] over axis 0 has chunks of one row.
  for (const [shape, axes] of [[[37, 300], [0, 1]], [[50_001], [0]], [[3, 9000, 2], [1, 2]], [[5, 3000], [0]]] as [number[], number[]][]) {
    for (const op of ['sum', 'max'] as const) {
      it(`${op} of [${shape}] past a lowered binding limit (16 KiB)`, async () => {
        const seed = freshSeed();
        const xh = values(sizeOf(shape), seed);
        for (const axis of axes) {
          const actual = await withBindingLimits(webgpu, 16384, 256, (limited) => reduceOn(limited, op, xh, shape, axis));
          expectReduced(op, actual, reference(op, xh, shape, axis), `axis ${axis}, TEST_SEED=${seed}`);
        }
      });
    }
  }

  it('sum and max of [2,3,4,5] over every axis, permute, slice and pad of the same data', async () => {
    const seed = freshSeed();
    const shape = [2, 3, 4, 5];
    const xh = values(sizeOf(shape), seed);
    for (const op of ['sum', 'max'] as const) {
      for (let axis = 0; axis < 4; axis++) {
        expectClose(await reduceOn(webgpu, op, xh, shape, axis), await reduceOn(cpu, op, xh, shape, axis), { seed });
      }
    }
    const both = async (f: (b: Backend) => ReturnType<typeof tensor>) => [await f(webgpu).toFloat32(), await f(cpu).toFloat32()];
    for (const perm of permutations(4)) {
      const [a, e] = await both((b) => permute(tensor(xh, shape, { backend: b }), perm));
      expect(a, `perm [${perm}]`).toEqual(e);
    }
    const [sa, se] = await both((b) => slice(tensor(xh, shape, { backend: b }), [1, 1, 0, 2], [1, 2, 4, 3]));
    expect(sa).toEqual(se);
    const [pa, pe] = await both((b) => pad(tensor(xh, shape, { backend: b }), [1, 0, 2, 3], [3, 4, 7, 9]));
    expect(pa).toEqual(pe);
  });
});
