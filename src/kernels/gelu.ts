/**
 * GELU, tanh approximation as GPT-2, forward and backward. CPU reference: src/tensor/cpu/gelu.ts.
 *
 * Flat element-wise kernels, walked over tensors larger than one binding in chunks (forEachChunk).
 * 0.5·(1 + tanh(u)) is written as the logistic s = 1/(1 + exp(−2u)), the
 * same function without the cancellation of 1 + tanh(u) for negative x. The tanh argument
 * u = √(2/π)·(x + 0.044715·x³) is clamped by computing it from x clamped to ±10: x³ cannot overflow,
 * |u| ≤ 43.6 keeps exp(2|u|) finite, and past ±10 the gate is 1 or below 2e-38 in f32 anyway.
 * Forward y = x·s (with x floored at −10, so x = −1e30 gives ~0, not −1e30·2e-38). Backward:
 * gelu'(x) = s + 2·x·s·(1 − s)·√(2/π)·(1 + 3·0.044715·x²), with the clamped x.
 *
 * Each thread takes PER = 16 elements, WG apart (coalesced on a GPU, whole SIMD rows on a CPU): a
 * software rasterizer pays per workgroup, and a GPU still gets hundreds of workgroups at GPT-2's
 * sizes (docs/kernels.md, gelu_fwd / gelu_bwd).
 */
import type { Gpu, GpuStorage } from './gpu.js';
import { forEachChunk } from './binding-windows.js';
import { grid1d, type Kernel } from './kernel.js';

const WG = 256;

/** WGSL of `gelu(x)` and its gate, for this file's kernels and the matmul epilogue. */
export const GELU_WGSL = /* wgsl */ `
const GELU_K = 0.7978845608028654; // sqrt(2 / pi)
const GELU_C = 0.044715;
/** 0.5 · (1 + tanh(u)) as a logistic; u from x clamped to ±10, so |u| ≤ 43.6 and exp(2|u|) is finite. */
fn geluGate(xc: f32) -> f32 {
  let u = GELU_K * (xc + GELU_C * xc * xc * xc);
  return 1.0 / (1.0 + exp(-2.0 * u));
}
/** Below −10 the gate is < 2e-38: scaled by −10, not by x, so no huge negative x leaks through. */
fn gelu(x: f32) -> f32 {
  return max(x, -10.0) * geluGate(clamp(x, -10.0, 10.0));
}`;

/** Elements per thread: thread t of workgroup w takes elements w·WG·PER + k·WG + t, k < PER. */
const PER = 16;

const forwardKernel: Kernel = {
  name: 'gelu_forward',
  bindings: ['read', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
struct Params { count: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${GELU_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let base = (wid.x + wid.y * nwg.x) * ${WG * PER}u + lid;
  for (var k = 0u; k < ${PER}u; k++) {
    let i = base + k * ${WG}u;
    if (i < params.count) { y[i] = gelu(x[i]); }
  }
}`,
};

const backwardKernel: Kernel = {
  name: 'gelu_backward',
  bindings: ['read', 'read', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
struct Params { count: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${GELU_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let base = (wid.x + wid.y * nwg.x) * ${WG * PER}u + lid;
  for (var k = 0u; k < ${PER}u; k++) {
    let i = base + k * ${WG}u;
    if (i < params.count) {
      let xc = clamp(x[i], -10.0, 10.0);
      let s = geluGate(xc);
      dx[i] = dy[i] * (s + 2.0 * xc * s * (1.0 - s) * GELU_K * (1.0 + 3.0 * GELU_C * xc * xc));
    }
  }
}`,
};

export function gelu(gpu: Gpu, x: GpuStorage): GpuStorage {
  const y = gpu.alloc(x.size);
  forEachChunk(gpu, x.size, (start, count) => {
    gpu.dispatch(forwardKernel, undefined, [gpu.view(x, start, count), gpu.view(y, start, count)], [count], grid1d(count, WG * PER, gpu.maxWorkgroupsPerDimension));
  });
  return y;
}

export function geluBackward(gpu: Gpu, x: GpuStorage, dy: GpuStorage): GpuStorage {
  if (dy.size !== x.size) throw new Error(`geluBackward: x has ${x.size} elements, dy ${dy.size}`);
  const dx = gpu.alloc(x.size);
  forEachChunk(gpu, x.size, (start, count) => {
    gpu.dispatch(
      backwardKernel, undefined, [gpu.view(x, start, count), gpu.view(dy, start, count), gpu.view(dx, start, count)],
      [count], grid1d(count, WG * PER, gpu.maxWorkgroupsPerDimension),
    );
  });
  return dx;
}
