/**
 * A GPT-2 in a browser: a preset (`gpt2` … `gpt2-xl` from the Hugging Face hub; `tiny`, `demo`
 * random), a hub repo `owner/name`, the URL of a folder holding config.json + model.safetensors, files
 * the user picked, or bytes already in memory. Downloads go through the Cache API (cached-fetch.ts).
 */
import { configFromText, hubRepoOf, isRandomPreset, type GPT2Config } from '../gpt/config.js';
import { ModelLoadError, randomModel, type LoadedModel } from '../gpt/load-model.js';
import { modelFromBytes, withWeightDType, type ConfigSource } from '../gpt/model-bytes.js';
import type { WeightDType } from '../nn/layers.js';
import { CONFIG_FILE, WEIGHTS_FILE } from '../gpt/state-dict.js';
import type { Backend } from '../tensor/backend.js';
import { peekDefaultBackend } from '../tensor/create.js';
import { createBackend } from './backend.js';
import { fetchCached } from './cached-fetch.js';
import { pickModelFiles } from './model-files.js';

export type BrowserModelSource =
  | string
  | { files: readonly File[] }
  | { config: ConfigSource | ArrayBuffer; weights: ArrayBuffer | Uint8Array };

export interface LoadModelOptions {
  /** Default: the backend made by the last createBackend, else a new 'auto' one. */
  backend?: Backend;
  /** Seed of the random init of `tiny` and `demo`. Default 0. */
  seed?: number;
  /** Called as a download's bytes arrive (cached files report once, complete). */
  onProgress?: (loadedBytes: number, totalBytes: number, file: string) => void;
  /** Default: https://huggingface.co. */
  hubUrl?: string;
  /** Storage of the weight matrices: 'f16' or 'bf16' halves their memory and the bytes a token reads (see modelFromBytes). Default 'f32'. */
  dtype?: WeightDType;
}

const HUB_URL = 'https://huggingface.co';

/** The folder URL a string names: a URL (absolute or relative to the page), a preset, or a hub repo. */
export function modelFolderUrl(spec: string, hubUrl = HUB_URL): string {
  const folder = (url: string) => (url.endsWith('/') ? url : `${url}/`);
  if (/^https?:\/\//.test(spec) || /^\.{0,2}\//.test(spec)) return folder(new URL(spec, globalThis.location?.href).href);
  const repo = hubRepoOf(spec);
  if (repo !== null) return `${hubUrl}/${repo}/resolve/main/`;
  throw new ModelLoadError(`${spec}: not a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, demo), a hub repo owner/name, or a URL`);
}

/** Bytes of the model's largest tensor, which must fit one GPU buffer: its matrices take 2 bytes an element in f16 or bf16. */
export function largestTensorBytes(config: GPT2Config, dtype: WeightDType = 'f32'): number {
  const { vocab_size: V, n_embd: C, n_positions: P } = config;
  return (dtype === 'f32' ? 4 : 2) * Math.max(V * C, P * C, 4 * C * C);
}

/** A model whose largest tensor exceeds the adapter's largest buffer fails with a message that says so, before any upload. */
export class ModelTooLarge extends ModelLoadError {
  override name = 'ModelTooLarge';
}

function checkFits(config: GPT2Config, backend: Backend, dtype: WeightDType): void {
  if (backend.name !== 'webgpu') return;
  const { maxBufferSize } = (backend as Backend & { gpu: { device: GPUDevice; description: string } }).gpu.device.limits;
  const bytes = largestTensorBytes(config, dtype);
  if (bytes > maxBufferSize) {
    const mb = (n: number) => `${(n / 2 ** 20).toFixed(0)} MB`;
    throw new ModelTooLarge(`the model's largest tensor needs ${mb(bytes)} in one GPU buffer; this adapter allows at most ${mb(maxBufferSize)}`);
  }
}

function fromBytes(configText: string, weights: Uint8Array, backend: Backend, source: string, dtype: WeightDType): LoadedModel {
  try {
    const config = configFromText(configText, CONFIG_FILE);
    checkFits(config, backend, dtype);
    return { ...modelFromBytes(config, weights, backend, source, { dtype }), source };
  } catch (e) {
    if (e instanceof ModelLoadError) throw e;
    throw new ModelLoadError((e as Error).message);
  }
}

/**
 * Loads a model (see the file comment for the sources). Throws ModelLoadError for anything a user can
 * get wrong: an unknown name, a missing file, a broken file, a config that does not match the weights,
 * a model larger than the adapter's buffers (ModelTooLarge).
 */
export async function loadModel(source: BrowserModelSource, options: LoadModelOptions = {}): Promise<LoadedModel> {
  const backend = options.backend ?? peekDefaultBackend() ?? (await createBackend());
  const progress = (file: string) => options.onProgress && ((loaded: number, total: number) => options.onProgress?.(loaded, total, file));
  const dtype = options.dtype ?? 'f32';
  if (typeof source === 'string') {
    if (isRandomPreset(source)) return withWeightDType(randomModel(source, { seed: options.seed, backend }), dtype);
    const folder = modelFolderUrl(source, options.hubUrl);
    let configBytes: Uint8Array;
    let weights: Uint8Array;
    try {
      configBytes = await fetchCached(folder + CONFIG_FILE, progress(CONFIG_FILE));
      weights = await fetchCached(folder + WEIGHTS_FILE, progress(WEIGHTS_FILE));
    } catch (e) {
      throw new ModelLoadError((e as Error).message);
    }
    return fromBytes(new TextDecoder().decode(configBytes), weights, backend, folder, dtype);
  }
  if ('files' in source) {
    let picked;
    try {
      picked = pickModelFiles(source.files);
    } catch (e) {
      throw new ModelLoadError((e as Error).message);
    }
    const { config, weights } = picked;
    const name = weights.webkitRelativePath || weights.name;
    return fromBytes(await config.text(), new Uint8Array(await weights.arrayBuffer()), backend, name, dtype);
  }
  const configText = source.config instanceof ArrayBuffer ? new TextDecoder().decode(source.config)
    : typeof source.config === 'string' ? source.config : JSON.stringify(source.config);
  const weights = source.weights instanceof Uint8Array ? source.weights : new Uint8Array(source.weights);
  return fromBytes(configText, weights, backend, 'model.safetensors in memory', dtype);
}
