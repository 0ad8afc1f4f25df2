/**
 * What a checkpoint holds besides the weights: where the run stands, the optimizer's step, the
 * seed and the flags, checked when read back; and the optimizer's moments put back in place.
 * Writing it into a run folder, atomically: src/node/checkpoint-folder.ts.
 */
import type { HostTensor, StateDict } from '../gpt/safetensors.js';
import { tensor } from '../tensor/create.js';
import { assign } from '../tensor/ops.js';
import type { AdamW } from './adamw.js';
import type { TrainingPosition } from './trainer.js';

export interface TrainingState {
  position: TrainingPosition;
  optimizerStep: number;
  seed: number;
  /** The flags of the run, so a resume can check it continues the same trajectory. */
  flags: Record<string, unknown>;
}

/** Weights or moments that are NaN or infinite: never written, since a checkpoint must be a safe place to return to. */
export class NonFiniteState extends Error {
  override name = 'NonFiniteState';
  constructor(readonly tensors: { name: string; count: number }[]) {
    const shown = tensors.slice(0, 3).map((t) => `${t.name}: ${t.count}`).join(', ');
    super(`non-finite values in ${tensors.length} tensor${tensors.length === 1 ? '' : 's'} (${shown}${tensors.length > 3 ? ', …' : ''})`);
  }
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

/** A state.json's contents, checked field by field; `file` names it in the error. */
export function parseTrainingState(text: string, file: string): TrainingState {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  const fail = (what: string): never => {
    throw new Error(`${file}: ${what}`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('expected a JSON object');
  const state = json as Record<string, unknown>;
  const position = state.position as Record<string, unknown> | null | undefined;
  if (typeof position !== 'object' || position === null) return fail('"position" is missing or not an object');
  for (const key of ['step', 'epoch', 'batchInEpoch']) {
    if (!isCount(position[key])) fail(`position.${key} must be an integer ≥ 0, got ${JSON.stringify(position[key])}`);
  }
  for (const key of ['optimizerStep', 'seed']) {
    if (!isCount(state[key])) fail(`"${key}" must be an integer ≥ 0, got ${JSON.stringify(state[key])}`);
  }
  if (typeof state.flags !== 'object' || state.flags === null || Array.isArray(state.flags)) fail('"flags" is missing or not an object');
  return state as unknown as TrainingState;
}

/** Writes saved moments into the optimizer's, in place (shapes checked against the model's parameters). */
export function restoreOptimizer(optimizer: AdamW, moments: StateDict, step: number, source: string): void {
  for (const [name, slot] of optimizer.moments) {
    for (const key of ['m', 'v'] as const) {
      const saved: HostTensor | undefined = moments.get(`${key}.${name}`);
      if (saved === undefined) throw new Error(`${source}: optimizer state lacks ${key}.${name}`);
      if (saved.shape.length !== slot[key].rank || saved.shape.some((d, i) => d !== slot[key].shape[i])) {
        throw new Error(`${source}: ${key}.${name} has shape [${saved.shape}], the parameter [${slot[key].shape}]`);
      }
      const restored = tensor(saved.data, slot[key].shape, { backend: slot[key].backend });
      assign(slot[key], restored);
      restored.dispose();
    }
  }
  optimizer.step = step;
}
