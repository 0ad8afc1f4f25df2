/**
 * One fine-tuning run from parsed flags: everything is checked (flags, data file, model spec, the
 * run folder) before anything is written; then the model is loaded, trained with checkpoints,
 * training.json and loss.svg kept up to date in the run folder, and finally asked to answer one
 * training and one validation instruction beside their reference answers.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generate } from '../gpt/generate.js';
import { checkModelSpec, loadModel } from '../gpt/load-model.js';
import type { GPT2 } from '../gpt/model.js';
import { atomicWrite } from '../gpt/safetensors.js';
import { Tokenizer } from '../gpt/tokenizer.js';
import { autotuneMatmul } from '../kernels/matmul.js';
import { initBackend } from '../kernels/select-backend.js';
import type { WebGpuBackend } from '../kernels/webgpu-backend.js';
import type { Backend } from '../tensor/backend.js';
import { AdamW } from './adamw.js';
import { splitTrainVal } from './batches.js';
import { loadCheckpoint, restoreOptimizer, saveCheckpoint, writeRecords, type TrainingState } from './checkpoint.js';
import { countTruncated } from './collate.js';
import { DataError, encodeEntry, formatInput, loadInstructionFile, type EncodedExample, type InstructionEntry } from './instruction-data.js';
import { lossCurveSvg } from './loss-plot.js';
import { UsageError, type TrainOptions } from './options.js';
import { Progress } from './progress.js';
import { Trainer, TrainingDiverged, type StepRecord, type TrainingPosition } from './trainer.js';

/** The flags a checkpoint keeps: a resumed run takes all of them from there. */
type RunFlags = Omit<TrainOptions, 'resume' | 'out' | 'device'>;

interface RunState extends TrainingState {
  flags: RunFlags & Record<string, unknown>;
  /** sha256 of the data file: a resume on edited data would not continue the same trajectory. */
  dataSha256: string;
}

export interface RunControl {
  /** Polled between steps: true stops after the step in flight, with a checkpoint (Ctrl-C). */
  shouldStop(): boolean;
  /** Progress and messages (default stderr). */
  stream?: NodeJS.WriteStream;
}

export interface SampleAnswer {
  split: 'train' | 'validation';
  instruction: string;
  input: string;
  reference: string;
  generated: string;
}

export interface RunResult {
  out: string;
  records: readonly StepRecord[];
  stopped: boolean;
  samples: SampleAnswer[];
}

/** A new run's default folder: runs/<local date and time>. */
function defaultOut(): string {
  const d = new Date();
  const pad = (n: number) => String(n).padStart(2, '0');
  return join('runs', `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}_${pad(d.getHours())}-${pad(d.getMinutes())}-${pad(d.getSeconds())}`);
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

async function resumeState(folder: string): Promise<{ state: RunState; moments: Awaited<ReturnType<typeof loadCheckpoint>>['moments']; weights: string }> {
  if (!existsSync(folder)) throw new UsageError(`--resume ${folder}: no such folder`);
  let loaded;
  try {
    loaded = await loadCheckpoint(folder);
  } catch (e) {
    throw new UsageError(`--resume ${folder}: ${(e as Error).message}`);
  }
  return { state: loaded.state as RunState, moments: loaded.moments, weights: loaded.folder };
}

/** The run's examples: encoded, split, and those that cannot count in the loss left out with a warning. */
function prepareData(entries: readonly InstructionEntry[], flags: RunFlags, contextLength: number, log: (m: string) => void) {
  const tokenizer = new Tokenizer();
  const examples = entries.map((entry) => encodeEntry(entry, tokenizer));
  const { train, val } = splitTrainVal(examples.length, flags.valFraction, flags.seed);
  const cut = countTruncated(examples, contextLength);
  if (cut > 0) log(`warning: ${cut} of ${examples.length} entries are longer than the context of ${contextLength + 1} tokens and are cut to it`);
  // Under --mask-prompt, an entry whose prompt fills the whole context has no target left to learn.
  const usable = (i: number) => !flags.maskPrompt || examples[i].promptLength <= contextLength;
  const dropped = [...train, ...val].filter((i) => !usable(i)).length;
  if (dropped > 0) log(`warning: ${dropped} entries have no response token within the context and are skipped (--mask-prompt)`);
  const pick = (indices: number[]) => indices.filter(usable);
  const trainIdx = pick(train);
  const valIdx = pick(val);
  if (trainIdx.length === 0) throw new DataError(`${flags.data}: no entry is left to train on`);
  return {
    tokenizer,
    train: { indices: trainIdx, examples: trainIdx.map((i) => examples[i]) as EncodedExample[] },
    val: { indices: valIdx, examples: valIdx.map((i) => examples[i]) as EncodedExample[] },
  };
}

/** The model's greedy, KV-cached answer to an entry's instruction, cut at the template's next header. */
export async function answer(model: GPT2, tokenizer: Tokenizer, entry: InstructionEntry, contextLength: number): Promise<string> {
  const prompt = tokenizer.encode(formatInput(entry).prompt);
  const maxTokens = Math.max(0, Math.min(128, contextLength - prompt.length));
  const result = await generate(model, prompt, { temperature: 0, maxTokens, stop: ['\n\n### '], onWarning: () => {} });
  return result.text.trim();
}

export async function runTraining(options: TrainOptions, control: RunControl): Promise<RunResult> {
  const stream = control.stream ?? process.stderr;
  const progress = new Progress(stream);
  const log = (message: string) => progress.log(message);

  // Everything a user can get wrong is checked before the first byte is written.
  const resumed = options.resume === null ? null : await resumeState(options.resume);
  const flags: RunFlags = resumed ? resumed.state.flags : (({ resume: _r, out: _o, device: _d, ...rest }) => rest)(options);
  const out = resumed ? options.resume! : (options.out ?? defaultOut());
  if (!resumed && existsSync(join(out, 'checkpoint'))) {
    throw new UsageError(`--out ${out} already holds a run: continue it with --resume ${out}, or choose another folder`);
  }
  const entries = loadInstructionFile(flags.data);
  const dataSha256 = sha256(flags.data);
  if (resumed && resumed.state.dataSha256 !== dataSha256) {
    throw new UsageError(`--resume ${out}: ${flags.data} has changed since the run started, so the run cannot continue the same way`);
  }
  if (!resumed) checkModelSpec(flags.model);

  const backend: Backend = await initBackend(options.device);
  if ('gpu' in backend) await autotuneMatmul((backend as WebGpuBackend).gpu);
  const { model, config, source } = await loadModel(resumed ? resumed.weights : flags.model, backend, { seed: flags.seed });
  const contextLength = Math.min(flags.maxLength ?? config.n_positions, config.n_positions);
  if (flags.maxLength !== null && flags.maxLength > config.n_positions) log(`warning: --max-length ${flags.maxLength} is past the model's context; using ${config.n_positions}`);
  const data = prepareData(entries, flags, contextLength, log);
  const optimizer = new AdamW(model, { weightDecay: flags.weightDecay });
  if (resumed) restoreOptimizer(optimizer, resumed.moments, resumed.state.optimizerStep, resumed.weights);

  await mkdir(out, { recursive: true });
  log(
    `model ${source} (${(model.parameterCount() / 1e6).toFixed(1)} M parameters) on ${backend.name}; ` +
      `${data.train.examples.length} training and ${data.val.examples.length} validation entries from ${flags.data}; output in ${out}`,
  );

  let lastValLoss: number | undefined;
  let lastStepAt = performance.now();
  const tokensPerSecond = (record: StepRecord) => {
    const now = performance.now();
    const rate = record.tokens / ((now - lastStepAt) / 1000);
    lastStepAt = now;
    return rate;
  };
  const writeCurve = () => atomicWrite(join(out, 'loss.svg'), (fh) => fh.writeFile(lossCurveSvg(trainer.records)));
  const trainer = new Trainer(model, optimizer, data.train.examples, data.val.examples, { ...flags, contextLength }, {
    async onStep(record, position) {
      progress.update({
        epoch: position.epoch, epochs: flags.epochs, step: record.step, totalSteps: trainer.totalSteps,
        loss: record.loss, lr: record.lr, tokensPerSecond: tokensPerSecond(record), valLoss: lastValLoss,
      });
      await writeRecords(out, trainer.records);
    },
    async onValidation(valLoss, position) {
      lastValLoss = valLoss;
      log(`step ${position.step}: validation loss ${valLoss.toFixed(4)}`);
      await writeRecords(out, trainer.records);
    },
    async onCheckpoint(position: TrainingPosition, records) {
      const state: RunState = { position, optimizerStep: optimizer.step, seed: flags.seed, flags: { ...flags }, dataSha256 };
      await saveCheckpoint(out, model, config, optimizer, state);
      await writeRecords(out, records);
      await writeCurve();
    },
    shouldStop: () => control.shouldStop(),
  });
  if (resumed) {
    const saved = JSON.parse(await readFile(join(out, 'training.json'), 'utf8')) as StepRecord[];
    trainer.resumeFrom(resumed.state.position, saved);
    log(`resuming at step ${resumed.state.position.step} of ${trainer.totalSteps} (epoch ${resumed.state.position.epoch + 1})`);
  }

  let stopped: boolean;
  try {
    ({ stopped } = await trainer.run());
  } catch (e) {
    if (e instanceof TrainingDiverged) {
      // The weights are already damaged: keep the last checkpoint as it is, record what happened.
      await writeRecords(out, trainer.records);
      await writeCurve();
      progress.finish();
      const kept = existsSync(join(out, 'checkpoint')) ? `the last good checkpoint is kept in ${out}` : 'no checkpoint had been written yet';
      throw new TrainingDiverged(e.step, e.loss, kept);
    }
    throw e;
  }
  progress.finish();

  const samples: SampleAnswer[] = [];
  if (!stopped) {
    model.eval();
    const picks: [SampleAnswer['split'], number | undefined][] = [['train', data.train.indices[0]], ['validation', data.val.indices[0]]];
    for (const [split, index] of picks) {
      if (index === undefined) continue;
      const entry = entries[index];
      samples.push({ split, instruction: entry.instruction, input: entry.input, reference: entry.output, generated: await answer(model, data.tokenizer, entry, contextLength) });
    }
    await writeFile(join(out, 'samples.json'), JSON.stringify(samples, null, 2));
  }
  model.dispose();
  optimizer.dispose();
  return { out, records: trainer.records, stopped, samples };
}
