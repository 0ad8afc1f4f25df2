/**
 * One fine-tuning run from parsed flags: everything is checked (flags, data file, model spec, the
 * run folder) before anything is written; then the model is loaded (with LoRA: frozen, with
 * adapters attached), trained with checkpoints, training.json and loss.svg kept up to date in the
 * run folder, and finally asked to answer one training and one validation instruction beside their
 * reference answers (and, with --merge-to, written with its adapter merged in).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rmdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { generate } from '../gpt/generate.js';
import { ModelLoadError } from '../gpt/load-model.js';
import { addLoRA, BLOCK_LORA_TARGETS, HEAD_MERGE_REFUSAL, mergeLoRA, type LoRASettings } from '../gpt/lora.js';
import type { GPT2 } from '../gpt/model.js';
import { Tokenizer } from '../gpt/tokenizer.js';
import { loadAdapter, saveAdapter } from '../node/adapter-folder.js';
import { atomicWrite } from '../node/atomic-write.js';
import { createBackend } from '../node/backend.js';
import { loadCheckpoint, promoteCheckpoint, saveCheckpoint, writeRecords, type LoadedCheckpoint } from '../node/checkpoint-folder.js';
import { loadInstructionFile } from '../node/instruction-file.js';
import { checkModelSpec, loadModel } from '../node/load-model.js';
import { loadGpt2Weights, saveModel } from '../node/weights-folder.js';
import type { Backend } from '../tensor/backend.js';
import { AdamW } from '../train/adamw.js';
import { prepareExamples } from '../train/fine-tune.js';
import { formatInput, type InstructionEntry } from '../train/instruction-data.js';
import { lossCurveSvg } from '../train/loss-plot.js';
import { Trainer, TrainingDiverged, type StepRecord, type TrainingPosition } from '../train/trainer.js';
import { NonFiniteState, restoreOptimizer, type TrainingState } from '../train/training-state.js';
import { Progress } from './progress.js';
import { liveLockProblem, LOCK_FILE, lockRunFolder, RunLocked } from './run-lock.js';
import { parseTrainOptions, SESSION_FLAGS, UsageError, type ResumeExtension, type TrainOptions } from './train-options.js';

/** The flags a checkpoint keeps: a resumed run takes all of them from there (its length may be extended). */
type RunFlags = Omit<TrainOptions, (typeof SESSION_FLAGS)[number]>;

/**
 * What a run started before a flag existed did without it: resumed, it goes on the same way
 * (such a run kept its last weights as model.safetensors).
 */
const FLAGS_BEFORE_THEY_EXISTED: Partial<RunFlags> = {
  warmupRatio: null, minLr: null, saveSteps: 0, saveLast: true, earlyStoppingPatience: 0, loggingSteps: 10, dropout: 0,
  loraRank: null, loraAlpha: null, loraDropout: 0, loraTargets: [...BLOCK_LORA_TARGETS], dtype: 'f32',
};

interface RunState extends TrainingState {
  flags: RunFlags & Record<string, unknown>;
  /** sha256 of the data file: a resume on edited data would not continue the same trajectory. */
  dataSha256: string;
  /** The lowest validation loss so far and its step: the weights model.safetensors holds (unless --save-last). */
  best?: { step: number; valLoss: number } | null;
  /** Validations since the lowest one (--early-stopping-patience). */
  evalsWithoutImprovement?: number;
  /** The run ended by early stopping: it is complete. */
  stoppedEarly?: boolean;
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
  /** Stopped before its last step: by Ctrl-C (resumable), or by early stopping (`stoppedEarly`). */
  stopped: boolean;
  stoppedEarly: boolean;
  /** The weights model.safetensors holds: those of the lowest validation loss, or null for the last ones. */
  best: { step: number; valLoss: number } | null;
  patience: number;
  samples: SampleAnswer[];
  /** Where the base with the adapter merged in was written (--merge-to), or null. */
  mergedTo: string | null;
}

/** A new run's default folder: runs/<local date and time>. */
function defaultOut(): string {
  const d = new Date();
  const pad = (n: number) => String(n).padStart(2, '0');
  return join('runs', `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}_${pad(d.getHours())}-${pad(d.getMinutes())}-${pad(d.getSeconds())}`);
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/**
 * The flags a state.json holds, those it predates filled in, checked against the types of today's
 * defaults (a hand-edited or foreign file fails here, by name).
 */
export function checkRunFlags(saved: Record<string, unknown>, file: string): RunFlags {
  const flags: Record<string, unknown> = { ...FLAGS_BEFORE_THEY_EXISTED, ...saved };
  const defaults = parseTrainOptions([]) as TrainOptions;
  for (const [key, value] of Object.entries(defaults)) {
    if ((SESSION_FLAGS as readonly string[]).includes(key) || key === 'extend') continue;
    const kept = flags[key];
    const nullable = value === null || key === 'maxSteps' || key === 'maxLength';
    if (!(typeof kept === typeof value || (nullable && (kept === null || typeof kept === 'number')))) {
      throw new UsageError(`${file}: flags.${key} is ${JSON.stringify(kept)}, expected a ${typeof value}`);
    }
  }
  return flags as unknown as RunFlags;
}

async function resumeState(folder: string): Promise<{ state: RunState; checkpoint: LoadedCheckpoint }> {
  if (!existsSync(folder)) throw new UsageError(`--resume ${folder}: no such folder`);
  // Before its first checkpoint a live run's folder has none: "in use" is the news, not "no checkpoint".
  const inUse = liveLockProblem(folder);
  if (inUse !== null) throw new UsageError(inUse);
  let checkpoint;
  try {
    checkpoint = await loadCheckpoint(folder);
  } catch (e) {
    throw new UsageError(`--resume ${folder}: ${(e as Error).message}`);
  }
  const file = join(checkpoint.folder, 'state.json');
  const state = checkpoint.state as RunState;
  if (typeof state.dataSha256 !== 'string') throw new UsageError(`${file}: "dataSha256" is missing`);
  state.flags = checkRunFlags(state.flags, file);
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

/** Why --merge-to cannot write into `folder`, or null: like a run folder, only a missing or empty one is taken. */
function mergeToProblem(folder: string, out: string): string | null {
  if (resolve(folder) === resolve(out)) return `--merge-to ${folder} is the run folder: choose another`;
  if (!existsSync(folder)) return null;
  if (!statSync(folder).isDirectory()) return `--merge-to ${folder} is a file, not a folder`;
  return readdirSync(folder).length === 0 ? null : `--merge-to ${folder} is not empty: choose a new or empty folder`;
}

/** The adapters a run trains, from its flags; null for a full run. */
function loraOf(flags: RunFlags): LoRASettings | null {
  if (flags.loraRank === null) return null;
  return { rank: flags.loraRank, alpha: flags.loraAlpha ?? flags.loraRank, dropout: flags.loraDropout, targets: flags.loraTargets };
}

/** A --model spec a LoRA run can find again from anywhere: a folder's absolute path, other specs as they are. */
const lasting = (spec: string): string => (existsSync(spec) ? resolve(spec) : spec);

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

/** The run's optimizer steps, as the Trainer will count them. */
function stepsOfRun(flags: RunFlags, trainEntries: number): number {
  const all = flags.epochs * Math.ceil(Math.ceil(trainEntries / flags.batchSize) / flags.gradAccum);
  return flags.maxSteps === null ? all : Math.min(all, flags.maxSteps);
}

export async function runTraining(options: TrainOptions & { extend?: ResumeExtension }, control: RunControl): Promise<RunResult> {
  const stream = control.stream ?? process.stderr;
  // Everything a user can get wrong is checked before the first byte is written.
  const resumed = options.resume === null ? null : await resumeState(options.resume);
  const flags: RunFlags = resumed
    ? { ...resumed.state.flags, ...options.extend }
    : (({ resume: _r, out: _o, device: _d, mergeTo: _m, gradientCheckpointing: _g, verbose: _v, extend: _e, ...rest }) => ({ ...rest, data: resolve(rest.data), model: lasting(rest.model) }))(options);
  const lora = loraOf(flags);
  const progress = new Progress(stream, flags.loggingSteps);
  const log = (message: string) => progress.log(message);
  if (flags.minLr !== null && flags.minLr > flags.lr) throw new UsageError(`--min-lr ${flags.minLr} is above the learning rate ${flags.lr}`);
  if (options.gradientCheckpointing && (flags.dropout > 0 || flags.loraDropout > 0)) {
    const rate = flags.dropout > 0 ? `--dropout ${flags.dropout}` : `--lora-dropout ${flags.loraDropout}`;
    throw new UsageError(`--gradient-checkpointing recomputes each block, which must not draw new dropout masks: it cannot go with ${rate}${resumed ? ` (the run's)` : ''}`);
  }
  // A finished LoRA run resumed with --merge-to only writes its merged model.
  if (resumed?.state.stoppedEarly && options.mergeTo === null) {
    throw new UsageError(`--resume ${options.resume}: the run is complete: it stopped early at step ${resumed.state.position.step} (no new lowest validation loss in ${flags.earlyStoppingPatience} validations)`);
  }
  const out = resumed ? options.resume! : (options.out ?? defaultOut());
  if (!resumed) {
    const problem = outFolderProblem(out);
    if (problem !== null) throw new UsageError(problem);
  }
  if (options.mergeTo !== null) {
    if (lora === null) throw new UsageError(`--merge-to goes with a LoRA run; ${out} is a full run, whose model.safetensors is already a whole model`);
    if (lora.targets.includes('lm_head')) throw new UsageError(`--merge-to: ${out} adapts lm_head: ${HEAD_MERGE_REFUSAL}`);
    const problem = mergeToProblem(options.mergeTo, out);
    if (problem !== null) throw new UsageError(problem);
  }
  const entries = loadInstructionFile(flags.data);
  const dataSha256 = sha256(flags.data);
  if (resumed && resumed.state.dataSha256 !== dataSha256) {
    throw new UsageError(`--resume ${out}: ${flags.data} has changed since the run started, so the run cannot continue the same way`);
  }
  if (!resumed || lora !== null) checkModelSpec(flags.model);

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
    // A LoRA run reloads its frozen base from where it came from; a full run's checkpoint is the whole model.
    const spec = resumed && lora === null ? resumed.checkpoint.folder : flags.model;
    const { model, config, source, nonFinite } = await loadModel(spec, { backend, seed: flags.seed, dropout: flags.dropout, dtype: flags.dtype });
    if (lora !== null) {
      addLoRA(model, { ...lora, seed: flags.seed });
      if (resumed) await loadAdapter(model, resumed.checkpoint.folder);
    }
    model.checkpointActivations = options.gradientCheckpointing;
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

    const millions = (n: number) => `${(n / 1e6).toFixed(1)} M`;
    const trainable = model.namedTrainableParameters().reduce((n, [, p]) => n + p.size, 0);
    const size = lora === null ? `${millions(trainable)} parameters`
      : `${millions(model.parameterCount() - trainable)} frozen${flags.dtype === 'f32' ? '' : ` ${flags.dtype}`} parameters, LoRA r ${lora.rank} on ${lora.targets.join(', ')}: ${trainable.toLocaleString('en-US')} trained`;
    log(
      `model ${source} (${size}) on ${backend.name}; ` +
        `${data.train.examples.length} training and ${data.val.examples.length} validation entries from ${flags.data}; output in ${out}`,
    );

    // model.safetensors holds the weights of the lowest validation loss, once there is one.
    const keepBest = !flags.saveLast && data.val.examples.length > 0;
    let best = resumed?.state.best ?? null;
    let evalsWithoutImprovement = resumed?.state.evalsWithoutImprovement ?? 0;
    let stoppedEarly = false;
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
    const warmupSteps = flags.warmupRatio === null ? flags.warmupSteps : Math.ceil(flags.warmupRatio * stepsOfRun(flags, data.train.examples.length));
    const trainer = new Trainer(model, optimizer, data.train.examples, data.val.examples, { ...flags, warmupSteps, contextLength, saveEvery: flags.saveSteps }, {
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
        const first = best === null;
        const improved = best === null || valLoss < best.valLoss;
        if (improved) {
          best = { step: position.step, valLoss };
          evalsWithoutImprovement = 0;
          if (keepBest) await (lora === null ? saveModel(model, out) : saveAdapter(model, out, flags.model));
        } else {
          evalsWithoutImprovement++;
        }
        stoppedEarly = flags.earlyStoppingPatience > 0 && evalsWithoutImprovement >= flags.earlyStoppingPatience;
        log(`step ${position.step}: validation loss ${valLoss.toFixed(4)}${first ? '' : improved ? ' (lowest so far)' : ` (lowest ${best!.valLoss.toFixed(4)} at step ${best!.step})`}`);
        if (stoppedEarly) log(`early stopping: no new lowest validation loss in ${evalsWithoutImprovement} validations`);
        await writeRecords(out, trainer.records);
      },
      async onCheckpoint(position: TrainingPosition, records) {
        const state: RunState = {
          position, optimizerStep: optimizer.step, seed: flags.seed, flags: { ...flags }, dataSha256, best, evalsWithoutImprovement, stoppedEarly,
        };
        await saveCheckpoint(out, model, config, optimizer, state, records, { linkModel: !keepBest || best === null, adapterBase: lora === null ? undefined : flags.model });
        lastCheckpointStep = position.step;
        await writeRecords(out, records);
        await writeCurve();
      },
      // Early stopping decided at an epoch's end takes effect after the next step (the poll comes between steps).
      shouldStop: () => stoppedEarly || control.shouldStop(),
    });
    if (resumed) {
      const { position } = resumed.state;
      const length = `${flags.epochs} epochs of ${trainer.batchesPerEpoch} batches${flags.maxSteps === null ? '' : `, at most ${flags.maxSteps} steps`}`;
      const complete = resumed.state.stoppedEarly === true || (position.step === trainer.totalSteps && options.extend?.epochs === undefined && options.extend?.maxSteps === undefined);
      if (complete && options.mergeTo !== null) {
        await loadAdapter(model, out);
        await mergeLoRA(model);
        await saveModel(model, options.mergeTo);
        log(`the run is complete: its adapter merged into the base, in ${options.mergeTo}`);
        model.dispose();
        optimizer.dispose();
        const records = resumed.checkpoint.records ?? (await readRunRecords(out, log));
        return { out, records, stopped: false, stoppedEarly: resumed.state.stoppedEarly === true, best: keepBest ? best : null, patience: flags.earlyStoppingPatience, samples: [], mergedTo: options.mergeTo };
      }
      if (complete) {
        const merge = lora === null ? '' : `, or --merge-to <folder> to write the base with its adapter merged in`;
        throw new UsageError(`--resume ${out}: the run is complete (${trainer.totalSteps} steps: ${length}); to train further, give a larger --epochs or --max-steps with --resume${merge}`);
      }
      if (position.step >= trainer.totalSteps || position.batchInEpoch > trainer.batchesPerEpoch || position.epoch > flags.epochs) {
        const given = options.extend?.epochs !== undefined || options.extend?.maxSteps !== undefined;
        throw new UsageError(given
          ? `--resume ${out}: the run is at step ${position.step} (epoch ${position.epoch + 1}); ${length} would end there or before: give more`
          : `${checkpointFile}: position ${JSON.stringify(position)} lies past the run (${length}, ${trainer.totalSteps} steps)`);
      }
      let saved = resumed.checkpoint.records;
      if (saved === null) saved = await readRunRecords(out, log);
      await promoteCheckpoint(out, resumed.checkpoint, { linkModel: !keepBest || best === null });
      trainer.resumeFrom(position, saved);
      log(`resuming at step ${position.step} of ${trainer.totalSteps} (epoch ${position.epoch + 1})`);
    }
    progress.start(resumed?.state.position.step ?? 0);

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
    const ended = !stopped || stoppedEarly;
    if (ended && keepBest && best !== null && best.step !== trainer.records.at(-1)?.step) {
      // The samples show what the saved model answers.
      if (lora === null) model.loadStateDict((await loadGpt2Weights(out)).weights, join(out, 'model.safetensors'));
      else await loadAdapter(model, out);
    }
    if (ended) {
      model.eval();
      const picks: [SampleAnswer['split'], number | undefined][] = [['train', data.train.indices[0]], ['validation', data.val.indices[0]]];
      for (const [split, index] of picks) {
        if (index === undefined) continue;
        const entry = entries[index];
        samples.push({ split, instruction: entry.instruction, input: entry.input, reference: entry.output, generated: await answer(model, tokenizer, entry, contextLength) });
      }
      await atomicWrite(join(out, 'samples.json'), (fh) => fh.writeFile(JSON.stringify(samples, null, 2)));
    }
    let mergedTo: string | null = null;
    if (ended && options.mergeTo !== null) {
      await mergeLoRA(model);
      await saveModel(model, options.mergeTo);
      mergedTo = options.mergeTo;
    }
    model.dispose();
    optimizer.dispose();
    return { out, records: trainer.records, stopped, stoppedEarly, best: keepBest ? best : null, patience: flags.earlyStoppingPatience, samples, mergedTo };
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
