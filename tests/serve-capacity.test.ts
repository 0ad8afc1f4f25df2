/**
 * The server's check that its cache slots fit one buffer each, before anything is allocated: the
 * boundary (the most slots that fit, one more that does not) and what the refusal says.
 */
import { describe, expect, it } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { cacheSlotsProblem } from '../src/serve/capacity.js';

describe('cacheSlotsProblem', () => {
  const config = { ...PRESETS.tiny, n_layer: 3, n_positions: 100, n_embd: 40 }; // 4000 floats a slot per buffer
  const backend = { description: 'a test adapter', maxStorageSize: 4000 * 250 + 3999 };

  it('lets through every count up to the buffer limit, and not one more', () => {
    expect(cacheSlotsProblem(config, 1, backend)).toBeNull();
    expect(cacheSlotsProblem(config, 250, backend)).toBeNull();
    expect(cacheSlotsProblem(config, 251, backend)).not.toBeNull();
  });

  it('names the memory the slots need and the adapter\'s limit', () => {
    const message = cacheSlotsProblem(config, 100000, backend);
    // 100000 · 100 · 40 · 4 B = 1.6 GB a buffer; 6 buffers (keys and values of 3 layers).
    expect(message).toBe('100000 cache slots need 6 buffers of 1.6 GB each (keys and values of 3 layers: 100000 slots × 100 positions × 40 × 4 B), '
      + '9.6 GB in all; one buffer of a test adapter holds at most 4.0 MB, enough for 250 slots');
  });
});
