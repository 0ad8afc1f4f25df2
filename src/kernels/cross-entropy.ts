/**
 * Weighted cross-entropy over the vocabulary with its gradient in the same pass.
 * CPU reference: src/tensor/cpu/cross-entropy.ts.
 *
 * `cross_entropy_rows`: one workgroup per row (V = 50257 is far wider than a workgroup). Pass 1: each
 * thread keeps an online (max, sum of exp) over its strided elements, and the workgroup merges the
 * pairs by tree reduction: one read of the row for both statistics. Pass 2 reads the row again and
 * writes dLogits = (exp(x − max) / sum − onehot) · w. The row's loss is w · ((max − x[t]) + log sum),
 * which keeps logits of magnitude 1e4 exact where lse − x[t] would cancel. A row of weight 0 writes
 * zeros without reading its logits. Row losses go to a [rows] buffer that `cross_entropy_sum` (one
 * workgroup, fixed strided order, tree) adds up: deterministic, no atomics.
 *
 * Logits of 8 × 1024 × 50257 f32 are 1.5 GiB, beyond one binding: the rows are split into windows of
 * whole rows that fit (forEachUnitWindow), each bound from the aligned element at or below its first
 * row with the remainder passed as an element offset (a row of 50257 f32 is not a multiple of 16 B).
 *
 * The online pass rescales once per UNROLL = 4 elements, which is where folding more elements per
 * rescale stops paying; a separate max pass with one exp an element costs a whole extra pass over
 * the row, more than the online pass's extra exps (docs/kernels.md, cross_entropy).
 * Targets outside [0, V) in a row of non-zero weight are an error the CPU reference reports; here
 * they read a clamped logit and never match the one-hot, so they cannot read out of bounds.
 */
import type { Gpu, GpuStorage } from './gpu.js';
import { forEachUnitWindow } from './binding-windows.js';
import { grid1d, type Kernel } from './kernel.js';
import { LOWEST_FINITE, mergeMaxSumWgsl } from './row-reduction.js';

const WG = 256;
/** Elements each thread folds into its running (max, sum) per rescale. */
const UNROLL = 4;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const SUM_WG = 256;

/** Statistics by an online (max, sum) pass, then a pass that writes exp(x − max)·w/sum. */
function onlineWgsl(): string {
  const unroll = UNROLL;
  return /* wgsl */ `
  // Online max and sum, one rescale per ${unroll} elements: exp runs 1 + 1/${unroll} times an element.
  var m = ${LOWEST_FINITE};
  var s = 0.0;
  for (var i0 = lid; i0 < V; i0 += ${WG * unroll}u) {
${range(unroll).map((u) => `    let x${u} = select(${LOWEST_FINITE}, logits[src + min(i0 + ${u * WG}u, V - 1u)], i0 + ${u * WG}u < V);`).join('\n')}
    let mNew = max(m, ${range(unroll).map((u) => `x${u}`).reduce((a, b) => `max(${a}, ${b})`)});
    s = s * exp(m - mNew) + ${range(unroll).map((u) => `exp(x${u} - mNew)`).join(' + ')};
    m = mNew;
  }
${mergeMaxSumWgsl('lid', 'lid', WG)}
  let rowMax = maxs[0];
  let sum = sums[0];
  let tgt = u32(clamp(targets[r], 0, i32(V) - 1));
  let hit = u32(targets[r]);
  let scale = w / sum;
  for (var i = lid; i < V; i += ${WG}u) {
    let p = exp(logits[src + i] - rowMax) * scale;
    dLogits[dst + i] = select(p, p - w, i == hit);
  }`;
}

const rowsKernel: Kernel = {
  name: 'cross_entropy_rows',
  bindings: ['read', 'read', 'read', 'write', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> dLogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> rowLoss: array<f32>;
struct Params {
  rows: u32,          // rows in this window
  V: u32,
  firstRow: u32,      // index of the window's first row in targets, weights and rowLoss
  logitsOffset: u32,  // element offset of the first row inside the logits window
  dLogitsOffset: u32,
}
@group(0) @binding(5) var<uniform> params: Params;
var<workgroup> maxs: array<f32, ${WG}>;
var<workgroup> sums: array<f32, ${WG}>;
var<workgroup> rowWeight: f32;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }
  let r = params.firstRow + row;
  let V = params.V;
  let src = params.logitsOffset + row * V;
  let dst = params.dLogitsOffset + row * V;
  if (lid == 0u) { rowWeight = weights[r]; }
  let w = workgroupUniformLoad(&rowWeight);
  if (w == 0.0) {
    for (var i = lid; i < V; i += ${WG}u) { dLogits[dst + i] = 0.0; }
    if (lid == 0u) { rowLoss[r] = 0.0; }
    return;
  }
${onlineWgsl()}
  if (lid == 0u) { rowLoss[r] = w * ((rowMax - logits[src + tgt]) + log(sum)); }
}`,
};

const sumKernel: Kernel = {
  name: 'cross_entropy_sum',
  bindings: ['read', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> rowLoss: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
struct Params { rows: u32 }
@group(0) @binding(2) var<uniform> params: Params;
var<workgroup> partial: array<f32, ${SUM_WG}>;
@compute @workgroup_size(${SUM_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < params.rows; i += ${SUM_WG}u) { acc += rowLoss[i]; }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = ${SUM_WG / 2}u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { loss[0] = partial[0]; }
}`,
};

export function crossEntropy(
  gpu: Gpu, logits: GpuStorage, targets: GpuStorage, weights: GpuStorage, rows: number, V: number,
): { loss: GpuStorage; dLogits: GpuStorage } {
  const dLogits = gpu.alloc(rows * V);
  const rowLoss = gpu.alloc(rows);
  const loss = gpu.alloc(1);
  const windows = [{ storage: logits, perUnit: V }, { storage: dLogits, perUnit: V }];
  forEachUnitWindow(gpu, rows, windows, (first, count, [wl, wd]) => {
    gpu.dispatch(
      rowsKernel, undefined, [wl.view, targets, weights, wd.view, rowLoss],
      [count, V, first, wl.offset, wd.offset],
      grid1d(count, 1, gpu.maxWorkgroupsPerDimension),
    );
  });
  gpu.dispatch(sumKernel, undefined, [rowLoss, loss], [rows], [1, 1, 1]);
  gpu.release(rowLoss);
  return { loss, dLogits };
}
