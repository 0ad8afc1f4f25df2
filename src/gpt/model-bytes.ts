/**
 * A model from and to bytes in memory — `config.json` text and `model.safetensors` bytes in the
 * Hugging Face layout — for runtimes without a file system (a browser's fetch, File or Blob).
 */
import type { Backend } from '../tensor/backend.js';
import { configFromJson, configFromText, configToText, type GPT2Config } from './config.js';
import { modelFromStateDict, type LoadedModel } from './load-model.js';
import type { GPT2 } from './model.js';
import { parseSafetensors, serializeSafetensors, type StateDict } from './safetensors.js';
import { checkedWeights, checkHeader, CONFIG_FILE, weightsToSave, WEIGHTS_FILE } from './state-dict.js';

/** A config.json's text, its parsed object, or a config itself. */
export type ConfigSource = GPT2Config | object | string;

/**
 * A model from a config and the bytes of its model.safetensors (F32, F16 or BF16; the names of
 * transformers' GPT-2 or of the course notebook), checked against the config before any tensor is
 * converted. `source` names the weights in error messages.
 */
export function modelFromBytes(config: ConfigSource, weights: Uint8Array, backend?: Backend, source = WEIGHTS_FILE): LoadedModel {
  const parsed = typeof config === 'string' ? configFromText(config, CONFIG_FILE) : configFromJson(config, CONFIG_FILE);
  const raw = parseSafetensors(weights, source, { checkHeader: (tensors) => checkHeader(tensors, parsed, source) });
  const { weights: dict, nonFinite } = checkedWeights(raw, parsed, source);
  return modelFromStateDict(parsed, dict, source, nonFinite, backend);
}

/** The model's weights, read back from the device, under its own names. */
export async function hostWeights(model: GPT2): Promise<StateDict> {
  const out: StateDict = new Map();
  for (const [name, p] of model.namedParameters()) out.set(name, { shape: [...p.shape], data: await p.toFloat32() });
  return out;
}

/**
 * The model as the two files of a Hugging Face folder: config.json's text and model.safetensors'
 * bytes, which transformers' GPT2LMHeadModel and modelFromBytes load unchanged.
 */
export async function modelToBytes(model: GPT2): Promise<{ config: string; weights: Uint8Array }> {
  const named = weightsToSave(model.config, await hostWeights(model), WEIGHTS_FILE);
  return { config: configToText(model.config), weights: serializeSafetensors(named, { format: 'pt' }) };
}
