import type { DType, Storage } from '../backend.js';
import { halfDTypeOf, widen16 } from '../half.js';

/** CPU storage: a typed array; a Uint16Array holds f16 bit patterns, a Bfloat16Array bf16 ones. */
export class CpuStorage implements Storage {
  constructor(readonly data: Float32Array | Int32Array | Uint16Array) {}

  get dtype(): DType {
    return this.data instanceof Int32Array ? 'i32' : this.data instanceof Uint16Array ? halfDTypeOf(this.data) : 'f32';
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

/** A weight's values as f32: f32 storage itself, 16-bit storage widened into a new array. */
export function weightValues(s: Storage): Float32Array {
  const data = (s as CpuStorage).data;
  return data instanceof Uint16Array ? widen16(data) : f32(s);
}

/** `size` elements of `base` from `offset`, sharing its memory. */
export function view(base: Storage, offset: number, size: number): CpuStorage {
  const data = (base as CpuStorage).data;
  if (!Number.isInteger(offset) || offset < 0 || offset + size > data.length) {
    throw new Error(`a view of ${size} elements from ${offset} lies outside storage of ${data.length}`);
  }
  return new CpuStorage(data.subarray(offset, offset + size));
}

export function copy(src: Storage, dst: Storage): void {
  const from = (src as CpuStorage).data;
  const to = (dst as CpuStorage).data;
  if (from.length !== to.length || from.constructor !== to.constructor) {
    throw new Error(`copy: ${from.length} elements of ${src.dtype} into ${to.length} of ${dst.dtype}`);
  }
  to.set(from);
}

export const wrapF32 = (data: Float32Array): CpuStorage => new CpuStorage(data);
