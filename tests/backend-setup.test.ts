/**
 * The backend set-up owns the matmul tuning: with a tune store that remembers, the first WebGPU
 * set-up measures the variants and writes the fastest to the store, a later set-up (or a process
 * that finds the record) does not measure again; a store that forgets (a page without storage,
 * tests) leaves the adapter kind's default without measuring.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { adapterTraits, variantSupported } from '../src/kernels/matmul.js';
import {
  currentVariant, defaultVariant, forgetVariant, MATMUL_VARIANTS, useTuneStore, type TuneRecord, type TuneStore,
} from '../src/kernels/matmul-tune.js';
import { initBackend, releaseWebGpu } from '../src/kernels/select-backend.js';
import type { WebGpuBackend } from '../src/kernels/webgpu-backend.js';
import { acquireDawnDevice } from '../src/node/dawn-device.js';
import { webGpuRequired } from '../src/node/backend.js';

afterAll(() => {
  useTuneStore({});
  releaseWebGpu();
});

function recordingStore(remembers: boolean) {
  const saved = new Map<string, TuneRecord>();
  const reads: string[] = [];
  const store: TuneStore = {
    remember: remembers
      ? { read: (adapter) => (reads.push(adapter), saved.get(adapter)), write: (adapter, record) => void saved.set(adapter, record) }
      : undefined,
  };
  return { store, saved, reads };
}

const probe = await initBackend(acquireDawnDevice, 'auto', { tuneStore: {}, requireWebGpu: webGpuRequired() });

describe.runIf(probe.name === 'webgpu')('matmul tuning at set-up', () => {
  const gpu = (probe as WebGpuBackend).gpu;
  const traits = adapterTraits(gpu);

  it('a store without memory: nothing measured, the default variant', async () => {
    forgetVariant(gpu.description);
    await initBackend(acquireDawnDevice, 'webgpu', { tuneStore: {} });
    expect(currentVariant(traits)).toBe(defaultVariant(traits));
  });

  it('a store that remembers: measured once, written, then read instead of measured', async () => {
    forgetVariant(gpu.description);
    const { store, saved } = recordingStore(true);
    await initBackend(acquireDawnDevice, 'webgpu', { tuneStore: store });
    const record = saved.get(gpu.description)!;
    expect(record, 'the set-up wrote a record').toBeDefined();
    expect(variantSupported(MATMUL_VARIANTS[record.variant], traits)).toBe(true);
    expect(Object.keys(record.gflops).length).toBeGreaterThan(1);
    expect(currentVariant(traits)).toBe(record.variant);

    // A new process: the record is read back, nothing is measured (the store would be written again).
    forgetVariant(gpu.description);
    const fresh = recordingStore(true);
    const other = record.variant === 'block4x4-8x8' ? 'block4x4-64x1' : 'block4x4-8x8';
    fresh.saved.set(gpu.description, { ...record, variant: other, measuredAt: 'earlier' });
    await initBackend(acquireDawnDevice, 'webgpu', { tuneStore: fresh.store });
    expect(fresh.reads).toEqual([gpu.description]);
    expect(fresh.saved.get(gpu.description)!.measuredAt).toBe('earlier');
    expect(currentVariant(traits)).toBe(other);
  });
});
