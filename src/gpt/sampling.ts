/**
 * Choosing the next token from one row of logits: pure functions on host arrays, no tensors.
 *
 * Order of the transforms (as Hugging Face's logits processors): repetition penalty → temperature →
 * top-k → top-p → draw. Temperature 0 is greedy: the penalised row's argmax (the lowest id among
 * equal maxima, as torch.argmax), with no random draw. Top-k keeps exactly k tokens, ties broken
 * by the lower id, so top-k = 1 is always the greedy choice.
 *
 * Cost per token on a 50257-wide row: one pass for the maximum and the softmax, plus a sort of the
 * candidates only. Top-k selects its k by a bounded insertion (O(V) typical, O(V·k) for a row in
 * ascending order). Top-p without top-k first drops every token whose probability is below (1 − p) / V:
 * those tokens together hold less than 1 − p, so the nucleus never reaches them (proof at
 * `nucleusCandidates`); the survivors' probabilities are sorted as numbers (`nucleus`). The cost of a
 * draw with each setting is in docs/kernels.md ("Sampling on the host").
 */
import type { Rng } from '../tensor/rng.js';

export interface SamplingOptions {
  /** 0 = greedy. Default 1 (generation passes its own default, 0). */
  temperature?: number;
  /** Keep the k most likely tokens (0 or undefined: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 or undefined: all). */
  topP?: number;
  /** CTRL's penalty (1 = none): a seen token's logit is divided by it when positive, multiplied when negative. */
  repetitionPenalty?: number;
}

/** Throws a RangeError naming the option when a value is out of range. */
export function checkSamplingOptions({ temperature = 1, topK = 0, topP = 1, repetitionPenalty = 1 }: SamplingOptions): void {
  if (!(Number.isFinite(temperature) && temperature >= 0)) throw new RangeError(`temperature must be a finite number ≥ 0, got ${temperature}`);
  if (!(Number.isInteger(topK) && topK >= 0)) throw new RangeError(`top-k must be an integer ≥ 0 (0 = off), got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`top-p must be in (0, 1], got ${topP}`);
  if (!(Number.isFinite(repetitionPenalty) && repetitionPenalty > 0)) {
    throw new RangeError(`repetition penalty must be a finite number > 0 (1 = off), got ${repetitionPenalty}`);
  }
}

/**
 * CTRL's repetition penalty (Keskar et al. 2019, as Hugging Face applies it), in place: each distinct
 * id in `seen` gets its logit divided by `penalty` when positive and multiplied by it when negative,
 * so a penalty > 1 always makes a seen token less likely. (Dividing a negative logit, as the course
 * notebook does, would make it more likely.) Each token is penalised once however often it appeared.
 */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    if (id < 0 || id >= logits.length) continue;
    const x = logits[id];
    logits[id] = x > 0 ? x / penalty : x * penalty;
  }
}

/** Index of the largest value; the lowest index among equals. */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Descending by value, then ascending by id: the one order every candidate list uses. */
function byValueThenId(values: ArrayLike<number>): (a: number, b: number) => number {
  return (a, b) => values[b] - values[a] || a - b;
}

/** The k ids of largest value, in descending order (ties: lower id first). */
export function topKIndices(values: ArrayLike<number>, k: number): number[] {
  k = Math.min(k, values.length);
  const kept: number[] = [];
  const before = byValueThenId(values);
  for (let i = 0; i < values.length; i++) {
    if (kept.length === k && before(i, kept[k - 1]) >= 0) continue;
    // Insert i in order: walk back from the end (usually a few steps).
    let j = kept.length === k ? k - 1 : kept.length;
    while (j > 0 && before(i, kept[j - 1]) < 0) {
      kept[j] = kept[j - 1];
      j--;
    }
    kept[j] = i;
  }
  return kept;
}

/**
 * The nucleus of a distribution: the smallest set of the most likely `ids` whose mass reaches
 * p·total, where `total` is the mass of the whole distribution (by default the sum over `ids`:
 * probabilities need not be normalised). Among equal probabilities at the boundary the lower ids
 * are kept. Always at least one token. Returned in ascending id order, whatever the input order.
 *
 * The probabilities are sorted as a Float64Array (a native numeric sort beats sorting ids with a
 * comparator) to find the boundary value; the ids are then kept by comparison with it.
 */
export function nucleus(ids: readonly number[], probs: ArrayLike<number>, p: number, total = sumOver(ids, probs)): number[] {
  const sorted = Float64Array.from(ids, (id) => probs[id]).sort(); // ascending
  const target = p * total;
  let mass = 0;
  let last = sorted.length - 1;
  for (; last > 0; last--) {
    mass += sorted[last];
    if (mass >= target) break;
  }
  const boundary = sorted[last];
  let ties = 0; // tokens of the boundary probability inside the nucleus
  for (let i = last; i < sorted.length && sorted[i] === boundary; i++) ties++;
  const kept: number[] = [];
  const ascending = ids.every((id, i) => i === 0 || ids[i - 1] < id);
  for (const id of ascending ? ids : [...ids].sort((a, b) => a - b)) {
    if (probs[id] > boundary) kept.push(id);
    else if (probs[id] === boundary && ties > 0) {
      kept.push(id);
      ties--;
    }
  }
  return kept;
}

function sumOver(ids: readonly number[], probs: ArrayLike<number>): number {
  let total = 0;
  for (const id of ids) total += probs[id];
  return total;
}

/**
 * Ids that can be in the nucleus of the full distribution `probs` (summing to 1 over V ids), in id
 * order. Tokens below (1 − p) / V hold less than (1 − p) in total, so the tokens at or above it hold
 * more than p; as each of them outranks every token below, the nucleus lies among them.
 */
function nucleusCandidates(probs: Float64Array, p: number): number[] {
  const floor = (1 - p) / probs.length;
  const ids: number[] = [];
  for (let i = 0; i < probs.length; i++) if (probs[i] >= floor) ids.push(i);
  return ids;
}

/**
 * Draws the next token from one row of logits (not modified): greedy at temperature 0 or top-k = 1,
 * else a draw from the tempered, filtered and renormalised distribution using one `rng.next()`.
 * `seen` (prompt and generated ids) feeds the repetition penalty.
 */
export function sampleToken(logits: Float32Array, options: SamplingOptions, rng: Rng, seen: Iterable<number> = []): number {
  const { temperature = 1, topK = 0, topP = 1, repetitionPenalty = 1 } = options;
  let row = logits;
  if (repetitionPenalty !== 1) {
    row = logits.slice();
    applyRepetitionPenalty(row, seen, repetitionPenalty);
  }
  if (temperature === 0 || topK === 1) return argmax(row);

  const V = row.length;
  const useTopK = topK > 0 && topK < V;
  // Candidates and their unnormalised probabilities exp((x − max) / T).
  const probs = new Float64Array(V);
  let candidates: number[];
  let mass: number | undefined; // of the distribution the nucleus is taken from, when not just the candidates'
  if (useTopK) {
    candidates = topKIndices(row, topK);
    const max = row[candidates[0]];
    for (const id of candidates) probs[id] = Math.exp((row[id] - max) / temperature);
  } else {
    const max = row[argmax(row)];
    let total = 0;
    for (let i = 0; i < V; i++) total += probs[i] = Math.exp((row[i] - max) / temperature);
    if (topP >= 1) return drawFrom(probs, total, rng); // all V in id order: no sort needed
    for (let i = 0; i < V; i++) probs[i] /= total;
    candidates = nucleusCandidates(probs, topP);
    mass = 1;
  }
  const kept = topP < 1 ? nucleus(candidates, probs, topP, mass) : candidates;
  let u = rng.next() * sumOver(kept, probs);
  for (const id of kept) {
    u -= probs[id];
    if (u < 0) return id;
  }
  return kept[kept.length - 1]; // u within rounding of the total
}

/** A draw over all ids in order, weights `probs` summing to `total`. */
function drawFrom(probs: Float64Array, total: number, rng: Rng): number {
  let u = rng.next() * total;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    last = i;
    u -= probs[i];
    if (u < 0) return i;
  }
  return last;
}
