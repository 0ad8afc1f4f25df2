/**
 * One fine-tuning run from parsed flags: everything is checked (flags, data file, model spec, the
 * run folder) before anything is written; then the model is loaded, trained with checkpoints,
 * training.json and loss.svg kept up to date in the run folder, and finally asked to answer one
 * training and one validation instruction beside their reference answers.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rmdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { generate } from '../gpt/generate.js';
import { ModelLoadError } from '../gpt/load-model.js';
import type { GPT2 } from '../gpt/model.js';
import { Tokenizer } from '../gpt/tokenizer.js';
import { atomicWrite } from '../node/atomic-write.js';
import { createBackend } from '../node/backend.js';
import { loadCheckpoint, promoteCheckpoint, saveCheckpoint, writeRecords, type LoadedCheckpoint } from '../node/checkpoint-folder.js';
import { loadInstructionFile } from '../node/instruction-file.js';
import { checkModelSpec, loadModel } from '../node/load-model.js';
import type { Backend } from '../tensor/backend.js';
import { AdamW } from '../train/adamw.js';
import { prepareExamples } from '../train/fine-tune.js';
import { formatInput, type InstructionEntry } from '../train/instruction-data.js';
import { lossCurveSvg } from '../train/loss-plot.js';
import { Trainer, TrainingDiverged, type StepRecord, type TrainingPosition } from '../train/trainer.js';
import { NonFiniteState, restoreOptimizer, type TrainingState } from '../train/training-state.js';
import { Progress } from './progress.js';
import { liveLockProblem, LOCK_FILE, lockRunFolder, RunLocked } from './run-lock.js';
import { parseTrainOptions, UsageError, type TrainOptions } from './train-options.js';

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

/** The flags a state.json holds, checked against the types of today's defaults (a hand-edited or foreign file fails here, by name). */
function checkRunFlags(flags: Record<string, unknown>, file: string): RunFlags {
  const defaults = parseTrainOptions([]) as TrainOptions;
  for (const [key, value] of Object.entries(defaults)) {
    if (key === 'resume' || key === 'out' || key === 'device') continue;
    const saved = flags[key];
    const nullable = value === null || key === 'maxSteps' || key === 'maxLength';
    if (!(typeof saved === typeof value || (nullable && (saved === null || typeof saved === 'number')))) {
      throw new UsageError(`${file}: flags.${key} is ${JSON.stringify(saved)}, expected a ${typeof value}`);
    }
  }
  return flags as unknown as RunFlags;
}

async function resumeState(folder: string): Promise<{ state: RunState; checkpoint: LoadedCheckpoint }> {
  if (!existsSync(folder)) throw new UsageError(`--resume ${folder}: no such folder`);
  let checkpoint;
  try {
    checkpoint = await loadCheckpoint(folder);
  } catch (e) {
    throw new UsageError(`--resume ${folder}: ${(e as Error).message}`);
  }
  const file = join(checkpoint.folder, 'state.json');
  const state = checkpoint.state as RunState;
  if (typeof state.dataSha256 !== 'string') throw new UsageError(`${file}: "dataSha256" is missing`);
  checkRunFlags(state.flags, file);
  return { state, checkpoint };
}

/**
 * Why a new run cannot write into `out`, or null: only a missing or empty folder is taken, so a
 * model, another run or anything else of the user's is never overwritten.
 */
function outFolderProblem(out: string): string | null {
  if (!existsSync(out)) return null;
  if (!statSync(out).isDirectory()) return `--out ${out} is a file, not a folder`;
  const inUse = liveLockProblem(out);
  if (inUse !== null) return inUse;
  const entries = readdirSync(out).filter((name) => name !== LOCK_FILE);
  if (entries.length === 0) return null;
  if (entries.some((name) => name.startsWith('checkpoint'))) return `--out ${out} already holds a run: continue it with --resume ${out}, or choose another folder`;
  const shown = entries.slice(0, 4).join(', ') + (entries.length > 4 ? ', …' : '');
  return `--out ${out} is not empty (it holds ${shown}): choose a new or empty folder`;
}

/** Creates the run folder (and its parents) or says why it cannot be: a file in the way, no permission, a read-only disk. */
async function createRunFolder(out: string): Promise<boolean> {
  const existed = existsSync(out);
  // One level at a time: a recursive mkdir reports a read-only disk as ENOENT.
  const missing: string[] = [];
  for (let dir = resolve(out); !existsSync(dir) && dirname(dir) !== dir; dir = dirname(dir)) missing.unshift(dir);
  try {
    for (const dir of missing) await mkdir(dir);
  } catch (e) {
    const { code, message } = e as NodeJS.ErrnoException;
    const why = code === 'EROFS' ? 'the file system is read-only' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : message;
    throw new UsageError(`--out ${out}: cannot create the folder (${why})`);
  }
  return !existed;
}

/** The model's greedy, KV-cached answer to an entry's instruction, cut at the template's next header. */
export async function answer(model: GPT2, tokenizer: Tokenizer, entry: InstructionEntry, contextLength: number): Promise<string> {
  const prompt = tokenizer.encode(formatInput(entry).prompt);
  const maxNewTokens = Math.max(0, Math.min(128, contextLength - prompt.length));
  const result = await generate(model, prompt, { temperature: 0, maxNewTokens, stop: ['\n\n### '], onWarning: () => {} });
  return result.text.trim();
}

export async function runTraining(options: TrainOptions, control: RunControl): Promise<RunResult> {
  const stream = control.stream ?? process.stderr;
  const progress = new Progress(stream);
  const log = (message: string) => progress.log(message);

  // Everything a user can get wrong is checked before the first byte is written.
  const resumed = options.resume === null ? null : await resumeState(options.resume);
  const flags: RunFlags = resumed ? resumed.state.flags : (({ resume: _r, out: _o, device: _d, ...rest }) => ({ ...rest, data: resolve(rest.data) }))(options);
  const out = resumed ? options.resume! : (options.out ?? defaultOut());
  if (!resumed) {
    const problem = outFolderProblem(out);
    if (problem !== null) throw new UsageError(problem);
  }
  const entries = loadInstructionFile(flags.data);
  const dataSha256 = sha256(flags.data);
  if (resumed && resumed.state.dataSha256 !== dataSha256) {
    throw new UsageError(`--resume ${out}: ${flags.data} has changed since the run started, so the run cannot continue the same way`);
  }
  if (!resumed) checkModelSpec(flags.model);

  const created = await createRunFolder(out);
  let release: () => Promise<void>;
  try {
    release = await lockRunFolder(out);
  } catch (e) {
    if (created) await rmdir(out).catch(() => {});
    throw e instanceof RunLocked ? new UsageError(e.message) : new UsageError(`--out ${out}: cannot write there (${(e as Error).message})`);
  }
  let wroteAnything = false;
  try {
    const backend: Backend = await createBackend(options.device);
    const { model, config, source, nonFinite } = await loadModel(resumed ? resumed.checkpoint.folder : flags.model, { backend, seed: flags.seed });
    if (nonFinite.length > 0) {
      model.dispose();
      throw new ModelLoadError(`${source}: the weights hold non-finite values (${nonFinite.slice(0, 3).map((t) => `${t.name}: ${t.count}`).join(', ')}${nonFinite.length > 3 ? ', …' : ''}); training from them would only spread NaN`);
    }
    const contextLength = Math.min(flags.maxLength ?? config.n_positions, config.n_positions);
    if (flags.maxLength !== null && flags.maxLength > config.n_positions) log(`warning: --max-length ${flags.maxLength} is past the model's context; using ${config.n_positions}`);
    const data = prepareExamples(entries, flags, contextLength, flags.data, log);
    const tokenizer = new Tokenizer();
    const optimizer = new AdamW(model, { weightDecay: flags.weightDecay });
    const checkpointFile = resumed ? join(resumed.checkpoint.folder, 'state.json') : '';
    if (resumed) restoreOptimizer(optimizer, resumed.checkpoint.moments, resumed.state.optimizerStep, resumed.checkpoint.folder);

    log(
      `model ${source} (${(model.parameterCount() / 1e6).toFixed(1)} M parameters) on ${backend.name}; ` +
        `${data.train.examples.length} training and ${data.val.examples.length} validation entries from ${flags.data}; output in ${out}`,
    );

    let lastValLoss: number | undefined;
    let lastStepAt = performance.now();
    let lastCheckpointStep: number | null = resumed ? resumed.state.position.step : null;
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
        wroteAnything = true;
        await writeRecords(out, trainer.records);
      },
      onValidationProgress(done, total) {
        if (total > 1) progress.status(`validation: batch ${done + 1} of ${total}`, done % Math.ceil(total / 10) === 0);
      },
      async onValidation(valLoss, position) {
        lastValLoss = valLoss;
        log(`step ${position.step}: validation loss ${valLoss.toFixed(4)}`);
        await writeRecords(out, trainer.records);
      },
      async onCheckpoint(position: TrainingPosition, records) {
        const state: RunState = { position, optimizerStep: optimizer.step, seed: flags.seed, flags: { ...flags }, dataSha256 };
        await saveCheckpoint(out, model, config, optimizer, state, records);
        lastCheckpointStep = position.step;
        await writeRecords(out, records);
        await writeCurve();
      },
      shouldStop: () => control.shouldStop(),
    });
    if (resumed) {
      const { position } = resumed.state;
      if (position.step > trainer.totalSteps || position.batchInEpoch > trainer.batchesPerEpoch || position.epoch > flags.epochs) {
        throw new UsageError(`${checkpointFile}: position ${JSON.stringify(position)} lies past the run (${flags.epochs} epochs of ${trainer.batchesPerEpoch} batches, ${trainer.totalSteps} steps)`);
      }
      let saved = resumed.checkpoint.records;
      if (saved === null) saved = await readRunRecords(out, log);
      await promoteCheckpoint(out, resumed.checkpoint);
      trainer.resumeFrom(position, saved);
      log(`resuming at step ${position.step} of ${trainer.totalSteps} (epoch ${position.epoch + 1})`);
    }

    let stopped: boolean;
    try {
      ({ stopped } = await trainer.run());
    } catch (e) {
      const diverged = e instanceof TrainingDiverged ? e.message
        : e instanceof NonFiniteState ? `the weights after step ${trainer.records.at(-1)?.step ?? 0} hold ${e.message}`
        : null;
      if (diverged === null) throw e;
      await writeRecords(out, trainer.records);
      await writeCurve();
      progress.finish();
      const kept = lastCheckpointStep === null ? 'no checkpoint had been written yet'
        : `the checkpoint of step ${lastCheckpointStep}, whose weights are finite, is kept in ${out}`;
      const advice = flags.clip === 0 ? 'try a lower --lr, or --clip 1' : 'try a lower --lr';
      throw new TrainingDiverged(e instanceof TrainingDiverged ? e.step : trainer.records.at(-1)?.step ?? 0, NaN, `${diverged}: training stopped; ${kept} (${advice})`);
    }
    progress.finish();

    const samples: SampleAnswer[] = [];
    if (!stopped) {
      model.eval();
      const picks: [SampleAnswer['split'], number | undefined][] = [['train', data.train.indices[0]], ['validation', data.val.indices[0]]];
      for (const [split, index] of picks) {
        if (index === undefined) continue;
        const entry = entries[index];
        samples.push({ split, instruction: entry.instruction, input: entry.input, reference: entry.output, generated: await answer(model, tokenizer, entry, contextLength) });
      }
      await atomicWrite(join(out, 'samples.json'), (fh) => fh.writeFile(JSON.stringify(samples, null, 2)));
    }
    model.dispose();
    optimizer.dispose();
    return { out, records: trainer.records, stopped, samples };
  } finally {
    await release();
    if (created && !wroteAnything) await rmdir(out).catch(() => {});
  }
}

/** training.json of a run whose checkpoint predates keeping its own records; a lost or broken log only costs the curve. */
async function readRunRecords(out: string, log: (message: string) => void): Promise<StepRecord[]> {
  try {
    const parsed: unknown = JSON.parse(await readFile(join(out, 'training.json'), 'utf8'));
    if (Array.isArray(parsed)) return parsed as StepRecord[];
  } catch {
    // reported below
  }
  log(`warning: ${join(out, 'training.json')} is missing or unreadable; the step log restarts from the checkpoint`);
  return [];
}
