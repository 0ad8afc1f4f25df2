/**
 * A GPT-2 from a `--model` spec: `tiny` or `demo` (random weights, GPT-2's init, seeded), a folder
 * holding config.json + model.safetensors (a training run's output folder is one), or a hub repo
 * (`gpt2` … `gpt2-xl`, or owner/name), fetched once into the Hugging Face cache; optionally with a
 * LoRA adapter (a PEFT adapter folder) on it. A LoRA run's folder, which holds an adapter, loads as
 * the base its adapter_config.json names with that adapter.
 */
import { existsSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { ModelLoadError, modelFromStateDict, randomModel, type LoadedModel } from '../gpt/load-model.js';
import { addLoRA, HEAD_MERGE_REFUSAL, mergeLoRA } from '../gpt/lora.js';
import { loadAdapterWeights } from '../gpt/lora-adapter.js';
import { withWeightDType } from '../gpt/model-bytes.js';
import type { WeightDType } from '../nn/layers.js';
import type { Backend } from '../tensor/backend.js';
import { peekDefaultBackend } from '../tensor/create.js';
import { adapterFolderProblem, isAdapterFolder, readAdapterConfig, readAdapterTensors } from './adapter-folder.js';
import { createBackend } from './backend.js';
import { resolveModel, resolveModelSource, type HubOptions } from './hub.js';
import { loadGpt2Weights, modelFolderProblem } from './weights-folder.js';

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
   * Storage of the weight matrices: 'f16' or 'bf16' halves their memory and the bytes a decoding
   * step reads (arithmetic stays f32; F16 or BF16 files of the same type stay 16-bit; such a model
   * cannot be fully fine-tuned, only under an adapter). Default 'f32'.
   */
  dtype?: WeightDType;
  /** A PEFT LoRA adapter folder to run on the model (unmerged unless `merge`). */
  adapter?: string;
  /** Fold the adapter into the weights once, at load: a plain GPT-2 as fast as the base. Default false. */
  merge?: boolean;
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

/** An existing folder holding an adapter and no model of its own: a LoRA run's folder, or a PEFT adapter. */
const isAdapterOnly = (spec: string): boolean => existsSync(spec) && statSync(spec).isDirectory() && isAdapterFolder(spec) && modelFolderProblem(spec) !== null;

/**
 * Checks a spec without touching the network or a device (so a command line can fail fast): a
 * path that does not exist, a folder without the model files, or a spec that is nothing at all.
 * An adapter folder is checked as such (its base is checked when it is read).
 */
export function checkModelSpec(spec: string, adapter?: string): void {
  if (looksLikePath(spec) && !existsSync(spec)) {
    throw new ModelLoadError(`--model ${spec}: no such model folder (a model folder holds config.json + model.safetensors)`);
  }
  if (adapter !== undefined) {
    const problem = adapterFolderProblem(adapter);
    if (problem !== null) throw new ModelLoadError(`--adapter ${adapter}: ${problem}`);
  }
  if (isAdapterOnly(spec)) {
    if (adapter !== undefined) throw new ModelLoadError(`--model ${spec} is an adapter folder itself: give its base with --model and it with --adapter, or it alone`);
    const problem = adapterFolderProblem(spec);
    if (problem !== null) throw new ModelLoadError(`--model ${spec}: ${problem}`);
    return;
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
  checkModelSpec(spec, options.adapter);
  const adapter = options.adapter ?? (isAdapterOnly(spec) ? spec : undefined);
  if (adapter !== undefined) return loadWithAdapter(adapter, adapter === spec ? null : spec, options);
  if (options.merge) throw new ModelLoadError(`--merge folds an adapter into the weights: ${spec} has none (give --adapter)`);
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
    const loaded = await loadGpt2Weights(resolved.folder, { keep16: dtype === 'f32' ? undefined : dtype });
    return modelFromStateDict(loaded.config, loaded.weights, resolved.folder, loaded.nonFinite, backend, { seed, dropout, dtype });
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
}

/**
 * The base (`base`, or the one the adapter's config names) with the adapter attached and loaded,
 * merged in with `merge`. An adapter that does not fit the base is refused naming what differs.
 */
async function loadWithAdapter(folder: string, base: string | null, options: LoadModelOptions): Promise<LoadedModel> {
  let settings;
  try {
    settings = await readAdapterConfig(folder);
  } catch (e) {
    throw new ModelLoadError((e as Error).message);
  }
  if (options.merge && settings.targets.includes('lm_head')) throw new ModelLoadError(`--merge: the adapter ${folder} adapts lm_head: ${HEAD_MERGE_REFUSAL}`);
  const baseSpec = base ?? settings.base;
  if (baseSpec === null) {
    throw new ModelLoadError(`${join(folder, 'adapter_config.json')} names no base_model_name_or_path: give the base with --model and this folder with --adapter`);
  }
  if (isAdapterOnly(baseSpec)) throw new ModelLoadError(`${baseSpec}, the base of the adapter ${folder}, is an adapter folder itself, not a model`);
  const named = base === null ? ` (the base ${baseSpec} is the one ${join(folder, 'adapter_config.json')} names)` : '';
  let loaded;
  try {
    loaded = await loadModel(baseSpec, { ...options, adapter: undefined, merge: false });
  } catch (e) {
    throw new ModelLoadError(`${(e as Error).message}${named}`);
  }
  const { model } = loaded;
  try {
    addLoRA(model, { ...settings, seed: options.seed });
    loadAdapterWeights(model, settings, await readAdapterTensors(folder, model.config, settings), folder);
    if (options.merge) await mergeLoRA(model);
  } catch (e) {
    model.dispose();
    throw new ModelLoadError(`${(e as Error).message}${named}`);
  }
  return { ...loaded, source: `${loaded.source} with the LoRA adapter ${folder}${options.merge ? ' merged in' : ''}` };
}
