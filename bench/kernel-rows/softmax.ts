/**
 * Bench rows for softmax at GPT-2 small's attention-score shape [8·12·128, 128] (B·H·T rows of T):
 * forward (reads x, writes y) and backward (reads y and dy, writes dx). GB/s = those bytes / time;
 * the forward's second read of each row usually hits cache and is not counted.
 */
import { medianMs } from '../harness.js';
import type { Backend } from '../../src/tensor/backend.js';
import type { BenchRow } from './types.js';

export async function softmaxRows(backend: Backend, copyGbps: number): Promise<BenchRow[]> {
  const [rows, dim] = [8 * 12 * 128, 128];
  const n = rows * dim;
  const x = backend.random(n, 1, 'normal');
  const dy = backend.random(n, 2, 'normal');
  const y = backend.softmax(x, rows, dim);
  const fwdMs = await medianMs(backend, () => backend.release(backend.softmax(x, rows, dim)));
  const bwdMs = await medianMs(backend, () => backend.release(backend.softmaxBackward(y, dy, rows, dim)));
  for (const s of [x, dy, y]) backend.release(s);
  return [
    { op: 'softmax_fwd', shape: [rows, dim], ms: fwdMs, ...rate(2 * n * 4, fwdMs, copyGbps) },
    { op: 'softmax_bwd', shape: [rows, dim], ms: bwdMs, ...rate(3 * n * 4, bwdMs, copyGbps) },
  ];
}

function rate(bytes: number, ms: number, copyGbps: number): { gbps: number; fraction_of_copy: number } {
  const gbps = bytes / ms / 1e6;
  return { gbps, fraction_of_copy: gbps / copyGbps };
}
