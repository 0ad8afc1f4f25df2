/** The backend in a browser: WebGPU through navigator.gpu, else the CPU backend. */
import { initBackend, releaseWebGpu, type BackendChoice } from '../kernels/select-backend.js';
import type { GpuOptions } from '../kernels/gpu.js';
import type { Backend } from '../tensor/backend.js';
import { acquireBrowserDevice } from './device.js';

/**
 * Creates the backend and makes it the default for new tensors. 'auto' takes WebGPU when the browser
 * has an adapter, else the CPU backend with a one-line console warning; 'webgpu' throws without one.
 * The matmul variant is the adapter kind's default (nothing is measured in a page).
 */
export function createBackend(choice: BackendChoice = 'auto', options: GpuOptions = {}): Promise<Backend> {
  return initBackend(acquireBrowserDevice, choice, options);
}

/** Destroys the WebGPU device; a later createBackend makes a new one. */
export function releaseBackend(): void {
  releaseWebGpu();
}
