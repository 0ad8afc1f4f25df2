/**
 * Weights stored in 16 bits (dtype f16 and bf16, each case run for both): every kernel that reads
 * one — matmul's B (x·W and x·Wᵀ, every variant, ragged shapes, every transposition and a shared B)
 * and the embedding gather — against the CPU reference on inputs rounded to that type, across the
 * binding-window splits; the CPU reference's 16-bit paths against its f32 ones on the same
 * (rounded) values, bitwise; storage round trips; and the Tensor-level ops that must refuse them.
 */
import { describe, expect, it } from 'vitest';
import { adapterTraits, matmulPlan, matmulWith, variantSupported } from '../src/kernels/matmul.js';
import { currentVariant, MATMUL_VARIANT_NAMES, MATMUL_VARIANTS } from '../src/kernels/matmul-tune.js';
import { planMatmul } from '../src/kernels/matmul-plan.js';
import type { Backend, HalfDType, MatmulShape } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { embedding } from '../src/tensor/fused.js';
import { narrowTo, roundTo } from '../src/tensor/half.js';
import { add, cast, matmul, permute, slice } from '../src/tensor/ops.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray, randomInts } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

interface Problem {
  shape: MatmulShape;
  a: Float32Array;
  /** Already representable in the 16-bit type. */
  b: Float32Array;
  bias: Float32Array | null;
}

function problem(dtype: HalfDType, shape: MatmulShape, withBias: boolean, seed: number): Problem {
  const { batch, m, k, n } = shape;
  return {
    shape,
    a: randomArray(batch * m * k, seed, 1),
    b: roundTo(dtype, randomArray((shape.broadcastB ? 1 : batch) * k * n, seed, 2)),
    bias: withBias ? randomArray(n, seed, 3) : null,
  };
}

/** C with B uploaded as 16-bit patterns of `dtype` or as the same values in f32. */
async function runOn(backend: Backend, pr: Problem, dtype: HalfDType | 'f32'): Promise<Float32Array> {
  const a = backend.upload(pr.a);
  const b = backend.upload(dtype === 'f32' ? pr.b : narrowTo(dtype, pr.b));
  expect(b.dtype).toBe(dtype);
  const bias = pr.bias ? backend.upload(pr.bias) : null;
  const c = backend.matmul(a, b, bias, pr.shape);
  const out = (await backend.read(c)) as Float32Array;
  for (const x of [a, b, bias, c]) if (x) backend.release(x);
  return out;
}

const FLAGS = [false, true];
const COMBOS = FLAGS.flatMap((transA) => FLAGS.flatMap((transB) => FLAGS.map((broadcastB) => ({ transA, transB, broadcastB }))));

/** Ragged (odd sizes: a 16-bit row or column ends inside a word), aligned to 4 (the vec loads), M = 1 (decoding), K = 0. */
const SHAPES: [number, number, number, number][] = [
  [1, 1, 1, 1], [1, 7, 13, 5], [1, 127, 129, 65], [3, 33, 17, 31], [1, 1, 131, 3], [2, 36, 64, 68], [1, 1, 96, 200], [1, 6, 0, 5],
];

const DTYPES: HalfDType[] = ['f16', 'bf16'];

describe.each(DTYPES)('%s weights on the CPU reference', (dtype) => {
  it('matmul with a 16-bit B equals it with the same values in f32, bitwise, in every transposition', async () => {
    for (const flags of COMBOS) {
      const pr = problem(dtype, { batch: 2, m: 9, k: 13, n: 7, ...flags }, true, freshSeed());
      expect(await runOn(cpu, pr, dtype)).toEqual(await runOn(cpu, pr, 'f32'));
    }
  });

  it('the gather widens a 16-bit table\'s rows exactly', async () => {
    const table = roundTo(dtype, randomArray(5 * 3, freshSeed(), 1));
    const ids = cpu.upload(Int32Array.of(4, 0, 4, 2));
    const half = cpu.upload(narrowTo(dtype, table));
    const out = (await cpu.read(cpu.embedding(ids, half, 4, 5, 3))) as Float32Array;
    expect([...out]).toEqual([...table.subarray(12, 15), ...table.subarray(0, 3), ...table.subarray(12, 15), ...table.subarray(6, 9)]);
  });

  it('reads 16-bit storage back widened, and refuses it where an op computes in f32', async () => {
    const values = Float32Array.of(1, -2.5, 65504, 2 ** -24, 0.1);
    const s = cpu.upload(narrowTo(dtype, values));
    expect(s.dtype).toBe(dtype);
    expect(s.size).toBe(5);
    expect([...((await cpu.read(s)) as Float32Array)]).toEqual([...roundTo(dtype, values)]);
    expect(() => cpu.unary('exp', s)).toThrow(new RegExp(`expected f32 storage, got ${dtype}`));
    expect(() => cpu.matmul(s, s, null, { batch: 1, m: 1, k: 5, n: 1, transA: false, transB: false, broadcastB: false })).toThrow(new RegExp(`expected f32 storage, got ${dtype}`));
  });
});

describe.each(DTYPES)('%s tensors at the Tensor level', (dtype) => {
  it('matmul takes a 16-bit B (not A); element-wise and layout ops refuse 16-bit tensors', async () => {
    const w = tensor(narrowTo(dtype, Float32Array.of(1, 2, 3, 4, 5, 6)), [2, 3], { backend: cpu });
    const x = tensor(Float32Array.of(1, -1), [1, 2], { backend: cpu });
    expect(w.dtype).toBe(dtype);
    expect([...(await matmul(x, w).toFloat32())]).toEqual([-3, -3, -3]);
    expect([...(await matmul(tensor(Float32Array.of(1, 0, 1), [1, 3], { backend: cpu }), w, { transB: true }).toFloat32())]).toEqual([4, 10]);
    expect(() => matmul(w, tensor(new Float32Array(3), [3, 1], { backend: cpu }))).toThrow(new RegExp(`matmul takes f32 tensors, got ${dtype}`));
    expect(() => add(w, 1)).toThrow(new RegExp(`takes f32 tensors, got ${dtype}`));
    expect(() => permute(w, [1, 0])).toThrow(new RegExp(`permute does not take ${dtype}`));
    expect(() => slice(w, [0, 0], [1, 3])).toThrow(new RegExp(`slice does not take ${dtype}`));
    expect(() => cast(w, 'f32')).toThrow(new RegExp(`cast does not take ${dtype}`));
    const ids = tensor(Int32Array.of(1, 1, 0), [3], { backend: cpu });
    expect([...(await embedding(ids, w).toFloat32())]).toEqual([4, 5, 6, 4, 5, 6, 1, 2, 3]);
  });
});

describe('the binding-split planner with a 16-bit B', () => {
  it('windows of B count 2-byte elements: they fit the binding and start aligned', () => {
    const limits = { maxBindingBytes: 16 * 1024, alignment: 256, maxWorkgroups: 65535, rowsPerGroup: 8, colsPerGroup: 32 };
    for (const flags of COMBOS) {
      const s = { batch: 3, m: 150, k: 70, n: 90, ...flags };
      const half = planMatmul(s, limits, 2);
      const full = planMatmul(s, limits, 4);
      for (const ch of half.chunks) {
        expect(Math.ceil(((ch.b.first % 2) + ch.b.count) / 2) * 4).toBeLessThanOrEqual(limits.maxBindingBytes);
        expect((ch.b.first * 2) % limits.alignment).toBe(0);
      }
      // B in half the bytes never needs more chunks.
      expect(half.chunks.length).toBeLessThanOrEqual(full.chunks.length);
    }
  });
});

describe.runIf(gpu !== null).each(DTYPES)('%s weights on WebGPU equal the CPU reference', (dtype) => {
  const backend = gpu!;
  const traits = () => adapterTraits(backend.gpu);

  async function runVariant(name: keyof typeof MATMUL_VARIANTS, pr: Problem, options = {}): Promise<Float32Array> {
    const g = backend.gpu;
    const a = g.upload(pr.a);
    const b = g.upload(narrowTo(dtype, pr.b));
    expect(b.dtype).toBe(dtype);
    const bias = pr.bias ? g.upload(pr.bias) : null;
    const c = matmulWith(g, MATMUL_VARIANTS[name], a, b, bias, pr.shape, options);
    const out = (await g.read(c)) as Float32Array;
    for (const x of [a, b, bias, c]) if (x) g.release(x);
    return out;
  }

  it('uploads and reads back 16-bit storage of odd and even lengths', async () => {
    for (const n of [1, 5, 8, 1001]) {
      const values = roundTo(dtype, randomArray(n, freshSeed(), 1, -70000, 70000));
      const s = backend.upload(narrowTo(dtype, values));
      expect(s.dtype).toBe(dtype);
      expect((await backend.read(s)) as Float32Array).toEqual(values);
      backend.release(s);
    }
  });

  for (const name of MATMUL_VARIANT_NAMES) {
    it(`matmul variant ${name}: ragged shapes, every transposition, a shared B`, async ({ skip }) => {
      if (!variantSupported(MATMUL_VARIANTS[name], traits())) skip(`${name} needs subgroups this adapter lacks`);
      for (const [index, [batch, m, k, n]] of SHAPES.entries()) {
        for (const flags of COMBOS) {
          if (flags.broadcastB && batch === 1) continue;
          const seed = freshSeed();
          const pr = problem(dtype, { batch, m, k, n, ...flags }, index % 2 === 0, seed);
          expectClose(await runVariant(name, pr), await runOn(cpu, pr, dtype), { seed });
        }
      }
    });
  }

  it('the tuned variant through the backend (x·W and x·Wᵀ as the model calls them)', async () => {
    for (const [m, k, n] of [[1, 64, 257], [5, 96, 300], [17, 33, 65]]) {
      for (const transB of FLAGS) {
        const seed = freshSeed();
        const pr = problem(dtype, { batch: 1, m, k, n, transA: false, transB, broadcastB: true }, !transB, seed);
        expectClose(await runOn(backend, pr, dtype), await runOn(cpu, pr, dtype), { seed });
      }
    }
  });

  it('splits a 16-bit B over a small binding limit: along K (accumulating) and along N (transposed)', async () => {
    const maxBindingBytes = 16 * 1024;
    const name = currentVariant(traits());
    for (const flags of COMBOS) {
      const seed = freshSeed();
      // B of 3·140·90 16-bit values = 75 KB: several windows of 16 KiB.
      const pr = problem(dtype, { batch: 3, m: 20, k: 140, n: 90, ...flags }, true, seed);
      const plan = matmulPlan(backend.gpu, MATMUL_VARIANTS[name], pr.shape, { maxBindingBytes }, dtype);
      expect(plan.chunks.length).toBeGreaterThan(1);
      expectClose(await runVariant(name, pr, { maxBindingBytes }), await runOn(cpu, pr, dtype), { seed });
    }
  });

  async function gather(on: Backend, ids: Int32Array, table: Float32Array, vocab: number, dim: number): Promise<Float32Array> {
    const [idS, tableS] = [on.upload(ids), on.upload(narrowTo(dtype, table))];
    const outS = on.embedding(idS, tableS, ids.length, vocab, dim);
    const out = (await on.read(outS)) as Float32Array;
    for (const s of [idS, tableS, outS]) on.release(s);
    return out;
  }

  for (const [vocab, dim, n] of [[1, 1, 1], [13, 7, 40], [300, 129, 77], [1000, 64, 500]]) {
    it(`embedding gather from a 16-bit table [${vocab}, ${dim}], ${n} ids: bitwise`, async () => {
      const seed = freshSeed();
      const table = roundTo(dtype, randomArray(vocab * dim, seed, 1));
      const ids = randomInts(n, seed, 2, vocab);
      expect(await gather(backend, ids, table, vocab, dim)).toEqual(await gather(cpu, ids, table, vocab, dim));
    });
  }

  for (const dim of [7, 64]) {
    it(`embedding gather from a 16-bit table split into windows (2 KiB bindings, 256 B alignment), dim ${dim}`, async () => {
      const seed = freshSeed();
      const vocab = 400;
      const table = roundTo(dtype, randomArray(vocab * dim, seed, 1));
      const ids = randomInts(300, seed, 2, vocab);
      const actual = await withBindingLimits(backend, 2048, 256, (limited) => gather(limited, ids, table, vocab, dim));
      expect(actual).toEqual(await gather(cpu, ids, table, vocab, dim));
    });
  }
});
