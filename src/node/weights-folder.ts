/**
 * GPT-2 model folders on disk: `config.json` + `model.safetensors` in the Hugging Face layout (what
 * transformers' save_pretrained writes and from_pretrained reads; a training run's folder is one).
 * Names and checks: src/gpt/state-dict.ts.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { configFromJson, configToText, MAX_CONFIG_BYTES, type GPT2Config } from '../gpt/config.js';
import type { GPT2 } from '../gpt/model.js';
import { hostWeights } from '../gpt/model-bytes.js';
import { WeightsError, type StateDict } from '../gpt/safetensors.js';
import { checkedWeights, checkHeader, CONFIG_FILE, weightsToSave, WEIGHTS_FILE, type TensorIn } from '../gpt/state-dict.js';
import type { HalfDType } from '../tensor/backend.js';
import { atomicWrite } from './atomic-write.js';
import { readSafetensors, writeSafetensors } from './safetensors-file.js';

/** Why `folder` cannot be loaded as a GPT-2 checkpoint, or null when it can. */
export function modelFolderProblem(folder: string): string | null {
  if (!existsSync(folder)) return `${folder} does not exist`;
  if (!statSync(folder).isDirectory()) return `${folder} is a file, not a model folder (a GPT-2 model folder holds ${CONFIG_FILE} + ${WEIGHTS_FILE})`;
  const missing = [CONFIG_FILE, WEIGHTS_FILE].filter((f) => !existsSync(join(folder, f)));
  if (missing.length === 0) {
    const special = [CONFIG_FILE, WEIGHTS_FILE].find((f) => !statSync(join(folder, f)).isFile());
    return special === undefined ? null : `${join(folder, special)} is not a regular file`;
  }
  const bin = missing.includes(WEIGHTS_FILE) && existsSync(join(folder, 'pytorch_model.bin'))
    ? ` It holds pytorch_model.bin, which is not read (only safetensors): convert it with python -c "from transformers import GPT2LMHeadModel as M; M.from_pretrained('${folder}').save_pretrained('${folder}')"`
    : '';
  return `${folder} lacks ${missing.join(' and ')} (a GPT-2 model folder holds ${CONFIG_FILE} + ${WEIGHTS_FILE}).${bin}`;
}

/** Reads a Hugging Face GPT-2 folder: its config and its weights under the canonical names, checked (F16 or BF16 kept 16-bit with keep16). */
export async function loadGpt2Weights(folder: string, { keep16 }: { keep16?: HalfDType } = {}): Promise<{ config: GPT2Config; weights: StateDict; nonFinite: { name: string; count: number }[] }> {
  const problem = modelFolderProblem(folder);
  if (problem !== null) throw new WeightsError(problem);
  const configPath = join(folder, CONFIG_FILE);
  // Checked before reading: only a small file is read whole.
  if (statSync(configPath).size > MAX_CONFIG_BYTES) throw new WeightsError(`${configPath}: ${statSync(configPath).size} bytes is no config (at most ${MAX_CONFIG_BYTES})`);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(configPath, 'utf8'));
  } catch (e) {
    throw new WeightsError(`${configPath}: not valid JSON (${(e as Error).message})`);
  }
  const config = configFromJson(json, configPath);
  const weightsPath = join(folder, WEIGHTS_FILE);
  const raw = await readSafetensors(weightsPath, { keep16, checkHeader: (tensors) => checkHeader(tensors, config, weightsPath) });
  return { config, ...checkedWeights(raw, config, weightsPath) };
}

/**
 * Writes `config.json` and `model.safetensors` (each atomically) the way transformers loads them
 * into GPT2LMHeadModel (see weightsToSave).
 */
export async function saveGpt2Weights(folder: string, config: GPT2Config, weights: ReadonlyMap<string, TensorIn>): Promise<void> {
  const weightsPath = join(folder, WEIGHTS_FILE);
  const named = weightsToSave(config, weights, weightsPath);
  await mkdir(folder, { recursive: true });
  await writeSafetensors(weightsPath, named, { format: 'pt' });
  await atomicWrite(join(folder, CONFIG_FILE), (fh) => fh.writeFile(configToText(config)));
}

/**
 * Saves a model as a Hugging Face folder (`config.json` + `model.safetensors`, each written
 * atomically), which loadModel, the command line and transformers' GPT2LMHeadModel load unchanged.
 * f16 weight matrices are written as F16, bf16 ones as BF16, the rest as F32.
 */
export async function saveModel(model: GPT2, folder: string): Promise<void> {
  await saveGpt2Weights(folder, model.config, await hostWeights(model));
}
