import { expect } from 'vitest';

/**
 * Largest |a - b| / (|b| + floor) over the arrays. `floor` keeps elements near zero from dominating:
 * it is the scale below which absolute error is what matters (default 1e-3 of the largest |b|).
 */
export function maxRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor?: number): number {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  const f = floor ?? Math.max(1e-3 * scale, 1e-30);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const err = Number.isNaN(a) !== Number.isNaN(e) ? Infinity : Number.isNaN(e) ? 0 : Math.abs(a - e) / (Math.abs(e) + f);
    worst = Math.max(worst, err);
  }
  return worst;
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, { tolerance = 1e-4, seed, floor }: { tolerance?: number; seed?: number; floor?: number } = {}): void {
  expect(actual.length, 'length').toBe(expected.length);
  const err = maxRelativeError(actual, expected, floor);
  expect(err, `max relative error ${err.toExponential(2)} > ${tolerance}${seed === undefined ? '' : ` (replay with TEST_SEED=${seed})`}`).toBeLessThanOrEqual(tolerance);
}
