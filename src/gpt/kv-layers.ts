/**
 * The memory of a KV cache: keys and values of every layer, [sequences, H, maxLen, hs] each,
 * preallocated for the whole context and written in place. KVCache (sequences decoded together, one
 * length) and KVCachePool (slots, a length each) keep their bookkeeping on top.
 */
import type { Backend } from '../tensor/backend.js';
import { zeros } from '../tensor/create.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { GPT2Config } from './config.js';

export class KVLayers {
  private readonly layers: { k: Tensor; v: Tensor }[];

  constructor(config: GPT2Config, sequences: number, backend: Backend, readonly maxLen: number) {
    const shape = [sequences, config.n_head, maxLen, config.n_embd / config.n_head];
    this.layers = Array.from({ length: config.n_layer }, () => ({
      k: keep(zeros(shape, { backend })),
      v: keep(zeros(shape, { backend })),
    }));
  }

  /** [sequences, H, maxLen, hs] each. */
  layer(index: number): { k: Tensor; v: Tensor } {
    return this.layers[index];
  }

  /** Bytes held: 2 (k and v) · layers · sequences · H · maxLen · hs · 4. */
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
