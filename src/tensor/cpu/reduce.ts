/** CPU reference for sum and max over one axis (kept with size 1), accumulating sums in float64. */
import type { ReduceOp, Storage } from '../backend.js';
import { CpuStorage, f32 } from './storage.js';

export function reduce(op: ReduceOp, x: Storage, shape: readonly number[], axis: number): CpuStorage {
  const xv = f32(x);
  const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const len = shape[axis];
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const out = new Float32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      let acc = op === 'sum' ? 0 : -Infinity;
      for (let j = 0; j < len; j++) {
        const v = xv[base + j * inner];
        acc = op === 'sum' ? acc + v : Math.max(acc, v);
      }
      out[o * inner + i] = acc;
    }
  }
  return new CpuStorage(out);
}
