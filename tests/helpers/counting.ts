/**
 * A backend wrapper that counts the storages handed out and not yet released: on the CPU this is the
 * only way to see a leak; on WebGPU it agrees with the buffer pool's liveBuffers
 * (tests/autograd.test.ts checks that).
 */
import type { Backend, Storage } from '../../src/tensor/backend.js';

export type CountingBackend = Backend & { readonly live: number };

export function counting(inner: Backend): CountingBackend {
  const live = new Set<Storage>();
  const track = (value: unknown): unknown => {
    if (value !== null && typeof value === 'object' && !(value instanceof Promise)) {
      if ('dtype' in value && 'size' in value) live.add(value as Storage);
      else for (const v of Object.values(value)) track(v);
    }
    return value;
  };
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'live') return live.size;
      const value = Reflect.get(target, prop) as unknown;
      if (typeof value !== 'function') return value;
      if (prop === 'release') {
        return (s: Storage) => {
          if (!live.delete(s)) throw new Error('released a storage twice (or one this backend never made)');
          (value as (s: Storage) => void).call(target, s);
        };
      }
      return (...args: unknown[]) => track((value as (...a: unknown[]) => unknown).apply(target, args));
    },
  }) as CountingBackend;
}
