/** A WebGPU device in Node, through Dawn's bindings (the `webgpu` package). */
import { create, globals } from 'webgpu';
import { deviceFromAdapter, type AcquiredDevice } from '../kernels/device.js';
import { hidingDriverMessages } from './driver-messages.js';

let installedGlobals = false;

/** Resolves to null when no adapter exists (no GPU and no software Vulkan driver). */
export async function acquireDawnDevice(): Promise<AcquiredDevice | null> {
  if (!installedGlobals) {
    // GPUBufferUsage and friends are globals in a browser; Dawn's bindings hand them to us.
    Object.assign(globalThis, globals);
    installedGlobals = true;
  }
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  let gpu: GPU | null = null;
  const adapter = await hidingDriverMessages(() => {
    gpu = create([]);
    return gpu.requestAdapter({ powerPreference: 'high-performance' });
  });
  if (adapter === null) return null;
  return deviceFromAdapter(adapter, () => {
    // Node does not exit while the instance is referenced.
    gpu = null;
  });
}
