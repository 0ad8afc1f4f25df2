/** The layers GPT-2 is made of. Parameters are created by the caller's init (see src/gpt/init.ts). */
import type { Backend } from '../tensor/backend.js';
import { full, random, tensor } from '../tensor/create.js';
import { embedding, layerNorm, linear } from '../tensor/fused.js';
import { div, greater, matmul, mul } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import { Module } from './module.js';

/**
 * How a layer stores its weight matrix: f32, or f16 (a frozen weight read into f32 arithmetic:
 * inference, or the base under an adapter). Biases and LayerNorm parameters stay f32.
 */
export type WeightDType = 'f32' | 'f16';

function parameter(shape: readonly number[], value: number, backend: Backend): Tensor {
  return full(shape, value, { backend, requiresGrad: true });
}

/** A weight matrix of zeros in its storage type (f16 zero is the bit pattern 0). */
function weight(shape: readonly number[], backend: Backend, dtype: WeightDType): Tensor {
  if (dtype === 'f32') return parameter(shape, 0, backend);
  return tensor(new Uint16Array(shape.reduce((a, b) => a * b, 1)), shape, { backend, requiresGrad: true });
}

/** y = x·W + b with W stored [in, out]: the Conv1D layout of GPT-2 checkpoints, loaded without a transpose. */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, backend: Backend, { bias = true, dtype = 'f32' }: { bias?: boolean; dtype?: WeightDType } = {}) {
    super();
    this.weight = weight([inFeatures, outFeatures], backend, dtype);
    this.bias = bias ? parameter([outFeatures], 0, backend) : null;
  }

  /** Optionally gelu(x·W + b) and/or + residual, fused into the matmul at inference (see linear()). */
  forward(x: Tensor, epilogue: { gelu?: boolean; residual?: Tensor } = {}): Tensor {
    return linear(x, this.weight, this.bias, epilogue);
  }
}

/** y = x·Wᵀ with W stored [out, in] (torch's nn.Linear layout, and the embedding's): an output head. */
export class Projection extends Module {
  weight: Tensor;

  constructor(inFeatures: number, outFeatures: number, backend: Backend, dtype: WeightDType = 'f32') {
    super();
    this.weight = weight([outFeatures, inFeatures], backend, dtype);
  }

  forward(x: Tensor): Tensor {
    return matmul(x, this.weight, { transB: true }); // [..., in] · [out, in]ᵀ → [..., out]
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

/** Inverted dropout with a seeded mask; the identity in eval mode and at rate 0. */
export class Dropout extends Module {
  private calls = 0;

  constructor(readonly rate: number, readonly seed = 0) {
    super();
    if (rate < 0 || rate >= 1) throw new Error(`dropout rate must be in [0, 1), got ${rate}`);
  }

  /** False when forward is the identity. */
  get active(): boolean {
    return this.training && this.rate > 0;
  }

  forward(x: Tensor): Tensor {
    if (!this.active) return x;
    // A fresh mask per call, reproducible from (seed, call number).
    const u = random(x.shape, (this.seed * 1_000_003 + this.calls++) >>> 0, { backend: x.backend, distribution: 'uniform' });
    return div(mul(x, greater(u, this.rate)), 1 - this.rate);
  }
}
