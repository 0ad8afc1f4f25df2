/**
 * Which examples go where and in what order: the train/validation split, each epoch's order, and
 * the batches. Every order is a pure function of (seed, epoch), so a run resumed at epoch e, batch p
 * sees the very batches the uninterrupted run would have, without replaying any random draws.
 */
import { Rng } from '../tensor/rng.js';

/** Rng streams: the split uses its own, epoch e uses EPOCH_STREAM + e. */
const SPLIT_STREAM = 0;
const EPOCH_STREAM = 1;

function shuffled<T>(items: readonly T[], rng: Rng): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * A seeded random split of the indices 0..n-1. The validation set has round(n·valFraction) examples,
 * but never all of them (training needs one), and at least one whenever valFraction > 0 and n ≥ 2.
 * Both lists are in ascending order, so `--no-shuffle` trains in file order.
 */
export function splitTrainVal(n: number, valFraction: number, seed: number): { train: number[]; val: number[] } {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`the number of examples must be a non-negative integer, got ${n}`);
  if (!(valFraction >= 0 && valFraction < 1)) throw new RangeError(`the validation fraction must be in [0, 1), got ${valFraction}`);
  let nVal = Math.min(Math.round(n * valFraction), Math.max(n - 1, 0));
  if (valFraction > 0 && n >= 2) nVal = Math.max(nVal, 1);
  const order = shuffled(Array.from({ length: n }, (_, i) => i), new Rng(seed, SPLIT_STREAM));
  const ascending = (a: number, b: number) => a - b;
  return { train: order.slice(nVal).sort(ascending), val: order.slice(0, nVal).sort(ascending) };
}

/** The order in which an epoch visits `indices`: a fresh shuffle per epoch, or the given order. */
export function epochOrder(indices: readonly number[], epoch: number, seed: number, shuffle: boolean): number[] {
  return shuffle ? shuffled(indices, new Rng(seed, EPOCH_STREAM + epoch)) : [...indices];
}

/** Consecutive batches of `batchSize`; the last one keeps whatever is left, so no example is dropped. */
export function batchesOf<T>(order: readonly T[], batchSize: number): T[][] {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`the batch size must be a positive integer, got ${batchSize}`);
  const batches: T[][] = [];
  for (let i = 0; i < order.length; i += batchSize) batches.push(order.slice(i, i + batchSize));
  return batches;
}
