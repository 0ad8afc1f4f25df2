/** The learning-rate schedule at exact steps: warm-up, the cosine's ends and middle, the floor, constant. */
import { describe, expect, it } from 'vitest';
import { learningRate, type LrScheduleOptions } from '../src/train/lr-schedule.js';

const cosine: LrScheduleOptions = { peakLr: 1, warmupSteps: 4, totalSteps: 14, schedule: 'cosine' };

describe('learningRate', () => {
  it('warms up linearly from peak/warmup at step 0 to the peak at step warmup-1', () => {
    expect([0, 1, 2, 3].map((s) => learningRate(s, cosine))).toEqual([0.25, 0.5, 0.75, 1]);
    expect(learningRate(0, { ...cosine, peakLr: 3e-4, warmupSteps: 10 })).toBeCloseTo(3e-5, 15);
  });

  it('decays along a cosine from the peak to 10% of it at totalSteps', () => {
    expect(learningRate(4, cosine)).toBe(1);
    // progress 0.2: 0.1 + 0.9·(1 + cos(0.2π))/2
    expect(learningRate(6, cosine)).toBeCloseTo(0.1 + 0.9 * (1 + 0.8090169943749475) / 2, 14);
    expect(learningRate(9, cosine)).toBeCloseTo(0.55, 14); // halfway
    expect(learningRate(14, cosine)).toBeCloseTo(0.1, 14);
    expect(learningRate(100, cosine)).toBeCloseTo(0.1, 14);
  });

  it('decreases monotonically after the warm-up', () => {
    const lrs = Array.from({ length: 11 }, (_, i) => learningRate(4 + i, cosine));
    for (let i = 1; i < lrs.length; i++) expect(lrs[i]).toBeLessThan(lrs[i - 1]);
  });

  it('honours another floor', () => {
    expect(learningRate(14, { ...cosine, minLrFraction: 0 })).toBeCloseTo(0, 14);
    expect(learningRate(9, { ...cosine, minLrFraction: 0 })).toBeCloseTo(0.5, 14);
  });

  it('starts at the peak without warm-up', () => {
    expect(learningRate(0, { ...cosine, warmupSteps: 0 })).toBe(1);
    expect(learningRate(7, { ...cosine, warmupSteps: 0 })).toBeCloseTo(0.55, 14);
  });

  it('stays at the peak after the warm-up when constant', () => {
    const constant: LrScheduleOptions = { ...cosine, schedule: 'constant' };
    expect([0, 3, 4, 13, 14, 50].map((s) => learningRate(s, constant))).toEqual([0.25, 1, 1, 1, 1, 1]);
  });

  it('rejects a step or warm-up that is not a non-negative integer', () => {
    expect(() => learningRate(-1, cosine)).toThrow(/step/);
    expect(() => learningRate(0.5, cosine)).toThrow(/step/);
    expect(() => learningRate(0, { ...cosine, warmupSteps: -2 })).toThrow(/warmupSteps/);
    expect(() => learningRate(0, { ...cosine, minLrFraction: 2 })).toThrow(/minLrFraction/);
  });
});
