/**
 * The two backends every kernel test compares: the CPU reference and WebGPU. Without an adapter the
 * WebGPU cases are skipped, unless GPT2_WEBGPU_REQUIRED=1 (CI), where they fail.
 */
import { afterAll } from 'vitest';
import { getWebGpuBackend, releaseBackend, webGpuRequired } from '../../src/node/backend.js';
import { Gpu } from '../../src/kernels/gpu.js';
import { createWebGpuBackend, type WebGpuBackend } from '../../src/kernels/webgpu-backend.js';
import { CpuBackend } from '../../src/tensor/cpu-backend.js';

export const cpu = new CpuBackend();

/**
 * The WebGPU backend for this test file (each file runs in its own process). Kernel tests run both
 * with batched submission (the default) and with a submit after every dispatch when
 * GPT2_WEBGPU_IMMEDIATE=1 (the test script runs the suite both ways).
 */
export async function webgpuOrSkip(): Promise<WebGpuBackend | null> {
  const backend = await getWebGpuBackend({ immediate: process.env.GPT2_WEBGPU_IMMEDIATE === '1', validate: true });
  if (backend === null && webGpuRequired()) throw new Error('GPT2_WEBGPU_REQUIRED=1 but no WebGPU adapter was found');
  return backend;
}

/**
 * Runs fn on a second WebGPU backend on the same device whose bindings hold at most
 * `maxBindingBytes` at offsets aligned to `bindingAlignment` (GpuOptions), so the code that splits
 * tensors larger than one binding into windows runs on small tensors.
 */
export async function withBindingLimits<T>(
  backend: WebGpuBackend, maxBindingBytes: number, bindingAlignment: number, fn: (limited: WebGpuBackend) => T | Promise<T>,
): Promise<T> {
  const { gpu } = backend;
  // The device belongs to `backend`: destroying this Gpu must not release it.
  const shared = { ...gpu.acquired, release: () => {} };
  const limited = new Gpu(shared, { immediate: gpu.immediate, validate: true, maxBindingBytes, bindingAlignment });
  try {
    return await fn(createWebGpuBackend(limited));
  } finally {
    limited.trimPool(); // the buffers fn released; those it kept stay with the device until teardown
    limited.destroy();
  }
}

afterAll(() => releaseBackend());
