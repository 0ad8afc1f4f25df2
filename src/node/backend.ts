/**
 * The backend in Node: WebGPU through Dawn, the matmul tuning in its cache file, and
 * GPT2_WEBGPU_REQUIRED=1 (set in CI) turning a missing adapter into an error, so kernel tests fail
 * rather than quietly run on the CPU.
 */
import { getWebGpuBackend as coreWebGpuBackend, initBackend, releaseWebGpu, type BackendChoice, type BackendOptions } from '../kernels/select-backend.js';
import type { GpuOptions } from '../kernels/gpu.js';
import type { WebGpuBackend } from '../kernels/webgpu-backend.js';
import type { Backend } from '../tensor/backend.js';
import { acquireDawnDevice } from './dawn-device.js';
import { fileTuneStore } from './tune-file.js';

export const webGpuRequired = (): boolean => process.env.GPT2_WEBGPU_REQUIRED === '1';

/** The WebGPU backend on Dawn, or null without an adapter (tests and benches; nothing is measured). */
export function getWebGpuBackend(options: GpuOptions = {}): Promise<WebGpuBackend | null> {
  return coreWebGpuBackend(acquireDawnDevice, { ...options, tuneStore: fileTuneStore() });
}

/**
 * Creates the backend and makes it the default for new tensors. 'auto' takes WebGPU when an adapter
 * exists, else the CPU backend with a one-line warning. The first WebGPU set-up on an adapter
 * measures the matmul variants (a few seconds) and remembers the fastest in
 * ~/.cache/gpt2-webgpu/matmul-tune.json.
 */
export function createBackend(choice: BackendChoice = 'auto', options: GpuOptions = {}): Promise<Backend> {
  return initBackend(acquireDawnDevice, choice, { ...options, tuneStore: fileTuneStore(), requireWebGpu: webGpuRequired() } satisfies BackendOptions);
}

/** Destroys the WebGPU device; a later createBackend makes a new one. */
export function releaseBackend(): void {
  releaseWebGpu();
}
