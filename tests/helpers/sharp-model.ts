/**
 * The tiny preset (d 32, 2 layers, 64 positions, GPT-2's vocabulary) with its matrices (but the tied
 * embedding) scaled by 5: at GPT-2's init scale a random model mostly repeats its last token, which
 * would let a cache or a position mix-up pass; scaled, its greedy output varies with the context.
 */
import { PRESETS } from '../../src/gpt/config.js';
import { initializeWeights } from '../../src/gpt/init.js';
import { GPT2 } from '../../src/gpt/model.js';
import type { Backend } from '../../src/tensor/backend.js';
import { noGrad } from '../../src/tensor/graph.js';
import { mul } from '../../src/tensor/ops.js';

export function sharpTinyModel(backend: Backend, seed: number): GPT2 {
  const model = new GPT2(PRESETS.tiny, backend);
  initializeWeights(model, seed);
  noGrad(() => {
    for (const [name, p] of model.namedParameters()) if (p.rank >= 2 && name !== 'wte.weight') model.replaceParameter(name, mul(p, 5));
  });
  return model.eval();
}
