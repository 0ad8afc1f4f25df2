/** The backend in a browser: WebGPU through navigator.gpu, else the CPU backend. */
import { initBackend, type BackendChoice, type BackendOptions } from '../kernels/select-backend.js';
import type { Backend } from '../tensor/backend.js';
import { acquireBrowserDevice } from './device.js';

/**
 * Creates the backend and makes it the default for new tensors. 'auto' takes WebGPU when the browser
 * has an adapter, else the CPU backend with a one-line console warning; 'webgpu' throws without one.
 * Without a `tuneStore` nothing is measured: the matmul variant is the adapter kind's default.
 */
export function createBackend(choice: BackendChoice = 'auto', options: BackendOptions = {}): Promise<Backend> {
  return initBackend(acquireBrowserDevice, choice, options);
}
