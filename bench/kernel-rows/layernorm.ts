/**
 * Bench rows for LayerNorm at GPT-2 small's shapes: [8·128, 768] and [8·1024, 768], forward and
 * backward. GB/s counts the bytes that must move at least once: forward reads x and writes y (plus
 * weight, bias, mean, rstd); backward reads dy and x and writes dx (plus weight, mean, rstd, dWeight,
 * dBias). The kernels re-read rows from cache (forward three passes, backward two), not counted.
 */
import { medianMs } from '../harness.js';
import type { Backend, Storage } from '../../src/tensor/backend.js';
import type { BenchRow } from './types.js';

export async function layerNormRows(backend: Backend, copyGbps: number): Promise<BenchRow[]> {
  const out: BenchRow[] = [];
  const C = 768;
  for (const rows of [8 * 128, 8 * 1024]) {
    const n = rows * C;
    const x = backend.random(n, 1, 'normal');
    const dy = backend.random(n, 2, 'normal');
    const weight = backend.random(C, 3, 'normal');
    const bias = backend.random(C, 4, 'normal');
    const timing = rows > 2048 ? { warmup: 1, runs: 3 } : {};
    const fwdMs = await medianMs(backend, () => release(backend, Object.values(backend.layerNorm(x, weight, bias, rows, C, 1e-5))), timing);
    const fwdBytes = (2 * n + 2 * C + 2 * rows) * 4;
    out.push(row('layernorm_fwd', [rows, C], fwdMs, fwdBytes, copyGbps));
    const f = backend.layerNorm(x, weight, bias, rows, C, 1e-5);
    const bwdMs = await medianMs(backend, () => release(backend, Object.values(backend.layerNormBackward(dy, x, weight, f.mean, f.rstd, rows, C))), timing);
    const bwdBytes = (3 * n + 3 * C + 2 * rows) * 4;
    out.push(row('layernorm_bwd', [rows, C], bwdMs, bwdBytes, copyGbps));
    release(backend, [x, dy, weight, bias, ...Object.values(f)]);
  }
  return out;
}

function row(op: string, shape: number[], ms: number, bytes: number, copyGbps: number): BenchRow {
  const gbps = bytes / ms / 1e6;
  return { op, shape, ms, gbps, fraction_of_copy: gbps / copyGbps };
}

function release(backend: Backend, storages: Storage[]): void {
  for (const s of storages) backend.release(s);
}
