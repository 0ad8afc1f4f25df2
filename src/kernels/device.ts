/**
 * Acquiring a WebGPU device through Dawn's Node bindings, with the adapter's own limits (never the
 * defaults: lavapipe and many GPUs bind at most 128 MiB, far less than GPT-2's embedding) and the
 * optional features we can use.
 */
import { create, globals } from 'webgpu';

const WANTED_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query'];

export interface AcquiredDevice {
  device: GPUDevice;
  description: string;
  limits: GPUSupportedLimits;
  features: ReadonlySet<string>;
  release(): void;
}

let installedGlobals = false;

/** Resolves to null when no adapter exists (no GPU and no software Vulkan driver). */
export async function acquireDevice(): Promise<AcquiredDevice | null> {
  if (!installedGlobals) {
    // GPUBufferUsage and friends are globals in a browser; Dawn's bindings hand them to us.
    Object.assign(globalThis, globals);
    installedGlobals = true;
  }
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  let gpu: GPU | null = create([]);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter === null) return null;
  const requiredLimits: Record<string, number> = {};
  for (const key of [
    'maxBufferSize',
    'maxStorageBufferBindingSize',
    'maxStorageBuffersPerShaderStage',
    'maxComputeWorkgroupStorageSize',
    'maxComputeInvocationsPerWorkgroup',
    'maxComputeWorkgroupSizeX',
    'maxComputeWorkgroupSizeY',
    'maxComputeWorkgroupsPerDimension',
  ] as const) {
    requiredLimits[key] = adapter.limits[key];
  }
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures: features });
  const info = adapter.info;
  const description = [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(' ') || 'unknown adapter';
  return {
    device,
    description,
    limits: device.limits,
    features: new Set(features),
    release() {
      device.destroy();
      // Node does not exit while the instance is referenced.
      gpu = null;
    },
  };
}
