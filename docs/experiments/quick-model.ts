/**
 * What the experiments that need a trained model share: their flags, the project's data set split
 * as `src/train.ts` splits it, and a model — a checkpoint folder given with `--model`, or by default
 * a small GPT-2 trained here for a few seconds with the project's own Trainer and AdamW.
 *
 * The quick model has GPT-2's tokenizer and vocabulary (50257) but d 32, 2 layers, 2 heads and 128
 * positions (the longest entry of data/instructions.json is 108 tokens), trained with the loss on
 * the responses alone (`--mask-prompt`): its loss falls from ln 50257 ≈ 10.8 to about 7 in 24 steps of 4
 * entries (10–30 s on a 2-core machine with lavapipe, depending on its load).
 * It is not a good language model; it is a real one, whose next-token distributions were learnt
 * from data, which is all the experiments need. A real checkpoint gives the same tables with
 * better numbers: `--model runs/<folder>` (the output folder of `npx tsx src/train.ts`).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { GPT2Config } from '../../src/gpt/config.js';
import { initializeWeights } from '../../src/gpt/init.js';
import { loadModel } from '../../src/node/load-model.js';
import { GPT2 } from '../../src/gpt/model.js';
import { Tokenizer } from '../../src/gpt/tokenizer.js';
import { createBackend, releaseBackend } from '../../src/node/backend.js';
import { type BackendChoice } from '../../src/kernels/select-backend.js';
import type { Backend } from '../../src/tensor/backend.js';
import { AdamW } from '../../src/train/adamw.js';
import { splitTrainVal } from '../../src/train/batches.js';
import { encodeEntry, type EncodedExample, type InstructionEntry } from '../../src/train/instruction-data.js';
import { loadInstructionFile } from '../../src/node/instruction-file.js';
import { Trainer, type StepRecord, type TrainerConfig } from '../../src/train/trainer.js';

/** The project's default data set, found from this file so a script runs from any folder. */
export const DATA_FILE = fileURLToPath(new URL('../../data/instructions.json', import.meta.url));

export const QUICK_CONFIG: GPT2Config = { n_embd: 32, n_layer: 2, n_head: 2, n_positions: 128, vocab_size: 50257, layer_norm_epsilon: 1e-5 };

/** src/train.ts's defaults: 10% held out, seed 0. */
const VAL_FRACTION = 0.1;

export interface QuickTraining {
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  /** Default cosine. */
  lrSchedule?: 'cosine' | 'constant';
}

export const QUICK_TRAINING: QuickTraining = { steps: 24, batchSize: 4, lr: 2e-2, seed: 0 };

export interface ExperimentFlags {
  model: string | null;
  device: BackendChoice;
  steps: number;
  /** Flags of the script itself, as parseArgs returned them. */
  values: Record<string, string | boolean | undefined>;
}

/** `--model <folder>`, `--device auto|webgpu|cpu`, `--steps <n>` (quick training), and the script's own options. */
export function parseExperimentFlags(extra: ParseArgsConfig['options'] = {}): ExperimentFlags {
  const { values } = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: 'string' },
      device: { type: 'string', default: 'auto' },
      steps: { type: 'string', default: String(QUICK_TRAINING.steps) },
      ...extra,
    },
  });
  const device = values.device;
  if (device !== 'auto' && device !== 'webgpu' && device !== 'cpu') throw new Error(`--device must be auto, webgpu or cpu, got ${device}`);
  const steps = Number(values.steps);
  if (!Number.isInteger(steps) || steps < 0) throw new Error(`--steps must be an integer ≥ 0, got ${values.steps}`);
  return { model: values.model ?? null, device, steps, values };
}

export interface DataSplit {
  tokenizer: Tokenizer;
  entries: InstructionEntry[];
  examples: EncodedExample[];
  /** Indices into entries/examples. */
  train: number[];
  val: number[];
}

export function loadData(): DataSplit {
  const tokenizer = new Tokenizer();
  const entries = loadInstructionFile(DATA_FILE);
  const examples = entries.map((e) => encodeEntry(e, tokenizer));
  const { train, val } = splitTrainVal(entries.length, VAL_FRACTION, 0);
  return { tokenizer, entries, examples, train, val };
}

/** The Trainer's settings for a quick run: responses only, cosine from a 2-step warm-up, clip 1. */
export function quickTrainerConfig(t: QuickTraining, contextLength: number, evalEvery = 0): TrainerConfig {
  return {
    epochs: 1000, batchSize: t.batchSize, lr: t.lr, lrSchedule: t.lrSchedule ?? 'cosine', warmupSteps: 2, maxSteps: t.steps, gradAccum: 1,
    clip: 1, seed: t.seed, shuffle: true, evalEvery, maskPrompt: true, contextLength,
  };
}

/** A fresh QUICK_CONFIG model, GPT-2's init, trained on `train` with the project's Trainer; returns its records. */
export async function trainQuickModel(
  backend: Backend, train: EncodedExample[], val: EncodedExample[], t: QuickTraining, evalEvery = 0,
): Promise<{ model: GPT2; records: StepRecord[] }> {
  const model = new GPT2(QUICK_CONFIG, backend);
  initializeWeights(model, t.seed);
  const optimizer = new AdamW(model, { weightDecay: 0.01 });
  const trainer = new Trainer(model, optimizer, train, val, quickTrainerConfig(t, QUICK_CONFIG.n_positions, evalEvery));
  if (t.steps > 0) await trainer.run();
  optimizer.dispose();
  model.eval();
  return { model, records: trainer.records };
}

export interface ExperimentModel extends DataSplit {
  backend: Backend;
  model: GPT2;
  /** "quick model: …" or the checkpoint folder. */
  source: string;
}

/** The backend, the data, and the model: `--model <folder>`, or the quick model trained for `--steps`. */
export async function experimentModel(flags: ExperimentFlags): Promise<ExperimentModel> {
  const backend = await createBackend(flags.device);
  const data = loadData();
  if (flags.model !== null) {
    const { model, source } = await loadModel(flags.model, { backend });
    return { ...data, backend, model, source };
  }
  const t = { ...QUICK_TRAINING, steps: flags.steps };
  const started = performance.now();
  const { model, records } = await trainQuickModel(backend, data.train.map((i) => data.examples[i]), [], t);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const last = records.at(-1);
  const source =
    `quick model (d ${QUICK_CONFIG.n_embd}, ${QUICK_CONFIG.n_layer} layers, ${QUICK_CONFIG.n_head} heads) trained ${t.steps} steps ` +
    `of ${t.batchSize} on ${backend.name} in ${seconds} s, last training loss ${last ? last.loss.toFixed(2) : 'n/a'}`;
  return { ...data, backend, model, source };
}

/** Frees the model and lets Node exit (the WebGPU instance keeps it alive otherwise). */
export function finish(model?: GPT2): void {
  model?.dispose();
  releaseBackend();
}

/** Entropy in nats of softmax(logits / temperature), and its largest probability; f64 on the host. */
export function entropyAt(logits: ArrayLike<number>, temperature: number): { entropy: number; maxProb: number } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let total = 0;
  let weighted = 0; // Σ e^{s_i} s_i, with s_i = (z_i − max) / T ≤ 0
  for (let i = 0; i < logits.length; i++) {
    const s = (logits[i] - max) / temperature;
    const e = Math.exp(s);
    total += e;
    weighted += e * s;
  }
  // H = −Σ p log p = log Z − Σ p s, with p = e^s / Z.
  return { entropy: Math.log(total) - weighted / total, maxProb: 1 / total };
}

export const fmt = (x: number, digits = 2): string => x.toFixed(digits);
