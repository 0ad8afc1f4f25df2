/**
 * permute, slice and pad: one strided-copy kernel (rank ≤ 8) that reads each output element
 * through input strides and an offset. CPU reference: src/tensor/cpu/layout.ts.
 */
import { isHalfDType, type ComputeDType } from '../tensor/backend.js';
import { sizeOf, stridesOf } from '../tensor/shape.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { fill } from './elementwise.js';
import { flatIndexWgsl, grid1d, type Kernel } from './kernel.js';
import { MAX_RANK, padToMaxRank, RANK_ARRAY_WGSL, stridedOffsetsWgsl } from './strided-index.js';

const WG = 256;

/** dst[dstOffset + Σ index·dstStrides] = src[srcOffset + Σ index·srcStrides] over `shape`. */
const stridedCopyKernel: Kernel = {
  name: 'strided_copy',
  bindings: ['read', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
struct Params {
  count: u32,
  rank: u32,
  srcOffset: u32,
  dstOffset: u32,
  shape: ${RANK_ARRAY_WGSL},
  srcStrides: ${RANK_ARRAY_WGSL},
  dstStrides: ${RANK_ARRAY_WGSL},
}
@group(0) @binding(2) var<uniform> params: Params;
${flatIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg);
  if (i >= params.count) { return; }
${stridedOffsetsWgsl([
    { name: 's', start: 'params.srcOffset', strides: 'srcStrides' },
    { name: 'd', start: 'params.dstOffset', strides: 'dstStrides' },
  ])}
  dst[d] = src[s];
}`,
};

/** The copies move 4-byte elements: a 16-bit weight (two to a word) is read only by matmul and the embedding. */
function wordType(x: GpuStorage): ComputeDType {
  if (isHalfDType(x.dtype)) throw new Error(`permute, slice and pad take f32 or i32 storage, got ${x.dtype}`);
  return x.dtype;
}

function stridedCopy(
  gpu: Gpu,
  src: GpuStorage, srcOffset: number, srcStrides: readonly number[],
  dst: GpuStorage, dstOffset: number, dstStrides: readonly number[],
  shape: readonly number[],
): void {
  if (shape.length > MAX_RANK) throw new Error(`strided copies support rank ≤ ${MAX_RANK}, got [${shape}]`);
  const count = sizeOf(shape);
  if (count === 0) return;
  const uniforms = [count, shape.length, srcOffset, dstOffset, ...padToMaxRank(shape), ...padToMaxRank(srcStrides), ...padToMaxRank(dstStrides)];
  gpu.dispatch(stridedCopyKernel, undefined, [src, dst], uniforms, grid1d(count, WG, gpu.maxWorkgroupsPerDimension));
}

const offsetOf = (begin: readonly number[], strides: readonly number[]): number =>
  begin.reduce((acc, b, i) => acc + b * strides[i], 0);

export function permute(gpu: Gpu, x: GpuStorage, shape: readonly number[], perm: readonly number[]): GpuStorage {
  const outShape = perm.map((p) => shape[p]);
  const inStrides = stridesOf(shape);
  const out = gpu.alloc(x.size, wordType(x));
  stridedCopy(gpu, x, 0, perm.map((p) => inStrides[p]), out, 0, stridesOf(outShape), outShape);
  return out;
}

export function slice(gpu: Gpu, x: GpuStorage, shape: readonly number[], begin: readonly number[], size: readonly number[]): GpuStorage {
  const strides = stridesOf(shape);
  const out = gpu.alloc(sizeOf(size), wordType(x));
  stridedCopy(gpu, x, offsetOf(begin, strides), strides, out, 0, stridesOf(size), size);
  return out;
}

export function pad(gpu: Gpu, x: GpuStorage, shape: readonly number[], begin: readonly number[], outShape: readonly number[]): GpuStorage {
  const out = fill(gpu, sizeOf(outShape), 0, wordType(x));
  const outStrides = stridesOf(outShape);
  stridedCopy(gpu, x, 0, stridesOf(shape), out, offsetOf(begin, outStrides), outStrides, shape);
  return out;
}
