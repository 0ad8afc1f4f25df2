/**
 * The training command's flags: one table (names as the Hugging Face Trainer has them, in kebab
 * case, older names as aliases) that drives both parsing and `--help`; each value checked, with
 * defaults that run the complete demo when no flag is given.
 */
import { isRandomPreset } from '../gpt/config.js';
import { isLoRATarget } from '../gpt/lora-adapter.js';
import { BLOCK_LORA_TARGETS, HEAD_MERGE_REFUSAL, LORA_TARGETS, type LoRATarget } from '../gpt/lora.js';
import { FINE_TUNE_DEFAULTS as D, type FineTuneSettings } from '../train/defaults.js';
import type { WeightDType } from '../nn/layers.js';
import { FlagReader, flagHelp, nonNegativeInt, parseFlagTable, positiveInt, UsageError, VERBOSE_FLAG, type FlagTable } from './flags.js';

export { UsageError };

/** The command line's run: the shared fine-tuning settings and what only a run folder has. */
export interface TrainOptions extends FineTuneSettings {
  model: string;
  data: string;
  out: string | null;
  /** Warm-up as a share of the run's steps; when set, it replaces warmupSteps. */
  warmupRatio: number | null;
  /** Floor of the cosine decay; null: 10% of the peak. */
  minLr: number | null;
  maxSteps: number | null;
  /** A checkpoint every n steps besides those at epoch ends (0: epoch ends only). */
  saveSteps: number;
  /** model.safetensors holds the last weights instead of those of the lowest validation loss. */
  saveLast: boolean;
  /** Stop after this many validations without a new lowest loss (0: never). */
  earlyStoppingPatience: number;
  /** A progress line every n steps when stderr is not a terminal. */
  loggingSteps: number;
  dropout: number;
  maxLength: number | null;
  /** LoRA: rank of the adapters trained on the frozen base; null: a full run (every weight trains). */
  loraRank: number | null;
  /** LoRA scale alpha/r; the rank when not given (null without LoRA). */
  loraAlpha: number | null;
  loraDropout: number;
  loraTargets: LoRATarget[];
  /** Storage of the base's weight matrices (f16 or bf16 only under LoRA: a frozen base). */
  dtype: WeightDType;
  /** Recompute each block's activations during backward instead of keeping them (needs no dropout; the run is the same). */
  gradientCheckpointing: boolean;
  device: 'auto' | 'webgpu' | 'cpu';
  /** Let the GPU driver's own messages through. */
  verbose: boolean;
  resume: string | null;
  /** After training, the base with the adapter merged in, as a model folder here. */
  mergeTo: string | null;
}

/** What a resume may change: the run's length (it continues the same trajectory up to the old end). */
export type ResumeExtension = Partial<Pick<TrainOptions, 'epochs' | 'maxSteps'>>;

/** The flags that do not belong to a run (and so are not kept in its checkpoint). */
export const SESSION_FLAGS = ['resume', 'out', 'device', 'mergeTo', 'gradientCheckpointing', 'verbose'] as const;

/**
 * The demo: a small GPT-2-shaped model from scratch on the project's own data set, with the loss on
 * the responses alone so that its few minutes go to the answers rather than the fixed template.
 * A constant rate learns the set in fewer epochs than a cosine decay (on lavapipe, 12 epochs: mean
 * loss of the last epoch 1.2 against 2.0; 20 constant epochs reach 0.22 in 3 min 53 s); 1e-2 diverges
 * from the start (4.7 after 4 epochs against 3.3). It keeps its last weights: 272 entries teach a model
 * from scratch to recite them, not to answer new ones, so its lowest validation loss comes early, from
 * weights that answer nothing yet.
 */
export const DEMO_DEFAULTS = {
  model: 'demo',
  data: 'data/instructions.json',
  epochs: 20,
  lr: 3e-3,
  lrSchedule: 'constant',
  maskPrompt: true,
  saveLast: true,
} as const;

const PRETRAINED = { epochs: D.epochs, lr: D.lr, lrSchedule: D.lrSchedule } as const;

const DEFAULT_LOGGING_STEPS = 10;

/** Every flag of `tsx src/train.ts`: parsing and `--help` both read this table. */
export const TRAIN_FLAGS: FlagTable = [
  { name: 'model', short: 'm', value: '<preset|folder|owner/name>', description: 'model to fine-tune: demo/tiny (random init), gpt2…gpt2-xl, a hub repo or a run folder', default: 'demo' },
  { name: 'data', value: '<file>', description: 'instruction data: a JSON array or JSON Lines (.jsonl) of {instruction, input, output}', default: DEMO_DEFAULTS.data },
  { name: 'output-dir', aliases: ['out'], value: '<folder>', description: 'where the model, checkpoints, training.json and loss.svg go', default: 'runs/<date>_<time>' },
  { name: 'epochs', aliases: ['num-train-epochs'], value: '<n>', description: 'passes over the training set', default: `${PRETRAINED.epochs}; ${DEMO_DEFAULTS.epochs} for the demo` },
  { name: 'batch-size', aliases: ['per-device-train-batch-size'], value: '<n>', description: 'sequences per micro-batch', default: String(D.batchSize) },
  { name: 'learning-rate', aliases: ['lr'], value: '<x>', description: 'peak learning rate', default: `${PRETRAINED.lr}; ${DEMO_DEFAULTS.lr} for the demo` },
  { name: 'lr-scheduler-type', aliases: ['lr-schedule'], value: '<cosine|constant>', description: 'decay after the warm-up', default: `${PRETRAINED.lrSchedule}; ${DEMO_DEFAULTS.lrSchedule} for the demo` },
  { name: 'min-lr', value: '<x>', description: 'floor of the cosine decay', default: '10% of the peak' },
  { name: 'warmup-steps', value: '<n>', description: 'linear warm-up steps', default: String(D.warmupSteps) },
  { name: 'warmup-ratio', value: '<x>', description: 'warm-up as a share of all steps (replaces --warmup-steps)' },
  { name: 'weight-decay', value: '<x>', description: 'AdamW decoupled weight decay (matrices only)', default: String(D.weightDecay) },
  { name: 'max-steps', value: '<n>', description: 'stop after this many optimizer steps', default: 'all epochs' },
  { name: 'gradient-accumulation-steps', aliases: ['grad-accum'], value: '<n>', description: 'micro-batches per optimizer step', default: String(D.gradAccum) },
  { name: 'max-grad-norm', aliases: ['clip'], value: '<x>', description: 'global gradient-norm clip, 0 = off', default: String(D.clip) },
  { name: 'dropout', value: '<p>', description: 'dropout on embeddings and residual branches', default: '0' },
  { name: 'mask-prompt', description: 'train on the responses only (the prompt\'s targets do not count)', default: 'on for the demo' },
  { name: 'no-mask-prompt', description: 'train on every real token, the prompt\'s too', default: 'for a pretrained model' },
  { name: 'max-length', value: '<n>', description: 'context of the training inputs, in tokens', default: 'the model\'s' },
  { name: 'val-fraction', value: '<x>', description: 'share of entries held out for validation', default: String(D.valFraction) },
  { name: 'eval-steps', aliases: ['eval-every'], value: '<n>', description: 'validation loss every n steps, 0 = only at epoch ends', default: String(D.evalEvery) },
  { name: 'save-steps', value: '<n>', description: 'a checkpoint every n steps, 0 = only at epoch ends', default: '0' },
  { name: 'save-last', description: 'model.safetensors holds the last weights, not those of the lowest validation loss', default: 'on for the demo' },
  { name: 'early-stopping-patience', value: '<n>', description: 'stop after n validations without a new lowest loss, 0 = never', default: '0' },
  { name: 'logging-steps', value: '<n>', description: 'a progress line every n steps when stderr is not a terminal', default: String(DEFAULT_LOGGING_STEPS) },
  { name: 'seed', value: '<n>', description: 'seed of the init, split, shuffle and dropout', default: String(D.seed) },
  { name: 'no-shuffle', description: 'keep the data set\'s order' },
  { name: 'lora-rank', value: '<r>', description: 'LoRA: train rank-r adapters on a frozen base instead of every weight' },
  { name: 'lora-alpha', value: '<a>', description: 'LoRA: the adapters\' output is scaled by a/r', default: 'r' },
  { name: 'lora-dropout', value: '<p>', description: 'LoRA: dropout on the adapters\' input', default: '0' },
  { name: 'lora-targets', value: '<list>', description: 'LoRA: the layers adapted in every block, comma-separated; lm_head adds the output head (cannot be merged)', default: BLOCK_LORA_TARGETS.join(',') },
  { name: 'dtype', value: '<f32|f16|bf16>', description: 'storage of the base\'s weight matrices; f16 or bf16 halves their memory (LoRA only)', default: 'f32' },
  { name: 'gradient-checkpointing', aliases: ['checkpoint-activations'], description: 'keep one block\'s activations at a time, recomputing the rest during backward (one more forward pass; no dropout)' },
  { name: 'merge-to', value: '<folder>', description: 'LoRA: after training, write the base with the adapter merged in as a model folder there' },
  { name: 'device', value: '<auto|webgpu|cpu>', description: 'where to train', default: 'auto' },
  { name: 'resume', aliases: ['resume-from-checkpoint'], value: '<folder>', description: 'continue a run with its own flags (only --epochs, --max-steps, --device, --merge-to, --gradient-checkpointing and --verbose may be given)' },
  VERBOSE_FLAG,
  { name: 'help', short: 'h', description: 'this text' },
];

export const HELP = `Usage: npx tsx src/train.ts [flags]

Instruction fine-tuning of GPT-2. With no flags: a complete demo, a small model trained from scratch
on the project's own data set (data/instructions.json).

${flagHelp(TRAIN_FLAGS)}`;

const RESUME_MAY_CHANGE = ['resume', 'device', 'epochs', 'max-steps', 'merge-to', 'gradient-checkpointing', 'verbose'];

/** --lora-targets: known layer names, each once. */
function loraTargets(raw: string, written: string): LoRATarget[] {
  const names = raw.split(',').map((name) => name.trim());
  const targets: LoRATarget[] = [];
  for (const name of names) {
    if (!isLoRATarget(name)) throw new UsageError(`${written} names "${name}", which is not a layer LoRA adapts (${LORA_TARGETS.join(', ')})`);
    if (targets.includes(name)) throw new UsageError(`${written} names ${name} twice`);
    targets.push(name);
  }
  return targets;
}

export function parseTrainOptions(argv: string[]): (TrainOptions & { extend: ResumeExtension }) | 'help' {
  const flags = new FlagReader(parseFlagTable(argv, TRAIN_FLAGS));
  if (flags.switch('help')) return 'help';
  if (flags.given('resume')) {
    const other = flags.names().find((name) => !RESUME_MAY_CHANGE.includes(name));
    if (other !== undefined) {
      throw new UsageError(`--resume continues a run with the flags it was started with; ${flags.written(other)} cannot be given with it (only --epochs, --max-steps, --device, --merge-to and --gradient-checkpointing can)`);
    }
  }
  const loraRank = flags.number('lora-rank', positiveInt, 'a positive integer') ?? null;
  if (loraRank === null && !flags.given('resume')) {
    const loraOnly = ['lora-alpha', 'lora-dropout', 'lora-targets', 'merge-to'].find((name) => flags.given(name));
    if (loraOnly !== undefined) throw new UsageError(`${flags.written(loraOnly)} goes with --lora-rank (a LoRA run)`);
  }
  const dtype = flags.choice('dtype', ['f32', 'f16', 'bf16'] as const) ?? 'f32';
  if (dtype !== 'f32' && loraRank === null) {
    throw new UsageError(`--dtype ${dtype} stores the weight matrices in 16 bits, which only a frozen base can be: give --lora-rank too (a LoRA run)`);
  }
  if (flags.given('mask-prompt') && flags.given('no-mask-prompt')) throw new UsageError('give --mask-prompt or --no-mask-prompt, not both');
  const model = flags.string('model') ?? DEMO_DEFAULTS.model;
  if (loraRank !== null && isRandomPreset(model)) {
    throw new UsageError(`--lora-rank adapts a pretrained model, and --model ${model} is a random init: give gpt2…gpt2-xl, a hub repo or a model folder`);
  }
  const targets = flags.given('lora-targets') ? loraTargets(flags.string('lora-targets')!, flags.written('lora-targets')) : [...BLOCK_LORA_TARGETS];
  if (targets.includes('lm_head') && flags.given('merge-to')) throw new UsageError(`${flags.written('merge-to')} with ${flags.written('lora-targets')} lm_head: ${HEAD_MERGE_REFUSAL}`);
  const demo = model === DEMO_DEFAULTS.model;
  const defaults = demo ? DEMO_DEFAULTS : PRETRAINED;
  const epochs = flags.number('epochs', positiveInt, 'a positive integer');
  const maxSteps = flags.number('max-steps', positiveInt, 'a positive integer');
  return {
    model,
    data: flags.string('data') ?? DEMO_DEFAULTS.data,
    out: flags.string('output-dir') ?? null,
    epochs: epochs ?? defaults.epochs,
    batchSize: flags.number('batch-size', positiveInt, 'a positive integer') ?? D.batchSize,
    lr: flags.number('learning-rate', (x) => x > 0, 'a positive number') ?? defaults.lr,
    weightDecay: flags.number('weight-decay', (x) => x >= 0, 'a number ≥ 0') ?? D.weightDecay,
    lrSchedule: flags.choice('lr-scheduler-type', ['cosine', 'constant'] as const) ?? defaults.lrSchedule,
    warmupSteps: flags.number('warmup-steps', nonNegativeInt, 'an integer ≥ 0') ?? D.warmupSteps,
    warmupRatio: flags.number('warmup-ratio', (x) => x >= 0 && x <= 1, 'in [0, 1]') ?? null,
    minLr: flags.number('min-lr', (x) => x >= 0, 'a number ≥ 0') ?? null,
    maxSteps: maxSteps ?? null,
    gradAccum: flags.number('gradient-accumulation-steps', positiveInt, 'a positive integer') ?? D.gradAccum,
    clip: flags.number('max-grad-norm', (x) => x >= 0, 'a number ≥ 0') ?? D.clip,
    seed: flags.number('seed', (x) => nonNegativeInt(x) && x < 2 ** 32, 'an integer in [0, 2^32)') ?? D.seed,
    shuffle: !flags.switch('no-shuffle'),
    valFraction: flags.number('val-fraction', (x) => x >= 0 && x < 1, 'in [0, 1)') ?? D.valFraction,
    evalEvery: flags.number('eval-steps', nonNegativeInt, 'an integer ≥ 0') ?? D.evalEvery,
    saveSteps: flags.number('save-steps', nonNegativeInt, 'an integer ≥ 0') ?? 0,
    saveLast: flags.switch('save-last') || (demo && DEMO_DEFAULTS.saveLast),
    earlyStoppingPatience: flags.number('early-stopping-patience', nonNegativeInt, 'an integer ≥ 0') ?? 0,
    loggingSteps: flags.number('logging-steps', positiveInt, 'a positive integer') ?? DEFAULT_LOGGING_STEPS,
    maskPrompt: flags.switch('mask-prompt') || (!flags.switch('no-mask-prompt') && demo && DEMO_DEFAULTS.maskPrompt),
    dropout: flags.number('dropout', (x) => x >= 0 && x < 1, 'in [0, 1)') ?? 0,
    maxLength: flags.number('max-length', (x) => Number.isInteger(x) && x >= 2, 'an integer ≥ 2') ?? null,
    loraRank,
    loraAlpha: loraRank === null ? null : (flags.number('lora-alpha', (x) => x > 0, 'a positive number') ?? loraRank),
    loraDropout: flags.number('lora-dropout', (x) => x >= 0 && x < 1, 'in [0, 1)') ?? 0,
    loraTargets: targets,
    dtype,
    gradientCheckpointing: flags.switch('gradient-checkpointing'),
    device: flags.choice('device', ['webgpu', 'cpu', 'auto'] as const) ?? 'auto',
    verbose: flags.switch('verbose'),
    resume: flags.string('resume') ?? null,
    mergeTo: flags.string('merge-to') ?? null,
    extend: { ...(epochs === undefined ? {} : { epochs }), ...(maxSteps === undefined ? {} : { maxSteps }) },
  };
}
