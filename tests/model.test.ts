/**
 * GPT-2 model: WebGPU logits equal the CPU backend's on a tiny model written to a folder; save →
 * load gives identical tensors and logits; the cached forward (prefill, then one token at a time)
 * equals the uncached forward at every position.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { loadGpt2Weights, saveGpt2Weights } from '../src/node/weights-folder.js';
import { initializeWeights } from '../src/gpt/init.js';
import { KVCache } from '../src/gpt/kv-cache.js';
import { GPT2 } from '../src/gpt/model.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { noGrad } from '../src/tensor/graph.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomInts } from './helpers/random-data.js';
import { freshDir } from './helpers/weights-fixtures.js';

const config = PRESETS.tiny;
// A whole forward chains ~10 f32 reductions (matmuls over C and 4C, layernorms, softmax over 50257)
// whose summation order differs between backends; measured up to 1.2e-4 over many seeds, so the
// model-level checks allow 5e-4 (each kernel alone is held to 1e-4 in its own tests).
const MODEL_TOLERANCE = 5e-4;
const models: GPT2[] = [];
afterEach(() => models.splice(0).forEach((m) => m.dispose()));

function build(backend: Backend, seed: number): GPT2 {
  const model = new GPT2(config, backend);
  initializeWeights(model, seed);
  models.push(model);
  return model.eval();
}

async function logits(model: GPT2, ids: Int32Array, shape: number[]): Promise<Float32Array> {
  const out = noGrad(() => model.forward(tensor(ids, shape, { backend: model.backend })));
  const data = await out.toFloat32();
  out.dispose();
  return data;
}

async function hostWeights(model: GPT2) {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, p] of model.namedParameters()) out.set(name, { shape: [...p.shape], data: await p.toFloat32() });
  return out;
}

describe('GPT-2 model', () => {
  test('WebGPU logits equal the CPU backend on a tiny model loaded from a folder', async () => {
    const gpu = await webgpuOrSkip();
    if (!gpu) return;
    const seed = freshSeed();
    const source = build(cpu, seed);
    const folder = await freshDir();
    await saveGpt2Weights(folder, config, await hostWeights(source));
    const { config: loadedConfig, weights } = await loadGpt2Weights(folder);
    expect(loadedConfig.n_embd).toBe(config.n_embd);
    const onCpu = new GPT2(loadedConfig, cpu).eval();
    const onGpu = new GPT2(loadedConfig, gpu).eval();
    models.push(onCpu, onGpu);
    onCpu.loadStateDict(weights, folder);
    onGpu.loadStateDict(weights, folder);
    const ids = randomInts(2 * 13, seed, 1, config.vocab_size);
    const expected = await logits(onCpu, ids, [2, 13]);
    expectClose(await logits(onGpu, ids, [2, 13]), expected, { tolerance: MODEL_TOLERANCE, seed });
    // Save → load keeps every tensor bit for bit.
    expectClose(await logits(source, ids, [2, 13]), expected, { tolerance: 0, seed });
  });

  for (const name of ['cpu', 'webgpu'] as const) {
    test(`cached forward equals the uncached forward at every position (${name})`, async () => {
      const backend = name === 'cpu' ? cpu : await webgpuOrSkip();
      if (!backend) return;
      const seed = freshSeed();
      const model = build(backend, seed);
      const T = 11;
      const prefill = 4;
      const ids = randomInts(T, seed, 2, config.vocab_size);
      const full = await logits(model, ids, [1, T]);
      const V = config.vocab_size;
      const cache = new KVCache(config, 1, backend);
      try {
        const first = noGrad(() => model.forward(tensor(ids.slice(0, prefill), [1, prefill], { backend }), { cache }));
        expectClose(await first.toFloat32(), full.slice(0, prefill * V), { tolerance: MODEL_TOLERANCE, seed });
        first.dispose();
        for (let t = prefill; t < T; t++) {
          const step = noGrad(() => model.forward(tensor(ids.slice(t, t + 1), [1, 1], { backend }), { cache }));
          expectClose(await step.toFloat32(), full.slice(t * V, (t + 1) * V), { tolerance: MODEL_TOLERANCE, seed });
          step.dispose();
        }
        expect(cache.length).toBe(T);
      } finally {
        cache.dispose();
      }
    });
  }
});
