/**
 * A model from and to bytes in memory — `config.json` text and `model.safetensors` bytes in the
 * Hugging Face layout — for runtimes without a file system (a browser's fetch, File or Blob).
 */
import type { WeightDType } from '../nn/layers.js';
import { isHalfDType, type Backend } from '../tensor/backend.js';
import { narrowTo } from '../tensor/half.js';
import { configFromJson, configFromText, configToText, type GPT2Config } from './config.js';
import { modelFromStateDict, type LoadedModel } from './load-model.js';
import type { GPT2 } from './model.js';
import { parseSafetensors, serializeSafetensors, type StateDict } from './safetensors.js';
import { checkedWeights, checkHeader, CONFIG_FILE, weightsToSave, WEIGHTS_FILE } from './state-dict.js';

/** A config.json's text, its parsed object, or a config itself. */
export type ConfigSource = GPT2Config | object | string;

export interface ModelBytesOptions {
  /**
   * Storage of the weight matrices (see ModelOptions.dtype). With f16 (bf16), F16 (BF16) tensors of
   * the file stay 16-bit; the others are widened to f32 (exactly) and rounded to the 16-bit type,
   * and a value it cannot hold is an error naming its tensor. Default f32.
   */
  dtype?: WeightDType;
}

/**
 * A model from a config and the bytes of its model.safetensors (F32, F16 or BF16; the names of
 * transformers' GPT-2 or of the course notebook), checked against the config before any tensor is
 * converted. `source` names the weights in error messages.
 */
export function modelFromBytes(config: ConfigSource, weights: Uint8Array, backend?: Backend, source = WEIGHTS_FILE, options: ModelBytesOptions = {}): LoadedModel {
  const parsed = typeof config === 'string' ? configFromText(config, CONFIG_FILE) : configFromJson(config, CONFIG_FILE);
  const dtype = options.dtype ?? 'f32';
  const raw = parseSafetensors(weights, source, { keep16: dtype === 'f32' ? undefined : dtype, checkHeader: (tensors) => checkHeader(tensors, parsed, source) });
  const { weights: dict, nonFinite } = checkedWeights(raw, parsed, source);
  return modelFromStateDict(parsed, dict, source, nonFinite, backend, { dtype });
}

/** The model's weights, read back from the device, under its own names: 16-bit weights as bit patterns of their type (exactly). */
export async function hostWeights(model: GPT2): Promise<StateDict> {
  const out: StateDict = new Map();
  for (const [name, p] of model.namedParameters()) {
    const values = await p.toFloat32();
    out.set(name, { shape: [...p.shape], data: isHalfDType(p.dtype) ? narrowTo(p.dtype, values) : values });
  }
  return out;
}

/**
 * The same weights with the matrices stored as `dtype`, on the same backend; the old model is
 * disposed. To 16 bits rounds (an out-of-range value is an error, and the old model is kept).
 */
export async function withWeightDType(loaded: LoadedModel, dtype: WeightDType): Promise<LoadedModel> {
  if (loaded.model.wte.weight.dtype === dtype) return loaded;
  const weights = await hostWeights(loaded.model);
  const converted = modelFromStateDict(loaded.config, weights, loaded.source, loaded.nonFinite, loaded.model.backend, { dtype });
  loaded.model.dispose();
  return converted;
}

/**
 * The model as the two files of a Hugging Face folder: config.json's text and model.safetensors'
 * bytes, which transformers' GPT2LMHeadModel and modelFromBytes load unchanged (f16 weights as F16, bf16 as BF16).
 */
export async function modelToBytes(model: GPT2): Promise<{ config: string; weights: Uint8Array }> {
  const named = weightsToSave(model.config, await hostWeights(model), WEIGHTS_FILE);
  return { config: configToText(model.config), weights: serializeSafetensors(named, { format: 'pt' }) };
}
