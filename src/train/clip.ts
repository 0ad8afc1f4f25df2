/**
 * Global-norm gradient clipping without a readback: the norm and the clip's factor stay on the device
 * as scalar tensors, and AdamW multiplies the gradients by the factor as it reads them, so a training
 * step still reads back only its loss and the gradients are not written twice.
 */
import { noGrad } from '../tensor/graph.js';
import { add, div, maximum, mul, sqrt, sum } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import type { FlatParameters } from './flat-parameters.js';

/**
 * Elements squared and summed at a time: the square's temporary stays small beside a 1.4 GB gradient,
 * and each piece fits one binding, where the sum spreads over many workgroups. A power of two, so every
 * piece starts at an aligned element.
 */
const PIECE = 2 ** 24;

/**
 * The norm of all gradients in `flat` (as one vector) and the factor min(1, maxNorm / norm) that
 * clips it, as device scalars; the gradients themselves are left as they are (pass the scale to
 * AdamW.update).
 */
export function clipGradNorm(flat: FlatParameters, maxNorm: number): { norm: Tensor; scale: Tensor } {
  return noGrad(() => {
    let squares: Tensor | null = null;
    for (const { block, offset, size } of flat.gradientRuns()) {
      for (let start = 0; start < size; start += PIECE) {
        const piece = flat.grads.run({ block, offset: offset + start, size: Math.min(PIECE, size - start) });
        const s = sum(mul(piece, piece));
        squares = squares === null ? s : add(squares, s);
      }
    }
    if (squares === null) throw new Error('clipGradNorm: no parameter has a gradient');
    const norm = sqrt(squares);
    // PyTorch's clip_grad_norm_: scale = maxNorm / (norm + 1e-6), applied only when it is below 1.
    const scale = div(maxNorm, maximum(add(norm, 1e-6), maxNorm));
    return { norm, scale };
  });
}
