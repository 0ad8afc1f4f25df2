/**
 * A WebGPU device from an adapter, with the adapter's own limits (never the defaults: lavapipe and
 * many GPUs bind at most 128 MiB, far less than GPT-2's embedding) and the optional features the
 * kernels use. Getting the adapter is the runtime's part (Node: src/node/dawn-device.ts; a browser:
 * navigator.gpu).
 */

/** `subgroups`: the matmul variants that share loads across a subgroup (matmul.ts). */
const USED_FEATURES: GPUFeatureName[] = ['subgroups'];

const REQUESTED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension',
] as const;

export interface AcquiredDevice {
  device: GPUDevice;
  description: string;
  limits: GPUSupportedLimits;
  features: ReadonlySet<string>;
  release(): void;
}

/** Gets a device from the runtime, or null when it has no adapter. */
export type DeviceSource = () => Promise<AcquiredDevice | null>;

/**
 * Requests a device with the adapter's limits and the features we use. `release` runs after the
 * device is destroyed (a runtime that must drop its GPU instance, as Node, does it there).
 */
export async function deviceFromAdapter(adapter: GPUAdapter, release: () => void = () => {}): Promise<AcquiredDevice> {
  const requiredLimits: Record<string, number> = {};
  for (const key of REQUESTED_LIMITS) requiredLimits[key] = adapter.limits[key];
  const features = USED_FEATURES.filter((f) => adapter.features.has(f));
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
      release();
    },
  };
}
