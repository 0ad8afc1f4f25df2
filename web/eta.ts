/**
 * Time left in a training run, from the steps finished so far. The first step also compiles the
 * kernels, so the rate is measured from the end of the first step on, once a second one has finished.
 */
export class StepClock {
  private firstStepEnd: number | null = null;
  private stepsSinceFirst = 0;
  private lastStepEnd = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  stepFinished(): void {
    const t = this.now();
    if (this.firstStepEnd === null) this.firstStepEnd = t;
    else this.stepsSinceFirst++;
    this.lastStepEnd = t;
  }

  /** Milliseconds per step after the first, or null before two steps have finished. */
  msPerStep(): number | null {
    if (this.firstStepEnd === null || this.stepsSinceFirst === 0) return null;
    return (this.lastStepEnd - this.firstStepEnd) / this.stepsSinceFirst;
  }

  /** Seconds left for `stepsLeft` more steps, or null while unknown. */
  secondsLeft(stepsLeft: number): number | null {
    const ms = this.msPerStep();
    return ms === null ? null : (ms * stepsLeft) / 1000;
  }
}

/** 75 → "1:15", 3725 → "1:02:05". */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.round(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}
