/**
 * LoRA adapter folders on disk: `adapter_config.json` + `adapter_model.safetensors` in Hugging Face
 * PEFT's layout (what `PeftModel.save_pretrained` writes and `from_pretrained` reads; a LoRA run's
 * folder is one). Names and checks: src/gpt/lora-adapter.ts.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GPT2Config } from '../gpt/config.js';
import {
  ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, adapterConfigText, adapterTensorsToSave, adapterWeights, checkAdapterTensors, fromPeftNames,
  loadAdapterWeights, MAX_ADAPTER_CONFIG_BYTES, parseAdapterConfig, type AdapterConfig, type AdapterSettings,
} from '../gpt/lora-adapter.js';
import { loraSettings } from '../gpt/lora.js';
import type { GPT2 } from '../gpt/model.js';
import { WeightsError, type HostTensor } from '../gpt/safetensors.js';
import type { TensorIn } from '../gpt/state-dict.js';
import { atomicWrite } from './atomic-write.js';
import { readSafetensors, writeSafetensors } from './safetensors-file.js';

/** Whether `folder` holds an adapter (its adapter_config.json) rather than, or besides, a model. */
export const isAdapterFolder = (folder: string): boolean => existsSync(join(folder, ADAPTER_CONFIG_FILE));

/** Why `folder` cannot be read as an adapter, or null when it can. */
export function adapterFolderProblem(folder: string): string | null {
  if (!existsSync(folder)) return `${folder} does not exist`;
  if (!statSync(folder).isDirectory()) return `${folder} is a file, not an adapter folder (one holds ${ADAPTER_CONFIG_FILE} + ${ADAPTER_WEIGHTS_FILE})`;
  const missing = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].filter((f) => !existsSync(join(folder, f)));
  if (missing.length > 0) return `${folder} lacks ${missing.join(' and ')} (a LoRA adapter folder holds ${ADAPTER_CONFIG_FILE} + ${ADAPTER_WEIGHTS_FILE})`;
  const special = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].find((f) => !statSync(join(folder, f)).isFile());
  return special === undefined ? null : `${join(folder, special)} is not a regular file`;
}

/** An adapter folder's adapter_config.json, checked (the tensors are read once the base is known: readAdapterTensors). */
export async function readAdapterConfig(folder: string): Promise<AdapterConfig> {
  const problem = adapterFolderProblem(folder);
  if (problem !== null) throw new WeightsError(problem);
  const path = join(folder, ADAPTER_CONFIG_FILE);
  const { size } = statSync(path);
  if (size > MAX_ADAPTER_CONFIG_BYTES) throw new WeightsError(`${path}: ${size} bytes is no adapter config (at most ${MAX_ADAPTER_CONFIG_BYTES})`);
  return parseAdapterConfig(await readFile(path, 'utf8'), path);
}

/**
 * The adapter's tensors under our names (PEFT's less its prefix), as f32; the header is checked
 * against the base's config and the adapter's settings before any data is read.
 */
export async function readAdapterTensors(folder: string, config: GPT2Config, settings: AdapterSettings): Promise<Map<string, HostTensor>> {
  const path = join(folder, ADAPTER_WEIGHTS_FILE);
  const raw = await readSafetensors(path, { checkHeader: (tensors) => checkAdapterTensors(fromPeftNames(tensors, path), config, settings, path) });
  return new Map(fromPeftNames([...raw], path));
}

/**
 * Writes `adapter_model.safetensors` then `adapter_config.json`, each atomically, the way PEFT
 * loads them onto transformers' GPT-2 (`base` becomes base_model_name_or_path).
 */
export async function saveAdapterFiles(
  folder: string, config: GPT2Config, settings: AdapterSettings, base: string, tensors: ReadonlyMap<string, TensorIn>,
): Promise<void> {
  const weightsPath = join(folder, ADAPTER_WEIGHTS_FILE);
  const named = adapterTensorsToSave(config, settings, tensors, weightsPath);
  await mkdir(folder, { recursive: true });
  await writeSafetensors(weightsPath, named, { format: 'pt' });
  await atomicWrite(join(folder, ADAPTER_CONFIG_FILE), (fh) => fh.writeFile(adapterConfigText(settings, base)));
}

/** Saves the adapters attached to `model` as a PEFT adapter folder of the base named `base`. */
export async function saveAdapter(model: GPT2, folder: string, base: string): Promise<void> {
  const settings = loraSettings(model);
  if (settings === null) throw new Error('saveAdapter: the model has no adapters');
  await saveAdapterFiles(folder, model.config, settings, base, await adapterWeights(model));
}

/** Reads an adapter folder into the adapters attached to `model` (which must be the adapter's: loadAdapterWeights). */
export async function loadAdapter(model: GPT2, folder: string): Promise<void> {
  const settings = await readAdapterConfig(folder);
  loadAdapterWeights(model, settings, await readAdapterTensors(folder, model.config, settings), folder);
}
