/**
 * Bench rows for GELU at GPT-2 small's MLP activation, [8·128, 3072]: forward (reads x, writes y) and
 * backward (reads x and dy, writes dx). GB/s = those bytes / time.
 */
import { medianMs } from '../harness.js';
import type { Backend } from '../../src/tensor/backend.js';
import type { BenchRow } from './types.js';

export async function geluRows(backend: Backend, copyGbps: number): Promise<BenchRow[]> {
  const shape = [8 * 128, 3072];
  const n = shape[0] * shape[1];
  const x = backend.random(n, 1, 'normal');
  const dy = backend.random(n, 2, 'normal');
  const fwdMs = await medianMs(backend, () => backend.release(backend.gelu(x)));
  const bwdMs = await medianMs(backend, () => backend.release(backend.geluBackward(x, dy)));
  backend.release(x);
  backend.release(dy);
  return [
    { op: 'gelu_fwd', shape, ms: fwdMs, ...rate(2 * n * 4, fwdMs, copyGbps) },
    { op: 'gelu_bwd', shape, ms: bwdMs, ...rate(3 * n * 4, bwdMs, copyGbps) },
  ];
}

function rate(bytes: number, ms: number, copyGbps: number): { gbps: number; fraction_of_copy: number } {
  const gbps = bytes / ms / 1e6;
  return { gbps, fraction_of_copy: gbps / copyGbps };
}
