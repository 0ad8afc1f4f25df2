/**
 * Checkpoints: a run's folder holds `model.safetensors` + `config.json` (Hugging Face layout, what
 * `generate.ts` and transformers load) and `checkpoint/` with the optimizer moments and the
 * training state.
 *
 * Atomicity: a checkpoint is written whole into a fresh temporary folder, then swapped in with two
 * renames (old → checkpoint.old, new → checkpoint); the model file at the top is a hard link into it,
 * replaced by a rename. A crash at any point leaves either the new checkpoint or the previous one
 * complete: `loadCheckpoint` falls back to checkpoint.old when the swap was cut in half.
 */
import { existsSync } from 'node:fs';
import { link, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GPT2Config } from '../gpt/config.js';
import { saveGpt2Weights } from '../gpt/checkpoint-names.js';
import { readSafetensors, writeSafetensors, type StateDict } from '../gpt/safetensors.js';
import type { GPT2 } from '../gpt/model.js';
import type { HostTensor } from '../nn/module.js';
import { tensor } from '../tensor/create.js';
import type { AdamW } from './adamw.js';
import type { StepRecord, TrainingPosition } from './trainer.js';

export interface TrainingState {
  position: TrainingPosition;
  optimizerStep: number;
  seed: number;
  /** The flags of the run, so a resume can check it continues the same trajectory. */
  flags: Record<string, unknown>;
}

const CHECKPOINT = 'checkpoint';

async function hostStateDict(model: GPT2): Promise<StateDict> {
  const out: StateDict = new Map();
  for (const [name, p] of model.namedParameters()) out.set(name, { shape: [...p.shape], data: await p.toFloat32() });
  return out;
}

export async function saveCheckpoint(
  outDir: string,
  model: GPT2,
  config: GPT2Config,
  optimizer: AdamW,
  state: TrainingState,
): Promise<void> {
  const staging = join(outDir, `${CHECKPOINT}.tmp-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  await saveGpt2Weights(staging, config, await hostStateDict(model));
  const moments: StateDict = new Map();
  for (const [name, { m, v }] of optimizer.moments) {
    moments.set(`m.${name}`, { shape: [...m.shape], data: await m.toFloat32() });
    moments.set(`v.${name}`, { shape: [...v.shape], data: await v.toFloat32() });
  }
  await writeSafetensors(join(staging, 'optimizer.safetensors'), moments);
  await writeFile(join(staging, 'state.json'), JSON.stringify({ ...state, optimizerStep: optimizer.step }, null, 2));

  const current = join(outDir, CHECKPOINT);
  const old = join(outDir, `${CHECKPOINT}.old`);
  await rm(old, { recursive: true, force: true });
  if (existsSync(current)) await rename(current, old);
  await rename(staging, current);
  await rm(old, { recursive: true, force: true });
  for (const file of ['model.safetensors', 'config.json']) {
    const tmp = join(outDir, `${file}.tmp-${process.pid}`);
    await rm(tmp, { force: true });
    await link(join(current, file), tmp);
    await rename(tmp, join(outDir, file));
  }
}

export interface LoadedCheckpoint {
  folder: string;
  state: TrainingState;
  moments: StateDict;
}

/** The newest complete checkpoint of a run folder, or a clear error. */
export async function loadCheckpoint(outDir: string): Promise<LoadedCheckpoint> {
  const candidates = [join(outDir, CHECKPOINT), join(outDir, `${CHECKPOINT}.old`)];
  const folder = candidates.find((c) => existsSync(join(c, 'state.json')));
  if (folder === undefined) throw new Error(`${outDir} holds no checkpoint to resume (expected ${candidates[0]}/state.json)`);
  const state = JSON.parse(await readFile(join(folder, 'state.json'), 'utf8')) as TrainingState;
  const moments = await readSafetensors(join(folder, 'optimizer.safetensors'));
  return { folder, state, moments };
}

/** Puts saved moments back into the optimizer (shapes checked against the model's parameters). */
export function restoreOptimizer(optimizer: AdamW, moments: StateDict, step: number, source: string): void {
  for (const [name, slot] of optimizer.moments) {
    for (const key of ['m', 'v'] as const) {
      const saved: HostTensor | undefined = moments.get(`${key}.${name}`);
      if (saved === undefined) throw new Error(`${source}: optimizer state lacks ${key}.${name}`);
      if (saved.shape.length !== slot[key].rank || saved.shape.some((d, i) => d !== slot[key].shape[i])) {
        throw new Error(`${source}: ${key}.${name} has shape [${saved.shape}], the parameter [${slot[key].shape}]`);
      }
      const restored = tensor(saved.data, slot[key].shape, { backend: slot[key].backend });
      slot[key].dispose();
      slot[key] = restored;
    }
  }
  optimizer.step = step;
}

export async function writeRecords(outDir: string, records: readonly StepRecord[]): Promise<void> {
  const tmp = join(outDir, `training.json.tmp-${process.pid}`);
  await writeFile(tmp, JSON.stringify(records, null, 1));
  await rename(tmp, join(outDir, 'training.json'));
}
