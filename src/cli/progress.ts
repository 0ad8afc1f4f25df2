/**
 * A progress line for training: epoch, step/total, loss, lr, tokens/s and ETA, redrawn in place on
 * a terminal; on a pipe or a log file, one plain line every `plainEvery` steps instead.
 */
export interface ProgressUpdate {
  epoch: number;
  epochs: number;
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  tokensPerSecond: number;
  /** The latest validation loss, shown until the next one. */
  valLoss?: number;
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export class Progress {
  private started = performance.now();
  private startStep = 0;
  private readonly tty: boolean;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr, private readonly plainEvery = 10) {
    this.tty = stream.isTTY === true;
  }

  /** The clock of the ETA starts here, at `step` (a resumed run's first): the rate counts the steps run since. */
  start(step: number): void {
    this.started = performance.now();
    this.startStep = step;
  }

  update(u: ProgressUpdate): void {
    const elapsed = (performance.now() - this.started) / 1000;
    const done = u.step - this.startStep;
    const eta = done > 0 ? (elapsed / done) * (u.totalSteps - u.step) : NaN;
    const width = 24;
    const filled = Math.round((width * u.step) / Math.max(1, u.totalSteps));
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const val = u.valLoss === undefined ? '' : ` val ${u.valLoss.toFixed(4)}`;
    const text =
      `epoch ${u.epoch + 1}/${u.epochs} ${bar} ${u.step}/${u.totalSteps} ` +
      `loss ${u.loss.toFixed(4)}${val} lr ${u.lr.toExponential(2)} ${Math.round(u.tokensPerSecond)} tok/s ETA ${duration(eta)}`;
    if (this.tty) {
      this.stream.write(`\r${text}\x1b[K`);
    } else if (u.step % this.plainEvery === 0 || u.step === u.totalSteps) {
      this.stream.write(text + '\n');
    }
  }

  /** A transient status (validation progress, say) in place of the progress line; on a pipe, only when `plain`. */
  status(text: string, plain: boolean): void {
    if (this.tty) this.stream.write(`\r${text}\x1b[K`);
    else if (plain) this.stream.write(text + '\n');
  }

  /** Prints a message on its own line without breaking the progress line. */
  log(message: string): void {
    this.stream.write(this.tty ? `\r\x1b[K${message}\n` : message + '\n');
  }

  finish(): void {
    if (this.tty) this.stream.write('\n');
  }
}
