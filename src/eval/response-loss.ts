/**
 * The mean cross-entropy of a model over the response tokens of encoded examples (the prompt's
 * targets do not count), token-weighted as the trainer's validation loss is.
 */
import type { GPT2 } from '../gpt/model.js';
import { tensor } from '../tensor/create.js';
import { crossEntropy, embedding } from '../tensor/fused.js';
import { noGrad } from '../tensor/graph.js';
import { reshape } from '../tensor/ops.js';
import { keep, tidy } from '../tensor/scope.js';
import { collate } from '../train/collate.js';
import type { EncodedExample } from '../train/instruction-data.js';

/** Sum of the response tokens' losses and their count for one example (cut to the context). */
export async function responseLoss(model: GPT2, example: EncodedExample, contextLength: number): Promise<{ sum: number; tokens: number }> {
  const batch = collate([example], contextLength, { maskPrompt: true });
  const rows: number[] = [];
  batch.mask.forEach((m, i) => m !== 0 && rows.push(i));
  if (rows.length === 0) return { sum: 0, tokens: 0 };
  const backend = model.backend;
  const loss = tidy(() =>
    noGrad(() => {
      const ids = tensor(batch.inputs, [1, batch.seqLen], { backend });
      const hidden = reshape(model.hidden(ids), [batch.seqLen, -1]); // [T, C]
      const counted = embedding(tensor(Int32Array.from(rows), [rows.length], { backend }), hidden); // [N, C]
      const targets = tensor(Int32Array.from(rows, (i) => batch.targets[i]), [rows.length], { backend });
      return keep(crossEntropy(model.head(counted), targets, new Float32Array(rows.length).fill(1)));
    }),
  );
  const mean = await loss.item();
  loss.dispose();
  return { sum: mean * rows.length, tokens: rows.length };
}
