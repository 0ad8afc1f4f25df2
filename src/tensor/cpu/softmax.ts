/**
 * CPU reference for softmax over the last axis and its backward. The WGSL twin is
 * src/kernels/softmax.ts. Max-subtracted, float64 sums; the cores take any array-like and write into
 * caller-given arrays, so tests can run them in float64.
 */
import type { Storage } from '../backend.js';
import { CpuStorage, f32 } from './storage.js';

type Values = ArrayLike<number>;
type Out = Float32Array | Float64Array;

/** y = exp(x − max) / Σ exp(x − max) per row. */
export function softmaxRows(x: Values, rows: number, dim: number, y: Out): void {
  for (let r = 0; r < rows; r++) {
    const base = r * dim;
    let max = -Infinity;
    for (let c = 0; c < dim; c++) max = Math.max(max, x[base + c]);
    let sum = 0;
    for (let c = 0; c < dim; c++) sum += Math.exp(x[base + c] - max);
    for (let c = 0; c < dim; c++) y[base + c] = Math.exp(x[base + c] - max) / sum;
  }
}

/** dx = y · (dy − Σ dy·y) per row. */
export function softmaxBackwardRows(y: Values, dy: Values, rows: number, dim: number, dx: Out): void {
  for (let r = 0; r < rows; r++) {
    const base = r * dim;
    let dot = 0;
    for (let c = 0; c < dim; c++) dot += dy[base + c] * y[base + c];
    for (let c = 0; c < dim; c++) dx[base + c] = y[base + c] * (dy[base + c] - dot);
  }
}

export function softmax(x: Storage, rows: number, dim: number): CpuStorage {
  const y = new Float32Array(rows * dim);
  softmaxRows(f32(x), rows, dim, y);
  return new CpuStorage(y);
}

export function softmaxBackward(y: Storage, dy: Storage, rows: number, dim: number): CpuStorage {
  const dx = new Float32Array(rows * dim);
  softmaxBackwardRows(f32(y), f32(dy), rows, dim, dx);
  return new CpuStorage(dx);
}
