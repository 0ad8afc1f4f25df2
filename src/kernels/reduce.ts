/**
 * Sum or max over one axis of a tensor viewed as [outer, len, inner], keeping the axis with size 1.
 * CPU reference: src/tensor/cpu/reduce.ts.
 *
 * One workgroup per output element: its threads stride over the axis and combine in workgroup
 * memory. Output elements are independent, so the result does not depend on how many run at once.
 * With few outputs and a long axis, the axis is cut into parts, each its own workgroup, and the
 * partial results reduced in a second dispatch, so that summing one large tensor to a number (the
 * gradient clip's norm) keeps every core busy instead of one workgroup.
 *
 * Past one binding (clipping sums the square of GPT-2 medium's 206 MB wte gradient): whole [len, inner]
 * slabs are bound a group at a time (forEachUnitWindow) when one fits; when one slab alone is too
 * large, the axis is cut into chunks that fit, reduced in order: the first writes the output, the
 * next ones combine into it.
 */
import type { ReduceOp } from '../tensor/backend.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { alignedWindow, forEachUnitWindow } from './binding-windows.js';
import { flatIndexWgsl, grid1d, type Kernel } from './kernel.js';
import { LOWEST_FINITE } from './row-reduction.js';

const WG = 64;
/**
 * Fewer outputs than this split their axis over several workgroups (parts of at least MIN_PART
 * elements, at most MAX_PARTS): one workgroup per output would leave the other cores idle.
 */
const FEW_OUTPUTS = 32;
const MIN_PART = 4096;
const MAX_PARTS = 64;

/** Axes this short are reduced one thread per output (reduceShortKernel). */
const SHORT_AXIS = 32;

const IDENTITY: Record<ReduceOp, string> = { sum: '0.0', max: LOWEST_FINITE };
const COMBINE: Record<ReduceOp, string> = { sum: 'a + b', max: 'max(a, b)' };

/** `accumulate`: combine into what `out` holds (a later chunk of an axis cut to fit a binding). */
const reduceKernel: Kernel<{ op: ReduceOp; accumulate: boolean }> = {
  name: 'reduce',
  bindings: ['read', 'write'],
  wgsl: ({ op, accumulate }) => {
    const identity = IDENTITY[op];
    const combine = COMBINE[op];
    return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct Params { outer: u32, len: u32, inner: u32, xOffset: u32, outOffset: u32, parts: u32 }
@group(0) @binding(2) var<uniform> params: Params;
var<workgroup> partial: array<f32, ${WG}>;
fn combine(a: f32, b: f32) -> f32 { return ${combine}; }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  // Workgroup o reduces part o % parts of the axis for output element o / parts, into out[o].
  let o = wid.x + wid.y * nwg.x;
  let element = o / params.parts;
  let part = o % params.parts;
  let valid = element < params.outer * params.inner;
  let outerIndex = element / params.inner;
  let innerIndex = element % params.inner;
  let perPart = (params.len + params.parts - 1u) / params.parts;
  let end = min(params.len, (part + 1u) * perPart);
  var acc = ${identity};
  if (valid) {
    let base = params.xOffset + outerIndex * params.len * params.inner + innerIndex;
    for (var j = part * perPart + lid; j < end; j += ${WG}u) {
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

/**
 * A thread per output element walking its (short) axis alone: with a workgroup per output, a sum
 * over the batch (wpe's gradient) would start thousands of workgroups whose lanes mostly idle
 * through the tree's barriers.
 */
const reduceShortKernel: Kernel<{ op: ReduceOp }> = {
  name: 'reduce_short',
  bindings: ['read', 'write'],
  wgsl: ({ op }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct Params { outer: u32, len: u32, inner: u32, xOffset: u32, outOffset: u32 }
@group(0) @binding(2) var<uniform> params: Params;
fn combine(a: f32, b: f32) -> f32 { return ${COMBINE[op]}; }
${flatIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let element = flatIndex(gid, nwg);
  if (element >= params.outer * params.inner) { return; }
  let base = params.xOffset + (element / params.inner) * params.len * params.inner + element % params.inner;
  var acc = ${IDENTITY[op]};
  for (var j = 0u; j < params.len; j++) { acc = combine(acc, x[base + j * params.inner]); }
  out[params.outOffset + element] = acc;
}`,
};

export function reduce(gpu: Gpu, op: ReduceOp, x: GpuStorage, shape: readonly number[], axis: number): GpuStorage {
  const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const len = shape[axis];
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const out = gpu.alloc(outer * inner);
  const maxElements = Math.floor(gpu.maxBindingBytes / 4) - gpu.bindingAlignment / 4;
  const parts = outer * inner < FEW_OUTPUTS ? Math.min(MAX_PARTS, Math.ceil(len / MIN_PART)) : 1;
  if (parts > 1 && x.size <= maxElements) {
    // Few outputs over a long axis (clipping's sum of wte's squared gradient): partial results
    // from `parts` workgroups each, [outer · inner, parts], then their reduction.
    const partials = gpu.alloc(outer * inner * parts);
    gpu.dispatch(reduceKernel, { op, accumulate: false }, [gpu.view(x), gpu.view(partials)], [outer, len, inner, 0, 0, parts], grid1d(outer * inner * parts, 1, gpu.maxWorkgroupsPerDimension));
    gpu.dispatch(reduceKernel, { op, accumulate: false }, [gpu.view(partials), gpu.view(out)], [outer * inner, parts, 1, 0, 0, 1], grid1d(outer * inner, 1, gpu.maxWorkgroupsPerDimension));
    gpu.release(partials);
    return out;
  }
  if (len * inner <= maxElements) {
    forEachUnitWindow(gpu, outer, [{ storage: x, perUnit: len * inner }, { storage: out, perUnit: inner }], (_, count, [wx, wo]) => {
      if (len <= SHORT_AXIS) {
        gpu.dispatch(reduceShortKernel, { op }, [wx.view, wo.view], [count, len, inner, wx.offset, wo.offset], grid1d(count * inner, WG, gpu.maxWorkgroupsPerDimension));
      } else {
        gpu.dispatch(reduceKernel, { op, accumulate: false }, [wx.view, wo.view], [count, len, inner, wx.offset, wo.offset, 1], grid1d(count * inner, 1, gpu.maxWorkgroupsPerDimension));
      }
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
      gpu.dispatch(reduceKernel, { op, accumulate: c > 0 }, [source.view, target.view], [1, rows, inner, source.offset, target.offset, 1], grid1d(inner, 1, gpu.maxWorkgroupsPerDimension));
    }
  }
  return out;
}
