/**
 * Global-norm gradient clipping without a readback: the norm stays on the device as a scalar
 * tensor and scales the gradients there, so a training step still reads back only its loss.
 */
import type { Module } from '../nn/module.js';
import { noGrad } from '../tensor/graph.js';
import { add, div, maximum, mul, sqrt, sum } from '../tensor/ops.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

/** Scales all gradients by min(1, maxNorm / norm) and returns the norm before clipping (a device scalar). */
export function clipGradNorm(model: Module, maxNorm: number): Tensor {
  return noGrad(() => {
    const params = model.parameters().filter((p) => p.grad !== null);
    let squares: Tensor | null = null;
    for (const p of params) {
      const s = sum(mul(p.grad!, p.grad!));
      squares = squares === null ? s : add(squares, s);
    }
    if (squares === null) throw new Error('clipGradNorm: no parameter has a gradient');
    const norm = sqrt(squares);
    // PyTorch's clip_grad_norm_: scale = maxNorm / (norm + 1e-6), applied only when it is below 1.
    const scale = div(maxNorm, maximum(add(norm, 1e-6), maxNorm));
    for (const p of params) {
      const clipped = keep(mul(p.grad!, scale));
      p.grad!.dispose();
      p.grad = clipped;
    }
    return norm;
  });
}
