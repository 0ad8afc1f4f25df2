/** The layers GPT-2 is made of. Parameters are created by the caller's init (see src/gpt/init.ts). */
import type { Backend } from '../tensor/backend.js';
import { full, random } from '../tensor/create.js';
import { embedding, layerNorm, linear } from '../tensor/fused.js';
import { div, greater, matmul, mul } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import { Module } from './module.js';

function parameter(shape: readonly number[], value: number, backend: Backend): Tensor {
  return full(shape, value, { backend, requiresGrad: true });
}

/** y = x·W + b with W stored [in, out]: the Conv1D layout of GPT-2 checkpoints, loaded without a transpose. */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, backend: Backend, { bias = true } = {}) {
    super();
    this.weight = parameter([inFeatures, outFeatures], 0, backend);
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

  constructor(inFeatures: number, outFeatures: number, backend: Backend) {
    super();
    this.weight = parameter([outFeatures, inFeatures], 0, backend);
  }

  forward(x: Tensor): Tensor {
    return matmul(x, this.weight, { transB: true }); // [..., in] · [out, in]ᵀ → [..., out]
  }
}

export class Embedding extends Module {
  weight: Tensor;

  constructor(count: number, dim: number, backend: Backend) {
    super();
    this.weight = parameter([count, dim], 0, backend);
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
