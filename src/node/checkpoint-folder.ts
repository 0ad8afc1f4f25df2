/**
 * Checkpoints: a run's folder holds `model.safetensors` + `config.json` (Hugging Face layout, what
 * `generate.ts` and transformers load), or for a LoRA run `adapter_model.safetensors` +
 * `adapter_config.json` (PEFT's layout; the frozen base is re-read from where the config names it),
 * and `checkpoint/` with the same files, the optimizer moments of what trains, the training state
 * and the step records up to it.
 *
 * Atomicity: a checkpoint is written whole into a staging folder, `state.json` last (its presence
 * marks the folder complete), then swapped in with two renames (checkpoint → checkpoint.old,
 * staging → checkpoint); the model file at the top is a hard link into it, replaced by a rename
 * (unless the run keeps its best weights there instead: `linkModel: false`).
 * Crashes at any points, even two in a row, leave a complete checkpoint in one of checkpoint,
 * checkpoint.old or a staging folder: `loadCheckpoint` takes the newest complete one, and
 * `promoteCheckpoint` makes it the live one again before a resumed run writes anything.
 *
 * Only finite weights and moments are written: a checkpoint is what a diverged run falls back to.
 */
import { existsSync } from 'node:fs';
import { link, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GPT2Config } from '../gpt/config.js';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, adapterWeights } from '../gpt/lora-adapter.js';
import { loraSettings } from '../gpt/lora.js';
import type { GPT2 } from '../gpt/model.js';
import { hostWeights } from '../gpt/model-bytes.js';
import type { StateDict } from '../gpt/safetensors.js';
import { nonFiniteTensors } from '../gpt/state-dict.js';
import type { AdamW } from '../train/adamw.js';
import type { StepRecord } from '../train/trainer.js';
import { NonFiniteState, parseTrainingState, type TrainingState } from '../train/training-state.js';
import { saveAdapterFiles } from './adapter-folder.js';
import { atomicWrite } from './atomic-write.js';
import { readSafetensors, writeSafetensors } from './safetensors-file.js';
import { saveGpt2Weights } from './weights-folder.js';

const CHECKPOINT = 'checkpoint';
const OLD = `${CHECKPOINT}.old`;
const STAGING_PREFIX = `${CHECKPOINT}.tmp-`;
const STATE_FILE = 'state.json';
const RECORDS_FILE = 'training.json';
const MODEL_FILES = ['model.safetensors', 'config.json'];
const ADAPTER_FILES = [ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE];

/** The weight files a checkpoint folder holds: an adapter's, or a whole model's. */
const weightFiles = (folder: string): string[] => (existsSync(join(folder, ADAPTER_CONFIG_FILE)) ? ADAPTER_FILES : MODEL_FILES);

async function stagingFolders(outDir: string): Promise<string[]> {
  const names = existsSync(outDir) ? await readdir(outDir) : [];
  return names.filter((n) => n.startsWith(STAGING_PREFIX)).map((n) => join(outDir, n));
}

const writeJson = (path: string, value: unknown) => atomicWrite(path, (fh) => fh.writeFile(JSON.stringify(value, null, 1)));

/** Points the weight files at the top of the run folder at the live checkpoint's (hard links, swapped by rename). */
async function linkTopLevel(outDir: string): Promise<void> {
  for (const file of weightFiles(join(outDir, CHECKPOINT))) {
    const tmp = join(outDir, `${file}.tmp-${process.pid}`);
    await rm(tmp, { force: true });
    await link(join(outDir, CHECKPOINT, file), tmp);
    await rename(tmp, join(outDir, file));
  }
}

export interface CheckpointOptions {
  /** Point the top-level weight files at this checkpoint's (false: they hold the best weights, written apart). Default true. */
  linkModel?: boolean;
  /** For a model with adapters: its base as a --model spec, which adapter_config.json names (the base itself is not written). */
  adapterBase?: string;
}

/**
 * Writes a checkpoint of the model (or of its adapters alone, when it has some), the optimizer and
 * the records so far, replacing the previous one only once it is complete. Throws NonFiniteState,
 * writing nothing, if a weight or moment is not finite. The caller holds the run folder's lock, so
 * leftover staging folders are no other process's.
 */
export async function saveCheckpoint(
  outDir: string,
  model: GPT2,
  config: GPT2Config,
  optimizer: AdamW,
  state: TrainingState,
  records: readonly StepRecord[] = [],
  { linkModel = true, adapterBase }: CheckpointOptions = {},
): Promise<void> {
  const lora = loraSettings(model);
  if (lora !== null && adapterBase === undefined) throw new Error('saveCheckpoint: a model with adapters needs adapterBase');
  const weights = lora === null ? await hostWeights(model) : await adapterWeights(model);
  const moments: StateDict = new Map();
  for (const [name, { m, v }] of optimizer.moments) {
    moments.set(`m.${name}`, { shape: [...m.shape], data: await m.toFloat32() });
    moments.set(`v.${name}`, { shape: [...v.shape], data: await v.toFloat32() });
  }
  const broken = [...nonFiniteTensors(weights), ...nonFiniteTensors(moments)];
  if (broken.length > 0) throw new NonFiniteState(broken);

  // Earlier crashes' staging folders are older than the live checkpoint (promoteCheckpoint saw to it).
  for (const leftover of await stagingFolders(outDir)) await rm(leftover, { recursive: true, force: true });
  const staging = join(outDir, `${STAGING_PREFIX}${process.pid}`);
  try {
    await mkdir(staging, { recursive: true });
    if (lora === null) await saveGpt2Weights(staging, config, weights);
    else await saveAdapterFiles(staging, config, lora, adapterBase!, weights);
    await writeSafetensors(join(staging, 'optimizer.safetensors'), moments);
    await writeJson(join(staging, RECORDS_FILE), records);
    await writeJson(join(staging, STATE_FILE), { ...state, optimizerStep: optimizer.step });
  } catch (e) {
    // A full disk: the half-written copy must not take the space the next try needs.
    await rm(staging, { recursive: true, force: true });
    throw e;
  }

  const current = join(outDir, CHECKPOINT);
  const old = join(outDir, OLD);
  await rm(old, { recursive: true, force: true });
  if (existsSync(current)) await rename(current, old);
  await rename(staging, current);
  await rm(old, { recursive: true, force: true });
  if (linkModel) await linkTopLevel(outDir);
}

export interface LoadedCheckpoint {
  folder: string;
  state: TrainingState;
  moments: StateDict;
  /** The step records up to the checkpoint; null for a checkpoint written before they were kept in it. */
  records: StepRecord[] | null;
}

async function readCandidate(folder: string): Promise<LoadedCheckpoint> {
  const stateFile = join(folder, STATE_FILE);
  if (!existsSync(stateFile)) throw new Error(`${folder}: incomplete (no ${STATE_FILE})`);
  const state = parseTrainingState(await readFile(stateFile, 'utf8'), stateFile);
  for (const file of [...weightFiles(folder), 'optimizer.safetensors']) {
    if (!existsSync(join(folder, file))) throw new Error(`${folder}: lacks ${file}`);
  }
  const moments = await readSafetensors(join(folder, 'optimizer.safetensors'));
  let records: StepRecord[] | null = null;
  try {
    const parsed: unknown = JSON.parse(await readFile(join(folder, RECORDS_FILE), 'utf8'));
    if (Array.isArray(parsed)) records = parsed as StepRecord[];
  } catch {
    // Older checkpoints kept no records: the run folder's training.json stands in.
  }
  return { folder, state, moments, records };
}

/**
 * The newest complete checkpoint of a run folder (the live one, the previous one, or one left in
 * staging by a crash), or an error listing why each candidate cannot be used.
 */
export async function loadCheckpoint(outDir: string): Promise<LoadedCheckpoint> {
  const candidates = [join(outDir, CHECKPOINT), join(outDir, OLD), ...(await stagingFolders(outDir))].filter((c) => existsSync(c));
  let best: LoadedCheckpoint | null = null;
  const problems: string[] = [];
  for (const folder of candidates) {
    try {
      const loaded = await readCandidate(folder);
      if (best === null || loaded.state.optimizerStep > best.state.optimizerStep) best = loaded;
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  if (best !== null) return best;
  const why = problems.length > 0 ? `:\n  ${problems.join('\n  ')}` : ` (expected ${join(outDir, CHECKPOINT, STATE_FILE)})`;
  throw new Error(`${outDir} holds no complete checkpoint to resume${why}`);
}

/**
 * Makes `loaded` the live checkpoint (if a crash left it as checkpoint.old or in staging) and removes
 * every other copy, each step keeping `loaded` whole: afterwards saveCheckpoint's swap is safe again.
 */
export async function promoteCheckpoint(outDir: string, loaded: LoadedCheckpoint, { linkModel = true }: { linkModel?: boolean } = {}): Promise<LoadedCheckpoint> {
  const current = join(outDir, CHECKPOINT);
  const old = join(outDir, OLD);
  if (loaded.folder !== current) {
    if (loaded.folder !== old) {
      await rm(old, { recursive: true, force: true });
      if (existsSync(current)) await rename(current, old);
    } else {
      await rm(current, { recursive: true, force: true });
    }
    await rename(loaded.folder, current);
  }
  for (const other of [old, ...(await stagingFolders(outDir))]) await rm(other, { recursive: true, force: true });
  if (linkModel) await linkTopLevel(outDir);
  return { ...loaded, folder: current };
}

/**
 * The run folder's training.json: the log a user reads while the run goes on, replaced by a rename
 * but not synced (it is rewritten every step; the checkpoint keeps its own synced copy).
 */
export async function writeRecords(outDir: string, records: readonly StepRecord[]): Promise<void> {
  const path = join(outDir, RECORDS_FILE);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, JSON.stringify(records, null, 1));
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new Error(`${path}: cannot be written (${(e as Error).message})`, { cause: e });
  }
}
