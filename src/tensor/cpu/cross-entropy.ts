/**
 * CPU reference for weighted cross-entropy over the vocabulary, loss and gradient in one pass.
 * The WGSL twin is src/kernels/cross-entropy.ts.
 */
import type { Storage } from '../backend.js';
import { CpuStorage, f32, i32 } from './storage.js';

/**
 * loss = Σ_r w_r · (logsumexp(x_r) − x_r[t_r]); dLogits_r = (softmax(x_r) − onehot(t_r)) · w_r, written
 * into `dLogits` (zero for rows of weight 0, which are skipped). Float64 throughout; the loss of a row
 * is (max − x[t]) + log Σ exp(x − max), so logits of magnitude 1e4 lose no digits to cancellation.
 */
export function crossEntropyRows(
  logits: ArrayLike<number>, targets: ArrayLike<number>, weights: ArrayLike<number>,
  rows: number, V: number, dLogits: Float32Array | Float64Array,
): number {
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const w = weights[r];
    const base = r * V;
    if (w === 0) {
      dLogits.fill(0, base, base + V);
      continue;
    }
    const t = targets[r];
    if (!Number.isInteger(t) || t < 0 || t >= V) {
      throw new Error(`crossEntropy: row ${r} has weight ${w} but target ${t} is outside the vocabulary [0, ${V})`);
    }
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, logits[base + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[base + i] - max);
    loss += w * (max - logits[base + t] + Math.log(sum));
    for (let i = 0; i < V; i++) {
      dLogits[base + i] = (Math.exp(logits[base + i] - max) / sum - (i === t ? 1 : 0)) * w;
    }
  }
  return loss;
}

export function crossEntropy(logits: Storage, targets: Storage, weights: Storage, rows: number, V: number): { loss: CpuStorage; dLogits: CpuStorage } {
  const dLogits = new Float32Array(rows * V);
  const loss = crossEntropyRows(f32(logits), i32(targets), f32(weights), rows, V, dLogits);
  return { loss: new CpuStorage(Float32Array.of(loss)), dLogits: new CpuStorage(dLogits) };
}
