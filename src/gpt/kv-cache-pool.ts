/**
 * Keys and values of many independent sequences in one preallocated cache per layer
 * ([slots, H, maxLen, hs]), each slot with its own length: continuous batching decodes every active
 * sequence in one step (one slotAttention per layer) whatever their positions, and a finished
 * sequence's slot serves the next one without allocating.
 */
import type { Backend } from '../tensor/backend.js';
import type { GPT2Config } from './config.js';
import { KVLayers } from './kv-layers.js';

export class KVCachePool extends KVLayers {
  private readonly lengths: number[];
  private readonly taken: boolean[];
  /** Free slots, the lowest last (taken first). */
  private readonly free: number[];

  constructor(config: GPT2Config, readonly slots: number, backend: Backend, maxLen = config.n_positions) {
    if (!(Number.isInteger(slots) && slots >= 1)) throw new RangeError(`a cache pool needs an integer ≥ 1 of slots, got ${slots}`);
    super(config, slots, backend, maxLen);
    this.lengths = new Array<number>(slots).fill(0);
    this.taken = new Array<boolean>(slots).fill(false);
    this.free = Array.from({ length: slots }, (_, i) => slots - 1 - i);
  }

  get freeCount(): number {
    return this.free.length;
  }

  /** A free slot, empty; throws if every slot is taken. */
  acquire(): number {
    const slot = this.free.pop();
    if (slot === undefined) throw new Error(`all ${this.slots} cache slots are taken`);
    this.taken[slot] = true;
    return slot;
  }

  /** Gives a slot back; its rows are forgotten (the memory stays allocated for the next sequence). */
  release(slot: number): void {
    this.expectTaken(slot);
    this.lengths[slot] = 0;
    this.taken[slot] = false;
    this.free.push(slot);
  }

  /** Positions already written in a slot. */
  length(slot: number): number {
    this.expectTaken(slot);
    return this.lengths[slot];
  }

  advance(slot: number, count: number): void {
    const filled = this.length(slot) + count;
    if (filled > this.maxLen) throw new Error(`cache slot ${slot} of ${this.maxLen} positions overflows at ${filled}`);
    this.lengths[slot] = filled;
  }

  private expectTaken(slot: number): void {
    if (!this.taken[slot]) {
      throw new Error(`slot ${slot} is not a taken slot of this pool of ${this.slots}`);
    }
  }
}
