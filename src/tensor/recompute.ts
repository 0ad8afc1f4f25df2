/**
 * Activation recomputation (gradient checkpointing): f runs without recording a graph, so none of its
 * intermediates outlive it; backward runs it again from its saved input, recording, and
 * differentiates that. A stack of blocks then holds one block's activations at a time, plus each
 * block's input, for one more forward pass of compute.
 */
import { backward } from './autograd.js';
import { isGradEnabled, noGrad, record, withGrad } from './graph.js';
import { mul, sum } from './ops.js';
import { tidy } from './scope.js';
import type { Tensor } from './tensor.js';

/**
 * f(x), its gradient recomputed at backward. `parameters` are the tensors f reads besides x: their
 * gradients accumulate as if f had been recorded. f must compute the same values when run again
 * (no fresh dropout draws).
 */
export function recomputed(f: (x: Tensor) => Tensor, x: Tensor, parameters: readonly Tensor[]): Tensor {
  const inputs = [x, ...parameters];
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) return f(x);
  const out = tidy(() => noGrad(() => f(x)));
  const rerun = (dy: Tensor, saved: Tensor): (Tensor | null)[] => {
    const leaf = saved.share(); // a leaf of the recomputed graph: it collects dx
    leaf.requiresGrad = x.requiresGrad;
    const loss = tidy(() => withGrad(() => sum(mul(f(leaf), dy))));
    backward(loss);
    loss.dispose();
    const dx = leaf.grad?.share() ?? null;
    leaf.dispose();
    return [dx, ...parameters.map(() => null)];
  };
  return record(out, 'recompute', inputs, { backward: rerun }, [x]);
}
