/**
 * Placeholder of the browser entry until the browser edge lands (the web engineer's branch replaces
 * this file): the core API, with createBackend taking WebGPU from navigator.gpu.
 *
 * @packageDocumentation
 */
import { deviceFromAdapter } from './kernels/device.js';
import { initBackend, type BackendChoice, type BackendOptions } from './kernels/select-backend.js';
import type { Backend } from './tensor/backend.js';

export * from './index.js';

/** Creates the backend on the browser's WebGPU adapter ('auto': the CPU backend without one) and makes it the default. */
export function createBackend(choice: BackendChoice = 'auto', options: BackendOptions = {}): Promise<Backend> {
  const source = async () => {
    const adapter = await (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu?.requestAdapter();
    return adapter ? deviceFromAdapter(adapter) : null;
  };
  return initBackend(source, choice, options);
}
