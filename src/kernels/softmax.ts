/**
 * Softmax over the last axis of [rows, dim], and its backward dx = y·(dy − Σ dy·y).
 * CPU reference: src/tensor/cpu/softmax.ts.
 *
 * A row per TPR threads, RPG rows per workgroup (WG = TPR·RPG). Forward: each thread keeps an online
 * (max, sum of exp) over its strided elements of the row, the row's threads merge the pairs by a tree
 * in workgroup memory, then a second pass writes exp(x − max)/sum: two reads of the row (the second
 * usually from cache) and one write. Backward: one tree reduction of dy·y, then the write. Threads
 * that own no element start from the lowest finite max and a zero sum, which merge as nothing.
 *
 * (TPR, RPG) follow the row length from the short table of row-reduction.ts (rowShape), so the
 * number of pipelines is bounded: short rows (attention scores) want few threads per row and
 * several rows per workgroup, the vocabulary a whole workgroup per row (docs/kernels.md,
 * softmax_fwd / softmax_bwd). Tensors larger than one binding (attention scores at T = 1024 are
 * 400 MB) are split into windows of whole rows (forEachUnitWindow).
 */
import type { Gpu, GpuStorage } from './gpu.js';
import { forEachUnitWindow } from './binding-windows.js';
import { grid1d, type Kernel } from './kernel.js';
import { LOWEST_FINITE, mergeMaxSumWgsl, rowShape, type RowShape } from './row-reduction.js';

/** WGSL prelude: the row this thread works on, its lane `t` in the row, and `valid`. */
function rowPrelude({ tpr, rpg }: RowShape): string {
  return /* wgsl */ `
  let t = lid % ${tpr}u;
  let base = lid - t; // this row's first slot in workgroup memory
  let row = (wid.x + wid.y * nwg.x) * ${rpg}u + lid / ${tpr}u;
  if ((wid.x + wid.y * nwg.x) * ${rpg}u >= params.rows) { return; } // uniform: the whole group is past the end
  let valid = row < params.rows;
  let dim = params.dim;
  let len = select(0u, dim, valid);`;
}

const forwardKernel: Kernel<RowShape> = {
  name: 'softmax_forward',
  bindings: ['read', 'write'],
  wgsl: (shape) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
struct Params {
  rows: u32,     // rows in this window
  dim: u32,
  xOffset: u32,  // element offset of the window's first row inside each binding
  yOffset: u32,
}
@group(0) @binding(2) var<uniform> params: Params;
var<workgroup> maxs: array<f32, ${shape.tpr * shape.rpg}>;
var<workgroup> sums: array<f32, ${shape.tpr * shape.rpg}>;
@compute @workgroup_size(${shape.tpr * shape.rpg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
${rowPrelude(shape)}
  let src = params.xOffset + row * dim;
  let dst = params.yOffset + row * dim;
  var m = ${LOWEST_FINITE};
  var s = 0.0;
  for (var i = t; i < len; i += ${shape.tpr}u) {
    let v = x[src + i];
    let mNew = max(m, v);
    s = s * exp(m - mNew) + exp(v - mNew);
    m = mNew;
  }
${mergeMaxSumWgsl('t', 'lid', shape.tpr)}
  let rowMax = maxs[base];
  let scale = 1.0 / sums[base];
  for (var i = t; i < len; i += ${shape.tpr}u) {
    y[dst + i] = exp(x[src + i] - rowMax) * scale;
  }
}`,
};

const backwardKernel: Kernel<RowShape> = {
  name: 'softmax_backward',
  bindings: ['read', 'read', 'write'],
  wgsl: (shape) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
struct Params {
  rows: u32,
  dim: u32,
  yOffset: u32,
  dyOffset: u32,
  dxOffset: u32,
}
@group(0) @binding(3) var<uniform> params: Params;
var<workgroup> partial: array<f32, ${shape.tpr * shape.rpg}>;
@compute @workgroup_size(${shape.tpr * shape.rpg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
${rowPrelude(shape)}
  let ys = params.yOffset + row * dim;
  let dys = params.dyOffset + row * dim;
  let dxs = params.dxOffset + row * dim;
  var acc = 0.0;
  for (var i = t; i < len; i += ${shape.tpr}u) { acc += dy[dys + i] * y[ys + i]; }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = ${shape.tpr / 2}u; stride > 0u; stride /= 2u) {
    if (t < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let dot = partial[base];
  for (var i = t; i < len; i += ${shape.tpr}u) {
    dx[dxs + i] = y[ys + i] * (dy[dys + i] - dot);
  }
}`,
};

export function softmax(gpu: Gpu, x: GpuStorage, rows: number, dim: number): GpuStorage {
  const shape = rowShape(dim);
  const y = gpu.alloc(rows * dim);
  if (rows * dim === 0) return y;
  forEachUnitWindow(gpu, rows, [{ storage: x, perUnit: dim }, { storage: y, perUnit: dim }], (_first, count, [wx, wy]) => {
    gpu.dispatch(forwardKernel, shape, [wx.view, wy.view], [count, dim, wx.offset, wy.offset], grid1d(count, shape.rpg, gpu.maxWorkgroupsPerDimension));
  });
  return y;
}

export function softmaxBackward(gpu: Gpu, y: GpuStorage, dy: GpuStorage, rows: number, dim: number): GpuStorage {
  const shape = rowShape(dim);
  const dx = gpu.alloc(rows * dim);
  if (rows * dim === 0) return dx;
  const tensors = [y, dy, dx].map((storage) => ({ storage, perUnit: dim }));
  forEachUnitWindow(gpu, rows, tensors, (_first, count, [wy, wdy, wdx]) => {
    gpu.dispatch(
      backwardKernel, shape, [wy.view, wdy.view, wdx.view], [count, dim, wy.offset, wdy.offset, wdx.offset],
      grid1d(count, shape.rpg, gpu.maxWorkgroupsPerDimension),
    );
  });
  return dx;
}
