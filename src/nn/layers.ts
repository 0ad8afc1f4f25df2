/** The layers GPT-2 is made of. Parameters are created by the caller's init (see src/gpt/init.ts). */
import type { Backend } from '../tensor/backend.js';
import { full, random, tensor } from '../tensor/create.js';
import { embedding, gelu, layerNorm, linear } from '../tensor/fused.js';
import { noGrad } from '../tensor/graph.js';
import { Bfloat16Array, narrowTo, overflowIn, rangeOf } from '../tensor/half.js';
import { add, div, greater, matmul, mul, sub } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { Module } from './module.js';

/**
 * How a layer stores its weight matrix: f32, or f16 / bf16 (a frozen weight read into f32
 * arithmetic: inference, or the base under an adapter). Biases and LayerNorm parameters stay f32.
 */
export type WeightDType = 'f32' | 'f16' | 'bf16';

function parameter(shape: readonly number[], value: number, backend: Backend): Tensor {
  return full(shape, value, { backend, requiresGrad: true });
}

/** A weight matrix of zeros in its storage type (a 16-bit zero is the bit pattern 0). */
function weight(shape: readonly number[], backend: Backend, dtype: WeightDType): Tensor {
  if (dtype === 'f32') return parameter(shape, 0, backend);
  const size = shape.reduce((a, b) => a * b, 1);
  return tensor(dtype === 'bf16' ? new Bfloat16Array(size) : new Uint16Array(size), shape, { backend, requiresGrad: true });
}

/**
 * A layer that may carry a LoRA adapter: (alpha/r)·(dropout(x)·Aᵀ)·Bᵀ added to its output, with
 * A [r, in] and B [out, r] (PEFT's fields, so its tensors are `….lora_A.weight` and `….lora_B.weight`).
 */
export abstract class AdaptableLayer extends Module {
  lora_A: Projection | null = null;
  lora_B: Projection | null = null;
  lora_dropout: Dropout | null = null;
  /** The adapter's alpha: its update is scaled by alpha / r. */
  loraAlpha = 0;

  /** The features an adapter maps from and to, and where its weights live. */
  protected abstract adapterShape(): { inFeatures: number; outFeatures: number; backend: Backend };

  /**
   * Attaches a LoRA adapter of rank r: B = 0 (the layer computes what it did), A uniform in
   * ±1/sqrt(in) (PEFT's kaiming_uniform(a = √5)), both trainable; `seed` draws A and the dropout masks.
   */
  addAdapter(rank: number, alpha: number, dropout: number, seed: number): void {
    if (this.lora_A !== null) throw new Error('this layer already has an adapter');
    const { inFeatures, outFeatures, backend } = this.adapterShape();
    this.lora_A = new Projection(inFeatures, rank, backend);
    this.lora_B = new Projection(rank, outFeatures, backend);
    const bound = 1 / Math.sqrt(inFeatures);
    this.lora_A.replaceParameter('weight', noGrad(() => tidy(() => {
      const u = random([rank, inFeatures], seed, { backend, distribution: 'uniform' });
      return mul(sub(mul(u, 2), 1), bound);
    })));
    this.lora_dropout = new Dropout(dropout, seed);
    this.lora_dropout.train(this.training);
    this.loraAlpha = alpha;
  }

  /** The adapter's update of x [..., in]: [..., out]; null without an adapter. */
  protected adapterUpdate(x: Tensor): Tensor | null {
    if (this.lora_A === null || this.lora_B === null || this.lora_dropout === null) return null;
    const scale = this.loraAlpha / this.lora_A.weight.shape[0];
    // The scale applied on the rank-wide side, where it costs r multiplications a row instead of out.
    const low = mul(this.lora_A.forward(this.lora_dropout.forward(x)), scale); // [..., in] → [..., r]
    return this.lora_B.forward(low); // [..., r] → [..., out]
  }

  /** Drops the adapter and frees its weights; the layer computes what it did without one. */
  removeAdapter(): void {
    this.lora_A?.dispose();
    this.lora_B?.dispose();
    this.lora_A = null;
    this.lora_B = null;
    this.lora_dropout = null;
    this.loraAlpha = 0;
  }
}

/**
 * y = x·W + b with W stored [in, out]: the Conv1D layout of GPT-2 checkpoints, loaded without a
 * transpose. An optional LoRA adapter adds (alpha/r)·(dropout(x)·Aᵀ)·Bᵀ with A [r, in] and B [out, r]
 * (Hugging Face PEFT's fields and layouts), never forming W + B·A: the base weight may stay frozen
 * and in 16 bits while only A and B train.
 */
export class Linear extends AdaptableLayer {
  weight: Tensor;
  bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, backend: Backend, { bias = true, dtype = 'f32' }: { bias?: boolean; dtype?: WeightDType } = {}) {
    super();
    this.weight = weight([inFeatures, outFeatures], backend, dtype);
    this.bias = bias ? parameter([outFeatures], 0, backend) : null;
  }

  protected adapterShape() {
    const [inFeatures, outFeatures] = this.weight.shape;
    return { inFeatures, outFeatures, backend: this.weight.backend };
  }

  /** Optionally gelu(x·W + b) and/or + residual, fused into the matmul at inference (see linear()). */
  forward(x: Tensor, { gelu: withGelu = false, residual }: { gelu?: boolean; residual?: Tensor } = {}): Tensor {
    const update = this.adapterUpdate(x);
    if (update === null) return linear(x, this.weight, this.bias, { gelu: withGelu, residual });
    const y = linear(x, this.weight, this.bias, { residual: update }); // x·W + b + update
    const activated = withGelu ? gelu(y) : y;
    return residual ? add(activated, residual) : activated;
  }

  /**
   * Folds the adapter into the weight, W += (alpha/r)·(B·A)ᵀ, once, and removes it. A 16-bit weight
   * is summed in f32 and rounded once (on the host: no device op writes 16 bits), hence async.
   */
  async mergeAdapter(): Promise<void> {
    const { lora_A: a, lora_B: b } = this;
    if (a === null || b === null) throw new Error('this layer has no adapter to merge');
    const scale = this.loraAlpha / a.weight.shape[0];
    const { backend, dtype, shape } = this.weight;
    const base = dtype !== 'f32' ? tensor(await this.weight.toFloat32(), shape, { backend }) : this.weight;
    const merged = noGrad(() => tidy(() => add(base, mul(matmul(a.weight, b.weight, { transA: true, transB: true }), scale)))); // [r, in]ᵀ · [out, r]ᵀ → [in, out]
    if (base !== this.weight) base.dispose();
    if (dtype === 'f16' || dtype === 'bf16') {
      const values = await merged.toFloat32();
      merged.dispose();
      const overflow = overflowIn(dtype, values);
      if (overflow > 0) throw new Error(`merging the adapter puts ${overflow} values outside ${rangeOf(dtype)}: merge into an f32 base`);
      this.replaceParameter('weight', tensor(narrowTo(dtype, values), shape, { backend }));
    } else {
      this.replaceParameter('weight', merged);
    }
    this.removeAdapter();
  }
}

/** y = x·Wᵀ with W stored [out, in] (torch's nn.Linear layout): an adapter's A or B. */
export class Projection extends Module {
  weight: Tensor;

  constructor(inFeatures: number, outFeatures: number, backend: Backend) {
    super();
    this.weight = weight([outFeatures, inFeatures], backend, 'f32');
  }

  forward(x: Tensor): Tensor {
    return matmul(x, this.weight, { transB: true }); // [..., in] · [out, in]ᵀ → [..., out]
  }
}

/**
 * GPT-2's output head, x [..., C] → logits x·Wᵀ [..., V] with W [V, C]: the token embedding's
 * matrix (tied, GPT-2's own), or one of its own stored the same way (untied). An adapter on it
 * (PEFT's `lm_head` target) adds its update to the logits and leaves W alone, which a tied head
 * needs: W is also what embeds the input tokens.
 */
export class OutputHead extends AdaptableLayer {
  /** An untied head's own [V, C] matrix; null when the head is the token embedding. */
  weight: Tensor | null;

  constructor(private readonly nEmbd: number, private readonly vocabSize: number, private readonly backend: Backend, { untied = false, dtype = 'f32' }: { untied?: boolean; dtype?: WeightDType } = {}) {
    super();
    this.weight = untied ? weight([vocabSize, nEmbd], backend, dtype) : null;
  }

  protected adapterShape() {
    return { inFeatures: this.nEmbd, outFeatures: this.vocabSize, backend: this.backend };
  }

  /** x [..., C] → [..., V]; `tokenEmbedding` [V, C] is W when the head has none of its own. */
  forward(x: Tensor, tokenEmbedding: Tensor): Tensor {
    const logits = matmul(x, this.weight ?? tokenEmbedding, { transB: true }); // [..., C] · [V, C]ᵀ → [..., V]
    const update = this.adapterUpdate(x);
    return update === null ? logits : add(logits, update);
  }
}

export class Embedding extends Module {
  weight: Tensor;

  constructor(count: number, dim: number, backend: Backend, dtype: WeightDType = 'f32') {
    super();
    this.weight = weight([count, dim], backend, dtype);
  }

  /** ids: i32 of any shape → [...ids.shape, dim]. */
  forward(ids: Tensor): Tensor {
    return embedding(ids, this.weight);
  }
}

export class LayerNorm extends Module {
  weight: Tensor;
  bias: Tensor;

  constructor(dim: number, backend: Backend, readonly eps = 1e-5) {
    super();
    this.weight = parameter([dim], 1, backend);
    this.bias = parameter([dim], 0, backend);
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/**
 * Inverted dropout with a seeded mask; the identity in eval mode and at rate 0. Masks are drawn from
 * (seed, key, call number within the key): a trainer keys each micro-batch by its number, so a run
 * resumed from a checkpoint draws the masks the uninterrupted run drew.
 */
export class Dropout extends Module {
  private key = 0;
  private calls = 0;

  constructor(readonly rate: number, readonly seed = 0) {
    super();
    if (rate < 0 || rate >= 1) throw new Error(`dropout rate must be in [0, 1), got ${rate}`);
  }

  /** False when forward is the identity. */
  get active(): boolean {
    return this.training && this.rate > 0;
  }

  /** Masks from here on are drawn for `key` (a non-negative integer), from its first call. */
  startKey(key: number): void {
    this.key = key;
    this.calls = 0;
  }

  forward(x: Tensor): Tensor {
    if (!this.active) return x;
    const maskSeed = (Math.imul(this.seed, 1_000_003) ^ Math.imul(this.key, 0x9e3779b1) ^ Math.imul(this.calls++, 40_503)) >>> 0;
    const u = random(x.shape, maskSeed, { backend: x.backend, distribution: 'uniform' });
    return div(mul(x, greater(u, this.rate)), 1 - this.rate);
  }
}
