/**
 * Picks the backend: WebGPU when the runtime's device source finds an adapter, else the CPU
 * reference with a one-line notice (or an error, when WebGPU was asked for or is required). The
 * WebGPU backend is created once per process and owns the matmul tuning: with a tune store that
 * remembers, the variant is measured at set-up unless already remembered for this adapter.
 */
import type { Backend } from '../tensor/backend.js';
import { CpuBackend } from '../tensor/cpu-backend.js';
import { setDefaultBackend } from '../tensor/create.js';
import type { DeviceSource } from './device.js';
import { Gpu, type GpuOptions } from './gpu.js';
import { autotuneMatmul, tuneStoreRemembers, useTuneStore, type TuneStore } from './matmul-tune.js';
import { createWebGpuBackend, type WebGpuBackend } from './webgpu-backend.js';

export type BackendChoice = 'auto' | 'webgpu' | 'cpu';

export interface BackendOptions extends GpuOptions {
  /** Where the matmul tuning is remembered; without one, the adapter kind's default variant runs. */
  tuneStore?: TuneStore;
  /** A missing adapter is an error under 'auto' too (CI, where a quiet CPU fallback would hide it). */
  requireWebGpu?: boolean;
}

let webgpu: WebGpuBackend | null = null;

/** The WebGPU backend, or null when the runtime has no adapter. Created once per process; nothing is measured. */
export async function getWebGpuBackend(source: DeviceSource, options: BackendOptions = {}): Promise<WebGpuBackend | null> {
  if (options.tuneStore) useTuneStore(options.tuneStore);
  if (webgpu === null) {
    const acquired = await source();
    if (acquired === null) return null;
    webgpu = createWebGpuBackend(new Gpu(acquired, options));
  }
  return webgpu;
}

/** The backend `choice` names, made the default for new tensors; WebGPU's matmul tuned (see above). */
export async function initBackend(source: DeviceSource, choice: BackendChoice = 'auto', options: BackendOptions = {}): Promise<Backend> {
  let backend: Backend | null = null;
  if (choice !== 'cpu') {
    const gpu = await getWebGpuBackend(source, options);
    if (gpu === null && (choice === 'webgpu' || options.requireWebGpu)) {
      throw new Error('no WebGPU adapter found (on Linux without a GPU, install Mesa lavapipe: see the README)');
    }
    if (gpu === null) console.warn('gpt2-webgpu: no WebGPU adapter found, running on the CPU backend (slow)');
    else if (tuneStoreRemembers()) await autotuneMatmul(gpu.gpu);
    backend = gpu;
  }
  backend ??= new CpuBackend();
  setDefaultBackend(backend);
  return backend;
}

/** Destroys the WebGPU device (in Node, so that the process can exit). A later set-up makes a new one. */
export function releaseWebGpu(): void {
  webgpu?.gpu.destroy();
  webgpu = null;
}
