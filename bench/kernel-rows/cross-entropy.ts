/**
 * Bench row for cross-entropy over GPT-2's vocabulary: logits [8·128, 50257], loss and dLogits in one
 * call. GB/s counts the bytes that must move at least once: logits read, dLogits written (the kernel
 * reads each row twice, the second time usually from cache), targets and weights.
 */
import { medianMs } from '../harness.js';
import type { Backend } from '../../src/tensor/backend.js';
import type { BenchRow } from './types.js';

export async function crossEntropyRows(backend: Backend, copyGbps: number): Promise<BenchRow[]> {
  const rows = 8 * 128;
  const vocab = 50257;
  const logits = backend.random(rows * vocab, 1, 'normal');
  const targets = backend.upload(Int32Array.from({ length: rows }, (_, r) => (r * 7919) % vocab));
  const weights = backend.fill(rows, 1 / rows, 'f32');
  const ms = await medianMs(backend, () => {
    const { loss, dLogits } = backend.crossEntropy(logits, targets, weights, rows, vocab);
    backend.release(loss);
    backend.release(dLogits);
  });
  const bytes = (2 * rows * vocab + 2 * rows) * 4;
  const gbps = bytes / ms / 1e6;
  for (const s of [logits, targets, weights]) backend.release(s);
  return [{ op: 'cross_entropy', shape: [rows, vocab], ms, gbps, fraction_of_copy: gbps / copyGbps }];
}
