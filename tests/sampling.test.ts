/**
 * Sampling on hand-made rows: greedy and its ties, top-k = 1 equals greedy, fixed seeds reproduce,
 * top-k and top-p keep exactly the right tokens (checked by the set of drawn tokens and by their
 * frequencies over many seeded draws), the nucleus pruning of a full 50257-wide row agrees with a
 * full sort, the CTRL repetition penalty on positive and negative logits, and the seeded Rng.
 */
import { describe, expect, it } from 'vitest';
import {
  applyRepetitionPenalty, argmax, checkSamplingOptions, nucleus, sampleToken, topKIndices, type SamplingOptions,
} from '../src/gpt/sampling.js';
import { Rng } from '../src/tensor/rng.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const V = 50257;

function softmax(logits: readonly number[], temperature = 1): number[] {
  const max = Math.max(...logits);
  const e = logits.map((x) => Math.exp((x - max) / temperature));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / total);
}

/** Frequencies of `draws` seeded draws. */
function frequencies(logits: Float32Array, options: SamplingOptions, draws: number, seed: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  const rng = new Rng(seed);
  for (let i = 0; i < draws; i++) counts[sampleToken(logits, options, rng)]++;
  return counts.map((c) => c / draws);
}

describe('greedy', () => {
  it('argmax takes the lowest id among equal maxima (as torch.argmax)', () => {
    expect(argmax([1, 3, 2, 3])).toBe(1);
    expect(argmax([-5])).toBe(0);
    expect(argmax([-2, -1, -1])).toBe(1);
  });

  it('temperature 0 and top-k = 1 pick the argmax of fresh 50257-wide rows, without drawing', () => {
    const seed = freshSeed();
    for (let row = 0; row < 5; row++) {
      const logits = randomArray(V, seed, row, -10, 10);
      const best = argmax(logits);
      const rng = new Rng(1);
      const before = rng.state();
      expect(sampleToken(logits, { temperature: 0 }, rng), `seed ${seed}`).toBe(best);
      expect(rng.state()).toEqual(before);
      for (const temperature of [0.5, 1, 3]) {
        expect(sampleToken(logits, { temperature, topK: 1 }, new Rng(row)), `seed ${seed}`).toBe(best);
      }
    }
  });
});

describe('seeded draws', () => {
  it('the same seed gives the same tokens, another seed other tokens', () => {
    const seed = freshSeed();
    const logits = randomArray(V, seed, 0, -3, 3);
    const draw = (s: number) => {
      const rng = new Rng(s);
      return Array.from({ length: 40 }, () => sampleToken(logits, { temperature: 1, topP: 0.95 }, rng));
    };
    expect(draw(seed)).toEqual(draw(seed));
    expect(draw(seed)).not.toEqual(draw(seed + 1));
  });

  it('Rng.fromState resumes the sequence', () => {
    const a = new Rng(12345, 2);
    for (let i = 0; i < 10; i++) a.nextU32();
    const b = Rng.fromState(a.state());
    expect(Array.from({ length: 20 }, () => b.next())).toEqual(Array.from({ length: 20 }, () => a.next()));
    const u = new Rng(7).next();
    expect(u).toBeGreaterThanOrEqual(0);
    expect(u).toBeLessThan(1);
  });
});

describe('temperature', () => {
  it('draws follow softmax(logits / T) (20000 seeded draws, each frequency within 0.015)', () => {
    const logits = [1.0, 2.0, 0.5, -1.0, 1.5];
    for (const temperature of [0.5, 1, 2]) {
      const freq = frequencies(Float32Array.from(logits), { temperature }, 20000, 11);
      softmax(logits, temperature).forEach((p, i) => expect(Math.abs(freq[i] - p), `T=${temperature} id ${i}`).toBeLessThan(0.015));
    }
  });
});

describe('top-k', () => {
  it('keeps exactly the k largest, ties broken by the lower id', () => {
    expect(topKIndices([0.1, 0.9, 0.5, 0.9, 0.3], 2)).toEqual([1, 3]);
    expect(topKIndices([0.1, 0.9, 0.5, 0.9, 0.3], 3)).toEqual([1, 3, 2]);
    expect(topKIndices([3, 2, 1], 5)).toEqual([0, 1, 2]);
    const seed = freshSeed();
    const row = randomArray(V, seed, 1, -5, 5);
    const sorted = Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b);
    expect(topKIndices(row, 50), `seed ${seed}`).toEqual(sorted.slice(0, 50));
  });

  it('draws only the k most likely, renormalised', () => {
    const logits = [0.2, 3.0, 1.0, 2.5, -1.0, 2.0];
    const freq = frequencies(Float32Array.from(logits), { temperature: 1, topK: 3 }, 20000, 5);
    const kept = softmax([3.0, 2.5, 2.0]);
    expect([freq[0], freq[2], freq[4]]).toEqual([0, 0, 0]);
    [1, 3, 5].forEach((id, i) => expect(Math.abs(freq[id] - kept[i]), `id ${id}`).toBeLessThan(0.015));
  });
});

describe('top-p (nucleus)', () => {
  // Probabilities 0.4, 0.25, 0.15, 0.1, 0.06, 0.04, spread over ids out of order.
  const probs = [0.06, 0.4, 0.1, 0.25, 0.04, 0.15];
  const byProb = [1, 3, 5, 2, 0, 4];
  const logits = Float32Array.from(probs, Math.log);

  it('nucleus() is the smallest set of the most likely tokens whose mass reaches p (ids ascending)', () => {
    for (const ids of [byProb, [0, 1, 2, 3, 4, 5]]) {
      expect(nucleus(ids, probs, 0.3)).toEqual([1]);
      expect(nucleus(ids, probs, 0.4)).toEqual([1]); // 0.4 reaches 0.4 exactly
      expect(nucleus(ids, probs, 0.41)).toEqual([1, 3]);
      expect(nucleus(ids, probs, 0.79)).toEqual([1, 3, 5]);
      expect(nucleus(ids, probs, 0.81)).toEqual([1, 2, 3, 5]);
      expect(nucleus(ids, probs, 1)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(nucleus(ids, probs, 1e-9)).toEqual([1]);
    }
    // Equal probabilities at the boundary: the lower ids are kept, as many as the mass needs.
    expect(nucleus([4, 3, 2, 1, 0], [0.2, 0.2, 0.2, 0.2, 0.2], 0.5)).toEqual([0, 1, 2]);
    // Unnormalised weights, and a total larger than the ids' own mass (a pruned candidate list).
    expect(nucleus([1, 3, 5], [0, 4, 0, 2.5, 0, 1.5], 0.5)).toEqual([1]);
    expect(nucleus([1, 3, 5], probs, 0.7, 1)).toEqual([1, 3, 5]);
  });

  it('draws exactly the nucleus, renormalised (p = 0.75: 0.4 + 0.25 + 0.15)', () => {
    const freq = frequencies(logits, { temperature: 1, topP: 0.75 }, 20000, 3);
    const mass = 0.4 + 0.25 + 0.15;
    expect([freq[0], freq[2], freq[4]]).toEqual([0, 0, 0]);
    for (const id of [1, 3, 5]) expect(Math.abs(freq[id] - probs[id] / mass), `id ${id}`).toBeLessThan(0.015);
  });

  it('after top-k, the nucleus is taken from the top-k renormalised distribution', () => {
    // Top-3 renormalised: 0.5, 0.3125, 0.1875; p = 0.6 keeps the first two.
    const freq = frequencies(logits, { temperature: 1, topK: 3, topP: 0.6 }, 20000, 4);
    expect(freq.filter((f) => f > 0).length).toBe(2);
    expect(Math.abs(freq[1] - 0.4 / 0.65)).toBeLessThan(0.015);
    expect(Math.abs(freq[3] - 0.25 / 0.65)).toBeLessThan(0.015);
  });

  it('on a 50257-wide row, the tokens drawn are those of the nucleus found by a full sort', () => {
    const seed = freshSeed();
    // Peaked like a language model's row: 30 tokens boosted to 8..14 over a background in [-4, 4).
    const row = randomArray(V, seed, 2, -4, 4);
    const boosts = randomArray(30, seed, 3, 8, 14);
    randomArray(30, seed, 4, 0, V).forEach((u, i) => (row[Math.floor(u)] = boosts[i]));
    const p = softmax(Array.from(row));
    const order = Array.from(row.keys()).sort((a, b) => p[b] - p[a] || a - b);
    const expected = new Set(nucleus(order, p, 0.9, 1));
    const drawn = new Set<number>();
    const rng = new Rng(seed);
    for (let i = 0; i < 1000; i++) drawn.add(sampleToken(row, { temperature: 1, topP: 0.9 }, rng));
    for (const id of drawn) expect(expected.has(id), `seed ${seed}: id ${id} outside the nucleus`).toBe(true);
    // The most likely tokens of the nucleus are drawn (the rarest of a large nucleus may not be).
    for (const id of order.slice(0, 5)) if (expected.has(id)) expect(drawn.has(id), `seed ${seed}: id ${id}`).toBe(true);
  });
});

describe('repetition penalty (CTRL)', () => {
  it('divides positive logits and multiplies negative ones, once per distinct seen token', () => {
    const logits = Float32Array.from([2, -2, 1, -1, 0.5, 0]);
    applyRepetitionPenalty(logits, [0, 1, 1, 1, 5], 2);
    expect(Array.from(logits)).toEqual([1, -4, 1, -1, 0.5, 0]);
  });

  it('a penalty > 1 always lowers a seen token (the notebook divided negatives, raising them)', () => {
    const logits = Float32Array.from([-3, -1, -2]);
    applyRepetitionPenalty(logits, [1], 1.5);
    expect(logits[1]).toBe(-1.5); // the notebook's rule would give -0.667, above its former value
    expect(argmax(logits)).toBe(1); // still the best here: -1.5 > -2
    applyRepetitionPenalty(logits, [1], 1.5);
    expect(argmax(logits)).toBe(2); // -2.25 < -2
  });

  it('changes the greedy choice without touching the caller\'s row', () => {
    const logits = Float32Array.from([1.0, 1.8, 1.2]);
    expect(sampleToken(logits, { temperature: 0, repetitionPenalty: 1.6 }, new Rng(0), [1])).toBe(2); // 1.8/1.6 = 1.125 < 1.2
    expect(sampleToken(logits, { temperature: 0, repetitionPenalty: 1.4 }, new Rng(0), [1])).toBe(1); // 1.29 > 1.2
    expect(Array.from(logits)).toEqual([1.0, 1.8, 1.2].map(Math.fround));
  });
});

describe('option checks', () => {
  it('rejects out-of-range values with the option named', () => {
    expect(() => checkSamplingOptions({ temperature: -1 })).toThrow(/temperature/);
    expect(() => checkSamplingOptions({ topK: 1.5 })).toThrow(/top-k/);
    expect(() => checkSamplingOptions({ topP: 0 })).toThrow(/top-p/);
    expect(() => checkSamplingOptions({ topP: 1.1 })).toThrow(/top-p/);
    expect(() => checkSamplingOptions({ repetitionPenalty: 0 })).toThrow(/repetition/);
    expect(() => checkSamplingOptions({ temperature: 0.7, topK: 40, topP: 0.9, repetitionPenalty: 1.1 })).not.toThrow();
  });
});
