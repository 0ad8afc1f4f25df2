/**
 * A WebGPU device in a browser, through `navigator.gpu`, with the adapter's own limits (the core's
 * deviceFromAdapter requests them). A device lost for any other reason than our own release — a GPU
 * reset, a driver crash, memory pressure — is reported to the listeners, so a page can say so and keep
 * what it saved.
 */
import { deviceFromAdapter, type AcquiredDevice } from '../kernels/device.js';

type LostListener = (message: string) => void;

const lostListeners = new Set<LostListener>();

/** Calls `listener` when the device is lost; returns a function that stops listening. */
export function onDeviceLost(listener: LostListener): () => void {
  lostListeners.add(listener);
  return () => lostListeners.delete(listener);
}

/** Resolves to null when this browser has no WebGPU or no adapter. */
export async function acquireBrowserDevice(): Promise<AcquiredDevice | null> {
  if (typeof navigator === 'undefined' || !('gpu' in navigator)) return null;
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter === null) return null;
  const acquired = await deviceFromAdapter(adapter);
  let released = false;
  void acquired.device.lost.then((info) => {
    if (released) return;
    const message = info.message || `reason: ${info.reason}`;
    for (const listener of lostListeners) listener(message);
  });
  return {
    ...acquired,
    release() {
      released = true;
      acquired.release();
    },
  };
}
