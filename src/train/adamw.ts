/**
 * AdamW with PyTorch's semantics (torch.optim.AdamW): decoupled weight decay p -= lr·wd·p, then the
 * Adam update with bias correction. The parameters, their gradients and the two moments each live
 * in one flat buffer of the same layout (FlatParameters), updated in place by one fused kernel over
 * the whole layout (per block of it, past one device buffer), with the clip's factor applied to the
 * gradient on the way.
 */
import type { Module } from '../nn/module.js';
import { adamwStep } from '../tensor/fused.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { FlatParameters, type FlatBuffer } from './flat-parameters.js';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export interface Moments {
  readonly m: Tensor;
  readonly v: Tensor;
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Steps taken so far (the bias correction uses step + 1 for the next one). */
  step = 0;
  /** The model's trainable parameters and their gradients, moved into flat buffers. */
  readonly flat: FlatParameters;
  /** Each parameter's moments: views of the flat moment buffers, written in place. */
  readonly moments: ReadonlyMap<string, Moments>;
  /** The flat moment buffers. */
  private readonly m: FlatBuffer;
  private readonly v: FlatBuffer;

  /** Moves the model's parameters into a flat buffer: build it after the weights are loaded. */
  constructor(model: Module, options: AdamWOptions = {}) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    this.flat = new FlatParameters(model);
    const m = this.flat.zerosLike();
    const v = this.flat.zerosLike();
    this.m = m.buffer;
    this.v = v.buffer;
    this.moments = new Map(this.flat.slots.map(({ name }) => [name, { m: m.views.get(name)!, v: v.views.get(name)! }]));
  }

  /**
   * Updates every parameter that has a gradient, with learning rate `lr`, each gradient multiplied
   * first by the scalar `gradScale` when given (clipGradNorm's).
   */
  update(lr: number, gradScale: Tensor | null = null): void {
    this.step++;
    const hyper = { lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay, step: this.step };
    tidy(() => {
      for (const run of this.flat.gradientRuns()) {
        adamwStep(this.flat.params.run(run), this.flat.grads.run(run), this.m.run(run), this.v.run(run), hyper, gradScale);
      }
    });
  }

  zeroGrad(): void {
    this.flat.zeroGrad();
  }

  dispose(): void {
    for (const { m, v } of this.moments.values()) {
      m.dispose();
      v.dispose();
    }
    this.m.dispose();
    this.v.dispose();
    this.flat.dispose();
  }
}
