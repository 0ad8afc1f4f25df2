/**
 * A GPT-2 from a `--model` spec: `tiny` or `demo` (random weights, GPT-2's init, seeded), a folder
 * holding config.json + model.safetensors (a training run's output folder is one), or a hub repo
 * (`gpt2` … `gpt2-xl`, or owner/name), fetched once into the Hugging Face cache.
 */
import { existsSync, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { ModelLoadError, modelFromStateDict, randomModel, type LoadedModel } from '../gpt/load-model.js';
import { withWeightDType } from '../gpt/model-bytes.js';
import type { WeightDType } from '../nn/layers.js';
import type { Backend } from '../tensor/backend.js';
import { peekDefaultBackend } from '../tensor/create.js';
import { createBackend } from './backend.js';
import { resolveModel, resolveModelSource, type HubOptions } from './hub.js';
import { loadGpt2Weights } from './weights-folder.js';

export interface LoadModelOptions {
  /** Default: the backend made by the last createBackend, else a new 'auto' one. */
  backend?: Backend;
  /** Seed of the random init of `tiny` and `demo`, and of the dropout masks. Default 0. */
  seed?: number;
  /** Dropout while training. Default 0. */
  dropout?: number;
  /** Called as a hub download's bytes arrive (default: a progress bar on stderr). */
  onProgress?: (loadedBytes: number, totalBytes: number, file: string) => void;
  /** Where the hub is and its cache (defaults: as Python's huggingface_hub). */
  hub?: Omit<HubOptions, 'onProgress'>;
  /**
   * Storage of the weight matrices: 'f16' halves their memory and the bytes a decoding step reads
   * (arithmetic stays f32; F16 files stay 16-bit; such a model cannot be fine-tuned). Default 'f32'.
   */
  dtype?: WeightDType;
}

/**
 * "./run", "../x", "/abs", "~/x", "a/b/c", or "runs/x" where a folder runs/ exists here: meant as
 * a folder, never as a hub repo owner/name.
 */
function looksLikePath(spec: string): boolean {
  if (spec.startsWith('.') || spec.startsWith('~') || isAbsolute(spec) || spec.includes('\\') || spec.split('/').length > 2 || spec.endsWith('/')) return true;
  const parent = spec.split('/')[0];
  return spec.includes('/') && existsSync(parent) && statSync(parent).isDirectory();
}

/**
 * Checks a spec without touching the network or a device (so a command line can fail fast): a
 * path that does not exist, a folder without the model files, or a spec that is nothing at all.
 */
export function checkModelSpec(spec: string): void {
  if (looksLikePath(spec) && !existsSync(spec)) {
    throw new ModelLoadError(`--model ${spec}: no such model folder (a model folder holds config.json + model.safetensors)`);
  }
  try {
    resolveModelSource(spec);
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
}

/**
 * Loads a model: a preset (`gpt2` … `gpt2-xl` from the hub; `tiny`, `demo` random), a hub repo
 * `owner/name`, or a folder holding config.json + model.safetensors. A hub model is downloaded once
 * into the Hugging Face cache and read from there afterwards, offline too. Throws ModelLoadError
 * for anything a user can get wrong (no such folder, a broken file, a config that does not match).
 */
export async function loadModel(spec: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  checkModelSpec(spec);
  const { onProgress } = options;
  let resolved;
  try {
    resolved = await resolveModel(spec, { ...options.hub, onProgress: onProgress && ((file, bytes, total) => onProgress(bytes, total, file)) });
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
  const backend = options.backend ?? peekDefaultBackend() ?? (await createBackend());
  const { seed, dropout } = options;
  const dtype = options.dtype ?? 'f32';
  try {
    if (resolved.kind === 'preset-random') return await withWeightDType(randomModel(resolved.name, { seed, dropout, backend }), dtype);
    const loaded = await loadGpt2Weights(resolved.folder, { keepF16: dtype === 'f16' });
    return modelFromStateDict(loaded.config, loaded.weights, resolved.folder, loaded.nonFinite, backend, { seed, dropout, dtype });
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
}
