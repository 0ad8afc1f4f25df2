/**
 * Fine-tuning a model on instruction entries in one call: the data encoded and split as the
 * command line does it, then the Trainer's loop with AdamW, each step reported to a callback, and
 * an AbortSignal that stops the run after the step in flight. No files: saving is the caller's.
 */
import { nextTurn } from '../gpt/generate.js';
import type { GPT2 } from '../gpt/model.js';
import { Tokenizer } from '../gpt/tokenizer.js';
import { AdamW } from './adamw.js';
import { splitTrainVal } from './batches.js';
import { countTruncated } from './collate.js';
import { FINE_TUNE_DEFAULTS, type FineTuneSettings } from './defaults.js';
import { DataError, encodeEntry, type EncodedExample, type InstructionEntry } from './instruction-data.js';
import { Trainer, type StepRecord } from './trainer.js';

/** Held-out and training examples, with their indices into the entries. */
export interface PreparedExamples {
  train: { indices: number[]; examples: EncodedExample[] };
  val: { indices: number[]; examples: EncodedExample[] };
}

/**
 * The entries encoded, split into training and validation (seeded), and those that cannot count in
 * the loss left out with a warning. `source` names the data in errors.
 */
export function prepareExamples(
  entries: readonly InstructionEntry[],
  options: { valFraction: number; seed: number; maskPrompt: boolean },
  contextLength: number,
  source: string,
  warn: (message: string) => void,
): PreparedExamples {
  const tokenizer = new Tokenizer();
  const examples = entries.map((entry) => encodeEntry(entry, tokenizer));
  const { train, val } = splitTrainVal(examples.length, options.valFraction, options.seed);
  const cut = countTruncated(examples, contextLength);
  if (cut > 0) warn(`warning: ${cut} of ${examples.length} entries are longer than the context of ${contextLength + 1} tokens and are cut to it`);
  // Under maskPrompt, an entry whose prompt fills the whole context has no target left to learn.
  const usable = (i: number) => !options.maskPrompt || examples[i].promptLength <= contextLength;
  const dropped = [...train, ...val].filter((i) => !usable(i)).length;
  if (dropped > 0) warn(`warning: ${dropped} entries have no response token within the context and are skipped (--mask-prompt)`);
  const pick = (indices: number[]) => {
    const kept = indices.filter(usable);
    return { indices: kept, examples: kept.map((i) => examples[i]) };
  };
  const prepared = { train: pick(train), val: pick(val) };
  if (prepared.train.indices.length === 0) throw new DataError(`${source}: no entry is left to train on`);
  return prepared;
}

export interface FineTuneOptions {
  /** Passes over the training entries. Default 2. */
  epochs?: number;
  /** Sequences per micro-batch. Default 8. */
  batchSize?: number;
  /** Peak learning rate. Default 5e-5. */
  learningRate?: number;
  /** AdamW's decoupled weight decay. Default 0.01. */
  weightDecay?: number;
  /** Linear warm-up steps. Default 10. */
  warmupSteps?: number;
  /** `cosine` (to 10% of the peak, the default) or `constant`. */
  lrSchedule?: 'cosine' | 'constant';
  /** Stop after this many optimizer steps. */
  maxSteps?: number;
  /** Micro-batches per optimizer step. Default 1. */
  gradAccum?: number;
  /** Global gradient-norm clip, 0 = off. Default 1. */
  clip?: number;
  /** Seed of the split and the shuffle. Default 0. */
  seed?: number;
  /** Shuffle the entries every epoch. Default true. */
  shuffle?: boolean;
  /** Share of the entries held out for the validation loss. Default 0.1. */
  valFraction?: number;
  /** Validation loss every n steps, 0 = only at epoch ends. Default 50. */
  evalEvery?: number;
  /** Train on the responses only. Default false. */
  maskPrompt?: boolean;
  /** Context of the training inputs in tokens. Default: the model's. */
  maxLength?: number;
  /**
   * After every step, in order; an awaited promise holds the next step back. `weightsStep` is the
   * step the model's weights are at when read here: the next step is recorded before this one's loss
   * is read, so it is `record.step + 1` except at the last step, a validation or a stop.
   */
  onStep?(record: StepRecord, info: { totalSteps: number; weightsStep: number }): void | Promise<void>;
  /** After every validation, with the mean validation loss and the step it follows. */
  onValidation?(valLoss: number, step: number): void;
  /** Warnings about the data (entries cut to the context or skipped). Default: console.warn. */
  onWarning?: (message: string) => void;
  /** Stops the run after the step in flight; the result then has `stopped: true`. */
  signal?: AbortSignal;
}

export interface FineTuneResult {
  /** One record per step (step, epoch, loss, lr, tokens, and val_loss where measured). */
  records: StepRecord[];
  /** Whether the signal stopped the run before its last step. */
  stopped: boolean;
}

/**
 * Fine-tunes `model` in place on instruction entries (the Alpaca template, loss on every real
 * token and the first end-of-text) with AdamW, a warm-up and cosine schedule and global-norm
 * clipping: the command line's training loop and its defaults for a pretrained model. Throws
 * TrainingDiverged if the loss stops being finite. The model is left in eval mode.
 */
export async function fineTune(model: GPT2, entries: readonly InstructionEntry[], options: FineTuneOptions = {}): Promise<FineTuneResult> {
  const o = { ...FINE_TUNE_DEFAULTS, ...definedOnly(options) };
  const lr = options.learningRate ?? FINE_TUNE_DEFAULTS.lr;
  checkOptions(o, lr);
  const contextLength = Math.min(o.maxLength ?? model.config.n_positions, model.config.n_positions);
  const data = prepareExamples(entries, o, contextLength, 'the data', options.onWarning ?? console.warn);
  const optimizer = new AdamW(model, { weightDecay: o.weightDecay });
  const { signal } = options;
  const trainer = new Trainer(model, optimizer, data.train.examples, data.val.examples, {
    epochs: o.epochs, batchSize: o.batchSize, lr, lrSchedule: o.lrSchedule, warmupSteps: o.warmupSteps,
    maxSteps: o.maxSteps ?? null, gradAccum: o.gradAccum, clip: o.clip, seed: o.seed, shuffle: o.shuffle,
    evalEvery: o.evalEvery, maskPrompt: o.maskPrompt, contextLength,
  }, {
    async onStep(record) {
      await options.onStep?.(record, { totalSteps: trainer.totalSteps, weightsStep: trainer.stepsRecorded });
      // On the CPU backend every await resolves at once: without a turn of the event loop, an abort
      // from a click or a key would only be seen after the last step.
      if (signal) await nextTurn();
    },
    onValidation: (valLoss, position) => options.onValidation?.(valLoss, position.step),
    shouldStop: () => signal?.aborted ?? false,
  });
  try {
    const { stopped } = await trainer.run();
    return { records: trainer.records, stopped };
  } finally {
    optimizer.dispose();
    model.eval();
  }
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function checkOptions(o: FineTuneSettings & FineTuneOptions, lr: number): void {
  const positiveInt = (x: number) => Number.isInteger(x) && x > 0;
  const nonNegativeInt = (x: number) => Number.isInteger(x) && x >= 0;
  const checks: [string, unknown, boolean, string][] = [
    ['epochs', o.epochs, positiveInt(o.epochs), 'a positive integer'],
    ['batchSize', o.batchSize, positiveInt(o.batchSize), 'a positive integer'],
    ['learningRate', lr, lr > 0 && Number.isFinite(lr), 'a positive number'],
    ['weightDecay', o.weightDecay, o.weightDecay >= 0, 'a number ≥ 0'],
    ['warmupSteps', o.warmupSteps, nonNegativeInt(o.warmupSteps), 'an integer ≥ 0'],
    ['lrSchedule', o.lrSchedule, o.lrSchedule === 'cosine' || o.lrSchedule === 'constant', 'cosine or constant'],
    ['maxSteps', o.maxSteps, o.maxSteps === undefined || positiveInt(o.maxSteps), 'a positive integer'],
    ['gradAccum', o.gradAccum, positiveInt(o.gradAccum), 'a positive integer'],
    ['clip', o.clip, o.clip >= 0, 'a number ≥ 0'],
    ['seed', o.seed, nonNegativeInt(o.seed) && o.seed < 2 ** 32, 'an integer in [0, 2^32)'],
    ['valFraction', o.valFraction, o.valFraction >= 0 && o.valFraction < 1, 'in [0, 1)'],
    ['evalEvery', o.evalEvery, nonNegativeInt(o.evalEvery), 'an integer ≥ 0'],
    ['maxLength', o.maxLength, o.maxLength === undefined || (Number.isInteger(o.maxLength) && o.maxLength >= 2), 'an integer ≥ 2'],
  ];
  for (const [name, value, ok, rule] of checks) {
    if (!ok) throw new RangeError(`fineTune: ${name} must be ${rule}, got ${JSON.stringify(value)}`);
  }
}
