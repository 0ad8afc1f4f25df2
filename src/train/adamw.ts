/**
 * AdamW with PyTorch's semantics (torch.optim.AdamW): decoupled weight decay p -= lr·wd·p, then the
 * Adam update with bias correction. Moments live beside the parameters on the same backend and are
 * updated in place by one fused kernel per parameter.
 */
import type { Module } from '../nn/module.js';
import { zeros } from '../tensor/create.js';
import { adamwStep } from '../tensor/fused.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Steps taken so far (the bias correction uses step + 1 for the next one). */
  step = 0;
  readonly moments: Map<string, { m: Tensor; v: Tensor }>;

  constructor(private readonly model: Module, options: AdamWOptions = {}) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    this.moments = new Map(
      model.namedParameters().map(([name, p]) => [name, { m: keep(zeros(p.shape, { backend: p.backend })), v: keep(zeros(p.shape, { backend: p.backend })) }]),
    );
  }

  /** Updates every parameter that has a gradient, with learning rate `lr`. */
  update(lr: number): void {
    this.step++;
    for (const [name, p] of this.model.namedParameters()) {
      if (p.grad === null) continue;
      const { m, v } = this.moments.get(name)!;
      adamwStep(p, p.grad, m, v, {
        lr,
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: this.weightDecay,
        step: this.step,
      });
    }
  }

  zeroGrad(): void {
    for (const p of this.model.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  dispose(): void {
    for (const { m, v } of this.moments.values()) {
      m.dispose();
      v.dispose();
    }
  }
}
