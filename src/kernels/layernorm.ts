/**
 * LayerNorm over the last axis of [rows, C] (biased variance), forward and backward.
 * CPU reference: src/tensor/cpu/layernorm.ts.
 *
 * Forward (`layernorm_forward`): TPR threads per row, the corrected two-pass algorithm (Chan, Golub
 * and LeVeque): a first tree reduction gives the f32 mean m0; a second reduces the pair (Σd, Σd²)
 * of d = x − m0, where Σd/C = c is m0's own rounding error, so the mean is m0 + c, the variance
 * Σd²/C − c² (c is tiny: no cancellation) and y = (d − c)·rstd·w + b. A row of mean 1e4 and
 * spread 1 keeps its digits (an f32 mean of 1e4 alone is off by up to 5e-4, half its ulp, which
 * would be 5e-4 of y), and so does a row of one outlier 1e4 among values ~1 (shifting the row by
 * one of its elements instead would lose ulp(1e4)/std when that one is the outlier).
 * The row is re-read from memory each pass (a GPT-2 row is 3–6 KB, so the re-reads hit cache),
 * which keeps the kernel valid for any C.
 *
 * Backward, deterministic, no atomics (WebGPU has no float atomics), two dispatches:
 *  - `layernorm_backward_blocks`: a workgroup per block of R consecutive rows. Phase 1, RPG rows at
 *    a time: per row one tree reduction of the pair (Σ g, Σ g·x̂) with g = dy·w, x̂ = (x − mean)·rstd,
 *    kept per row in workgroup memory. Phase 2, one thread per column: walk the block's rows in order, write
 *    dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) and accumulate dy·x̂ and dy in registers, then store
 *    the block's partial dWeight and dBias ([blocks, 2, C]).
 *  - `layernorm_backward_sum`: one thread per column sums the blocks' partials in block order.
 *  R is chosen on the host so a call has about TARGET_BLOCKS blocks (R ≤ MAX_BLOCK_ROWS): enough
 *  workgroups to fill a GPU, few partials to sum. It travels as a uniform, so the summation order,
 *  and the result, depend only on (rows, C) and the adapter's binding limit: bitwise reproducible.
 *
 * Shapes: the forward runs TPR = 16 threads per row, RPG = 4 rows per 64-thread workgroup (rows
 * past 2048 elements: 256 threads, one row; rowShape in row-reduction.ts); the backward's phase 1
 * the same, phase 2 all 64 threads over columns. A CPU wants few threads per row (fewer barriers),
 * a GPU wide workgroups: (16, 4) serves both (docs/kernels.md, layernorm_fwd / layernorm_bwd).
 *
 * x, y, dy and dx larger than one binding are split into windows of whole rows (forEachUnitWindow);
 * the backward's blocks never straddle a window. mean, rstd ([rows]) and the partial sums (about
 * 2·rows·C/R) are C and R/2 times smaller and are bound whole.
 */
import type { Gpu, GpuStorage } from './gpu.js';
import { forEachUnitWindow } from './binding-windows.js';
import { f32, grid1d, type Kernel } from './kernel.js';
import { rowShape, type RowShape } from './row-reduction.js';

/** Rows per backward block at most (their statistics live in workgroup memory). */
const MAX_BLOCK_ROWS = 64;
/** Blocks a backward call aims for. */
const TARGET_BLOCKS = 256;

const forwardKernel: Kernel<RowShape> = {
  name: 'layernorm_forward',
  bindings: ['read', 'read', 'read', 'write', 'write', 'write'],
  wgsl: ({ tpr, rpg }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> meanOut: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstdOut: array<f32>;
struct Params {
  rows: u32,      // rows in this window
  C: u32,
  firstRow: u32,  // index of the window's first row in mean and rstd
  xOffset: u32,   // element offset of the window's first row inside the x and y bindings
  yOffset: u32,
  eps: f32,
}
@group(0) @binding(6) var<uniform> params: Params;
var<workgroup> partial: array<vec2f, ${tpr * rpg}>;
/** The sum of \`value\` over the TPR threads of this thread's row (lane t, row slots from base). */
fn rowSum(lid: u32, t: u32, base: u32, value: vec2f) -> vec2f {
  partial[lid] = value;
  workgroupBarrier();
  for (var stride = ${tpr / 2}u; stride > 0u; stride /= 2u) {
    if (t < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let total = partial[base];
  workgroupBarrier(); // every row has read its total before the array is reused
  return total;
}
@compute @workgroup_size(${tpr * rpg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let group = wid.x + wid.y * nwg.x;
  if (group * ${rpg}u >= params.rows) { return; } // uniform: the whole group is past the end
  let t = lid % ${tpr}u;
  let base = lid - t;
  let row = group * ${rpg}u + lid / ${tpr}u;
  let valid = row < params.rows;
  let C = params.C;
  let len = select(0u, C, valid);
  let src = params.xOffset + select(0u, row, valid) * C;
  let dst = params.yOffset + row * C;
  var acc = 0.0;
  for (var c = t; c < len; c += ${tpr}u) { acc += x[src + c]; }
  let m0 = rowSum(lid, t, base, vec2f(acc, 0.0)).x / f32(C);
  var pair = vec2f(0.0);
  for (var c = t; c < len; c += ${tpr}u) {
    let d = x[src + c] - m0;
    pair += vec2f(d, d * d);
  }
  let moments = rowSum(lid, t, base, pair) / f32(C);
  let correction = moments.x;
  let rstd = 1.0 / sqrt(max(moments.y - correction * correction, 0.0) + params.eps);
  for (var c = t; c < len; c += ${tpr}u) {
    y[dst + c] = ((x[src + c] - m0) - correction) * rstd * weight[c] + bias[c];
  }
  let mean = m0 + correction;
  if (valid && t == 0u) {
    meanOut[params.firstRow + row] = mean;
    rstdOut[params.firstRow + row] = rstd;
  }
}`,
};

const backwardBlocksKernel: Kernel<RowShape> = {
  name: 'layernorm_backward_blocks',
  bindings: ['read', 'read', 'read', 'read', 'read', 'write', 'write'],
  wgsl: ({ tpr, rpg }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> meanIn: array<f32>;
@group(0) @binding(4) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> partials: array<f32>; // [blocks, 2, C]: dWeight, dBias
struct Params {
  rows: u32,        // rows in this window
  C: u32,
  firstRow: u32,    // index of the window's first row in mean and rstd
  firstBlock: u32,  // index of the window's first block in partials
  blockRows: u32,   // R
  dyOffset: u32,    // element offsets of the window's first row inside the dy, x and dx bindings
  xOffset: u32,
  dxOffset: u32,
}
@group(0) @binding(7) var<uniform> params: Params;
var<workgroup> pairs: array<vec2f, ${tpr * rpg}>;
var<workgroup> rowMeanG: array<f32, ${MAX_BLOCK_ROWS}>;
var<workgroup> rowMeanGX: array<f32, ${MAX_BLOCK_ROWS}>;
@compute @workgroup_size(${tpr * rpg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let block = wid.x + wid.y * nwg.x;
  let first = block * params.blockRows;
  if (first >= params.rows) { return; }
  let count = min(params.blockRows, params.rows - first);
  let C = params.C;
  let invC = 1.0 / f32(C);
  // Phase 1: ${rpg} rows at a time, ${tpr} threads each: mean(g) and mean(g·x̂) by one tree of pairs.
  let t = lid % ${tpr}u;
  let base = lid - t;
  for (var r0 = 0u; r0 < count; r0 += ${rpg}u) {
    let r = r0 + lid / ${tpr}u;
    let valid = r < count;
    let row = first + select(0u, r, valid);
    let mean = meanIn[params.firstRow + row];
    let rstd = rstdIn[params.firstRow + row];
    let dyRow = params.dyOffset + row * C;
    let xRow = params.xOffset + row * C;
    var acc = vec2f(0.0);
    for (var c = t; c < select(0u, C, valid); c += ${tpr}u) {
      let g = dy[dyRow + c] * weight[c];
      acc += vec2f(g, g * (x[xRow + c] - mean) * rstd);
    }
    pairs[lid] = acc;
    workgroupBarrier();
    for (var stride = ${tpr / 2}u; stride > 0u; stride /= 2u) {
      if (t < stride) { pairs[lid] += pairs[lid + stride]; }
      workgroupBarrier();
    }
    if (valid && t == 0u) {
      rowMeanG[r] = pairs[base].x * invC;
      rowMeanGX[r] = pairs[base].y * invC;
    }
    workgroupBarrier();
  }
  // Phase 2: one thread per column walks the block's rows in order.
  let out = (params.firstBlock + block) * 2u * C;
  for (var c = lid; c < C; c += ${tpr * rpg}u) {
    let w = weight[c];
    var dW = 0.0;
    var dB = 0.0;
    for (var r = 0u; r < count; r++) {
      let row = first + r;
      let rstd = rstdIn[params.firstRow + row];
      let d = dy[params.dyOffset + row * C + c];
      let xhat = (x[params.xOffset + row * C + c] - meanIn[params.firstRow + row]) * rstd;
      dx[params.dxOffset + row * C + c] = rstd * (d * w - rowMeanG[r] - xhat * rowMeanGX[r]);
      dW += d * xhat;
      dB += d;
    }
    partials[out + c] = dW;
    partials[out + C + c] = dB;
  }
}`,
};

const SUM_WG = 64;

const backwardSumKernel: Kernel = {
  name: 'layernorm_backward_sum',
  bindings: ['read', 'write', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> dWeight: array<f32>;
@group(0) @binding(2) var<storage, read_write> dBias: array<f32>;
struct Params { blocks: u32, C: u32 }
@group(0) @binding(3) var<uniform> params: Params;
@compute @workgroup_size(${SUM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x; // 0..2·C: dWeight columns, then dBias columns
  let C = params.C;
  if (j >= 2u * C) { return; }
  var acc = 0.0;
  for (var b = 0u; b < params.blocks; b++) { acc += partials[b * 2u * C + j]; }
  if (j < C) { dWeight[j] = acc; } else { dBias[j - C] = acc; }
}`,
};

export function layerNorm(
  gpu: Gpu, x: GpuStorage, weight: GpuStorage, bias: GpuStorage, rows: number, C: number, eps: number,
): { y: GpuStorage; mean: GpuStorage; rstd: GpuStorage } {
  const shape = rowShape(C);
  const y = gpu.alloc(rows * C);
  const mean = gpu.alloc(rows);
  const rstd = gpu.alloc(rows);
  if (rows === 0) return { y, mean, rstd };
  forEachUnitWindow(gpu, rows, [{ storage: x, perUnit: C }, { storage: y, perUnit: C }], (first, count, [wx, wy]) => {
    gpu.dispatch(
      forwardKernel, shape, [wx.view, weight, bias, wy.view, mean, rstd],
      [count, C, first, wx.offset, wy.offset, f32(eps)],
      grid1d(count, shape.rpg, gpu.maxWorkgroupsPerDimension),
    );
  });
  return { y, mean, rstd };
}

/** Rows per backward block for a call over `rows` rows. */
function layerNormBlockRows(rows: number): number {
  return Math.min(MAX_BLOCK_ROWS, Math.max(1, Math.ceil(rows / TARGET_BLOCKS)));
}

export function layerNormBackward(
  gpu: Gpu, dy: GpuStorage, x: GpuStorage, weight: GpuStorage, mean: GpuStorage, rstd: GpuStorage, rows: number, C: number,
): { dx: GpuStorage; dWeight: GpuStorage; dBias: GpuStorage } {
  const shape = rowShape(C);
  const blockRows = layerNormBlockRows(rows);
  const dx = gpu.alloc(rows * C);
  const dWeight = gpu.alloc(C);
  const dBias = gpu.alloc(C);
  // Blocks per window: a window's rows are split into blocks of blockRows (the last may be short).
  const windows: { first: number; count: number }[] = [];
  const tensors = [dy, x, dx].map((storage) => ({ storage, perUnit: C }));
  forEachUnitWindow(gpu, rows, tensors, (first, count) => windows.push({ first, count }));
  const blocks = windows.reduce((n, w) => n + Math.ceil(w.count / blockRows), 0);
  const partials = gpu.alloc(Math.max(1, blocks) * 2 * C);
  let firstBlock = 0;
  forEachUnitWindow(gpu, rows, tensors, (first, count, [wdy, wx, wdx]) => {
    const windowBlocks = Math.ceil(count / blockRows);
    gpu.dispatch(
      backwardBlocksKernel, shape, [wdy.view, wx.view, weight, mean, rstd, wdx.view, partials],
      [count, C, first, firstBlock, blockRows, wdy.offset, wx.offset, wdx.offset],
      grid1d(windowBlocks, 1, gpu.maxWorkgroupsPerDimension),
    );
    firstBlock += windowBlocks;
  });
  // With no rows there are no blocks: the sums come out zero.
  gpu.dispatch(backwardSumKernel, undefined, [partials, dWeight, dBias], [blocks, C], grid1d(2 * C, SUM_WG, gpu.maxWorkgroupsPerDimension));
  gpu.release(partials);
  return { dx, dWeight, dBias };
}
