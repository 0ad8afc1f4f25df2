/**
 * One AdamW step in place on a parameter and its moments, torch.optim.AdamW semantics.
 * CPU reference: src/tensor/cpu/adamw.ts (which also computes the host-side constants).
 *
 * One flat kernel, one thread per element: reads p, g, m, v once and writes p, m, v once, the
 * minimum traffic (28 B per element). The bias corrections 1 − β^t, 1 − β1, 1 − β2 and the decay
 * factor 1 − lr·wd are computed on the host in float64 and passed as f32 uniforms with lr, β1, β2 and
 * eps: the kernel never raises to a power, and never computes 1 − β2 in f32 (β2 = 0.999 rounds to
 * 0.99900001, so 1 − β2 would be off by 1.3e-5 relative, an error that grows in p step by step).
 * Tensors larger than one binding (the flat buffer of all parameters, src/train/flat-parameters.ts)
 * are walked in chunks (forEachChunk) of four aligned views. The clip's factor is read from a
 * one-element buffer, so it never leaves the device. Each thread takes PER = 8 elements, WG apart:
 * fewer workgroups, which a software rasterizer pays for one by one, while a GPU still gets
 * thousands (docs/kernels.md, adamw).
 */
import type { AdamWHyper } from '../tensor/backend.js';
import { adamwConstants } from '../tensor/cpu/adamw.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { forEachChunk } from './binding-windows.js';
import { f32, grid1d, type Kernel } from './kernel.js';

const WG = 256;

/** Elements per thread: thread t of workgroup w takes elements w·WG·PER + k·WG + t, k < PER. */
const PER = 8;

/**
 * `vec4`: four elements at a time (count a multiple of 4): a quarter of the per-lane loads, which
 * llvmpipe runs as gathers. `scaled`: multiply the gradient by scale[0] (unscaled, the binding holds
 * the gradient's first element and is not read).
 */
const adamwKernel: Kernel<{ vec4: boolean; scaled: boolean }> = {
  name: 'adamw',
  bindings: ['write', 'read', 'write', 'write', 'read'],
  wgsl: ({ vec4, scaled }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> p: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(1) var<storage, read> g: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(2) var<storage, read_write> m: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(3) var<storage, read_write> v: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(4) var<storage, read> scale: array<f32>;
struct Params {
  count: u32,           // elements, or vec4s with vec4
  lr: f32,
  decay: f32,           // 1 − lr·weightDecay
  beta1: f32,
  beta2: f32,
  oneMinusBeta1: f32,   // from the host: 1.0 − β2 in f32 would be 0.00099998713 (β2 = 0.999 rounds up)
  oneMinusBeta2: f32,
  eps: f32,
  biasCorrection1: f32, // 1 − β1^t
  biasCorrection2: f32, // 1 − β2^t
}
@group(0) @binding(5) var<uniform> params: Params;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let gradScale = ${scaled ? 'scale[0]' : '1.0'};
  let base = (wid.x + wid.y * nwg.x) * ${WG * PER}u + lid;
  for (var k = 0u; k < ${PER}u; k++) {
    let i = base + k * ${WG}u;
    if (i >= params.count) { break; }
    let gi = ${scaled ? 'g[i] * gradScale' : 'g[i]'};
    let mi = params.beta1 * m[i] + params.oneMinusBeta1 * gi;
    let vi = params.beta2 * v[i] + params.oneMinusBeta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let mHat = mi / params.biasCorrection1;
    let vHat = vi / params.biasCorrection2;
    p[i] = p[i] * params.decay - params.lr * mHat / (sqrt(vHat) + params.eps);
  }
}`,
};

export function adamw(gpu: Gpu, param: GpuStorage, grad: GpuStorage, m: GpuStorage, v: GpuStorage, hyper: AdamWHyper, gradScale: GpuStorage | null): void {
  for (const [name, s] of [['grad', grad], ['m', m], ['v', v]] as const) {
    if (s.size !== param.size) throw new Error(`adamw: ${name} has ${s.size} elements, the parameter ${param.size}`);
  }
  if (gradScale !== null && gradScale.size !== 1) throw new Error(`adamw: the gradient scale has ${gradScale.size} elements, not 1`);
  const scale = gradScale === null ? gpu.view(grad, 0, 1) : gpu.view(gradScale);
  const { decay, biasCorrection1, biasCorrection2 } = adamwConstants(hyper);
  forEachChunk(gpu, param.size, (start, count) => {
    const vec4 = count % 4 === 0;
    const threads = vec4 ? count / 4 : count;
    gpu.dispatch(
      adamwKernel, { vec4, scaled: gradScale !== null }, [...[param, grad, m, v].map((s) => gpu.view(s, start, count)), scale],
      [
        threads, f32(hyper.lr), f32(decay), f32(hyper.beta1), f32(hyper.beta2), f32(1 - hyper.beta1), f32(1 - hyper.beta2),
        f32(hyper.eps), f32(biasCorrection1), f32(biasCorrection2),
      ],
      grid1d(threads, WG * PER, gpu.maxWorkgroupsPerDimension),
    );
  });
}
