/**
 * Causal attention: the CPU reference against a naive softmax(QKᵀ)V and central differences in
 * float64; WebGPU forward, logSumExp and backward against the CPU reference on ragged sizes
 * (T = 1, 7, 33, 129; hs = 64, 24, 13, 1) with outliers; attention through the KV cache (a prefill,
 * then single-token and small multi-token steps, q, k and v read from c_attn's qkv layout, the
 * output written as [B, n, C]) against full causal attention on both backends; slot attention
 * (continuous batching's decode step: a slot and a position per row in a pooled cache) against the
 * reference and against each row decoded alone; tensors larger than one binding.
 */
import { describe, expect, it } from 'vitest';
import type { WebGpuBackend } from '../src/kernels/webgpu-backend.js';
import type { AttentionShape, Backend, Storage } from '../src/tensor/backend.js';
import { backward } from '../src/tensor/autograd.js';
import { tensor } from '../src/tensor/create.js';
import { attendCausal, attendCausalBackward } from '../src/tensor/cpu/attention.js';
import { attention, cachedAttention, slotAttention } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import { mul, sum } from '../src/tensor/ops.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

type Shape4 = readonly [number, number, number, number];
const toShape = ([B, H, T, hs]: Shape4): AttentionShape => ({ B, H, T, hs });
const sizeOf = (s: Shape4) => s[0] * s[1] * s[2] * s[3];

interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dOut: Float32Array;
}

/**
 * q, k uniform in [-1, 1) scaled so scores spread over about ±3 regardless of hs, v in [-1, 1),
 * and with `outliers`: a few q and k entries of ±8 (scores of ±10–20, nearly one-hot rows) and
 * v entries of ±1000.
 */
function randomInputs(shape: Shape4, seed: number, outliers = false): Inputs {
  const n = sizeOf(shape);
  const spread = Math.sqrt(3) / Math.pow(shape[3], 0.25);
  const q = randomArray(n, seed, 1, -spread, spread);
  const k = randomArray(n, seed, 2, -spread, spread);
  const v = randomArray(n, seed, 3, -1, 1);
  const dOut = randomArray(n, seed, 4, -1, 1);
  if (outliers) {
    const pick = randomArray(n, seed, 5, 0, 1);
    for (let i = 0; i < n; i++) {
      if (pick[i] < 0.02) q[i] = q[i] > 0 ? 8 : -8;
      else if (pick[i] < 0.04) k[i] = k[i] > 0 ? 8 : -8;
      else if (pick[i] < 0.06) v[i] = v[i] > 0 ? 1000 : -1000;
    }
  }
  return { q, k, v, dOut };
}

type Results = Record<'out' | 'lse' | 'dq' | 'dk' | 'dv', Float32Array>;

/**
 * Tolerances. out and logSumExp: relative error 1e-4 (the helper's floor: 1e-3 of the largest value).
 * With outliers, 1e-3: v of ±1000 makes out a sum of terms of ~1000 that cancel to ~1, and f32 keeps
 * ~1e-7 of the terms' size, not of the result's.
 */
function expectForwardClose(actual: Results, expected: Results, seed: number, outliers = false): void {
  const tolerance = outliers ? 1e-3 : 1e-4;
  expectClose(actual.out, expected.out, { seed, tolerance });
  expectClose(actual.lse, expected.lse, { seed, tolerance });
}

/**
 * Gradients: relative error 1e-4 above 1% of the largest gradient, absolute error 1e-6 of it below.
 * The looser floor is the reduction's doing: dq_i = scale·Σ_j p_ij(dOut_i·v_j − D_i)·k_j sums up to T
 * terms whose weights add to exactly zero, so small gradients are differences of much larger f32
 * terms (measured over 29 seeds: up to 2e-4 with the default floor, 3e-5 with this one). With
 * outliers, 1e-3: rows made nearly one-hot by scores of ±10–20 compute dOut·v − D ≈ (1 − p_max)·dOut·v
 * as a difference of two f32 numbers ~1e4 times larger (measured: up to 4e-4).
 */
function expectGradientsClose(actual: Results, expected: Results, seed: number, outliers = false): void {
  for (const key of ['dq', 'dk', 'dv'] as const) {
    const largest = expected[key].reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    expectClose(actual[key], expected[key], { seed, tolerance: outliers ? 1e-3 : 1e-4, floor: 1e-2 * largest + 1e-30 });
  }
}

async function readAll(backend: Backend, storages: Storage[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const s of storages) {
    out.push((await backend.read(s)) as Float32Array);
    backend.release(s);
  }
  return out;
}

async function forwardBackward(backend: Backend, shape: Shape4, x: Inputs): Promise<Results> {
  const s = toShape(shape);
  const [q, k, v, dOut] = [x.q, x.k, x.v, x.dOut].map((a) => backend.upload(a));
  const { out, logSumExp } = backend.attention(q, k, v, s);
  const g = backend.attentionBackward(dOut, q, k, v, out, logSumExp, s);
  const [outH, lseH, dq, dk, dv] = await readAll(backend, [out, logSumExp, g.dq, g.dk, g.dv]);
  for (const t of [q, k, v, dOut]) backend.release(t);
  return { out: outH, lse: lseH, dq, dk, dv };
}

describe('attention CPU reference', () => {
  it('equals a naive masked softmax(QKᵀ/√hs)·V', () => {
    const seed = freshSeed();
    const [H, T, hs] = [2, 9, 6];
    const { q, k, v } = randomInputs([1, H, T, hs], seed);
    const out = new Float64Array(H * T * hs);
    const lse = new Float64Array(H * T);
    attendCausal(q, k, v, { pairs: H, qLen: T, qPos: 0, kvStride: T, hs }, out, lse);
    const expected = new Float64Array(H * T * hs);
    const expectedLse = new Float64Array(H * T);
    for (let h = 0; h < H; h++) {
      const at = (a: Float32Array, t: number, d: number) => a[(h * T + t) * hs + d];
      for (let i = 0; i < T; i++) {
        // Every key scored, the future masked with -Infinity, softmax over the full row.
        const scores = Array.from({ length: T }, (_, j) => {
          let dot = 0;
          for (let d = 0; d < hs; d++) dot += at(q, i, d) * at(k, j, d);
          return j <= i ? dot / Math.sqrt(hs) : -Infinity;
        });
        const total = scores.reduce((a, s) => a + Math.exp(s), 0);
        expectedLse[h * T + i] = Math.log(total);
        for (let d = 0; d < hs; d++) {
          expected[(h * T + i) * hs + d] = scores.reduce((a, s, j) => a + (Math.exp(s) / total) * at(v, j, d), 0);
        }
      }
    }
    expectClose(out, expected, { tolerance: 1e-12, seed });
    expectClose(lse, expectedLse, { tolerance: 1e-12, seed });
  });

  it('with T = 1 returns v and logSumExp = q·k/√hs', () => {
    const hs = 5;
    const q = [1, 2, 3, 4, 5];
    const k = [0.5, -1, 0, 2, 1];
    const v = [9, 8, 7, 6, 5];
    const { out, logSumExp } = cpu.attention(cpu.upload(Float32Array.from(q)), cpu.upload(Float32Array.from(k)), cpu.upload(Float32Array.from(v)), { B: 1, H: 1, T: 1, hs });
    expect(Array.from((out as unknown as { data: Float32Array }).data)).toEqual(v);
    expect((logSumExp as unknown as { data: Float32Array }).data[0]).toBeCloseTo(11.5 / Math.sqrt(hs), 6);
  });

  for (const shape of [[1, 2, 7, 5], [2, 1, 4, 3], [1, 1, 1, 4]] as const) {
    it(`backward matches central differences in float64 ([${shape}])`, () => {
      const seed = freshSeed();
      const x = randomInputs(shape, seed);
      const [B, H, T, hs] = shape;
      const layout = { pairs: B * H, qLen: T, qPos: 0, kvStride: T, hs };
      const n = sizeOf(shape);
      const inputs = [Float64Array.from(x.q), Float64Array.from(x.k), Float64Array.from(x.v)];
      const g = Float64Array.from(x.dOut);
      const out = new Float64Array(n);
      const lse = new Float64Array(B * H * T);
      // The loss Σ g ∘ attention(q, k, v): its gradient is backward with dOut = g.
      const loss = () => {
        attendCausal(inputs[0], inputs[1], inputs[2], layout, out, lse);
        return out.reduce((a, o, i) => a + o * g[i], 0);
      };
      loss();
      const analytic = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
      attendCausalBackward(g, inputs[0], inputs[1], inputs[2], out.slice(), lse.slice(), toShape(shape), analytic[0], analytic[1], analytic[2]);
      const h = 1e-3;
      for (const [t, input] of inputs.entries()) {
        const numeric = new Float64Array(n);
        for (let i = 0; i < n; i++) {
          const keep = input[i];
          const at = (offset: number) => {
            input[i] = keep + offset;
            return loss();
          };
          numeric[i] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
          input[i] = keep;
        }
        // Five-point central differences in float64, h = 1e-3: truncation ~h⁴ and rounding ~1e-15/h,
        // both ~1e-12. (Two-point ones with h = 1e-5 left ~h² = 1e-10 of truncation, 1.7e-7 of the
        // 1e-3·max floor at seed 449683329.)
        expectClose(analytic[t], numeric, { tolerance: 1e-7, seed });
      }
    });
  }
});

// hs = 260: 65 vec4s a row, so 15-row tiles (workgroup memory) and the decode's wide-head path.
const RAGGED: Shape4[] = [[1, 1, 1, 64], [2, 3, 7, 24], [1, 2, 33, 13], [2, 2, 129, 64], [1, 3, 33, 1], [1, 1, 70, 24], [1, 2, 37, 260]];

describe.runIf(gpu !== null)('attention on WebGPU equals the CPU reference', () => {
  const webgpu = gpu!;
  for (const shape of RAGGED) {
    for (const outliers of [false, true]) {
      it(`[${shape}]${outliers ? ' with outliers' : ''}: out, logSumExp, dq, dk, dv`, async () => {
        const seed = freshSeed();
        const x = randomInputs(shape, seed, outliers);
        const actual = await forwardBackward(webgpu, shape, x);
        const expected = await forwardBackward(cpu, shape, x);
        expectForwardClose(actual, expected, seed, outliers);
        expectGradientsClose(actual, expected, seed, outliers);
      });
    }
  }

  it('is bitwise deterministic', async () => {
    const seed = freshSeed();
    const shape: Shape4 = [2, 2, 45, 24];
    const x = randomInputs(shape, seed);
    const a = await forwardBackward(webgpu, shape, x);
    const b = await forwardBackward(webgpu, shape, x);
    for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const) expect(b[key]).toEqual(a[key]);
  });

  it('tensors split into binding windows (limit lowered to 8 KiB, offsets aligned to 256 B)', async () => {
    const seed = freshSeed();
    const shape: Shape4 = [2, 3, 33, 24]; // 3168 B per pair: two pairs a window, windows at unaligned pairs
    const x = randomInputs(shape, seed);
    const actual = await withBindingLimits(webgpu, 8192, 256, (limited) => forwardBackward(limited, shape, x));
    const expected = await forwardBackward(cpu, shape, x);
    expectForwardClose(actual, expected, seed);
    expectGradientsClose(actual, expected, seed);
  });

  // The real limit, once: 40 s on lavapipe, so not again in the immediate-submission run.
  it.skipIf(process.env.GPT2_WEBGPU_IMMEDIATE === '1')('tensors larger than one binding ([3, 25000, 7, 64] = 134.4 MB each, 75000 workgroups)', async () => {
    const seed = freshSeed();
    const shape: Shape4 = [3, 25000, 7, 64];
    const [, , T, hs] = shape;
    expect(sizeOf(shape) * 4).toBeGreaterThan(webgpu.gpu.maxBindingBytes);
    const x = randomInputs(shape, seed);
    const actual = await forwardBackward(webgpu, shape, x);
    // The CPU reference on the (batch, head) pairs at both ends and around every binding window's edge.
    const perPair = T * hs;
    const alignment = webgpu.gpu.bindingAlignment / 4;
    const pairsPerWindow = Math.floor((webgpu.gpu.maxBindingBytes / 4 - alignment + 1) / perPair);
    const pairs = new Set([0, shape[0] * shape[1] - 1]);
    for (let b = pairsPerWindow; b < shape[0] * shape[1]; b += pairsPerWindow) [b - 1, b].forEach((p) => pairs.add(p));
    expect(pairs.size).toBeGreaterThan(2);
    for (const p of pairs) {
      const cut = (a: Float32Array) => a.slice(p * perPair, (p + 1) * perPair);
      const expected = await forwardBackward(cpu, [1, 1, T, hs], { q: cut(x.q), k: cut(x.k), v: cut(x.v), dOut: cut(x.dOut) });
      const mine: Results = { out: cut(actual.out), lse: actual.lse.slice(p * T, (p + 1) * T), dq: cut(actual.dq), dk: cut(actual.dk), dv: cut(actual.dv) };
      expectForwardClose(mine, expected, seed);
      expectGradientsClose(mine, expected, seed);
    }
  });
});

describe('attention through the KV cache equals full causal attention', () => {
  // q, k, v come in c_attn's layout qkv [B, n, 3C] and the output leaves as [B, n, C]. The third
  // backend runs with the binding limit lowered to 1.5 sequences (of cache rows or of qkv,
  // whichever is larger), so the caches, qkv and outputs of batches of several sequences are split
  // into windows at offsets aligned to 256 B (cache rows of 3·81·24 and 2·40·13 floats: unaligned).
  const backends: [string, Backend | null, boolean][] = [['cpu', cpu, false], ['webgpu', gpu, false], ['webgpu, binding windows', gpu, true]];
  // [B, H, hs, maxLen, prefill, then steps of these many tokens, the batch's first slot]: from a slot
  // above 0, the caches hold one more sequence before and after the batch's (a pool of slots).
  const cases: [number, number, number, number, number, number[], number][] = [
    [2, 3, 24, 81, 7, [1, 1, 1, 3, 1, 5, 1], 0], // prefill through the flash kernel (7 > 4 queries)
    [1, 12, 64, 160, 129, [1, 1, 2, 1], 0], // past four 32-key decode chunks
    [3, 2, 13, 40, 1, [1, 1, 4, 1, 6, 1, 1], 0], // odd head size, a one-token prefill
    [1, 2, 260, 90, 70, [1, 2, 1], 0], // a wide head (65 vec4s a row), past two 32-key decode chunks
    [1, 4, 16, 70, 30, [3, 1, 4], 0], // decode steps whose new keys straddle a 32-key chunk (30–32, 34–37)
    [2, 3, 24, 81, 7, [1, 3, 1], 1], // a prefill (flash) and steps into slots 1 and 2 of a pool of 4
    [1, 2, 13, 40, 9, [1, 2, 1], 1], // one sequence into slot 1 of a pool of 3
  ];
  for (const [name, backend, windows] of backends) {
    for (const [B, H, hs, maxLen, prefill, steps, slot] of cases) {
      it.runIf(backend !== null && (!windows || B > 1 || slot > 0))(`${name}: B=${B} H=${H} hs=${hs}, prefill ${prefill}, steps ${steps}, slot ${slot}`, async () => {
        const b = backend!;
        if (windows) {
          const sequence = Math.max(H * maxLen * hs, Math.max(prefill, ...steps) * 3 * H * hs) * 4;
          const limit = Math.ceil((1.5 * sequence) / 256) * 256;
          await withBindingLimits(b as WebGpuBackend, limit, 256, (limited) => cacheSteps(limited, B, H, hs, maxLen, prefill, steps, slot));
        } else {
          await cacheSteps(b, B, H, hs, maxLen, prefill, steps, slot);
        }
      });
    }
  }

  async function cacheSteps(b: Backend, B: number, H: number, hs: number, maxLen: number, prefill: number, steps: number[], slot: number): Promise<void> {
    const seed = freshSeed();
    const T = prefill + steps.reduce((a, s) => a + s, 0);
    const C = H * hs;
    const shape: Shape4 = [B, H, T, hs];
    const x = randomInputs(shape, seed);
    // The reference: full causal attention over all T positions, on the CPU.
    const full = (await forwardBackward(cpu, shape, x)).out;
    // The floor of the relative error is that of the whole output, as in the tests above: one token's
    // outputs alone can all be small (averages of v), and their f32 rounding is relative to v's scale
    // (1.07e-4 against a per-step floor at TEST_SEED=1407904570).
    const floor = 1e-3 * full.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    /** Positions [from, from + n) of [B, H, T, hs] arrays, token-major: [B, n, parts.length · C]. */
    const tokensOf = (parts: Float32Array[], from: number, n: number) => {
      const out = new Float32Array(B * n * parts.length * C);
      for (let bb = 0; bb < B; bb++) {
        for (let t = 0; t < n; t++) {
          parts.forEach((a, part) => {
            for (let h = 0; h < H; h++) {
              const src = ((bb * H + h) * T + from + t) * hs;
              out.set(a.subarray(src, src + hs), ((bb * n + t) * parts.length + part) * C + h * hs);
            }
          });
        }
      }
      return out;
    };
    // Rows past the written ones, and other slots, hold NaN: reading any of them would poison the output.
    const slots = slot === 0 ? B : slot + B + 1;
    const garbage = new Float32Array(slots * H * maxLen * hs).fill(NaN);
    const kCache = tensor(garbage, [slots, H, maxLen, hs], { backend: b });
    const vCache = tensor(garbage, [slots, H, maxLen, hs], { backend: b });
    let position = 0;
    for (const n of [prefill, ...steps]) {
      const qkv = tensor(tokensOf([x.q, x.k, x.v], position, n), [B, n, 3 * C], { backend: b });
      const out = noGrad(() => cachedAttention(qkv, kCache, vCache, position, slot));
      expect(out.shape).toEqual([B, n, C]);
      // The CPU's cached and full attention run the same float64 loops; WebGPU holds the f32 bound.
      expectClose(await out.toFloat32(), tokensOf([full], position, n), { seed, floor, tolerance: b.name === 'cpu' ? 1e-6 : 1e-4 });
      position += n;
      for (const t of [qkv, out]) t.dispose();
    }
    // The batch's slots hold exactly the written rows, NaN after them; the other slots only NaN.
    for (const [cache, rows] of [[kCache, x.k], [vCache, x.v]] as const) {
      const pooled = await cache.toFloat32();
      const host = pooled.slice(slot * H * maxLen * hs, (slot + B) * H * maxLen * hs);
      expect([...pooled.subarray(0, slot * H * maxLen * hs), ...pooled.subarray((slot + B) * H * maxLen * hs)].every(Number.isNaN)).toBe(true);
      const written = Float32Array.from(host.filter((_, i) => Math.floor(i / hs) % maxLen < T));
      expectClose(written, rows, { tolerance: 0 });
      expect(host.filter((_, i) => Math.floor(i / hs) % maxLen >= T).every(Number.isNaN)).toBe(true);
    }
    kCache.dispose();
    vCache.dispose();
  }

  it('cachedAttention refuses a graph, a full cache, a negative position, a slot past the caches and a wrong qkv', () => {
    const qkv = tensor(new Float32Array(12), [1, 1, 12], { backend: cpu, requiresGrad: true });
    const cache = tensor(new Float32Array(8), [1, 1, 2, 4], { backend: cpu });
    expect(() => cachedAttention(qkv, cache, cache, 0)).toThrow(/inside noGrad/);
    expect(() => noGrad(() => cachedAttention(qkv, cache, cache, 2))).toThrow(/cache of 2 positions cannot take 1 more at position 2/);
    expect(() => noGrad(() => cachedAttention(qkv, cache, cache, -1))).toThrow('cache position must be a non-negative integer, got -1');
    expect(() => noGrad(() => cachedAttention(qkv, cache, cache, 0, 1))).toThrow('cachedAttention: 1 sequences from slot 1 do not fit caches of 1');
    expect(() => noGrad(() => cachedAttention(tensor(new Float32Array(8), [1, 1, 8], { backend: cpu }), cache, cache, 0))).toThrow(/cachedAttention qkv must have shape \[1,1,12\], got \[1,1,8\]/);
  });
});

describe('slot attention: rows at their own positions in a pooled cache', () => {
  // Each row of a decode step writes its key and value into its own slot of caches [S, H, maxLen, hs]
  // at its own position and attends to that slot's prefix. Every cache row no call should read is NaN
  // (unused slots, rows past a prefix), so reading a wrong slot or row poisons the output. The third
  // backend lowers the binding limit to 1.5 slots of cache, so each slot gets a window (offsets aligned
  // to 256 B; slots of 3·81·24 and 2·70·13 floats are not).
  const backends: [string, Backend | null, boolean][] = [['cpu', cpu, false], ['webgpu', gpu, false], ['webgpu, binding windows', gpu, true]];
  // [S, H, hs, maxLen, each row's slot, each row's position]: positions straddle the 32-key chunks
  // (31, 32, 33, 63, 64) and include empty and one-row prefixes (0, 1).
  const cases: [number, number, number, number, number[], number[]][] = [
    [6, 3, 24, 81, [4, 0, 5, 2, 1, 3], [0, 1, 31, 32, 33, 80]],
    [5, 2, 13, 70, [3, 1], [63, 64]], // odd head size (no vec4 path), fewer rows than slots
    [4, 4, 64, 160, [2, 0, 3], [129, 5, 96]], // past four chunks beside a short row
    [3, 1, 260, 40, [2, 1], [0, 31]], // a wide head (65 vec4s a row)
  ];
  for (const [name, backend, windows] of backends) {
    for (const [S, H, hs, maxLen, slots, positions] of cases) {
      it.runIf(backend !== null)(`${name}: S=${S} H=${H} hs=${hs}, slots ${slots}, positions ${positions}`, async () => {
        const b = backend!;
        if (windows) {
          const limit = Math.ceil((1.5 * H * maxLen * hs * 4) / 256) * 256;
          await withBindingLimits(b as WebGpuBackend, limit, 256, (limited) => slotStep(limited, S, H, hs, maxLen, slots, positions));
        } else {
          await slotStep(b, S, H, hs, maxLen, slots, positions);
        }
      });
    }
  }

  async function slotStep(b: Backend, S: number, H: number, hs: number, maxLen: number, slots: number[], positions: number[]): Promise<void> {
    const seed = freshSeed();
    const B = slots.length;
    const C = H * hs;
    const spread = Math.sqrt(3) / Math.pow(hs, 0.25);
    const qkv = new Float32Array(B * 3 * C);
    const cacheBefore = [new Float32Array(S * H * maxLen * hs).fill(NaN), new Float32Array(S * H * maxLen * hs).fill(NaN)];
    const cacheAfter = cacheBefore.map((c) => c.slice());
    const expected = new Float32Array(B * C);
    const at = (slot: number, h: number, row: number) => ((slot * H + h) * maxLen + row) * hs;
    for (let r = 0; r < B; r++) {
      const [slot, position] = [slots[r], positions[r]];
      const q = randomArray(C, seed, 10 * r, -spread, spread);
      // [H, position + 1, hs]: the prefix already in the cache, then this step's key or value.
      const k = randomArray(H * (position + 1) * hs, seed, 10 * r + 1, -spread, spread);
      const v = randomArray(H * (position + 1) * hs, seed, 10 * r + 2, -1, 1);
      qkv.set(q, r * 3 * C);
      for (let h = 0; h < H; h++) {
        [k, v].forEach((kv, part) => {
          const rows = kv.subarray(h * (position + 1) * hs, (h + 1) * (position + 1) * hs);
          cacheBefore[part].set(rows.subarray(0, position * hs), at(slot, h, 0));
          cacheAfter[part].set(rows, at(slot, h, 0));
          qkv.set(rows.subarray(position * hs), r * 3 * C + (part + 1) * C + h * hs);
        });
      }
      attendCausal(q, k, v, { pairs: H, qLen: 1, qPos: position, kvStride: position + 1, hs }, expected.subarray(r * C, (r + 1) * C), null);
    }
    const [kCache, vCache] = cacheBefore.map((c) => tensor(c, [S, H, maxLen, hs], { backend: b }));
    const ids = (xs: number[]) => tensor(Int32Array.from(xs), [B], { backend: b });
    const qkvT = tensor(qkv, [B, 1, 3 * C], { backend: b });
    const out = noGrad(() => slotAttention(qkvT, kCache, vCache, ids(slots), ids(positions), Math.max(...positions) + 1));
    expect(out.shape).toEqual([B, 1, C]);
    const actual = await out.toFloat32();
    const floor = 1e-3 * expected.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    expectClose(actual, expected, { seed, floor, tolerance: b.name === 'cpu' ? 1e-6 : 1e-4 });
    // Each slot gained exactly its row's key and value; nothing else was written.
    for (const [cache, want] of [[kCache, cacheAfter[0]], [vCache, cacheAfter[1]]] as const) {
      const host = await cache.toFloat32();
      expect(host.every((x, i) => (Number.isNaN(want[i]) ? Number.isNaN(x) : x === want[i])), `seed ${seed}`).toBe(true);
    }
    // Bit for bit what each row computes decoding alone in a batch-1 cache (continuous batching's promise).
    for (let r = 0; r < B; r++) {
      const one = (c: Float32Array) => tensor(c.slice(at(slots[r], 0, 0), at(slots[r] + 1, 0, 0)), [1, H, maxLen, hs], { backend: b });
      const row = tensor(qkv.slice(r * 3 * C, (r + 1) * 3 * C), [1, 1, 3 * C], { backend: b });
      const alone = await noGrad(() => cachedAttention(row, one(cacheBefore[0]), one(cacheBefore[1]), positions[r])).toFloat32();
      expect(Array.from(actual.subarray(r * C, (r + 1) * C)), `seed ${seed}, row ${r}`).toEqual(Array.from(alone));
    }
  }

  it('slotAttention refuses a graph, shared or out-of-range slots, wrong ids and a bound past the cache', () => {
    const cache = tensor(new Float32Array(2 * 4 * 4), [2, 1, 4, 4], { backend: cpu });
    const qkv = (requiresGrad = false) => tensor(new Float32Array(2 * 12), [2, 1, 12], { backend: cpu, requiresGrad });
    const ids = (...xs: number[]) => tensor(Int32Array.from(xs), [xs.length], { backend: cpu });
    expect(() => slotAttention(qkv(true), cache, cache, ids(0, 1), ids(0, 0), 1)).toThrow(/inside noGrad/);
    expect(() => noGrad(() => slotAttention(qkv(), cache, cache, ids(0), ids(0, 0), 1))).toThrow('slotAttention slots must be 2 i32 values, got i32 [1]');
    expect(() => noGrad(() => slotAttention(qkv(), cache, cache, ids(0, 1), tensor(new Float32Array(2), [2], { backend: cpu }), 1))).toThrow(/positions must be 2 i32 values, got f32/);
    expect(() => noGrad(() => slotAttention(qkv(), cache, cache, ids(0, 1), ids(0, 0), 5))).toThrow('slotAttention: longest must be an integer in [1, 4], got 5');
    expect(() => noGrad(() => slotAttention(qkv(), cache, cache, ids(1, 1), ids(0, 0), 1))).toThrow('slotAttention: rows share a slot (1, 1)');
    expect(() => noGrad(() => slotAttention(qkv(), cache, cache, ids(0, 2), ids(0, 0), 1))).toThrow("slotAttention: row 1's slot 2 is outside [0, 2)");
    expect(() => noGrad(() => slotAttention(qkv(), cache, cache, ids(0, 1), ids(0, 3), 2))).toThrow("slotAttention: row 1's position 3 is outside [0, 2)");
  });
});

describe('attention at the Tensor level', () => {
  const backends: [string, Backend | null][] = [['cpu', cpu], ['webgpu', gpu]];
  for (const [name, backend] of backends) {
    it.runIf(backend !== null)(`${name}: backward() through attention gives the reference gradients`, async () => {
      const b = backend!;
      const seed = freshSeed();
      const shape: Shape4 = [2, 2, 11, 8];
      const x = randomInputs(shape, seed);
      const [q, k, v] = [x.q, x.k, x.v].map((a) => tensor(a, shape, { backend: b, requiresGrad: true }));
      const loss = sum(mul(attention(q, k, v), tensor(x.dOut, shape, { backend: b })));
      backward(loss);
      const expected = await forwardBackward(cpu, shape, x);
      const actual = { ...expected, dq: await q.grad!.toFloat32(), dk: await k.grad!.toFloat32(), dv: await v.grad!.toFloat32() };
      expectGradientsClose(actual, expected, seed);
    });
  }
});
