import type { DType, Storage } from '../backend.js';
import { widenHalf } from '../half.js';

/** CPU storage: a typed array; a Uint16Array holds f16 bit patterns. */
export class CpuStorage implements Storage {
  constructor(readonly data: Float32Array | Int32Array | Uint16Array) {}

  get dtype(): DType {
    return this.data instanceof Int32Array ? 'i32' : this.data instanceof Uint16Array ? 'f16' : 'f32';
  }

  get size(): number {
    return this.data.length;
  }
}

export function f32(s: Storage): Float32Array {
  const data = (s as CpuStorage).data;
  if (!(data instanceof Float32Array)) throw new Error(`expected f32 storage, got ${s.dtype}`);
  return data;
}

export function i32(s: Storage): Int32Array {
  const data = (s as CpuStorage).data;
  if (!(data instanceof Int32Array)) throw new Error(`expected i32 storage, got ${s.dtype}`);
  return data;
}

/** A weight's values as f32: f32 storage itself, f16 widened into a new array. */
export function weightValues(s: Storage): Float32Array {
  const data = (s as CpuStorage).data;
  return data instanceof Uint16Array ? widenHalf(data) : f32(s);
}

export const wrapF32 = (data: Float32Array): CpuStorage => new CpuStorage(data);
