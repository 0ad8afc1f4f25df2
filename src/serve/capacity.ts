/**
 * Whether a pool of cache slots fits the backend, checked before anything is allocated: the pool
 * (KVCachePool) keeps each layer's keys, and its values, in one buffer of slots · n_positions ·
 * n_embd floats, and a backend holds at most maxStorageSize elements in one buffer (WebGPU: the
 * adapter's maxBufferSize). Past it, creating the buffer fails deep inside the device with no word
 * of slots. WebGPU cannot be asked for its memory in all, so the message names the total for the
 * reader to weigh, and only the per-buffer limit is enforced.
 */
import type { GPT2Config } from '../gpt/config.js';
import type { Backend } from '../tensor/backend.js';

const FLOAT_BYTES = 4;

const size = (bytes: number): string => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(1)} MB`);

/** Why `slots` cache slots cannot be allocated on `backend`, or null when they fit. */
export function cacheSlotsProblem(config: GPT2Config, slots: number, backend: Pick<Backend, 'maxStorageSize' | 'description'>): string | null {
  const perSlot = config.n_positions * config.n_embd;
  const bufferBytes = slots * perSlot * FLOAT_BYTES;
  if (slots * perSlot <= backend.maxStorageSize) return null;
  const buffers = 2 * config.n_layer;
  const fitting = Math.floor(backend.maxStorageSize / perSlot);
  return `${slots} cache slots need ${buffers} buffers of ${size(bufferBytes)} each (keys and values of ${config.n_layer} layers: ` +
    `${slots} slots × ${config.n_positions} positions × ${config.n_embd} × 4 B), ${size(buffers * bufferBytes)} in all; ` +
    `one buffer of ${backend.description} holds at most ${size(backend.maxStorageSize * FLOAT_BYTES)}, enough for ${fitting} slots`;
}
