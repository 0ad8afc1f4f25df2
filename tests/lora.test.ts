/**
 * LoRA on the CPU reference and WebGPU: adapters with B = 0 leave the logits as they were (exactly
 * where the same ops run); the adapter's gradients against the CPU reference and float64
 * differences; a frozen base gets no gradient, no slot in the flat buffers and no weight-gradient
 * matmul; a LoRA fine-tune on the shipped data over an f32, an f16 and a bf16 base lowers the loss, leaves
 * the base as it was, and merged into it gives the unmerged logits; merged adapters give the
 * unmerged logits to 1e-5 of their scale, and merges with a known mistake do not. An adapter on the
 * head (lm_head): PEFT's names and shapes, B = 0 exact, the logits moved by exactly (alpha/r)·x·Aᵀ·Bᵀ
 * on the hidden states it leaves alone, its gradients, the same logits through the KV cache and the
 * serving step as through the full forward, an untied head's own matrix, and no merge.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { initializeWeights } from '../src/gpt/init.js';
import { modelFromStateDict, randomModel } from '../src/gpt/load-model.js';
import { KVCachePool } from '../src/gpt/kv-cache-pool.js';
import { KVCache } from '../src/gpt/kv-cache.js';
import { addLoRA, LORA_TARGETS, loraParameters, loraSettings, mergeLoRA, type LoRATarget } from '../src/gpt/lora.js';
import { hostWeights } from '../src/gpt/model-bytes.js';
import { GPT2 } from '../src/gpt/model.js';
import { Linear, OutputHead } from '../src/nn/layers.js';
import { backward } from '../src/tensor/autograd.js';
import type { Backend, MatmulShape } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { crossEntropy } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { AdamW } from '../src/train/adamw.js';
import { fineTune } from '../src/train/fine-tune.js';
import { parseInstructionData } from '../src/train/instruction-data.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { expectClose, maxRelativeError } from './helpers/close.js';
import { gradcheck } from './helpers/gradcheck.js';
import { freshSeed, randomArray, randomInts } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();
const backends: [string, Backend | null][] = [['CPU', cpu], ['WebGPU', gpu]];
const DATA = parseInstructionData(readFileSync('data/instructions.json', 'utf8'), 'data/instructions.json');
const [B, T] = [2, 9];
const V = PRESETS.tiny.vocab_size;

/** A tiny model with adapters on `targets`, B drawn in ±0.5 instead of zero so that they move the logits. */
function withDrawnAdapters(backend: Backend, seed: number, targets: readonly LoRATarget[]): GPT2 {
  const { model } = randomModel('tiny', { seed, backend });
  addLoRA(model, { rank: 4, alpha: 8, seed, targets });
  for (const [index, [name, p]] of loraParameters(model).entries()) {
    if (name.endsWith('lora_B.weight')) model.replaceParameter(name, tensor(randomArray(p.size, seed, 10 + index, -0.5, 0.5), p.shape, { backend }));
  }
  return model;
}

const largest = (values: Float32Array) => values.reduce((m, x) => Math.max(m, Math.abs(x)), 0);

async function logits(model: GPT2, ids: Int32Array): Promise<Float32Array> {
  return noGrad(async () => {
    const out = model.forward(tensor(ids, [B, T], { backend: model.backend }));
    const values = await out.toFloat32();
    out.dispose();
    return values;
  });
}

/** The masked cross-entropy of the model on random ids, recorded for backward. */
function loss(model: GPT2, seed: number): Tensor {
  const { backend } = model;
  const out = model.forward(tensor(randomInts(B * T, seed, 1, V), [B, T], { backend }));
  return crossEntropy(out, tensor(randomInts(B * T, seed, 2, V), [B * T], { backend }), new Float32Array(B * T).fill(1));
}

async function values(params: [string, Tensor][]): Promise<Map<string, Float32Array>> {
  return new Map(await Promise.all(params.map(async ([name, p]) => [name, await p.toFloat32()] as const)));
}

const quiet = { onWarning: () => {} };

function distance(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] - b[i]) ** 2;
  return Math.sqrt(sum);
}

/** How many elements differ (vitest's diff of two long arrays takes minutes). */
function differing(a: ArrayLike<number> | undefined, b: ArrayLike<number>): number {
  if (a === undefined || a.length !== b.length) return Infinity;
  let count = 0;
  for (let i = 0; i < b.length; i++) if (!Object.is(a[i], b[i])) count++;
  return count;
}

describe('LoRA adapters on a GPT-2', () => {
  it('are named and shaped as PEFT\'s, freeze the base, and report their settings', () => {
    const { model } = randomModel('tiny', { seed: 1, backend: cpu });
    const C = model.config.n_embd;
    addLoRA(model, { rank: 4, alpha: 8, dropout: 0.1, targets: ['c_attn', 'mlp.c_proj'] });
    expect(loraSettings(model)).toEqual({ rank: 4, alpha: 8, dropout: 0.1, targets: ['c_attn', 'mlp.c_proj'] });
    const shapes = new Map(loraParameters(model).map(([name, p]) => [name, p.shape]));
    expect([...shapes.keys()]).toEqual([
      'h.0.attn.c_attn.lora_A.weight', 'h.0.attn.c_attn.lora_B.weight', 'h.0.mlp.c_proj.lora_A.weight', 'h.0.mlp.c_proj.lora_B.weight',
      'h.1.attn.c_attn.lora_A.weight', 'h.1.attn.c_attn.lora_B.weight', 'h.1.mlp.c_proj.lora_A.weight', 'h.1.mlp.c_proj.lora_B.weight',
    ]);
    expect(shapes.get('h.0.attn.c_attn.lora_A.weight')).toEqual([4, C]);
    expect(shapes.get('h.0.attn.c_attn.lora_B.weight')).toEqual([3 * C, 4]);
    expect(shapes.get('h.1.mlp.c_proj.lora_A.weight')).toEqual([4, 4 * C]);
    expect(model.namedTrainableParameters().map(([name]) => name)).toEqual([...shapes.keys()]);
    // The model's state still holds every base parameter, and the adapters with them.
    expect(model.namedParameters()).toHaveLength(2 + 2 * 12 + 2 + 8);
    expect(() => addLoRA(model, { rank: 2 })).toThrow(/already has adapters/);
    expect(loraSettings(randomModel('tiny', { backend: cpu }).model)).toBeNull();
  });

  it('refuses bad options by name', () => {
    const { model } = randomModel('tiny', { backend: cpu });
    expect(() => addLoRA(model, { rank: 0 })).toThrow('addLoRA: rank must be a positive integer, got 0');
    expect(() => addLoRA(model, { rank: 2, dropout: 1 })).toThrow('addLoRA: dropout must be in [0, 1), got 1');
    expect(() => addLoRA(model, { rank: 2, targets: ['c_attn', 'wte' as 'c_fc'] })).toThrow(/addLoRA: targets must be distinct names among c_attn, attn\.c_proj, c_fc, mlp\.c_proj, lm_head/);
    expect(() => addLoRA(model, { rank: 2, targets: ['lm_head', 'lm_head'] })).toThrow(/addLoRA: targets must be distinct names/);
    expect(loraSettings(model)).toBeNull();
  });

  it('on the head: lm_head.lora_A [r, n_embd] and lora_B [vocab, r] after the blocks\', A drawn with a seed of its own, B zero', async () => {
    const { model } = randomModel('tiny', { seed: 1, backend: cpu });
    const C = model.config.n_embd;
    addLoRA(model, { rank: 4, seed: 9, targets: ['lm_head', 'c_fc'] });
    expect(loraSettings(model)).toEqual({ rank: 4, alpha: 4, dropout: 0, targets: ['c_fc', 'lm_head'] });
    expect(loraParameters(model).map(([name, p]) => [name, p.shape])).toEqual([
      ['h.0.mlp.c_fc.lora_A.weight', [4, C]], ['h.0.mlp.c_fc.lora_B.weight', [4 * C, 4]],
      ['h.1.mlp.c_fc.lora_A.weight', [4, C]], ['h.1.mlp.c_fc.lora_B.weight', [4 * C, 4]],
      ['lm_head.lora_A.weight', [4, C]], ['lm_head.lora_B.weight', [V, 4]],
    ]);
    expect(model.namedTrainableParameters().map(([name]) => name)).toEqual(loraParameters(model).map(([name]) => name));
    const v = await values(loraParameters(model));
    const A = v.get('lm_head.lora_A.weight')!;
    const bound = 1 / Math.sqrt(C);
    expect(Math.max(...A.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...A.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    for (const block of ['h.0.mlp.c_fc', 'h.1.mlp.c_fc']) expect(differing(v.get(`${block}.lora_A.weight`), A), block).toBeGreaterThan(A.length / 2);
    expect(v.get('lm_head.lora_B.weight')!.every((x) => x === 0)).toBe(true);
    // The head alone: the same draw, whichever other targets are chosen.
    const headOnly = randomModel('tiny', { seed: 1, backend: cpu }).model;
    addLoRA(headOnly, { rank: 4, seed: 9, targets: ['lm_head'] });
    expect(loraSettings(headOnly)).toEqual({ rank: 4, alpha: 4, dropout: 0, targets: ['lm_head'] });
    expect(differing(await headOnly.lm_head.lora_A!.weight.toFloat32(), A)).toBe(0);
  });

  it('on an untied head (a matrix of its own): logits x·Wᵀ with that matrix, moved by the adapter', async () => {
    const seed = freshSeed();
    const model = new GPT2(PRESETS.tiny, cpu, { untiedHead: true });
    initializeWeights(model, seed);
    const C = model.config.n_embd;
    model.replaceParameter('lm_head.weight', tensor(randomArray(V * C, seed, 5), [V, C], { backend: cpu }));
    const ids = randomInts(B * T, seed, 3, V);
    const x = await noGrad(() => model.hidden(tensor(ids, [B, T], { backend: cpu })).toFloat32());
    const W = await model.lm_head.weight!.toFloat32();
    const plain = await logits(model, ids);
    const byHand = Float32Array.from(plain, (_, i) => {
      const [row, v] = [Math.floor(i / V), i % V];
      let dot = 0;
      for (let c = 0; c < C; c++) dot += x[row * C + c] * W[v * C + c];
      return dot;
    });
    expectClose(plain, byHand, { tolerance: 1e-5, floor: largest(byHand), seed });
    addLoRA(model, { rank: 2, targets: ['lm_head'], seed });
    expect(loraParameters(model).map(([name]) => name)).toEqual(['lm_head.lora_A.weight', 'lm_head.lora_B.weight']);
    model.replaceParameter('lm_head.lora_B.weight', tensor(randomArray(V * 2, seed, 6), [V, 2], { backend: cpu }));
    expect(maxRelativeError(await logits(model, ids), plain, largest(plain)), 'the adapter moved the logits').toBeGreaterThan(1e-2);
    model.dispose();
  });

  it('mergeLoRA refuses an adapter on the head, naming why, and merges nothing', async () => {
    const model = withDrawnAdapters(cpu, 4, ['c_attn', 'lm_head']);
    const before = await model.h[0].attn.c_attn.weight.toFloat32();
    await expect(mergeLoRA(model)).rejects.toThrow(/mergeLoRA: an adapter on lm_head cannot be merged: GPT-2's output head is its token embedding \(wte\), which also embeds the input tokens.*run the adapter unmerged/);
    expect(loraSettings(model)?.targets).toEqual(['c_attn', 'lm_head']);
    expect(differing(await model.h[0].attn.c_attn.weight.toFloat32(), before)).toBe(0);
  });

  it('draws A as PEFT does (uniform in ±1/sqrt(in)), seeded, and starts B at zero', async () => {
    const draw = async (seed: number) => {
      const { model } = randomModel('tiny', { backend: cpu });
      addLoRA(model, { rank: 3, seed });
      return values(loraParameters(model));
    };
    const [a, again, other] = [await draw(5), await draw(5), await draw(6)];
    for (const [name, v] of a) expect(differing(again.get(name), v), name).toBe(0);
    const bound = 1 / Math.sqrt(PRESETS.tiny.n_embd);
    const A = a.get('h.0.attn.c_attn.lora_A.weight')!;
    expect(Math.max(...A.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...A.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    expect(differing(other.get('h.0.attn.c_attn.lora_A.weight'), A)).toBeGreaterThan(A.length / 2);
    expect(differing(a.get('h.1.attn.c_attn.lora_A.weight'), A)).toBeGreaterThan(A.length / 2);
    for (const [name, v] of a) if (name.includes('lora_B')) expect(v.every((x) => x === 0), name).toBe(true);
  });
});

describe.each(backends)('LoRA on %s', (_name, backend) => {
  it.runIf(backend !== null)('with B = 0 gives the base model\'s logits exactly, while training and at inference', async () => {
    const seed = freshSeed();
    const ids = randomInts(B * T, seed, 3, V);
    const recorded = async (model: GPT2) => {
      model.train();
      const out = model.forward(tensor(ids, [B, T], { backend: backend! }));
      const v = await out.toFloat32();
      out.dispose();
      model.eval();
      return v;
    };
    const { model } = randomModel('tiny', { seed, backend: backend! });
    const [base, baseTraining] = [await logits(model, ids), await recorded(model)];
    addLoRA(model, { rank: 4, alpha: 16, seed });
    // Training composes matmul, GELU and adds in both: x·W + b + 0 is x·W + b.
    expect(differing(await recorded(model), baseTraining)).toBe(0);
    // At inference the base fuses GELU and the residual into its matmul's store, which an adapted
    // layer cannot (its update comes before the GELU): the fused store rounds where the separate
    // ops do, so the logits are still exact.
    expect(differing(await logits(model, ids), base)).toBe(0);
    model.dispose();
    // c_attn has no epilogue: its update rides as the matmul's residual.
    const attentionOnly = randomModel('tiny', { seed, backend: backend! }).model;
    addLoRA(attentionOnly, { rank: 4, alpha: 16, seed, targets: ['c_attn'] });
    expect(differing(await logits(attentionOnly, ids), base)).toBe(0);
    attentionOnly.dispose();
    // Every target, the head's too: logits + 0.
    const everywhere = randomModel('tiny', { seed, backend: backend! }).model;
    addLoRA(everywhere, { rank: 4, alpha: 16, seed, targets: LORA_TARGETS });
    expect(differing(await recorded(everywhere), baseTraining)).toBe(0);
    expect(differing(await logits(everywhere, ids), base)).toBe(0);
    everywhere.dispose();
  });

  it.runIf(backend !== null)('on the head moves the logits by (alpha/r)·(x·Aᵀ)·Bᵀ (on the host, float64) and leaves the hidden states as they were', async () => {
    const seed = freshSeed();
    const ids = randomInts(B * T, seed, 3, V);
    const hidden = (model: GPT2) => noGrad(() => model.hidden(tensor(ids, [B, T], { backend: backend! })).toFloat32());
    const base = randomModel('tiny', { seed, backend: backend! }).model;
    const [baseLogits, baseHidden] = [await logits(base, ids), await hidden(base)];
    base.dispose();
    const model = withDrawnAdapters(backend!, seed, ['lm_head']);
    const x = await hidden(model);
    expect(differing(x, baseHidden), 'the head\'s adapter leaves wte, and so the hidden states, alone').toBe(0);
    const adapters = await values(loraParameters(model));
    const [A, Bm] = [adapters.get('lm_head.lora_A.weight')!, adapters.get('lm_head.lora_B.weight')!];
    const [C, r, scale] = [PRESETS.tiny.n_embd, 4, 8 / 4];
    const expected = new Float32Array(baseLogits.length);
    for (let row = 0; row < B * T; row++) {
      const low = Array.from({ length: r }, (_, k) => {
        let dot = 0;
        for (let c = 0; c < C; c++) dot += x[row * C + c] * A[k * C + c];
        return dot;
      });
      for (let v = 0; v < V; v++) {
        let update = 0;
        for (let k = 0; k < r; k++) update += low[k] * Bm[v * r + k];
        expected[row * V + v] = baseLogits[row * V + v] + scale * update;
      }
    }
    const actual = await logits(model, ids);
    model.dispose();
    expect(maxRelativeError(baseLogits, actual, largest(actual)), 'the adapter moved the logits').toBeGreaterThan(1e-2);
    expectClose(actual, expected, { tolerance: 1e-5, floor: largest(expected), seed });
  });

  it.runIf(backend !== null)('on the head gives the full forward\'s logits through the KV cache and the serving step', async () => {
    const seed = freshSeed();
    const model = withDrawnAdapters(backend!, seed, ['c_attn', 'lm_head']);
    const sequence = randomInts(9, seed, 4, V);
    const ids = (values: ArrayLike<number>) => tensor(Int32Array.from(values), [1, values.length], { backend: backend! });
    const full = await noGrad(() => model.forward(ids(sequence))).toFloat32(); // [1, 9, V]
    const row = (t: number) => full.subarray(t * V, (t + 1) * V);
    const close = (actual: Float32Array, expected: Float32Array, what: string) => expect(maxRelativeError(actual, expected, largest(expected)), what).toBeLessThanOrEqual(1e-5);

    // A prefill of 5 tokens, then one token a step.
    const cache = new KVCache(model.config, 1, backend!);
    close(await noGrad(() => model.forward(ids(sequence.subarray(0, 5)), { cache })).toFloat32(), full.subarray(0, 5 * V), 'prefill');
    for (let t = 5; t < 9; t++) close(await noGrad(() => model.forward(ids([sequence[t]]), { cache, lastOnly: true })).toFloat32(), row(t), `cached step ${t}`);
    cache.dispose();

    // Continuous batching's step: the prompt joins, then decodes a token.
    const pool = new KVCachePool(model.config, 2, backend!);
    const slot = pool.acquire();
    const step = (fed: ArrayLike<number>) => noGrad(() => model.head(model.stepHidden(pool, [{ slot, ids: Array.from(fed) }]))).toFloat32();
    close(await step(sequence.subarray(0, 8)), row(7), 'joining step');
    close(await step([sequence[8]]), row(8), 'decoding step');
    pool.dispose();
    // Without the head's adapter these logits are far from the ones every path above gave.
    model.lm_head.removeAdapter();
    const withoutHead = await noGrad(() => model.forward(ids(sequence))).toFloat32();
    expect(maxRelativeError(withoutHead, full, largest(full)), 'the head\'s adapter moves these logits').toBeGreaterThan(1e-2);
    model.dispose();
  });

  it.runIf(backend !== null).each(['f32', 'f16', 'bf16'] as const)(
    'fine-tunes on the shipped data over a frozen %s base: the loss falls, the base stays, merged and unmerged agree',
    async (dtype) => {
      const seed = freshSeed();
      const source = randomModel('tiny', { seed, backend: cpu }).model;
      const weights = await hostWeights(source);
      source.dispose();
      const { model } = modelFromStateDict(PRESETS.tiny, weights, 'test', [], backend!, { dtype });
      const ids = randomInts(B * T, seed, 3, V);
      const [base, baseWeights] = [await logits(model, ids), await values(model.namedParameters())];
      addLoRA(model, { rank: 8, alpha: 16, dropout: 0.05, seed });
      // One batch, five times: each step lowers its loss (measured 10.81 → 10.53 on the CPU).
      const { records } = await fineTune(model, DATA.slice(0, 4), {
        epochs: 5, batchSize: 4, learningRate: 1e-2, warmupSteps: 0, lrSchedule: 'constant', valFraction: 0, shuffle: false, maxLength: 32, ...quiet,
      });
      expect(records.at(-1)!.loss, records.map((r) => r.loss).join(' ')).toBeLessThan(records[0].loss - 0.15);
      const after = await values(model.namedParameters());
      for (const [name, v] of baseWeights) expect(differing(after.get(name), v), name).toBe(0);

      const unmerged = await logits(model, ids);
      expect(maxRelativeError(unmerged, base), 'training moved the logits').toBeGreaterThan(1e-3);
      // W + (alpha/r)·(B·A)ᵀ on the host, in float64, for one layer.
      const [W, A, Bm] = ['weight', 'lora_A.weight', 'lora_B.weight'].map((n) => after.get(`h.0.attn.c_attn.${n}`)!);
      const [C, out, r] = [PRESETS.tiny.n_embd, 3 * PRESETS.tiny.n_embd, 8];
      const expected = Float32Array.from(W, (w, i) => {
        const [row, col] = [Math.floor(i / out), i % out];
        let delta = 0;
        for (let k = 0; k < r; k++) delta += Bm[col * r + k] * A[k * C + row];
        return w + 2 * delta;
      });
      await mergeLoRA(model);
      expect(loraSettings(model)).toBeNull();
      expect(loraParameters(model)).toEqual([]);
      expect(model.h[1].mlp.c_fc.weight.dtype).toBe(dtype);
      // f32: a kernel's rounding (the kernel tests' 1e-4); 16 bits round each merged weight once more (half an ulp: 2^-11 relative in f16, 2^-8 in bf16).
      expectClose(await model.h[0].attn.c_attn.weight.toFloat32(), expected, { tolerance: { f32: 1e-4, f16: 2 ** -11, bf16: 2 ** -8 }[dtype], seed });
      const merged = await logits(model, ids);
      if (dtype === 'f32') {
        // Against the largest logit, as in the test above (a wrong merge there is far off).
        expectClose(merged, unmerged, { tolerance: 1e-5, floor: unmerged.reduce((m, x) => Math.max(m, Math.abs(x)), 0), seed });
      } else {
        // Rounding the merged weights to 16 bits moves the logits by a small part of what the adapters moved them.
        expect(distance(merged, unmerged)).toBeLessThan(0.05 * distance(unmerged, base));
      }
      model.dispose();
    },
  );

  it.runIf(backend !== null)('merged gives the unmerged logits to 1e-5 of their scale; a wrong scale, an untransposed B·A or a layer left out do not', async () => {
    const seed = freshSeed();
    const [rank, alpha] = [4, 8];
    const ids = randomInts(B * T, seed, 3, V);
    // Adapters that move the logits far (B drawn instead of zero), so a wrong merge shows far above 1e-5.
    const adapted = () => {
      const { model } = randomModel('tiny', { seed, backend: backend! });
      addLoRA(model, { rank, alpha, seed });
      for (const [index, [name, p]] of loraParameters(model).entries()) {
        if (name.endsWith('lora_B.weight')) model.replaceParameter(name, tensor(randomArray(p.size, seed, 10 + index, -0.05, 0.05), p.shape, { backend: backend! }));
      }
      return model;
    };
    const base = randomModel('tiny', { seed, backend: backend! }).model;
    const baseLogits = await logits(base, ids);
    const model = adapted();
    const unmerged = await logits(model, ids);
    const adapters = await values(loraParameters(model));
    await mergeLoRA(model);
    const merged = await logits(model, ids);
    model.dispose();
    // The error against the largest logit: f32 rounding measures ~1e-7 of it (CPU) and ~1e-6 (WebGPU).
    // maxRelativeError's default floor (1e-3 of the largest) reads the same rounding on logits near
    // zero as up to 1e-4, which is why a per-element relative check needed 5e-4.
    const scale = unmerged.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    const error = (actual: Float32Array) => maxRelativeError(actual, unmerged, scale);
    expect(error(baseLogits), 'the adapters moved the logits').toBeGreaterThan(1e-2);
    expect(error(merged), `replay with TEST_SEED=${seed}`).toBeLessThanOrEqual(1e-5);

    // The same check on merges done here, right and wrong: W += s·(B·A)ᵀ, in float64 on the host.
    type Merge = { scale: number; transposed: boolean; skip: string | null };
    const mergedOnHost = async ({ scale: s, transposed, skip }: Merge) => {
      const target = randomModel('tiny', { seed, backend: backend! }).model;
      const weights = await values(target.namedParameters());
      for (const [name, W] of weights) {
        const prefix = name.slice(0, -'weight'.length);
        const [A, Bm] = [adapters.get(`${prefix}lora_A.weight`), adapters.get(`${prefix}lora_B.weight`)];
        if (A === undefined || Bm === undefined || name === skip) continue;
        const [inF, outF] = [A.length / rank, Bm.length / rank];
        const updated = Float32Array.from(W, (w, i) => {
          // Element (row, col) of the [in, out] weight; untransposed, element i of B·A [out, in] instead.
          const [row, col] = transposed ? [i % inF, Math.floor(i / inF)] : [Math.floor(i / outF), i % outF];
          let delta = 0;
          for (let k = 0; k < rank; k++) delta += Bm[col * rank + k] * A[k * inF + row];
          return w + s * delta;
        });
        target.replaceParameter(name, tensor(updated, [inF, outF], { backend: backend! }));
      }
      const out = await logits(target, ids);
      target.dispose();
      return out;
    };
    const right: Merge = { scale: alpha / rank, transposed: false, skip: null };
    expect(error(await mergedOnHost(right))).toBeLessThanOrEqual(1e-5);
    for (const wrong of [{ scale: alpha }, { scale: 1 }, { transposed: true }, { skip: 'h.1.mlp.c_proj.weight' }, { skip: 'h.0.attn.c_proj.weight' }]) {
      expect(error(await mergedOnHost({ ...right, ...wrong })), JSON.stringify(wrong)).toBeGreaterThan(1e-3);
    }
    base.dispose();
  });

  it.runIf(backend !== null)('leaves the base frozen: no gradient, no flat slot or moments, no weight-gradient matmul', () => {
    const seed = freshSeed();
    const products: MatmulShape[] = [];
    // Every matmul the backend is asked for, with its shape (products of transposed A are weight gradients).
    const watched = new Proxy(backend!, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (prop === 'matmul') return (...args: Parameters<Backend['matmul']>) => (products.push(args[3]), target.matmul(...args));
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const weightGradients = (model: GPT2) => {
      const l = loss(model, seed);
      products.length = 0;
      backward(l);
      l.dispose();
      return products.filter((s) => s.transA).map((s) => [s.m, s.n].join('x')).sort();
    };

    const full = randomModel('tiny', { seed, backend: watched }).model;
    const fullProducts = weightGradients(full);
    // Every linear's weight and the tied head's [V, C]: one product each.
    const C = full.config.n_embd;
    const layer = [`${C}x${3 * C}`, `${C}x${C}`, `${C}x${4 * C}`, `${4 * C}x${C}`];
    expect(fullProducts).toEqual([...layer, ...layer, `${V}x${C}`].sort());
    full.dispose();

    const model = randomModel('tiny', { seed, backend: watched }).model;
    addLoRA(model, { rank: 3, seed });
    const adapters = loraParameters(model);
    expect(weightGradients(model)).toEqual(adapters.map(([, p]) => p.shape.join('x')).sort());
    for (const [name, p] of model.namedParameters()) {
      expect(p.grad === null, name).toBe(!name.includes('.lora_'));
    }

    const optimizer = new AdamW(model);
    expect(optimizer.flat.slots.map((s) => s.name)).toEqual(adapters.map(([name]) => name));
    expect([...optimizer.moments.keys()]).toEqual(adapters.map(([name]) => name));
    const adapterSize = adapters.reduce((n, [, p]) => n + p.size, 0);
    const flatSize = optimizer.flat.blockSizes.reduce((a, b) => a + b, 0);
    expect(flatSize).toBeGreaterThanOrEqual(adapterSize);
    expect(flatSize).toBeLessThan(adapterSize + adapters.length * watched.viewAlignment);
    // The frozen base's tensors are not views of the flat buffers: they keep no gradient target.
    for (const [name, p] of model.namedParameters()) expect(p.gradTarget === null, name).toBe(!name.includes('.lora_'));
    optimizer.dispose();
    model.dispose();
  });

  it.runIf(backend !== null)('gives the adapter\'s gradients of float64 differences and the CPU reference (base frozen, GELU and a residual after)', async () => {
    const seed = freshSeed();
    const [rows, inF, outF, rank, alpha] = [2 * 5, 7, 11, 3, 5];
    const f = (x: Tensor, w: Tensor, b: Tensor, a: Tensor, bm: Tensor, residual: Tensor) => {
      const layer = new Linear(inF, outF, x.backend);
      layer.addAdapter(rank, alpha, 0, 0);
      layer.dispose(); // its own zeros and draws: the inputs take their places
      Object.assign(layer, { weight: w, bias: b });
      Object.assign(layer.lora_A!, { weight: a });
      Object.assign(layer.lora_B!, { weight: bm });
      return layer.forward(x, { gelu: true, residual });
    };
    const inputs = [
      { data: randomArray(rows * inF, seed, 1), shape: [2, 5, inF] },
      { data: randomArray(inF * outF, seed, 2, -0.5, 0.5), shape: [inF, outF], requiresGrad: false },
      { data: randomArray(outF, seed, 3, -0.1, 0.1), shape: [outF], requiresGrad: false },
      { data: randomArray(rank * inF, seed, 4, -0.4, 0.4), shape: [rank, inF] },
      { data: randomArray(outF * rank, seed, 5, -0.4, 0.4), shape: [outF, rank] },
      { data: randomArray(rows * outF, seed, 6), shape: [2, 5, outF], requiresGrad: false },
    ];
    const result = await gradcheck(f, inputs, { backend: backend!, seed });
    expect(result.maxError, `replay with TEST_SEED=${seed}`).toBeLessThan(1e-4);
    if (backend !== cpu) {
      const reference = await gradcheck(f, inputs, { backend: cpu, seed });
      for (const k of [0, 3, 4]) expectClose(result.analytic[k]!, reference.analytic[k]!, { tolerance: 1e-4, seed });
    }
  });

  it.runIf(backend !== null)('gives the head adapter\'s gradients of float64 differences and the CPU reference (W, the tied embedding, frozen)', async () => {
    const seed = freshSeed();
    const [rows, C, vocab, rank, alpha] = [2 * 5, 7, 13, 3, 5];
    const f = (x: Tensor, w: Tensor, a: Tensor, bm: Tensor) => {
      const head = new OutputHead(C, vocab, x.backend);
      head.addAdapter(rank, alpha, 0, 0);
      head.dispose(); // its own zeros and draws: the inputs take their places
      Object.assign(head.lora_A!, { weight: a });
      Object.assign(head.lora_B!, { weight: bm });
      return head.forward(x, w);
    };
    const inputs = [
      { data: randomArray(rows * C, seed, 1), shape: [2, 5, C] },
      { data: randomArray(vocab * C, seed, 2, -0.5, 0.5), shape: [vocab, C], requiresGrad: false },
      { data: randomArray(rank * C, seed, 3, -0.4, 0.4), shape: [rank, C] },
      { data: randomArray(vocab * rank, seed, 4, -0.4, 0.4), shape: [vocab, rank] },
    ];
    const result = await gradcheck(f, inputs, { backend: backend!, seed });
    expect(result.maxError, `replay with TEST_SEED=${seed}`).toBeLessThan(1e-4);
    expect(result.analytic[1], 'no gradient for the frozen embedding').toBeNull();
    if (backend !== cpu) {
      const reference = await gradcheck(f, inputs, { backend: cpu, seed });
      for (const k of [0, 2, 3]) expectClose(result.analytic[k]!, reference.analytic[k]!, { tolerance: 1e-4, seed });
    }
  });
});

describe('Module: trainable and frozen parameters', () => {
  it('replaceParameter and loadStateDict keep whether a parameter trains; freeze stops all', async () => {
    const { model } = randomModel('tiny', { backend: cpu });
    model.ln_f.freeze();
    model.replaceParameter('ln_f.weight', tensor(new Float32Array(PRESETS.tiny.n_embd).fill(2), [PRESETS.tiny.n_embd], { backend: cpu }));
    model.replaceParameter('h.0.ln_1.bias', tensor(new Float32Array(PRESETS.tiny.n_embd), [PRESETS.tiny.n_embd], { backend: cpu }));
    const trainable = () => new Set(model.namedTrainableParameters().map(([name]) => name));
    expect(trainable().has('ln_f.weight')).toBe(false);
    expect(trainable().has('ln_f.bias')).toBe(false);
    expect(trainable().has('h.0.ln_1.bias')).toBe(true);
    model.loadStateDict(await hostWeights(model));
    expect(trainable().size).toBe(model.namedParameters().length - 2);
    expect(await model.ln_f.weight.toFloat32()).toEqual(new Float32Array(PRESETS.tiny.n_embd).fill(2));
    model.freeze();
    expect(trainable().size).toBe(0);
    expect(() => new AdamW(model)).toThrow('the model has no trainable parameter (all are frozen)');
  });
});
