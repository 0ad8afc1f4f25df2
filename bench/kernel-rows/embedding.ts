/**
 * Bench rows for the embedding at GPT-2 small's token table [50257, 768] with B·T = 8·128 ids:
 * the gather (reads the n rows, writes [n, 768]) and its backward (reads dOut [n, 768], writes the
 * whole [50257, 768] gradient, 154 MB: the write dominates, so the backward runs near copy speed
 * or not at all). GB/s = those bytes (plus ids) / time.
 */
import { medianMs } from '../harness.js';
import type { Backend } from '../../src/tensor/backend.js';
import type { BenchRow } from './types.js';

export async function embeddingRows(backend: Backend, copyGbps: number): Promise<BenchRow[]> {
  const [vocab, dim, n] = [50257, 768, 8 * 128];
  const table = backend.random(vocab * dim, 1, 'normal');
  // Token-like ids: spread over the vocabulary with repeats (a tenth of them one padding id).
  const ids = backend.upload(Int32Array.from({ length: n }, (_, i) => (i % 10 === 9 ? vocab - 1 : (i * 7919) % vocab)));
  const dOut = backend.random(n * dim, 2, 'normal');
  const gatherMs = await medianMs(backend, () => backend.release(backend.embedding(ids, table, n, vocab, dim)));
  const backwardMs = await medianMs(backend, () => backend.release(backend.embeddingBackward(ids, dOut, n, vocab, dim)), { warmup: 1, runs: 3 });
  for (const s of [table, ids, dOut]) backend.release(s);
  return [
    { op: 'embedding_gather', shape: [n, vocab, dim], ms: gatherMs, ...rate((2 * n * dim + n) * 4, gatherMs, copyGbps) },
    { op: 'embedding_bwd', shape: [n, vocab, dim], ms: backwardMs, ...rate((n * dim + vocab * dim + n) * 4, backwardMs, copyGbps) },
  ];
}

function rate(bytes: number, ms: number, copyGbps: number): { gbps: number; fraction_of_copy: number } {
  const gbps = bytes / ms / 1e6;
  return { gbps, fraction_of_copy: gbps / copyGbps };
}
