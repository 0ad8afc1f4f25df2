/** The autograd graph: which op made a tensor, from which inputs, and what its backward rule needs. */
import type { AttentionShape, MatmulShape } from './backend.js';
import { keep } from './scope.js';
import type { Tensor } from './tensor.js';

type NoAttrs = Record<string, never>;

/** Gradients known to be exactly one everywhere: backward's seed (see isUnitGradient). */
const unitGradients = new WeakSet<Tensor>();

/** Marks `t` as a gradient of ones; returns it. */
export function markUnitGradient(t: Tensor): Tensor {
  unitGradients.add(t);
  return t;
}

/** Whether `dy` is backward's seed: a rule that would only multiply by it may pass its result on unscaled. */
export const isUnitGradient = (dy: Tensor): boolean => unitGradients.has(dy);

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
  layerNorm: { rows: number; C: number };
  gelu: NoAttrs;
  softmax: { rows: number; dim: number };
  attention: AttentionShape;
  embedding: { n: number; V: number; C: number };
  crossEntropy: NoAttrs;
  /** Its rule runs the recorded function again and differentiates it (see recompute.ts). */
  recompute: { backward: (dy: Tensor, x: Tensor) => (Tensor | null)[] };
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
  return withGradMode(false, fn);
}

/** Runs fn recording a graph again, inside a noGrad (a backward rule that differentiates a recomputation). */
export function withGrad<T>(fn: () => T): T {
  return withGradMode(true, fn);
}

function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = enabled;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/**
 * How many live things can still reach each node: its own tensor until disposed, plus one per use
 * as an input of another node not yet freed. At zero no backward can reach the node any more, so
 * what it saved is released (a graph that is recorded but never differentiated frees itself when
 * its last tensor is disposed). backward() consumes nodes without this count.
 */
const holders = new WeakMap<GraphNode, number>();

/**
 * Attaches a node to `out` when any input needs a gradient. `saved` tensors are shared handles made
 * here, so the scope that disposes the forward's intermediates cannot free what backward needs.
 */
export function record<K extends OpName>(out: Tensor, op: K, inputs: Tensor[], attrs: OpAttrs[K], saved: Tensor[] = []): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) {
    return out;
  }
  out.requiresGrad = true;
  out.node = { op, inputs, saved: saved.map((t) => keepShared(t)), attrs };
  holders.set(out.node, 1);
  for (const input of inputs) {
    if (input.node !== null) holders.set(input.node, (holders.get(input.node) ?? 0) + 1);
  }
  return out;
}

/**
 * Called by Tensor.dispose: drops the tensor's hold on its node and frees, iteratively, every node
 * of the graph that nothing live can reach any more.
 */
export function releaseNode(t: Tensor): void {
  if (t.node === null) return;
  const stack: GraphNode[] = [t.node];
  while (stack.length > 0) {
    const node = stack.pop()!;
    const left = (holders.get(node) ?? 1) - 1;
    if (left > 0) {
      holders.set(node, left);
      continue;
    }
    holders.delete(node);
    for (const s of node.saved) s.dispose();
    node.saved = [];
    for (const input of node.inputs) if (input.node !== null) stack.push(input.node);
  }
  if (!holders.has(t.node)) t.node = null;
}

function keepShared(t: Tensor): Tensor {
  // A saved handle belongs to the graph, not to any scope.
  return keep(t.share());
}
