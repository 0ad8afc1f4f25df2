/**
 * The gpt2-medium preset with random weights on WebGPU: a prefill and 4 cached steps, once on the
 * adapter's own binding limit and once on a backend whose bindings hold at most 32 MiB, which splits
 * the [50257, 1024] token embedding (196 MiB) into windows in the gather and the tied output head
 * on any adapter. Both runs see the same weights and the same tokens, and their logits must agree.
 */
import { expect, test } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { initializeWeights } from '../src/gpt/init.js';
import { KVCache } from '../src/gpt/kv-cache.js';
import { GPT2 } from '../src/gpt/model.js';
import type { WebGpuBackend } from '../src/kernels/webgpu-backend.js';
import { tensor } from '../src/tensor/create.js';
import { noGrad } from '../src/tensor/graph.js';
import { webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';

const LIMIT = 32 * 1024 * 1024;

test('gpt2-medium: prefill and 4 cached steps with the embedding split over a 32 MiB binding limit equal the run on the adapter\'s limit', async () => {
  const gpu = await webgpuOrSkip();
  if (!gpu) return;
  const config = PRESETS['gpt2-medium'];
  await withBindingLimits(gpu, LIMIT, 256, async (limited) => {
    const run = (backend: WebGpuBackend) => {
      const model = new GPT2(config, backend).eval();
      initializeWeights(model, 1);
      return { backend, model, cache: new KVCache(config, 1, backend, 16) };
    };
    const reference = run(gpu);
    const split = run(limited);
    expect(split.model.wte.weight.size * 4).toBeGreaterThan(LIMIT);
    try {
      // Ids near the end of the vocabulary live beyond the first binding windows of wte.
      let ids = Int32Array.from([50256, 50000, 31, 45000, 7, 49999, 11, 40000]);
      for (let step = 0; step < 5; step++) {
        const [expected, actual] = await Promise.all([reference, split].map(async ({ backend, model, cache }) => {
          const logits = noGrad(() => model.forward(tensor(ids, [1, ids.length], { backend }), { cache, lastOnly: true }));
          const row = await logits.toFloat32();
          logits.dispose();
          return row;
        }));
        expect(expected.length).toBe(config.vocab_size);
        expect(expected.every(Number.isFinite)).toBe(true);
        // Windows move the split points of the matmuls' K and so their rounding, nothing else.
        expectClose(actual, expected, { tolerance: 1e-3 });
        let best = 0;
        for (let v = 1; v < expected.length; v++) if (expected[v] > expected[best]) best = v;
        ids = Int32Array.of(best);
      }
      expect(split.cache.length).toBe(12);
    } finally {
      for (const { model, cache } of [reference, split]) {
        cache.dispose();
        model.dispose();
      }
    }
  });
});
