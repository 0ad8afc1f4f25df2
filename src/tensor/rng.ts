/**
 * A seeded PRNG (xoshiro128**, 32-bit words, all in u32 math) whose state is four numbers,
 * so a checkpoint can store it and a resumed run draws exactly what the uninterrupted run would have.
 * Not for cryptography.
 */

const GOLDEN = 0x9e3779b9;

/** murmur3's 32-bit finaliser: a bijection on u32 that spreads every input bit over the output. */
function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

export class Rng {
  private s: Uint32Array;

  /**
   * `stream` gives independent sequences under one user seed (the training loop uses one per epoch),
   * so a position in the run can be reached without replaying the draws before it.
   */
  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer, got ${seed}`);
    if (!Number.isSafeInteger(stream) || stream < 0) throw new RangeError(`stream must be a non-negative integer, got ${stream}`);
    let key = 0;
    for (const part of [seed % 2 ** 32, Math.floor(seed / 2 ** 32), stream % 2 ** 32, Math.floor(stream / 2 ** 32)]) {
      key = fmix32((key ^ part) + GOLDEN);
    }
    // splitmix-style expansion: fmix32 is a bijection, so four distinct counters never give the all-zero
    // state that xoshiro cannot leave.
    this.s = new Uint32Array(4);
    for (let i = 0; i < 4; i++) this.s[i] = fmix32(key + GOLDEN * (i + 1));
  }

  static fromState(state: readonly number[]): Rng {
    const valid = state.length === 4 && state.every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32);
    if (!valid || state.every((w) => w === 0)) {
      throw new RangeError(`an Rng state is four u32 words, not all zero; got ${JSON.stringify(state)}`);
    }
    const rng = new Rng(0);
    rng.s = Uint32Array.from(state);
    return rng;
  }

  state(): number[] {
    return [...this.s];
  }

  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1), with 32 bits of resolution. */
  next(): number {
    return this.nextU32() / 2 ** 32;
  }
}
