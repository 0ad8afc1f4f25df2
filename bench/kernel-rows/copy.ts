/**
 * The bandwidth every memory-bound row is compared with: a device-to-device copy of 64 MiB
 * (copyBufferToBuffer on WebGPU, TypedArray.set on the CPU). GB/s counts bytes read + written.
 */
import { medianMs } from '../harness.js';
import type { WebGpuBackend } from '../../src/kernels/webgpu-backend.js';
import type { GpuStorage } from '../../src/kernels/gpu.js';
import type { Backend } from '../../src/tensor/backend.js';
import type { CpuStorage } from '../../src/tensor/cpu/storage.js';
import type { BenchRow } from './types.js';

export type CopyRow = BenchRow & { bytes: number; gbps: number };

export async function copyRows(backend: Backend, bytes = 64 * 1024 * 1024): Promise<CopyRow[]> {
  const elements = bytes / 4;
  const src = backend.fill(elements, 1, 'f32');
  const dst = backend.fill(elements, 0, 'f32');
  let copy: () => void;
  if (backend.name === 'webgpu') {
    const { gpu } = backend as WebGpuBackend;
    copy = () => gpu.copy((src as GpuStorage).buffer, 0, (dst as GpuStorage).buffer, 0, bytes);
  } else {
    copy = () => (dst as CpuStorage).data.set((src as CpuStorage).data);
  }
  // The denominator of every memory-bound row: more runs than the default, after touching both buffers.
  const ms = await medianMs(backend, copy, { warmup: 3, runs: 9 });
  backend.release(src);
  backend.release(dst);
  return [{ op: 'copy', shape: [elements], bytes, ms, gbps: (2 * bytes) / ms / 1e6 }];
}
