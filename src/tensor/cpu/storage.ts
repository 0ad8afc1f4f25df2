import type { DType, Storage } from '../backend.js';

/** CPU storage: a typed array. */
export class CpuStorage implements Storage {
  constructor(readonly data: Float32Array | Int32Array) {}

  get dtype(): DType {
    return this.data instanceof Int32Array ? 'i32' : 'f32';
  }

  get size(): number {
    return this.data.length;
  }
}

export function f32(s: Storage): Float32Array {
  const data = (s as CpuStorage).data;
  if (!(data instanceof Float32Array)) throw new Error('expected f32 storage, got i32');
  return data;
}

export function i32(s: Storage): Int32Array {
  const data = (s as CpuStorage).data;
  if (!(data instanceof Int32Array)) throw new Error('expected i32 storage, got f32');
  return data;
}

export const wrapF32 = (data: Float32Array): CpuStorage => new CpuStorage(data);
