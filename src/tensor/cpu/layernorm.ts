/**
 * CPU reference for LayerNorm over the last axis (biased variance) and its backward.
 * The WGSL twin is src/kernels/layernorm.ts.
 *
 * Plain loops with float64 accumulation. The cores take any array-like of numbers and write into
 * caller-given arrays, so tests run them in float64 end to end (the finite-difference checks).
 */
import type { Storage } from '../backend.js';
import { CpuStorage, f32 } from './storage.js';

type Values = ArrayLike<number>;
type Out = Float32Array | Float64Array;

/**
 * y = (x − mean) · rstd · weight + bias per row, with mean = Σx/C, var = Σ(x − mean)²/C (two
 * passes, so rows of large mean lose nothing) and rstd = 1/sqrt(var + eps).
 */
export function layerNormRows(
  x: Values, weight: Values, bias: Values, rows: number, C: number, eps: number,
  y: Out, mean: Out, rstd: Out,
): void {
  for (let r = 0; r < rows; r++) {
    const base = r * C;
    let sum = 0;
    for (let c = 0; c < C; c++) sum += x[base + c];
    const mu = sum / C;
    let sq = 0;
    for (let c = 0; c < C; c++) {
      const d = x[base + c] - mu;
      sq += d * d;
    }
    const s = 1 / Math.sqrt(sq / C + eps);
    for (let c = 0; c < C; c++) y[base + c] = (x[base + c] - mu) * s * weight[c] + bias[c];
    mean[r] = mu;
    rstd[r] = s;
  }
}

/**
 * With x̂ = (x − mean)·rstd and g = dy·weight: dx = rstd · (g − mean(g) − x̂ · mean(g·x̂)),
 * dWeight = Σ_rows dy·x̂, dBias = Σ_rows dy. `dWeight` and `dBias` are overwritten.
 */
export function layerNormBackwardRows(
  dy: Values, x: Values, weight: Values, mean: Values, rstd: Values, rows: number, C: number,
  dx: Out, dWeight: Out, dBias: Out,
): void {
  const dw = new Float64Array(C);
  const db = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    const base = r * C;
    const mu = mean[r];
    const s = rstd[r];
    let sumG = 0;
    let sumGX = 0;
    for (let c = 0; c < C; c++) {
      const xhat = (x[base + c] - mu) * s;
      const g = dy[base + c] * weight[c];
      sumG += g;
      sumGX += g * xhat;
      dw[c] += dy[base + c] * xhat;
      db[c] += dy[base + c];
    }
    const meanG = sumG / C;
    const meanGX = sumGX / C;
    for (let c = 0; c < C; c++) {
      const xhat = (x[base + c] - mu) * s;
      dx[base + c] = s * (dy[base + c] * weight[c] - meanG - xhat * meanGX);
    }
  }
  for (let c = 0; c < C; c++) {
    dWeight[c] = dw[c];
    dBias[c] = db[c];
  }
}

export function layerNorm(x: Storage, weight: Storage, bias: Storage, rows: number, C: number, eps: number): { y: CpuStorage; mean: CpuStorage; rstd: CpuStorage } {
  const y = new Float32Array(rows * C);
  const mean = new Float32Array(rows);
  const rstd = new Float32Array(rows);
  layerNormRows(f32(x), f32(weight), f32(bias), rows, C, eps, y, mean, rstd);
  return { y: new CpuStorage(y), mean: new CpuStorage(mean), rstd: new CpuStorage(rstd) };
}

export function layerNormBackward(
  dy: Storage, x: Storage, weight: Storage, mean: Storage, rstd: Storage, rows: number, C: number,
): { dx: CpuStorage; dWeight: CpuStorage; dBias: CpuStorage } {
  const dx = new Float32Array(rows * C);
  const dWeight = new Float32Array(C);
  const dBias = new Float32Array(C);
  layerNormBackwardRows(f32(dy), f32(x), f32(weight), f32(mean), f32(rstd), rows, C, dx, dWeight, dBias);
  return { dx: new CpuStorage(dx), dWeight: new CpuStorage(dWeight), dBias: new CpuStorage(dBias) };
}
