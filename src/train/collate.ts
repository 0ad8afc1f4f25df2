/**
 * Collate: a list of tokenised examples → one padded [B, T] batch of inputs, targets and loss mask,
 * as host arrays (the trainer uploads them).
 *
 * Each sequence is cut to contextLength + 1 tokens and padded with end-of-text to the longest one;
 * inputs = seq[:-1], targets = seq[1:]. A target counts in the loss when it is a real token of its
 * sequence, the appended end-of-text included (the notebook's ignore_index=50256 dropped it, so its
 * model never learned to stop); the padding after it does not. A cut sequence has lost its
 * end-of-text, and all of its targets count.
 */
import { PAD_ID } from '../gpt/tokenizer.js';
import type { EncodedExample } from './instruction-data.js';

export interface Batch {
  /** [B, T] row-major token ids. */
  inputs: Int32Array;
  /** [B, T]: the token that follows each input. */
  targets: Int32Array;
  /** [B, T]: 1 where the target counts in the loss, 0 where it does not. */
  mask: Float32Array;
  batchSize: number;
  seqLen: number;
  /** How many sequences of this batch were longer than contextLength + 1 tokens and were cut. */
  truncated: number;
}

export interface CollateOptions {
  /** Drop the targets that predict prompt tokens, so the loss is on the response alone. */
  maskPrompt: boolean;
}

export function collate(examples: readonly EncodedExample[], contextLength: number, { maskPrompt }: CollateOptions): Batch {
  if (!Number.isInteger(contextLength) || contextLength < 1) throw new RangeError(`contextLength must be a positive integer, got ${contextLength}`);
  if (examples.length === 0) throw new RangeError('collate: the batch is empty');
  const window = contextLength + 1;
  const lengths = examples.map(({ ids }) => Math.min(ids.length, window));
  const B = examples.length;
  const T = Math.max(...lengths) - 1;
  if (T < 1) throw new RangeError('collate: every sequence of the batch has fewer than two tokens');

  const inputs = new Int32Array(B * T).fill(PAD_ID);
  const targets = new Int32Array(B * T).fill(PAD_ID);
  const mask = new Float32Array(B * T);
  let truncated = 0;
  examples.forEach(({ ids, promptLength }, b) => {
    const length = lengths[b];
    if (ids.length > window) truncated++;
    // Target j predicts token j+1: a real token when j+1 < length, a prompt token when j+1 < promptLength.
    const firstCounted = maskPrompt ? Math.max(promptLength - 1, 0) : 0;
    for (let j = 0; j < length - 1; j++) {
      inputs[b * T + j] = ids[j];
      targets[b * T + j] = ids[j + 1];
      if (j >= firstCounted) mask[b * T + j] = 1;
    }
    // The last real token is still an input (the first pad it predicts does not count).
    if (length - 1 < T) inputs[b * T + length - 1] = ids[length - 1];
  });
  return { inputs, targets, mask, batchSize: B, seqLen: T, truncated };
}

/** How many examples collate will cut at this context length: the training loop warns once, up front. */
export function countTruncated(examples: readonly EncodedExample[], contextLength: number): number {
  return examples.filter(({ ids }) => ids.length > contextLength + 1).length;
}
