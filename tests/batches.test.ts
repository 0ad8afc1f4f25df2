/**
 * The seeded PRNG (reference outputs, state round trip) and what is built on it: the train/validation
 * split, each epoch's order as a pure function of (seed, epoch), and batching that keeps every example.
 */
import { describe, expect, it } from 'vitest';
import { batchesOf, epochOrder, splitTrainVal } from '../src/train/batches.js';
import { Rng } from '../src/tensor/rng.js';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe('Rng', () => {
  it('is xoshiro128**: the reference outputs from the state [1, 2, 3, 4]', () => {
    const rng = Rng.fromState([1, 2, 3, 4]);
    expect(Array.from({ length: 6 }, () => rng.nextU32())).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  });

  it('continues the exact sequence from a saved state', () => {
    const rng = new Rng(1234);
    for (let i = 0; i < 10; i++) rng.next();
    const resumed = Rng.fromState(JSON.parse(JSON.stringify(rng.state())) as number[]);
    expect(Array.from({ length: 20 }, () => resumed.nextU32())).toEqual(Array.from({ length: 20 }, () => rng.nextU32()));
  });

  it('gives different sequences for different seeds and streams, all in [0, 1)', () => {
    const draw = (rng: Rng) => Array.from({ length: 1000 }, () => rng.next());
    const a = draw(new Rng(7));
    expect(draw(new Rng(7))).toEqual(a);
    expect(draw(new Rng(8))).not.toEqual(a);
    expect(draw(new Rng(7, 1))).not.toEqual(a);
    expect(draw(new Rng(2 ** 40))).not.toEqual(draw(new Rng(0)));
    expect(a.every((x) => x >= 0 && x < 1)).toBe(true);
    const mean = a.reduce((s, x) => s + x, 0) / a.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
  });

  it('rejects seeds and states it cannot use', () => {
    expect(() => new Rng(-1)).toThrow(/seed/);
    expect(() => new Rng(1.5)).toThrow(/seed/);
    expect(() => Rng.fromState([0, 0, 0, 0])).toThrow(/not all zero/);
    expect(() => Rng.fromState([1, 2, 3])).toThrow(/four u32/);
    expect(() => Rng.fromState([1, 2, 3, 2 ** 32])).toThrow(/four u32/);
  });
});

describe('splitTrainVal', () => {
  it('is a seeded partition of 0..n-1 with round(n·fraction) validation examples, both ascending', () => {
    const { train, val } = splitTrainVal(100, 0.1, 42);
    expect(val).toHaveLength(10);
    expect(train).toHaveLength(90);
    expect([...train, ...val].sort((a, b) => a - b)).toEqual(range(100));
    expect(train).toEqual([...train].sort((a, b) => a - b));
    expect(val).toEqual([...val].sort((a, b) => a - b));
    expect(splitTrainVal(100, 0.1, 42)).toEqual({ train, val });
    expect(splitTrainVal(100, 0.1, 43).val).not.toEqual(val);
  });

  it('keeps at least one example on each side when the fraction is positive', () => {
    expect(splitTrainVal(5, 0.01, 1).val).toHaveLength(1);
    expect(splitTrainVal(2, 0.9, 1).train).toHaveLength(1);
    expect(splitTrainVal(2, 0.9, 1).val).toHaveLength(1);
    expect(splitTrainVal(1, 0.5, 1)).toEqual({ train: [0], val: [] });
  });

  it('allows no validation set', () => {
    expect(splitTrainVal(4, 0, 1)).toEqual({ train: [0, 1, 2, 3], val: [] });
  });

  it('rejects a fraction outside [0, 1)', () => {
    expect(() => splitTrainVal(10, 1, 1)).toThrow(/fraction/);
    expect(() => splitTrainVal(10, -0.1, 1)).toThrow(/fraction/);
    expect(() => splitTrainVal(10, Number.NaN, 1)).toThrow(/fraction/);
  });
});

describe('epochOrder', () => {
  const indices = [3, 5, 8, 13, 21, 34, 55, 89, 144, 233];

  it('is a permutation that depends only on (seed, epoch)', () => {
    const order = epochOrder(indices, 2, 7, true);
    expect([...order].sort((a, b) => a - b)).toEqual(indices);
    expect(order).not.toEqual(indices);
    // Computing epochs 0 and 1 first changes nothing: a resumed run needs no replay.
    epochOrder(indices, 0, 7, true);
    epochOrder(indices, 1, 7, true);
    expect(epochOrder(indices, 2, 7, true)).toEqual(order);
  });

  it('differs between epochs and between seeds', () => {
    const epochs = range(5).map((e) => epochOrder(indices, e, 7, true).join());
    expect(new Set(epochs).size).toBe(5);
    expect(epochOrder(indices, 0, 8, true)).not.toEqual(epochOrder(indices, 0, 7, true));
  });

  it('keeps the given order without shuffling', () => {
    expect(epochOrder(indices, 3, 7, false)).toEqual(indices);
  });
});

describe('batchesOf', () => {
  it('keeps the last partial batch', () => {
    expect(batchesOf(range(7), 3)).toEqual([[0, 1, 2], [3, 4, 5], [6]]);
    expect(batchesOf(range(6), 3)).toEqual([[0, 1, 2], [3, 4, 5]]);
    expect(batchesOf(range(2), 5)).toEqual([[0, 1]]);
    expect(batchesOf([], 5)).toEqual([]);
  });

  it('rejects a batch size that is not a positive integer', () => {
    expect(() => batchesOf(range(4), 0)).toThrow(/batch size/);
    expect(() => batchesOf(range(4), 1.5)).toThrow(/batch size/);
  });
});
