/**
 * Sum or max over one axis of a tensor viewed as [outer, len, inner], keeping the axis with size 1.
 * CPU reference: src/tensor/cpu/reduce.ts.
 *
 * One workgroup per output element: its threads stride over the axis and combine in workgroup
 * memory. Output elements are independent, so the result does not depend on how many run at once.
 *
 * Past one binding (clipping sums the square of GPT-2 medium's 206 MB wte gradient): whole [len, inner]
 * slabs are bound a group at a time (forEachUnitWindow) when one fits; when one slab alone is too
 * large, the axis is cut into chunks that fit, reduced in order: the first writes the output, the
 * next ones combine into it.
 */
import type { ReduceOp } from '../tensor/backend.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { alignedWindow, forEachUnitWindow } from './elementwise.js';
import { grid1d, type Kernel } from './kernel.js';

const WG = 64;

/** `accumulate`: combine into what `out` holds (a later chunk of an axis cut to fit a binding). */
const reduceKernel: Kernel<{ op: ReduceOp; accumulate: boolean }> = {
  name: 'reduce',
  bindings: ['read', 'write'],
  workgroupSize: () => [WG, 1, 1],
  wgsl: ({ op, accumulate }) => {
    // max starts at the lowest finite f32, -FLT_MAX, written as bits: WGSL rejects a decimal literal
    // that rounds to it (-3.4028235e38 is just past it) and must not see -inf.
    const identity = op === 'sum' ? '0.0' : 'bitcast<f32>(0xff7fffffu)';
    const combine = op === 'sum' ? 'a + b' : 'max(a, b)';
    return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct Params { outer: u32, len: u32, inner: u32, xOffset: u32, outOffset: u32 }
@group(0) @binding(2) var<uniform> params: Params;
var<workgroup> partial: array<f32, ${WG}>;
fn combine(a: f32, b: f32) -> f32 { return ${combine}; }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let o = wid.x + wid.y * nwg.x;
  let count = params.outer * params.inner;
  let valid = o < count;
  let outerIndex = o / params.inner;
  let innerIndex = o % params.inner;
  var acc = ${identity};
  if (valid) {
    let base = params.xOffset + outerIndex * params.len * params.inner + innerIndex;
    for (var j = lid; j < params.len; j += ${WG}u) {
      acc = combine(acc, x[base + j * params.inner]);
    }
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) { partial[lid] = combine(partial[lid], partial[lid + stride]); }
    workgroupBarrier();
  }
  if (valid && lid == 0u) { out[params.outOffset + o] = ${accumulate ? 'combine(out[params.outOffset + o], partial[0])' : 'partial[0]'}; }
}`;
  },
};

export function reduce(gpu: Gpu, op: ReduceOp, x: GpuStorage, shape: readonly number[], axis: number): GpuStorage {
  const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const len = shape[axis];
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const out = gpu.alloc(outer * inner);
  const maxElements = Math.floor(gpu.maxBindingBytes / 4) - gpu.bindingAlignment / 4;
  if (len * inner <= maxElements) {
    forEachUnitWindow(gpu, outer, [{ storage: x, perUnit: len * inner }, { storage: out, perUnit: inner }], (_, count, [wx, wo]) => {
      gpu.dispatch(reduceKernel, { op, accumulate: false }, [wx.view, wo.view], [count, len, inner, wx.offset, wo.offset], grid1d(count * inner, 1, gpu.maxWorkgroupsPerDimension));
    });
    return out;
  }
  // One [len, inner] slab exceeds a binding: reduce it a chunk of the axis at a time, in order.
  const chunkLen = Math.floor(maxElements / inner);
  if (chunkLen < 1) throw new Error(`reduce: a row of ${inner} elements exceeds this adapter's binding limit (${gpu.maxBindingBytes} B)`);
  for (let o = 0; o < outer; o++) {
    const target = alignedWindow(gpu, out, o * inner, inner);
    for (let c = 0; c * chunkLen < len; c++) {
      const rows = Math.min(chunkLen, len - c * chunkLen);
      const source = alignedWindow(gpu, x, (o * len + c * chunkLen) * inner, rows * inner);
      gpu.dispatch(reduceKernel, { op, accumulate: c > 0 }, [source.view, target.view], [1, rows, inner, source.offset, target.offset], grid1d(inner, 1, gpu.maxWorkgroupsPerDimension));
    }
  }
  return out;
}
