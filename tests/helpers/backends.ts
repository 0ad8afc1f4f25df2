/**
 * The two backends every kernel test compares: the CPU reference and WebGPU. Without an adapter the
 * WebGPU cases are skipped, unless GPT2_WEBGPU_REQUIRED=1 (CI), where they fail.
 */
import { afterAll } from 'vitest';
import { getWebGpuBackend, releaseBackend, webGpuRequired } from '../../src/node/backend.js';
import type { WebGpuBackend } from '../../src/kernels/webgpu-backend.js';
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
 * Runs fn with the adapter's binding limit and offset alignment lowered, so the code that splits
 * tensors larger than one binding into windows runs on small tensors (an offset aligned to the
 * lowered alignment, a multiple of the real one, is valid on the device too).
 */
export async function withBindingLimits<T>(backend: WebGpuBackend, maxBindingBytes: number, bindingAlignment: number, fn: () => Promise<T>): Promise<T> {
  const limits = backend.gpu as { maxBindingBytes: number; bindingAlignment: number };
  const saved = { maxBindingBytes: limits.maxBindingBytes, bindingAlignment: limits.bindingAlignment };
  if (bindingAlignment % saved.bindingAlignment !== 0) throw new Error(`alignment ${bindingAlignment} is not a multiple of the adapter's ${saved.bindingAlignment}`);
  Object.assign(limits, { maxBindingBytes, bindingAlignment });
  try {
    return await fn();
  } finally {
    Object.assign(limits, saved);
  }
}

afterAll(() => releaseBackend());
