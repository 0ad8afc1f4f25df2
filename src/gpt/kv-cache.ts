/**
 * Keys and values of every layer, preallocated for the whole context and written in place at the
 * current position: decoding never copies or grows the cache.
 */
import type { Backend } from '../tensor/backend.js';
import { zeros } from '../tensor/create.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { GPT2Config } from './config.js';

export class KVCache {
  private readonly layers: { k: Tensor; v: Tensor }[];
  private filled = 0;

  /** `maxLen` positions for `batch` sequences: [B, H, maxLen, hs] per layer for k and for v. */
  constructor(config: GPT2Config, readonly batch: number, backend: Backend, readonly maxLen = config.n_positions) {
    const shape = [batch, config.n_head, maxLen, config.n_embd / config.n_head];
    this.layers = Array.from({ length: config.n_layer }, () => ({
      k: keep(zeros(shape, { backend })),
      v: keep(zeros(shape, { backend })),
    }));
  }

  /** Positions already written. */
  get length(): number {
    return this.filled;
  }

  layer(index: number): { k: Tensor; v: Tensor } {
    return this.layers[index];
  }

  advance(count: number): void {
    if (this.filled + count > this.maxLen) throw new Error(`KV cache of ${this.maxLen} positions overflows at ${this.filled + count}`);
    this.filled += count;
  }

  /** Forget every position (the buffers stay allocated for reuse). */
  reset(): void {
    this.filled = 0;
  }

  /** Bytes held by the cache: 2 (k and v) · layers · B · H · maxLen · hs · 4. */
  get bytes(): number {
    return this.layers.reduce((n, { k, v }) => n + 4 * (k.size + v.size), 0);
  }

  dispose(): void {
    for (const { k, v } of this.layers) {
      k.dispose();
      v.dispose();
    }
  }
}
