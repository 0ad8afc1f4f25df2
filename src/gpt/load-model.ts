/**
 * A GPT-2 ready to run from a `--model` spec: `tiny` or `demo` (random weights, GPT-2's init, seeded),
 * a folder holding config.json + model.safetensors (a training run's output folder is one), or a
 * hub repo (`gpt2` … `gpt2-xl`, or owner/name), fetched once into the Hugging Face cache.
 */
import type { Backend } from '../tensor/backend.js';
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { isTied, type GPT2Config } from './config.js';
import { loadGpt2Weights } from './checkpoint-names.js';
import { resolveModel, resolveModelSource, type HubOptions } from './hub.js';
import { initializeWeights } from './init.js';
import { GPT2 } from './model.js';

/** The model could not be found or read: a user's mistake, reported without a stack (exit code 2). */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
}

export interface LoadModelOptions {
  /** Seed of the random init of `tiny` and `demo`. Default 0. */
  seed?: number;
  hub?: HubOptions;
}

export interface LoadedModel {
  model: GPT2;
  config: GPT2Config;
  /** Where the weights came from: "random init (tiny)" or a folder. */
  source: string;
  /** Tensors of the file holding NaN or ±Infinity, and how many: training refuses them, generation warns. */
  nonFinite: { name: string; count: number }[];
}

/** "./run", "../x", "/abs", "~/x", "a/b/c": meant as a folder, never as a hub repo owner/name. */
function looksLikePath(spec: string): boolean {
  return spec.startsWith('.') || spec.startsWith('~') || isAbsolute(spec) || spec.includes('\\') || spec.split('/').length > 2 || spec.endsWith('/');
}

/**
 * Checks a spec without touching the network or a device (so a command line can fail fast): a
 * path that does not exist, a folder without the model files, or a spec that is nothing at all.
 */
export function checkModelSpec(spec: string): void {
  if (looksLikePath(spec) && !existsSync(spec)) {
    throw new ModelLoadError(`--model ${spec}: no such folder (a model folder holds config.json + model.safetensors)`);
  }
  try {
    resolveModelSource(spec);
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
}

export async function loadModel(spec: string, backend: Backend, options: LoadModelOptions = {}): Promise<LoadedModel> {
  checkModelSpec(spec);
  let resolved;
  try {
    resolved = await resolveModel(spec, options.hub);
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
  if (resolved.kind === 'preset-random') {
    const model = new GPT2(resolved.config, backend);
    initializeWeights(model, options.seed ?? 0);
    return { model: model.eval(), config: resolved.config, source: `random init (${resolved.name})`, nonFinite: [] };
  }
  let loaded;
  try {
    loaded = await loadGpt2Weights(resolved.folder);
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
  const { config, weights, nonFinite } = loaded;
  const model = new GPT2(config, backend, { untiedHead: !isTied(config) });
  model.loadStateDict(weights, resolved.folder);
  return { model: model.eval(), config, source: resolved.folder, nonFinite };
}

