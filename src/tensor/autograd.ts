/**
 * Reverse-mode autodiff: walk the graph in reversed topological order (iterative: residual streams
 * make per-path recursion exponential), apply each node's rule once, accumulate gradients by
 * addition, and release what each node saved as soon as its rule has run.
 */
import { ones } from './create.js';
import { markUnitGradient, noGrad } from './graph.js';
import { gradRules } from './grad-rules.js';
import { add, assign, sumToShape } from './ops.js';
import { keep, tidy } from './scope.js';
import type { Tensor } from './tensor.js';

/** Tensors whose node a backward pass has run and cleared: reaching one again is an error, not a leaf. */
const consumed = new WeakSet<Tensor>();

/** Tensors reachable from `root` through graph nodes, inputs before the tensors made from them. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length > 0) {
    const [t, expanded] = stack.pop()!;
    if (expanded) {
      order.push(t);
      continue;
    }
    if (visited.has(t)) continue;
    if (consumed.has(t)) {
      throw new Error(`backward(): the graph through a tensor of shape [${t.shape}] was consumed by an earlier backward(); run the forward again`);
    }
    visited.add(t);
    stack.push([t, true]);
    for (const input of t.node?.inputs ?? []) {
      if (input.requiresGrad && !visited.has(input)) stack.push([input, false]);
    }
  }
  return order;
}

/**
 * Accumulates d(root)/d(leaf) into `leaf.grad` for every leaf that requires a gradient (into its
 * `gradTarget`, in place, when it has one). The graph
 * is consumed: nodes are cleared, and a second backward through any of them throws (run the
 * forward again). Gradients of leaves disposed meanwhile are dropped.
 */
export function backward(root: Tensor): void {
  if (root.size !== 1) throw new Error(`backward() starts from a scalar, got shape [${root.shape}]`);
  if (!root.requiresGrad) throw new Error('backward(): nothing in this graph requires a gradient');
  const order = topologicalOrder(root);
  tidy(() =>
    noGrad(() => {
      const grads = new Map<Tensor, Tensor>([[root, markUnitGradient(ones(root.shape, { backend: root.backend }))]]);
      for (let i = order.length - 1; i >= 0; i--) {
        const t = order[i];
        const dy = grads.get(t);
        grads.delete(t);
        const node = t.node;
        if (dy === undefined) continue;
        if (node === null) {
          accumulateLeaf(t, dy);
          continue;
        }
        const inputGrads = (gradRules[node.op] as (dy: Tensor, n: typeof node) => (Tensor | null)[])(dy, node);
        node.inputs.forEach((input, j) => {
          const g = inputGrads[j];
          if (g === null || g === undefined || !input.requiresGrad) return;
          const reduced = sumToShape(g, input.shape);
          // A rule may pass dy through (add does): take a handle of our own, since dy is freed below.
          const owned = reduced === dy ? dy.share() : reduced;
          const previous = grads.get(input);
          grads.set(input, previous === undefined ? owned : add(previous, owned));
        });
        for (const s of node.saved) s.dispose();
        t.node = null;
        consumed.add(t);
        if (t !== root) dy.dispose();
      }
    }),
  );
}

function accumulateLeaf(leaf: Tensor, dy: Tensor): void {
  if (leaf.isDisposed) return; // nobody can read it, and dispose() has already run
  const target = leaf.gradTarget;
  if (target !== null && (leaf.grad === null || leaf.grad.storage === target.storage)) {
    // The gradient lives in a flat buffer that the optimizer reads whole: written there in place.
    assign(target, leaf.grad === null ? dy : add(leaf.grad, dy));
    leaf.grad ??= keep(target.share());
    return;
  }
  if (leaf.grad === null) {
    leaf.grad = keep(dy.share());
  } else {
    const sum = keep(add(leaf.grad, dy));
    leaf.grad.dispose();
    leaf.grad = sum;
  }
}
