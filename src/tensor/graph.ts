/** The autograd graph: which op made a tensor, from which inputs, and what its backward rule needs. */
import type { AttentionShape, MatmulShape } from './backend.js';
import { keep } from './scope.js';
import type { Tensor } from './tensor.js';

type NoAttrs = Record<string, never>;

/** Every differentiable op and what its node remembers besides inputs and saved tensors. */
export interface OpAttrs {
  neg: NoAttrs;
  exp: NoAttrs;
  log: NoAttrs;
  sqrt: NoAttrs;
  tanh: NoAttrs;
  relu: NoAttrs;
  abs: NoAttrs;
  add: NoAttrs;
  sub: NoAttrs;
  mul: NoAttrs;
  div: NoAttrs;
  maximum: NoAttrs;
  minimum: NoAttrs;
  pow: NoAttrs;
  where: NoAttrs;
  sum: { axis: number };
  max: { axis: number };
  reshape: NoAttrs;
  permute: { perm: readonly number[] };
  slice: { begin: readonly number[]; size: readonly number[] };
  pad: { begin: readonly number[]; outShape: readonly number[] };
  matmul: MatmulShape;
  layerNorm: { rows: number; dim: number };
  gelu: NoAttrs;
  softmax: { rows: number; dim: number };
  attention: AttentionShape;
  embedding: { n: number; vocab: number; dim: number };
  crossEntropy: NoAttrs;
}

export type OpName = keyof OpAttrs;

export interface GraphNode<K extends OpName = OpName> {
  op: K;
  inputs: Tensor[];
  /** Tensors the backward rule reads (extra handles on shared storage), released once it has run. */
  saved: Tensor[];
  attrs: OpAttrs[K];
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording a graph: for inference and optimizer updates. */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/**
 * Attaches a node to `out` when any input needs a gradient. `saved` tensors are shared handles made
 * here, so the scope that disposes the forward's intermediates cannot free what backward needs.
 */
export function record<K extends OpName>(out: Tensor, op: K, inputs: Tensor[], attrs: OpAttrs[K], saved: Tensor[] = []): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) {
    return out;
  }
  out.requiresGrad = true;
  out.node = { op, inputs, saved: saved.map((t) => keepShared(t)), attrs } as GraphNode;
  return out;
}

function keepShared(t: Tensor): Tensor {
  // A saved handle belongs to the graph, not to any scope.
  return keep(t.share());
}
