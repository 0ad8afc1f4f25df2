/** Saving in a browser: files handed to the user as Blob downloads. */
import { GPT2 } from '../gpt/model.js';
import { modelToBytes } from '../gpt/model-bytes.js';
import { CONFIG_FILE, WEIGHTS_FILE } from '../gpt/state-dict.js';

/** Starts the download of `bytes` as a file named `name`. */
export function downloadBytes(name: string, bytes: Uint8Array | string, type = 'application/octet-stream'): void {
  const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type }));
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  link.style.display = 'none';
  document.body.append(link);
  link.click();
  link.remove();
  // Some browsers read the Blob only after click() returns: revoke the URL later.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** A model as the two files of a Hugging Face folder (what modelToBytes returns). */
export type ModelBytes = Awaited<ReturnType<typeof modelToBytes>>;

/**
 * Hands the user the model as `config.json` + `model.safetensors` (two downloads; the names the CLI
 * and transformers expect in a folder). Takes a model, read back from the device here, or bytes
 * saved earlier (a page keeps them when a device may be lost).
 */
export async function downloadModel(model: GPT2 | ModelBytes): Promise<void> {
  const bytes = model instanceof GPT2 ? await modelToBytes(model) : model;
  downloadBytes(CONFIG_FILE, bytes.config, 'application/json');
  downloadBytes(WEIGHTS_FILE, bytes.weights);
}
