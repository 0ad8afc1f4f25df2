/**
 * A GPT-2 ready to run: from random weights (GPT-2's init, seeded) or from a state dict with its
 * config. Where the weights come from (a folder, the hub cache, a browser's files) is the runtime's
 * part: src/node/load-model.ts; bytes in memory: model-bytes.ts.
 */
import type { Backend } from '../tensor/backend.js';
import { getDefaultBackend } from '../tensor/create.js';
import { isTied, PRESETS, type GPT2Config } from './config.js';
import { initializeWeights } from './init.js';
import { GPT2, type ModelOptions } from './model.js';
import type { StateDict } from './safetensors.js';

/** The model could not be found or read: a user's mistake, reported without a stack (exit code 2). */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
}

/** A model with where it came from. */
export interface LoadedModel {
  model: GPT2;
  config: GPT2Config;
  /** Where the weights came from: "random init (tiny)", a folder, a URL. */
  source: string;
  /** Tensors of the file holding NaN or ±Infinity, and how many: training refuses them, generation warns. */
  nonFinite: { name: string; count: number }[];
}

export interface RandomModelOptions {
  /** Seed of the random init. Default 0. */
  seed?: number;
  /** Default: the backend made by the last createBackend. */
  backend?: Backend;
  /** Dropout while training (default 0), its masks seeded by `seed`. */
  dropout?: number;
}

/**
 * A model with GPT-2's random init: `tiny` (d 32, 2 layers, context 64: tests), `demo` (d 64,
 * 2 layers, context 256: trains from scratch in minutes), or any config.
 */
export function randomModel(preset: 'tiny' | 'demo' | GPT2Config, options: RandomModelOptions = {}): LoadedModel {
  const config = typeof preset === 'string' ? { ...PRESETS[preset] } : preset;
  const model = new GPT2(config, options.backend ?? getDefaultBackend(), { dropout: options.dropout, seed: options.seed });
  initializeWeights(model, options.seed ?? 0);
  return { model: model.eval(), config, source: `random init (${typeof preset === 'string' ? preset : 'config'})`, nonFinite: [] };
}

/**
 * A model holding `weights` (canonical names, checked against `config`: see state-dict.ts), built
 * with `options` (e.g. `dtype: 'f16'` or `'bf16'` stores the weight matrices in 16 bits: ModelOptions.dtype).
 */
export function modelFromStateDict(
  config: GPT2Config,
  weights: StateDict,
  source: string,
  nonFinite: LoadedModel['nonFinite'],
  backend: Backend = getDefaultBackend(),
  options: Omit<ModelOptions, 'untiedHead'> = {},
): LoadedModel {
  const model = new GPT2(config, backend, { ...options, untiedHead: !isTied(config) });
  try {
    model.loadStateDict(weights, source);
  } catch (e) {
    model.dispose(); // its zeros: a refused load leaves nothing behind on the device
    throw e;
  }
  return { model: model.eval(), config, source, nonFinite };
}
