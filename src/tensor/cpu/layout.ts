/** CPU reference for permute, slice and pad: strided copies. */
import type { Storage } from '../backend.js';
import { sizeOf, stridesOf } from '../shape.js';
import { CpuStorage } from './storage.js';

/** Copies `shape` elements from src (read with srcStrides from srcOffset) into dst (dstStrides, dstOffset). */
function stridedCopy(
  src: Float32Array | Int32Array, srcOffset: number, srcStrides: readonly number[],
  dst: Float32Array | Int32Array, dstOffset: number, dstStrides: readonly number[],
  shape: readonly number[],
): void {
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  let s = srcOffset;
  let d = dstOffset;
  const size = sizeOf(shape);
  for (let i = 0; i < size; i++) {
    dst[d] = src[s];
    for (let k = rank - 1; k >= 0; k--) {
      index[k]++;
      s += srcStrides[k];
      d += dstStrides[k];
      if (index[k] < shape[k]) break;
      s -= srcStrides[k] * shape[k];
      d -= dstStrides[k] * shape[k];
      index[k] = 0;
    }
  }
}

/** Layout ops move f32 or i32 values; a 16-bit weight is read only by matmul and the embedding. */
function source(x: Storage): Float32Array | Int32Array {
  const data = (x as CpuStorage).data;
  if (data instanceof Uint16Array) throw new Error(`permute, slice and pad take f32 or i32 storage, got ${x.dtype}`);
  return data;
}

function like(x: Float32Array | Int32Array, size: number): Float32Array | Int32Array {
  return x instanceof Int32Array ? new Int32Array(size) : new Float32Array(size);
}

export function permute(x: Storage, shape: readonly number[], perm: readonly number[]): CpuStorage {
  const src = source(x);
  const outShape = perm.map((p) => shape[p]);
  const inStrides = stridesOf(shape);
  const out = like(src, src.length);
  stridedCopy(src, 0, perm.map((p) => inStrides[p]), out, 0, stridesOf(outShape), outShape);
  return new CpuStorage(out);
}

function offsetOf(begin: readonly number[], strides: readonly number[]): number {
  return begin.reduce((acc, b, i) => acc + b * strides[i], 0);
}

export function slice(x: Storage, shape: readonly number[], begin: readonly number[], size: readonly number[]): CpuStorage {
  const src = source(x);
  const strides = stridesOf(shape);
  const out = like(src, sizeOf(size));
  stridedCopy(src, offsetOf(begin, strides), strides, out, 0, stridesOf(size), size);
  return new CpuStorage(out);
}

export function pad(x: Storage, shape: readonly number[], begin: readonly number[], outShape: readonly number[]): CpuStorage {
  const src = source(x);
  const outStrides = stridesOf(outShape);
  const out = like(src, sizeOf(outShape));
  stridedCopy(src, 0, stridesOf(shape), out, offsetOf(begin, outStrides), outStrides, shape);
  return new CpuStorage(out);
}
