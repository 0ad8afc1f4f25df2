/**
 * LoRA (Hu et al. 2021) on GPT-2: the base model frozen, a low-rank adapter trained beside chosen
 * linears of every block. Adapter weights are parameters of the model named as in Hugging Face
 * PEFT's files without their prefix (`h.0.attn.c_attn.lora_A.weight` [r, in], `…lora_B.weight`
 * [out, r]), so `fineTune` trains exactly them and weight files can carry them.
 */
import type { Linear } from '../nn/layers.js';
import type { Tensor } from '../tensor/tensor.js';
import type { GPT2 } from './model.js';

/** The linears of a block an adapter can sit on, named by their path inside the block (as PEFT's target_modules). */
export type LoRATarget = 'c_attn' | 'attn.c_proj' | 'c_fc' | 'mlp.c_proj';

export const LORA_TARGETS: readonly LoRATarget[] = ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'];

export interface LoRAOptions {
  /** The adapter's rank r. */
  rank: number;
  /** The update is scaled by alpha / r. Default: the rank (a scale of 1). */
  alpha?: number;
  /** Dropout on the adapter's input while training. Default 0. */
  dropout?: number;
  /** Which linears of each block get an adapter. Default: all four. */
  targets?: readonly LoRATarget[];
  /** Seeds A's initialisation and the dropout masks. Default 0. */
  seed?: number;
}

export type LoRASettings = Required<Omit<LoRAOptions, 'seed'>>;

function targetLinear(block: GPT2['h'][number], target: LoRATarget): Linear {
  switch (target) {
    case 'c_attn': return block.attn.c_attn;
    case 'attn.c_proj': return block.attn.c_proj;
    case 'c_fc': return block.mlp.c_fc;
    case 'mlp.c_proj': return block.mlp.c_proj;
  }
}

function checkOptions({ rank, alpha, dropout, targets, seed }: Required<LoRAOptions>): void {
  const checks: [string, unknown, boolean, string][] = [
    ['rank', rank, Number.isInteger(rank) && rank > 0, 'a positive integer'],
    ['alpha', alpha, Number.isFinite(alpha) && alpha > 0, 'a positive number'],
    ['dropout', dropout, dropout >= 0 && dropout < 1, 'in [0, 1)'],
    ['targets', targets, targets.length > 0 && targets.every((t) => LORA_TARGETS.includes(t)) && new Set(targets).size === targets.length,
      `distinct names among ${LORA_TARGETS.join(', ')}`],
    ['seed', seed, Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32, 'an integer in [0, 2^32)'],
  ];
  for (const [name, value, ok, rule] of checks) {
    if (!ok) throw new RangeError(`addLoRA: ${name} must be ${rule}, got ${JSON.stringify(value)}`);
  }
}

/**
 * Freezes every parameter of `model` and attaches a LoRA adapter to the target linears of every
 * block. The model computes exactly what it did until its adapters train (B starts at 0).
 */
export function addLoRA(model: GPT2, options: LoRAOptions): void {
  const o: Required<LoRAOptions> = { alpha: options.rank, dropout: 0, targets: LORA_TARGETS, seed: 0, ...definedOnly(options), rank: options.rank };
  checkOptions(o);
  if (loraSettings(model) !== null) throw new Error('addLoRA: the model already has adapters (merge or remove them first)');
  model.freeze();
  model.h.forEach((block, layer) => {
    for (const target of o.targets) {
      // One seed per layer and target, the same whichever other targets are chosen.
      const seed = (o.seed * 1_000_003 + layer * LORA_TARGETS.length + LORA_TARGETS.indexOf(target)) >>> 0;
      targetLinear(block, target).addAdapter(o.rank, o.alpha, o.dropout, seed);
    }
  });
}

/**
 * Folds every adapter into its base weight (W += (alpha/r)·(B·A)ᵀ, f32, f16 or bf16) and removes it: the
 * model is a plain GPT-2 again, as fast as the base. Its parameters stay frozen.
 */
export async function mergeLoRA(model: GPT2): Promise<void> {
  if (loraSettings(model) === null) throw new Error('mergeLoRA: the model has no adapter');
  for (const block of model.h) {
    for (const target of LORA_TARGETS) {
      const linear = targetLinear(block, target);
      if (linear.lora_A !== null) await linear.mergeAdapter();
    }
  }
}

/** What is attached to `model`: rank, alpha, dropout and targets (read from its first block), or null. */
export function loraSettings(model: GPT2): LoRASettings | null {
  const block = model.h[0];
  const targets = LORA_TARGETS.filter((t) => targetLinear(block, t).lora_A !== null);
  if (targets.length === 0) return null;
  const linear = targetLinear(block, targets[0]);
  return { rank: linear.lora_A!.weight.shape[0], alpha: linear.loraAlpha, dropout: linear.lora_dropout!.rate, targets };
}

/** The adapters' tensors, named as in namedParameters() (`h.N.….lora_A.weight`, `….lora_B.weight`). */
export function loraParameters(model: GPT2): [string, Tensor][] {
  return model.namedParameters().filter(([name]) => /\.lora_[AB]\.weight$/.test(name));
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}
