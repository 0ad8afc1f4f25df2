/**
 * A model from files a user picked: config.json + model.safetensors, chosen one by one or as a
 * folder. A training run's folder holds more copies below it (checkpoint/…): the top-level pair is the
 * model, so the shallowest file of each name wins.
 */
const CONFIG_FILE = 'config.json';
const WEIGHTS_FILE = 'model.safetensors';

export interface PickedModelFiles {
  config: File;
  weights: File;
}

const depthOf = (file: File): number => (file.webkitRelativePath || file.name).split('/').length;

function shallowest(files: readonly File[], name: string): File {
  const named = files.filter((f) => f.name === name);
  if (named.length === 0) {
    const picked = files.map((f) => f.webkitRelativePath || f.name).join(', ') || 'nothing';
    throw new Error(`no ${name} among the picked files (${picked}): pick ${CONFIG_FILE} and ${WEIGHTS_FILE}, or the folder holding them`);
  }
  const depth = Math.min(...named.map(depthOf));
  const top = named.filter((f) => depthOf(f) === depth);
  if (top.length > 1) throw new Error(`${top.length} files named ${name} at the same level: pick one model's files`);
  return top[0];
}

export function pickModelFiles(files: readonly File[]): PickedModelFiles {
  return { config: shallowest(files, CONFIG_FILE), weights: shallowest(files, WEIGHTS_FILE) };
}
