/**
 * Every gradient rule, in one table typed over OpName: an op without a rule does not compile.
 * A rule gets the output's gradient and the node, and returns one gradient per input (null where an
 * input needs none). Gradients may come back in the broadcast shape; autograd.ts reduces them.
 */
import type { MatmulShape, Storage } from './backend.js';
import { fromStorage, zeros } from './create.js';
import { isUnitGradient, type GraphNode, type OpName } from './graph.js';
import {
  add, div, equal, greater, log, matmul, mul, neg, pad, permute, pow, reshape, slice, sub, sum, where,
} from './ops.js';
import { Tensor } from './tensor.js';

type Rule<K extends OpName> = (dy: Tensor, node: GraphNode<K>) => (Tensor | null)[];

const wrap = (like: Tensor, storage: Storage, shape: readonly number[]): Tensor =>
  fromStorage(like.backend, storage, shape);

export const gradRules: { [K in OpName]: Rule<K> } = {
  neg: (dy) => [neg(dy)],
  exp: (dy, { saved: [y] }) => [mul(dy, y)],
  log: (dy, { saved: [x] }) => [div(dy, x)],
  sqrt: (dy, { saved: [y] }) => [div(dy, mul(y, 2))],
  tanh: (dy, { saved: [y] }) => [mul(dy, sub(1, mul(y, y)))],
  relu: (dy, { saved: [x] }) => [mul(dy, greater(x, 0))],
  abs: (dy, { saved: [x] }) => [mul(dy, sub(greater(x, 0), greater(neg(x), 0)))],

  add: (dy) => [dy, dy],
  sub: (dy) => [dy, neg(dy)],
  mul: (dy, { saved: [a, b] }) => [mul(dy, b), mul(dy, a)],
  div: (dy, { saved: [a, b] }) => [div(dy, b), neg(div(mul(dy, a), mul(b, b)))],
  // Ties send the gradient to the first operand, as PyTorch's maximum does not; either is a subgradient.
  maximum: (dy, { saved: [a, b] }) => {
    const aWins = sub(1, greater(b, a));
    return [mul(dy, aWins), mul(dy, sub(1, aWins))];
  },
  minimum: (dy, { saved: [a, b] }) => {
    const aWins = sub(1, greater(a, b));
    return [mul(dy, aWins), mul(dy, sub(1, aWins))];
  },
  // d(a^b)/da = b·a^(b-1); d/db = a^b·ln a (only where a > 0, else 0).
  pow: (dy, { saved: [a, b] }) => {
    const y = pow(a, b);
    const positive = greater(a, 0);
    const safeA = where(positive, a, 1);
    return [mul(dy, mul(b, pow(a, sub(b, 1)))), mul(dy, mul(mul(y, log(safeA)), positive))];
  },
  where: (dy, { saved: [cond] }) => [where(cond, dy, 0), where(cond, 0, dy)],

  sum: (dy, { inputs: [x] }) => [broadcastTo(dy, x.shape)],
  // Ties share the gradient equally (as torch.amax): giving each tied element all of it would not be a subgradient.
  max: (dy, { inputs: [x], saved: [xs, y], attrs: { axis } }) => {
    const winners = equal(xs, y);
    return [mul(broadcastTo(dy, x.shape), div(winners, sum(winners, axis, true)))];
  },

  reshape: (dy, { inputs: [x] }) => [reshape(dy, x.shape)],
  permute: (dy, { attrs: { perm } }) => {
    const inverse = new Array<number>(perm.length);
    perm.forEach((p, i) => (inverse[p] = i));
    return [permute(dy, inverse)];
  },
  slice: (dy, { inputs: [x], attrs: { begin } }) => [pad(dy, begin, x.shape)],
  pad: (dy, { inputs: [x], attrs: { begin } }) => [slice(dy, begin, x.shape)],

  matmul: (dy, node) => matmulGrads(dy, node),

  layerNorm: (dy, { saved: [x, weight, mean, rstd], attrs: { rows, C } }) => {
    const g = x.backend.layerNormBackward(dy.storage, x.storage, weight.storage, mean.storage, rstd.storage, rows, C);
    return [wrap(x, g.dx, x.shape), wrap(x, g.dWeight, [C]), wrap(x, g.dBias, [C])];
  },
  gelu: (dy, { saved: [x] }) => [wrap(x, x.backend.geluBackward(x.storage, dy.storage), x.shape)],
  softmax: (dy, { saved: [y], attrs: { rows, dim } }) => [wrap(y, y.backend.softmaxBackward(y.storage, dy.storage, rows, dim), y.shape)],
  attention: (dy, { saved: [q, k, v, out, lse], attrs }) => {
    const g = q.backend.attentionBackward(dy.storage, q.storage, k.storage, v.storage, out.storage, lse.storage, attrs);
    return [wrap(q, g.dq, q.shape), wrap(q, g.dk, q.shape), wrap(q, g.dv, q.shape)];
  },
  embedding: (dy, { saved: [ids], attrs: { n, V, C } }) => [wrap(dy, dy.backend.embeddingBackward(ids.storage, dy.storage, n, V, C), [V, C])],
  // The forward already computed dLoss/dLogits; the chain rule only scales it by the loss's gradient.
  // dLogits is [rows, V]: scaling it by a seed of one would write all of it again for nothing.
  crossEntropy: (dy, { saved: [dLogits] }) => [isUnitGradient(dy) ? dLogits.share() : mul(dLogits, dy)],
  recompute: (dy, { saved: [x], attrs }) => attrs.backward(dy, x),
};

/** Expands a gradient whose reduced axes were kept with size 1 to `shape`. */
function broadcastTo(dy: Tensor, shape: readonly number[]): Tensor {
  return add(dy, zeros(shape, { backend: dy.backend }));
}

/**
 * dA and dB, each only for an input that requires a gradient: a frozen weight (LoRA's base) costs no
 * weight-gradient product, and a layer whose input needs no gradient (the first) no input-gradient one.
 */
function matmulGrads(dy: Tensor, { saved: [a, b], inputs, attrs: s }: GraphNode<'matmul'>): (Tensor | null)[] {
  const { batch, m, k, n, transA, transB, broadcastB } = s;
  // Work in the 3-D shapes the backend saw: [batch, rows, cols].
  const a3 = reshape(a, transA ? [batch, k, m] : [batch, m, k]);
  const b3 = broadcastB ? reshape(b, transB ? [n, k] : [k, n]) : reshape(b, transB ? [batch, n, k] : [batch, k, n]);
  const dy3 = reshape(dy, [batch, m, n]);
  const grads: (Tensor | null)[] = [
    inputs[0].requiresGrad ? reshape(matmulGradA(dy3, b3, s), a.shape) : null,
    inputs[1].requiresGrad ? reshape(matmulGradB(dy3, a3, s), b.shape) : null,
  ];
  if (inputs.length === 3) grads.push(inputs[2].requiresGrad ? sum(reshape(dy, [batch * m, n]), 0) : null);
  return grads;
}

function matmulGradA(dy3: Tensor, b3: Tensor, { transA, transB, broadcastB }: MatmulShape): Tensor {
  if (!transA) return matmul(dy3, b3, { transB: !transB }); // [m, k] = dy · op(B)ᵀ
  return broadcastB
    ? permute(matmul(dy3, b3, { transB: !transB }), [0, 2, 1]) // [k, m] = (dy · op(B)ᵀ)ᵀ: a shared B cannot lead a batched product
    : matmul(b3, dy3, { transA: transB, transB: true }); // [k, m] = op(B) · dyᵀ
}

function matmulGradB(dy3: Tensor, a3: Tensor, { batch, m, n, transA, transB, broadcastB }: MatmulShape): Tensor {
  if (broadcastB && batch > 1) {
    // Each batch contributes to the one shared B: sum their products.
    const perBatch = transB
      ? matmul(dy3, a3, { transA: true, transB: transA })
      : matmul(a3, dy3, { transA: !transA });
    return sum(perBatch, 0);
  }
  const a2 = broadcastB ? reshape(a3, a3.shape.slice(1)) : a3;
  const dy2 = broadcastB ? reshape(dy3, [m, n]) : dy3;
  return transB
    ? matmul(dy2, a2, { transA: true, transB: transA }) // [n, k] = dyᵀ · op(A)
    : matmul(a2, dy2, { transA: !transA }); // [k, n] = op(A)ᵀ · dy
}
