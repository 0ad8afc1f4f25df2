/**
 * CPU reference for GELU, tanh approximation as GPT-2: gelu(x) = 0.5·x·(1 + tanh(u)),
 * u = √(2/π)·(x + 0.044715·x³). The WGSL twin is src/kernels/gelu.ts.
 *
 * Exact float64 formulas (Math.tanh saturates to ±1 without overflow), rounded once to f32.
 */
import type { Storage } from '../backend.js';
import { CpuStorage, f32 } from './storage.js';

const K = Math.sqrt(2 / Math.PI);
const C = 0.044715;

export function geluAt(x: number): number {
  return 0.5 * x * (1 + Math.tanh(K * (x + C * x * x * x)));
}

/** d gelu/dx = 0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²), t = tanh(u). */
export function geluGradAt(x: number): number {
  const t = Math.tanh(K * (x + C * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * C * x * x);
}

export function gelu(x: Storage): CpuStorage {
  return new CpuStorage(Float32Array.from(f32(x), geluAt));
}

/** dx = dy · gelu'(x). */
export function geluBackward(x: Storage, dy: Storage): CpuStorage {
  const xv = f32(x);
  const dyv = f32(dy);
  if (dyv.length !== xv.length) throw new Error(`geluBackward: x has ${xv.length} elements, dy ${dyv.length}`);
  return new CpuStorage(Float32Array.from(xv, (v, i) => dyv[i] * geluGradAt(v)));
}
