/**
 * Embedding gather and its backward: the CPU reference against hand-made cases and central
 * differences; WebGPU gather and backward against the CPU reference on ragged sizes (vocab 1..1000,
 * dim 1, 7, 129, 768; n 1..3000, ids repeated many times, every id the same), bitwise determinism,
 * GPT-2's [50257, 768] table, and a [50257, 1024] table past one binding (rows gathered near its
 * end, gradients summed into rows beyond the first window); the Tensor-level op on both backends.
 */
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/tensor/backend.js';
import { backward } from '../src/tensor/autograd.js';
import { tensor } from '../src/tensor/create.js';
import { embedding } from '../src/tensor/fused.js';
import { add, mul, sum } from '../src/tensor/ops.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray, randomInts } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

async function run(backend: Backend, ids: Int32Array, table: Float32Array, dOut: Float32Array, vocab: number, dim: number): Promise<{ out: Float32Array; grad: Float32Array }> {
  const n = ids.length;
  const [idS, tableS, dOutS] = [backend.upload(ids), backend.upload(table), backend.upload(dOut)];
  const outS = backend.embedding(idS, tableS, n, vocab, dim);
  const gradS = backend.embeddingBackward(idS, dOutS, n, vocab, dim);
  const out = (await backend.read(outS)) as Float32Array;
  const grad = (await backend.read(gradS)) as Float32Array;
  for (const s of [idS, tableS, dOutS, outS, gradS]) backend.release(s);
  return { out, grad };
}

/**
 * The gather copies: bitwise equal. The gradient sums up to k rows of dOut in [-1, 1) per id: f32 in
 * token order against float64, relative error 1e-4 above a floor of 1e-3·k. A sum of k random-sign
 * terms is only ~√k while the f32 rounding of its k partial sums adds up to ~1e-7·k (measured: 1.3e-4
 * relative for k = 3000 under a floor of 1e-3·√k).
 */
function expectEmbeddingClose(actual: { out: Float32Array; grad: Float32Array }, expected: { out: Float32Array; grad: Float32Array }, ids: Int32Array, seed: number): void {
  expect(actual.out.length).toBe(expected.out.length);
  expect(actual.out.every((v, i) => v === expected.out[i]), `gather differs (replay with TEST_SEED=${seed})`).toBe(true);
  const counts = new Map<number, number>();
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  const repeats = Math.max(1, ...counts.values());
  expectClose(actual.grad, expected.grad, { seed, floor: 1e-3 * repeats });
}

describe('embedding CPU reference', () => {
  it('gathers rows and sums repeated ids in the gradient', async () => {
    const table = Float32Array.from({ length: 12 }, (_, i) => i); // [4, 3]
    const ids = Int32Array.of(3, 0, 3, 1);
    const dOut = Float32Array.of(1, 2, 3, 10, 20, 30, 100, 200, 300, 0.5, 0.25, 0.125);
    const { out, grad } = await run(cpu, ids, table, dOut, 4, 3);
    expect(Array.from(out)).toEqual([9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5]);
    expect(Array.from(grad)).toEqual([10, 20, 30, 0.5, 0.25, 0.125, 0, 0, 0, 101, 202, 303]);
  });

  it('backward matches central differences of Σ dOut ∘ embedding(ids, table)', async () => {
    const seed = freshSeed();
    const [vocab, dim, n] = [5, 3, 9];
    const ids = randomInts(n, seed, 1, vocab);
    const table = randomArray(vocab * dim, seed, 2, -1, 1);
    const dOut = randomArray(n * dim, seed, 3, -1, 1);
    const loss = async () => {
      const out = (await cpu.read(cpu.embedding(cpu.upload(ids), cpu.upload(table), n, vocab, dim))) as Float32Array;
      return out.reduce((a, v, i) => a + v * dOut[i], 0);
    };
    const { grad } = await run(cpu, ids, table, dOut, vocab, dim);
    // The loss is linear in the table: central differences with h = 0.25 (exact in binary) are exact
    // up to the float64 rounding of the sums, ~1e-15.
    const h = 0.25;
    const numeric = new Float64Array(vocab * dim);
    for (let i = 0; i < table.length; i++) {
      const keep = table[i];
      table[i] = keep + h;
      const plus = await loss();
      table[i] = keep - h;
      const minus = await loss();
      table[i] = keep;
      numeric[i] = (plus - minus) / (2 * h);
    }
    expectClose(grad, numeric, { tolerance: 1e-6, seed });
  });

  it('rejects ids outside the vocabulary', () => {
    const table = cpu.upload(new Float32Array(6));
    expect(() => cpu.embedding(cpu.upload(Int32Array.of(0, 3)), table, 2, 3, 2)).toThrow(/id 3 at position 1 is outside the vocabulary \[0, 3\)/);
    expect(() => cpu.embeddingBackward(cpu.upload(Int32Array.of(-1)), cpu.upload(new Float32Array(2)), 1, 3, 2)).toThrow(/id -1 at position 0/);
  });
});

describe.runIf(gpu !== null)('embedding on WebGPU equals the CPU reference', () => {
  const webgpu = gpu!;
  // [vocab, dim, n, distinct ids used]: repeats from none to thousands of one id.
  const cases = [
    [1, 1, 1, 1], [1, 7, 300, 1], [13, 129, 127, 13], [1000, 7, 1029, 1000], [1000, 1, 257, 3],
    [97, 768, 3000, 1], [5003, 33, 4099, 50], [50257, 768, 1024, 50257],
  ] as const;
  for (const [vocab, dim, n, distinct] of cases) {
    it(`table [${vocab}, ${dim}], ${n} ids among ${distinct}`, async () => {
      const seed = freshSeed();
      // Ids drawn from `distinct` values spread over the vocabulary, the last row included.
      const picks = randomInts(n, seed, 1, distinct);
      const ids = Int32Array.from(picks, (p) => (distinct === 1 ? vocab - 1 : Math.round((p * (vocab - 1)) / (distinct - 1))));
      const table = randomArray(vocab * dim, seed, 2, -1, 1);
      const dOut = randomArray(n * dim, seed, 3, -1, 1);
      expectEmbeddingClose(await run(webgpu, ids, table, dOut, vocab, dim), await run(cpu, ids, table, dOut, vocab, dim), ids, seed);
    });
  }

  it('backward is bitwise deterministic', async () => {
    const seed = freshSeed();
    const [vocab, dim, n] = [300, 65, 2000];
    const ids = randomInts(n, seed, 1, 40);
    const dOut = randomArray(n * dim, seed, 3, -1e3, 1e3);
    const table = new Float32Array(vocab * dim);
    const a = await run(webgpu, ids, table, dOut, vocab, dim);
    const b = await run(webgpu, ids, table, dOut, vocab, dim);
    expect(b.grad).toEqual(a.grad);
  });

  // dim 13: 34 rows of 13 a window; dim 12 (read four columns at a time): 37 rows. The table, the
  // gathered rows and dOut all span several windows, so the backward adds later dOut windows to
  // what earlier ones wrote.
  for (const dim of [13, 12]) {
    it(`table, output and dOut split into windows of a lowered binding limit (2 KiB, 256 B alignment), dim ${dim}`, async () => {
      const seed = freshSeed();
      const [vocab, n] = [301, 257];
      const ids = randomInts(n, seed, 1, 40);
      ids[0] = vocab - 1;
      ids[n - 1] = vocab - 1;
      const table = randomArray(vocab * dim, seed, 2, -1, 1);
      const dOut = randomArray(n * dim, seed, 3, -1, 1);
      const actual = await withBindingLimits(webgpu, 2048, 256, (limited) => run(limited, ids, table, dOut, vocab, dim));
      expectEmbeddingClose(actual, await run(cpu, ids, table, dOut, vocab, dim), ids, seed);
    });
  }

  it('a [50257, 1024] table past one binding: rows near its end, ids repeated, gradients past the first window', async () => {
    const seed = freshSeed();
    const [vocab, dim] = [50257, 1024];
    expect(vocab * dim * 4).toBeGreaterThan(webgpu.gpu.maxBindingBytes);
    // Rows of the table hold row-specific values (no random table of 51 M floats to draw): row v holds
    // v + (c mod 256)/256, exact in f32 (16 + 8 bits), so a row read from the wrong window shows.
    const table = new Float32Array(vocab * dim);
    for (let v = 0; v < vocab; v++) for (let c = 0; c < dim; c++) table[v * dim + c] = v + (c % 256) / 256;
    const rowsPerWindow = Math.floor((webgpu.gpu.maxBindingBytes / 4 - webgpu.gpu.bindingAlignment / 4 + 1) / dim);
    // Ids around every window edge, the last rows, row 0, and a few repeated many times.
    const special = [0, 1, rowsPerWindow - 1, rowsPerWindow, rowsPerWindow + 1, vocab - 2, vocab - 1];
    const n = 700;
    const picks = randomInts(n, seed, 1, special.length + 3);
    const others = randomInts(n, seed, 2, vocab);
    const ids = Int32Array.from(picks, (p, i) => (p < special.length ? special[p] : p === special.length ? vocab - 1 : others[i]));
    const dOut = randomArray(n * dim, seed, 3, -1, 1);
    const actual = await run(webgpu, ids, table, dOut, vocab, dim);
    const expected = await run(cpu, ids, table, dOut, vocab, dim);
    expectEmbeddingClose(actual, expected, ids, seed);
    expect(actual.out[(n - 1) * dim + 5]).toBe(ids[n - 1] + 5 / 256);
  });
});

describe('embedding at the Tensor level', () => {
  it('checks the ids dtype and the table rank', () => {
    const ids = tensor(Int32Array.of(0, 1), [2], { backend: cpu });
    expect(() => embedding(tensor([0, 1], [2], { backend: cpu }), tensor(new Float32Array(6), [3, 2], { backend: cpu }))).toThrow(/ids must be i32, got f32/);
    expect(() => embedding(ids, tensor(new Float32Array(6), [6], { backend: cpu }))).toThrow(/table must be \[V, C\], got \[6\]/);
    expect(() => embedding(ids, tensor(new Float32Array(12), [2, 3, 2], { backend: cpu }))).toThrow(/table must be \[V, C\], got \[2,3,2\]/);
  });

  for (const [name, backend] of [['cpu', cpu], ['webgpu', gpu]] as const) {
    it.runIf(backend !== null)(`${name}: token + position embeddings, backward() into both tables`, async () => {
      const b = backend!;
      const seed = freshSeed();
      const [B, T, vocab, C] = [2, 5, 11, 6];
      const idsH = randomInts(B * T, seed, 1, vocab);
      const wteH = randomArray(vocab * C, seed, 2, -1, 1);
      const wpeH = randomArray(T * C, seed, 3, -1, 1);
      const dyH = randomArray(B * T * C, seed, 4, -1, 1);
      const wte = tensor(wteH, [vocab, C], { backend: b, requiresGrad: true });
      const wpe = tensor(wpeH, [T, C], { backend: b, requiresGrad: true });
      const ids = tensor(idsH, [B, T], { backend: b });
      const positions = tensor(Int32Array.from({ length: T }, (_, t) => t), [T], { backend: b });
      const tok = embedding(ids, wte); // [B, T, C]
      const pos = embedding(positions, wpe); // [T, C], broadcast over B
      expect(tok.shape).toEqual([B, T, C]);
      expect(pos.shape).toEqual([T, C]);
      backward(sum(mul(add(tok, pos), tensor(dyH, [B, T, C], { backend: b }))));
      const expectedWte = new Float64Array(vocab * C);
      const expectedWpe = new Float64Array(T * C);
      for (let i = 0; i < B * T; i++) {
        for (let c = 0; c < C; c++) {
          expectedWte[idsH[i] * C + c] += dyH[i * C + c];
          expectedWpe[(i % T) * C + c] += dyH[i * C + c];
        }
      }
      expectClose(await wte.grad!.toFloat32(), expectedWte, { seed });
      expectClose(await wpe.grad!.toFloat32(), expectedWpe, { seed });
    });
  }
});
