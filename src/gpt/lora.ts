/**
 * LoRA (Hu et al. 2021) on GPT-2: the base model frozen, a low-rank adapter trained beside chosen
 * linears of every block, and optionally the output head. Adapter weights are parameters of the
 * model named as in Hugging Face PEFT's files without their prefix (`h.0.attn.c_attn.lora_A.weight`
 * [r, in], `…lora_B.weight` [out, r], `lm_head.lora_A.weight`), so `fineTune` trains exactly them
 * and weight files can carry them.
 */
import type { AdaptableLayer } from '../nn/layers.js';
import type { Tensor } from '../tensor/tensor.js';
import type { GPT2 } from './model.js';

/** The linears of a block an adapter can sit on, named by their path inside the block (as PEFT's target_modules). */
export type BlockLoRATarget = 'c_attn' | 'attn.c_proj' | 'c_fc' | 'mlp.c_proj';

/** What an adapter can sit on: a linear of every block, or the output head (PEFT's name for GPT2LMHeadModel's). */
export type LoRATarget = BlockLoRATarget | 'lm_head';

/** Every block's four linears: the default targets. */
export const BLOCK_LORA_TARGETS: readonly BlockLoRATarget[] = ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'];

/** Every target, in the order a model holds them: the blocks' linears, then the head. */
export const LORA_TARGETS: readonly LoRATarget[] = [...BLOCK_LORA_TARGETS, 'lm_head'];

/** Why an adapter on the head is never merged, for every place that refuses it. */
export const HEAD_MERGE_REFUSAL = 'an adapter on lm_head cannot be merged: GPT-2\'s output head is its token embedding (wte), '
  + 'which also embeds the input tokens, so folding B·A into it would change those too; run the adapter unmerged';

export interface LoRAOptions {
  /** The adapter's rank r. */
  rank: number;
  /** The update is scaled by alpha / r. Default: the rank (a scale of 1). */
  alpha?: number;
  /** Dropout on the adapter's input while training. Default 0. */
  dropout?: number;
  /** Which linears of each block, and whether the head (`lm_head`), get an adapter. Default: the blocks' four linears. */
  targets?: readonly LoRATarget[];
  /** Seeds A's initialisation and the dropout masks. Default 0. */
  seed?: number;
}

export type LoRASettings = Required<Omit<LoRAOptions, 'seed'>>;

/** The layer `target` names: the head, or a linear of block `layer`. */
function targetLayer(model: GPT2, layer: number, target: LoRATarget): AdaptableLayer {
  const block = model.h[layer];
  switch (target) {
    case 'c_attn': return block.attn.c_attn;
    case 'attn.c_proj': return block.attn.c_proj;
    case 'c_fc': return block.mlp.c_fc;
    case 'mlp.c_proj': return block.mlp.c_proj;
    case 'lm_head': return model.lm_head;
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
 * block (and the head). The model computes exactly what it did until its adapters train (B starts at 0).
 */
export function addLoRA(model: GPT2, options: LoRAOptions): void {
  const o: Required<LoRAOptions> = { alpha: options.rank, dropout: 0, targets: BLOCK_LORA_TARGETS, seed: 0, ...definedOnly(options), rank: options.rank };
  checkOptions(o);
  if (loraSettings(model) !== null) throw new Error('addLoRA: the model already has adapters (merge or remove them first)');
  model.freeze();
  // One seed per layer and target, the same whichever other targets are chosen; the head's is
  // the first of a block past the last.
  const seedOf = (layer: number, index: number) => (o.seed * 1_000_003 + layer * BLOCK_LORA_TARGETS.length + index) >>> 0;
  for (let layer = 0; layer < model.h.length; layer++) {
    for (const target of o.targets) {
      if (target !== 'lm_head') targetLayer(model, layer, target).addAdapter(o.rank, o.alpha, o.dropout, seedOf(layer, BLOCK_LORA_TARGETS.indexOf(target)));
    }
  }
  if (o.targets.includes('lm_head')) model.lm_head.addAdapter(o.rank, o.alpha, o.dropout, seedOf(model.h.length, 0));
}

/**
 * Folds every adapter into its base weight (W += (alpha/r)·(B·A)ᵀ, f32, f16 or bf16) and removes it: the
 * model is a plain GPT-2 again, as fast as the base. Its parameters stay frozen. An adapter on the
 * head is refused (HEAD_MERGE_REFUSAL) before anything is merged.
 */
export async function mergeLoRA(model: GPT2): Promise<void> {
  if (loraSettings(model) === null) throw new Error('mergeLoRA: the model has no adapter');
  if (model.lm_head.lora_A !== null) throw new Error(`mergeLoRA: ${HEAD_MERGE_REFUSAL}`);
  for (const block of model.h) {
    for (const linear of [block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj]) {
      if (linear.lora_A !== null) await linear.mergeAdapter();
    }
  }
}

/** What is attached to `model`: rank, alpha, dropout and targets (read from its first block and its head), or null. */
export function loraSettings(model: GPT2): LoRASettings | null {
  const targets = LORA_TARGETS.filter((t) => targetLayer(model, 0, t).lora_A !== null);
  if (targets.length === 0) return null;
  const layer = targetLayer(model, 0, targets[0]);
  return { rank: layer.lora_A!.weight.shape[0], alpha: layer.loraAlpha, dropout: layer.lora_dropout!.rate, targets };
}

/** The adapters' tensors, named as in namedParameters() (`h.N.….lora_A.weight`, `….lora_B.weight`, `lm_head.lora_A.weight`, …). */
export function loraParameters(model: GPT2): [string, Tensor][] {
  return model.namedParameters().filter(([name]) => /\.lora_[AB]\.weight$/.test(name));
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}
