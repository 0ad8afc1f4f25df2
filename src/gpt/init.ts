/**
 * GPT-2's initialisation (as in the OpenAI code and nanoGPT): weights normal(0, 0.02), biases 0,
 * LayerNorm weight 1, and the projections into the residual stream (attn.c_proj, mlp.c_proj) scaled
 * by 1/sqrt(2·n_layer) so the residual's variance does not grow with depth.
 */
import { random } from '../tensor/create.js';
import { noGrad } from '../tensor/graph.js';
import { mul } from '../tensor/ops.js';
import type { GPT2 } from './model.js';

export function initializeWeights(model: GPT2, seed: number): void {
  const std = 0.02;
  const residualStd = std / Math.sqrt(2 * model.config.n_layer);
  noGrad(() => {
    model.namedParameters().forEach(([name, p], i) => {
      if (p.rank < 2) return; // biases stay 0, LayerNorm weights 1
      const scale = name.endsWith('c_proj.weight') ? residualStd : std;
      const noise = random(p.shape, (seed * 7919 + i) >>> 0, { backend: p.backend });
      model.replaceParameter(name, mul(noise, scale));
      noise.dispose();
    });
  });
}
