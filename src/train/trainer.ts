/**
 * The training loop: micro-batches → forward → masked cross-entropy → backward, accumulated over
 * `gradAccum` micro-batches, clipped, one AdamW step. A step is recorded as one batch of GPU work;
 * its loss is read back while the next step is being recorded, so the device never waits on us.
 */
import type { GPT2 } from '../gpt/model.js';
import { Dropout } from '../nn/layers.js';
import { tensor } from '../tensor/create.js';
import { backward } from '../tensor/autograd.js';
import { crossEntropy, embedding } from '../tensor/fused.js';
import { noGrad } from '../tensor/graph.js';
import { add, mul, reshape } from '../tensor/ops.js';
import { keep, tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { AdamW } from './adamw.js';
import { batchesOf, epochOrder } from './batches.js';
import { clipGradNorm } from './clip.js';
import { collate, type Batch } from './collate.js';
import type { EncodedExample } from './instruction-data.js';
import { learningRate } from './lr-schedule.js';

export interface TrainerConfig {
  epochs: number;
  batchSize: number;
  lr: number;
  lrSchedule: 'cosine' | 'constant';
  warmupSteps: number;
  maxSteps: number | null;
  gradAccum: number;
  /** Global gradient-norm clip; 0 turns clipping off. */
  clip: number;
  seed: number;
  shuffle: boolean;
  /** Validation every n steps (0: only at the end of each epoch). */
  evalEvery: number;
  /** A checkpoint every n steps besides those at epoch ends (0 or absent: epoch ends only). */
  saveEvery?: number;
  /** Floor of the cosine decay (absent or null: 10% of the peak). */
  minLr?: number | null;
  maskPrompt: boolean;
  /** Sequences are cut to contextLength + 1 tokens. */
  contextLength: number;
}

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  tokens: number;
  val_loss?: number;
}

/** Where a run stands: enough to continue it exactly. The shuffle order is a pure function of (seed, epoch). */
export interface TrainingPosition {
  step: number;
  epoch: number;
  /** Micro-batches of the current epoch already consumed. */
  batchInEpoch: number;
}

export interface TrainerHooks {
  /** Called after each step's loss is known (in step order). */
  onStep?(record: StepRecord, position: TrainingPosition): void | Promise<void>;
  /** Called after each batch of a validation pass (a large held-out set takes minutes). */
  onValidationProgress?(batchesDone: number, batches: number): void;
  /** Called after each validation with the mean validation loss. */
  onValidation?(valLoss: number, position: TrainingPosition): void | Promise<void>;
  /** Called when a checkpoint is due: every saveEvery steps, at each epoch's end, at the end, and when stopped. */
  onCheckpoint?(position: TrainingPosition, records: readonly StepRecord[]): Promise<void>;
  /** Polled between steps: true stops the run after a checkpoint (Ctrl-C, early stopping). */
  shouldStop?(): boolean;
}

export class TrainingDiverged extends Error {
  override name = 'TrainingDiverged';
  constructor(readonly step: number, readonly loss: number, message = `the loss became ${loss} at step ${step}`) {
    super(message);
  }
}

interface PendingStep {
  record: Omit<StepRecord, 'loss'>;
  position: TrainingPosition;
  loss: Tensor;
  value: Promise<number>;
}

export class Trainer {
  readonly records: StepRecord[] = [];
  private position: TrainingPosition = { step: 0, epoch: 0, batchInEpoch: 0 };

  constructor(
    private readonly model: GPT2,
    private readonly optimizer: AdamW,
    private readonly train: readonly EncodedExample[],
    private readonly val: readonly EncodedExample[],
    readonly config: TrainerConfig,
    private readonly hooks: TrainerHooks = {},
  ) {
    if (train.length === 0) throw new Error('the training set is empty');
  }

  get batchesPerEpoch(): number {
    return Math.ceil(this.train.length / this.config.batchSize);
  }

  get stepsPerEpoch(): number {
    return Math.ceil(this.batchesPerEpoch / this.config.gradAccum);
  }

  /** Optimizer steps recorded so far: where the weights are once the device has run them. */
  get stepsRecorded(): number {
    return this.position.step;
  }

  get totalSteps(): number {
    const all = this.config.epochs * this.stepsPerEpoch;
    return this.config.maxSteps === null ? all : Math.min(all, this.config.maxSteps);
  }

  /** Continue from a checkpoint's position and records. */
  resumeFrom(position: TrainingPosition, records: readonly StepRecord[]): void {
    this.position = { ...position };
    this.records.splice(0, this.records.length, ...records.filter((r) => r.step <= position.step));
  }

  lrAt(step: number): number {
    const { lr, warmupSteps, lrSchedule, minLr } = this.config;
    const minLrFraction = minLr === undefined || minLr === null ? undefined : minLr / lr;
    return learningRate(step, { peakLr: lr, warmupSteps, totalSteps: this.totalSteps, schedule: lrSchedule, minLrFraction });
  }

  /** Runs until the last step, or until shouldStop; returns whether it was stopped early. */
  async run(): Promise<{ stopped: boolean }> {
    const { config } = this;
    const trainIndices = this.train.map((_, i) => i);
    let pending: PendingStep | null = null;
    this.model.train();
    while (this.position.step < this.totalSteps) {
      const { epoch } = this.position;
      const batches = batchesOf(epochOrder(trainIndices, epoch, config.seed, config.shuffle), config.batchSize);
      while (this.position.batchInEpoch < batches.length && this.position.step < this.totalSteps) {
        const micro = batches.slice(this.position.batchInEpoch, this.position.batchInEpoch + config.gradAccum);
        const lr = this.lrAt(this.position.step);
        const { loss, tokens } = this.step(micro.map((b) => collate(b.map((i) => this.train[i]), config.contextLength, { maskPrompt: config.maskPrompt })), lr);
        this.position = { step: this.position.step + 1, epoch, batchInEpoch: this.position.batchInEpoch + micro.length };
        const value = loss.item();
        // If the previous step's loss stops the run, nobody awaits this one: its rejection (the
        // device released meanwhile) must not surface as an unhandled error.
        value.catch(() => {});
        const current: PendingStep = { record: { step: this.position.step, epoch, lr, tokens }, position: { ...this.position }, loss, value };
        if (pending) await this.finish(pending);
        pending = current;
        const evalDue = config.evalEvery > 0 && this.position.step % config.evalEvery === 0;
        // The epoch's end writes a checkpoint of its own.
        const saveDue = (config.saveEvery ?? 0) > 0 && this.position.step % config.saveEvery! === 0 && this.position.batchInEpoch < batches.length;
        if (evalDue || saveDue || this.hooks.shouldStop?.()) {
          await this.finish(pending);
          pending = null;
          if (evalDue) await this.validate();
          if (this.hooks.shouldStop?.()) {
            await this.hooks.onCheckpoint?.(this.position, this.records);
            return { stopped: true };
          }
          if (saveDue) await this.hooks.onCheckpoint?.(this.position, this.records);
        }
      }
      if (pending) await this.finish(pending);
      pending = null;
      if (this.position.batchInEpoch >= batches.length) {
        await this.validate();
        this.position = { step: this.position.step, epoch: epoch + 1, batchInEpoch: 0 };
        await this.hooks.onCheckpoint?.(this.position, this.records);
      }
    }
    if (this.records.at(-1)?.val_loss === undefined) await this.validate();
    await this.hooks.onCheckpoint?.(this.position, this.records);
    return { stopped: false };
  }

  /**
   * One optimizer step over the given micro-batches; returns the loss as a device scalar. Each
   * micro-batch's mean weighs by its share of the step's counted targets, so the step's loss and
   * gradient are the mean over all of them, as one batch of the same sequences would give.
   */
  private step(micro: Batch[], lr: number): { loss: Tensor; tokens: number } {
    const counts = micro.map((b) => b.mask.reduce((n, m) => n + m, 0));
    const counted = counts.reduce((a, b) => a + b, 0);
    const loss = tidy(() => {
      let total: Tensor | null = null;
      micro.forEach((batch, i) => {
        const weight = counts[i] / counted;
        // Keyed by the micro-batch's number, dropout draws the same masks whether or not the run was resumed.
        for (const m of this.model.modules()) if (m instanceof Dropout) m.startKey(this.position.step * this.config.gradAccum + i);
        const loss = this.batchLoss(batch);
        backward(weight === 1 ? loss : mul(loss, weight));
        const share = noGrad(() => mul(loss, weight));
        total = total === null ? share : noGrad(() => add(total!, share));
      });
      const clip = this.config.clip > 0 ? clipGradNorm(this.optimizer.flat, this.config.clip).scale : null;
      this.optimizer.update(lr, clip);
      this.optimizer.zeroGrad();
      return keep(total!);
    });
    return { loss, tokens: micro.reduce((n, b) => n + b.batchSize * b.seqLen, 0) };
  }

  /**
   * Mean cross-entropy over the counted targets. The output head and the loss run on the counted
   * positions alone (gathered rows of the hidden states): padding, and the prompt under
   * --mask-prompt, would otherwise cost a [V]-wide row each for nothing.
   */
  private batchLoss(batch: Batch): Tensor {
    const backend = this.model.backend;
    const rows: number[] = [];
    batch.mask.forEach((m, i) => m !== 0 && rows.push(i));
    if (rows.length === 0) throw new Error('a batch has no target that counts in the loss (every target is padding or prompt)');
    const ids = tensor(batch.inputs, [batch.batchSize, batch.seqLen], { backend });
    const hidden = reshape(this.model.hidden(ids), [batch.batchSize * batch.seqLen, -1]); // [B·T, C]
    const counted = embedding(tensor(Int32Array.from(rows), [rows.length], { backend }), hidden); // [N, C]
    const targets = tensor(Int32Array.from(rows, (i) => batch.targets[i]), [rows.length], { backend });
    return crossEntropy(this.model.head(counted), targets, new Float32Array(rows.length).fill(1));
  }

  private async finish(pending: PendingStep): Promise<void> {
    const loss = await pending.value;
    pending.loss.dispose();
    if (!Number.isFinite(loss)) throw new TrainingDiverged(pending.record.step, loss);
    const record = { ...pending.record, loss };
    this.records.push(record);
    await this.hooks.onStep?.(record, pending.position);
  }

  /** Mean loss over the validation set (token-weighted), recorded on the latest step. */
  async validate(): Promise<number | undefined> {
    if (this.val.length === 0) return undefined;
    this.model.eval();
    let weighted = 0;
    let count = 0;
    // Each batch's loss is read while the next one is recorded, as in training, so the device never waits on us.
    let pending: { loss: Tensor; value: Promise<number>; counted: number } | null = null;
    const add = async ({ loss, value, counted }: NonNullable<typeof pending>) => {
      weighted += (await value) * counted;
      loss.dispose();
      count += counted;
    };
    const batches = batchesOf(this.val.map((_, i) => i), this.config.batchSize);
    for (const [done, indices] of batches.entries()) {
      this.hooks.onValidationProgress?.(done, batches.length);
      const batch = collate(indices.map((i) => this.val[i]), this.config.contextLength, { maskPrompt: this.config.maskPrompt });
      const counted = batch.mask.reduce((n, m) => n + m, 0);
      if (counted === 0) continue;
      const loss = tidy(() => noGrad(() => keep(this.batchLoss(batch))));
      const value = loss.item();
      // Nobody awaits it if the previous read fails (the device lost): that must not surface as unhandled.
      value.catch(() => {});
      if (pending) await add(pending);
      pending = { loss, value, counted };
    }
    if (pending) await add(pending);
    this.model.train();
    const valLoss = weighted / count;
    // These weights give NaN on held-out data: they must not become a checkpoint.
    if (!Number.isFinite(valLoss)) throw new TrainingDiverged(this.position.step, valLoss, `the validation loss became ${valLoss} after step ${this.position.step}`);
    const last = this.records.at(-1);
    if (last) last.val_loss = valLoss;
    await this.hooks.onValidation?.(valLoss, this.position);
    return valLoss;
  }
}
