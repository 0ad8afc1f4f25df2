/**
 * The learning rate as a pure function of the step, so a resumed run needs nothing but its step.
 *
 * Warm-up: step s < warmupSteps uses peakLr·(s+1)/warmupSteps — step 0 already moves the weights
 * (peakLr/warmupSteps) and step warmupSteps-1 is at the peak.
 * Cosine: from peakLr at step warmupSteps down to minLrFraction·peakLr at step totalSteps (and
 * after), lr = min + (peak − min)·(1 + cos(π·(s − warmupSteps)/(totalSteps − warmupSteps)))/2.
 * Steps are numbered from 0, so the last of totalSteps updates runs just above the floor.
 * Constant: peakLr after the warm-up.
 */

export interface LrScheduleOptions {
  peakLr: number;
  warmupSteps: number;
  totalSteps: number;
  schedule: 'cosine' | 'constant';
  minLrFraction?: number;
}

export function learningRate(step: number, { peakLr, warmupSteps, totalSteps, schedule, minLrFraction = 0.1 }: LrScheduleOptions): number {
  if (!Number.isInteger(step) || step < 0) throw new RangeError(`step must be a non-negative integer, got ${step}`);
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new RangeError(`warmupSteps must be a non-negative integer, got ${warmupSteps}`);
  if (!(minLrFraction >= 0 && minLrFraction <= 1)) throw new RangeError(`minLrFraction must be in [0, 1], got ${minLrFraction}`);
  if (step < warmupSteps) return (peakLr * (step + 1)) / warmupSteps;
  if (schedule === 'constant') return peakLr;
  const decaySteps = totalSteps - warmupSteps;
  const progress = decaySteps > 0 ? Math.min(1, (step - warmupSteps) / decaySteps) : 1;
  const minLr = minLrFraction * peakLr;
  return minLr + ((peakLr - minLr) * (1 + Math.cos(Math.PI * progress))) / 2;
}
