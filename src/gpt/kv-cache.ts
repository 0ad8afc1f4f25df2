/**
 * Keys and values of every layer, preallocated for the whole context and written in place at the
 * current position: decoding never copies or grows the cache.
 */
import type { Backend } from '../tensor/backend.js';
import type { GPT2Config } from './config.js';
import { KVLayers } from './kv-layers.js';

export class KVCache extends KVLayers {
  private filled = 0;

  /** `maxLen` positions for `batch` sequences: [B, H, maxLen, hs] per layer for k and for v. */
  constructor(config: GPT2Config, readonly batch: number, backend: Backend, maxLen = config.n_positions) {
    super(config, batch, backend, maxLen);
  }

  /** Positions already written. */
  get length(): number {
    return this.filled;
  }

  advance(count: number): void {
    if (this.filled + count > this.maxLen) throw new Error(`KV cache of ${this.maxLen} positions overflows at ${this.filled + count}`);
    this.filled += count;
  }

  /** Forget every position (the buffers stay allocated for reuse). */
  reset(): void {
    this.filled = 0;
  }
}
