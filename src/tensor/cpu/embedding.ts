/**
 * CPU reference for the embedding gather and its backward. The WGSL twin is src/kernels/embedding.ts.
 * Ids outside [0, V) are an error here (the WebGPU kernel cannot throw: it reads a clamped row).
 */
import type { Storage } from '../backend.js';
import { widen16 } from '../half.js';
import { CpuStorage, f32, i32 } from './storage.js';

function checkIds(ids: Int32Array, n: number, V: number): void {
  if (ids.length !== n) throw new Error(`embedding: ${ids.length} ids, expected ${n}`);
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    if (id < 0 || id >= V) throw new Error(`embedding: id ${id} at position ${i} is outside the vocabulary [0, ${V})`);
  }
}

/** out[i] = table[ids[i]] (a 16-bit table's rows widened to f32). */
export function embedding(ids: Storage, table: Storage, n: number, V: number, C: number): CpuStorage {
  const idv = i32(ids);
  checkIds(idv, n, V);
  const data = (table as CpuStorage).data;
  const tv = data instanceof Uint16Array ? data : f32(table);
  const out = new Float32Array(n * C);
  for (let i = 0; i < n; i++) {
    const row = tv.subarray(idv[i] * C, (idv[i] + 1) * C);
    if (row instanceof Uint16Array) widen16(row, out, i * C);
    else out.set(row, i * C);
  }
  return new CpuStorage(out);
}

/**
 * dTable[v] = Σ_{i : ids[i] = v} dOut[i], summed in float64 in increasing i, rounded once; rows of
 * ids that never occur are zero.
 */
export function embeddingBackward(ids: Storage, dOut: Storage, n: number, V: number, C: number): CpuStorage {
  const idv = i32(ids);
  const dv = f32(dOut);
  checkIds(idv, n, V);
  const positions = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const list = positions.get(idv[i]);
    if (list) list.push(i);
    else positions.set(idv[i], [i]);
  }
  const out = new Float32Array(V * C);
  const acc = new Float64Array(C);
  for (const [id, list] of positions) {
    acc.fill(0);
    for (const i of list) {
      for (let c = 0; c < C; c++) acc[c] += dv[i * C + c];
    }
    out.set(acc, id * C);
  }
  return new CpuStorage(out);
}
