/** CPU reference for fill, random, cast and the broadcasting element-wise ops. */
import type { BinaryOp, ComputeDType, RandomDistribution, Storage, UnaryOp } from '../backend.js';
import { broadcastStrides, sizeOf } from '../shape.js';
import { normalAt, uniformAt } from './random.js';
import { CpuStorage, f32 } from './storage.js';

export function fill(size: number, value: number, dtype: ComputeDType): CpuStorage {
  return new CpuStorage(dtype === 'i32' ? new Int32Array(size).fill(value) : new Float32Array(size).fill(value));
}

export function random(size: number, seed: number, distribution: RandomDistribution): CpuStorage {
  const out = new Float32Array(size);
  const draw = distribution === 'uniform' ? uniformAt : normalAt;
  for (let i = 0; i < size; i++) out[i] = draw(seed, i);
  return new CpuStorage(out);
}

export function cast(x: Storage, dtype: ComputeDType): CpuStorage {
  const data = (x as CpuStorage).data;
  if (data instanceof Uint16Array) throw new Error(`cast takes f32 or i32 storage, got ${x.dtype}`);
  return new CpuStorage(dtype === 'i32' ? Int32Array.from(data, Math.trunc) : Float32Array.from(data));
}

const unaryFns: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  tanh: Math.tanh,
  relu: (x) => (x > 0 ? x : 0),
  abs: Math.abs,
};

export function unary(op: UnaryOp, x: Storage): CpuStorage {
  return new CpuStorage(f32(x).map(unaryFns[op]));
}

export const binaryFns: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  max: (a, b) => (a >= b ? a : b),
  min: (a, b) => (a <= b ? a : b),
  pow: (a, b) => Math.pow(a, b),
  gt: (a, b) => (a > b ? 1 : 0),
  eq: (a, b) => (a === b ? 1 : 0),
};

/** Calls fn(outIndex, offsets...) for every output element, with each input's broadcast offset. */
function forEachBroadcast(outShape: readonly number[], inShapes: readonly (readonly number[])[], fn: (i: number, offsets: number[]) => void): void {
  const rank = outShape.length;
  const strides = inShapes.map((s) => broadcastStrides(s, outShape));
  const index = new Array<number>(rank).fill(0);
  const offsets = new Array<number>(inShapes.length).fill(0);
  const size = sizeOf(outShape);
  for (let i = 0; i < size; i++) {
    fn(i, offsets);
    for (let d = rank - 1; d >= 0; d--) {
      index[d]++;
      for (let k = 0; k < offsets.length; k++) offsets[k] += strides[k][d];
      if (index[d] < outShape[d]) break;
      for (let k = 0; k < offsets.length; k++) offsets[k] -= strides[k][d] * outShape[d];
      index[d] = 0;
    }
  }
}

export function binary(op: BinaryOp, a: Storage, aShape: readonly number[], b: Storage, bShape: readonly number[], outShape: readonly number[]): CpuStorage {
  const fn = binaryFns[op];
  const av = f32(a);
  const bv = f32(b);
  const out = new Float32Array(sizeOf(outShape));
  forEachBroadcast(outShape, [aShape, bShape], (i, [ia, ib]) => {
    out[i] = fn(av[ia], bv[ib]);
  });
  return new CpuStorage(out);
}

export function where(
  cond: Storage, condShape: readonly number[],
  a: Storage, aShape: readonly number[],
  b: Storage, bShape: readonly number[],
  outShape: readonly number[],
): CpuStorage {
  const cv = f32(cond);
  const av = f32(a);
  const bv = f32(b);
  const out = new Float32Array(sizeOf(outShape));
  forEachBroadcast(outShape, [condShape, aShape, bShape], (i, [ic, ia, ib]) => {
    out[i] = cv[ic] !== 0 ? av[ia] : bv[ib];
  });
  return new CpuStorage(out);
}
