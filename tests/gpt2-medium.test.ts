/**
 * The gpt2-medium preset with random weights on WebGPU: a prefill and 4 cached steps run, pushing
 * the [50257, 1024] token embedding (196 MiB, over lavapipe's 128 MiB binding limit) through the
 * gather and the tied output head.
 */
import { expect, test } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { initializeWeights } from '../src/gpt/init.js';
import { KVCache } from '../src/gpt/kv-cache.js';
import { GPT2 } from '../src/gpt/model.js';
import { tensor } from '../src/tensor/create.js';
import { noGrad } from '../src/tensor/graph.js';
import { webgpuOrSkip } from './helpers/backends.js';

test('gpt2-medium: prefill and 4 cached steps with the embedding over the binding limit', async () => {
  const gpu = await webgpuOrSkip();
  if (!gpu) return;
  const config = PRESETS['gpt2-medium'];
  const model = new GPT2(config, gpu).eval();
  initializeWeights(model, 1);
  expect(model.wte.weight.size * 4).toBeGreaterThan(gpu.gpu.maxBindingBytes);
  const cache = new KVCache(config, 1, gpu, 16);
  try {
    // Ids near the end of the vocabulary live beyond the first binding window of wte.
    let ids = Int32Array.from([50256, 50000, 31, 45000, 7, 49999, 11, 40000]);
    for (let step = 0; step < 5; step++) {
      const logits = noGrad(() => model.forward(tensor(ids, [1, ids.length], { backend: gpu }), { cache, lastOnly: true }));
      const row = await logits.toFloat32();
      logits.dispose();
      expect(row.length).toBe(config.vocab_size);
      expect(row.every(Number.isFinite)).toBe(true);
      let best = 0;
      for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
      ids = Int32Array.of(best);
    }
    expect(cache.length).toBe(12);
  } finally {
    cache.dispose();
    model.dispose();
  }
});
