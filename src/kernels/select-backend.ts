/**
 * Picks the backend: WebGPU when an adapter exists, else the CPU reference with a one-line notice.
 * GPT2_WEBGPU_REQUIRED=1 (set in CI) turns a missing adapter into an error, so kernel tests fail
 * rather than quietly run on the CPU.
 */
import type { Backend } from '../tensor/backend.js';
import { CpuBackend } from '../tensor/cpu-backend.js';
import { setDefaultBackend } from '../tensor/create.js';
import { acquireDevice } from './device.js';
import { Gpu, type GpuOptions } from './gpu.js';
import { createWebGpuBackend, type WebGpuBackend } from './webgpu-backend.js';

export type BackendChoice = 'auto' | 'webgpu' | 'cpu';

export const webGpuRequired = (): boolean => process.env.GPT2_WEBGPU_REQUIRED === '1';

let webgpu: WebGpuBackend | null = null;

/** The WebGPU backend, or null when this machine has no adapter. Created once per process. */
export async function getWebGpuBackend(options: GpuOptions = {}): Promise<WebGpuBackend | null> {
  if (webgpu === null) {
    const acquired = await acquireDevice();
    if (acquired === null) return null;
    webgpu = createWebGpuBackend(new Gpu(acquired, options));
  }
  return webgpu;
}

export async function initBackend(choice: BackendChoice = 'auto', options: GpuOptions = {}): Promise<Backend> {
  let backend: Backend | null = null;
  if (choice !== 'cpu') {
    backend = await getWebGpuBackend(options);
    if (backend === null && (choice === 'webgpu' || webGpuRequired())) {
      throw new Error('no WebGPU adapter found (on Linux without a GPU, install Mesa lavapipe: see the README)');
    }
    if (backend === null) console.warn('gpt2-webgpu: no WebGPU adapter found, running on the CPU backend (slow)');
  }
  backend ??= new CpuBackend();
  setDefaultBackend(backend);
  return backend;
}

/** Destroys the WebGPU device so Node can exit. */
export function releaseWebGpu(): void {
  webgpu?.gpu.destroy();
  webgpu = null;
}
