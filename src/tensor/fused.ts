/**
 * The fused ops this project exists for, at the Tensor level: each checks its shapes, calls one
 * backend op, and records what its backward rule (in grad-rules.ts) needs.
 */
import type { AdamWHyper, CachedAttentionShape } from './backend.js';
import { tensor } from './create.js';
import { isGradEnabled, record } from './graph.js';
import { add, matmul } from './ops.js';
import { sizeOf } from './shape.js';
import { Tensor } from './tensor.js';

function expectShape(name: string, t: Tensor, shape: readonly number[]): void {
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${name} must have shape [${shape}], got [${t.shape}]`);
  }
}

/** LayerNorm over the last axis, biased variance. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const C = x.shape[x.rank - 1];
  expectShape('layerNorm weight', weight, [C]);
  expectShape('layerNorm bias', bias, [C]);
  const rows = x.size / C;
  const { y, mean, rstd } = x.backend.layerNorm(x.storage, weight.storage, bias.storage, rows, C, eps);
  const out = new Tensor(x.backend, y, x.shape);
  const meanT = new Tensor(x.backend, mean, [rows]);
  const rstdT = new Tensor(x.backend, rstd, [rows]);
  record(out, 'layerNorm', [x, weight, bias], { rows, C }, [x, weight, meanT, rstdT]);
  meanT.dispose();
  rstdT.dispose();
  return out;
}

/** GELU, tanh approximation (as GPT-2). */
export function gelu(x: Tensor): Tensor {
  return record(new Tensor(x.backend, x.backend.gelu(x.storage), x.shape), 'gelu', [x], {}, [x]);
}

/**
 * x·W + b, then GELU and a residual added, each optional. With no graph to record (inference) all of
 * it is one matmul kernel (its epilogue); while recording, GELU and the add run as their own ops,
 * since GELU's backward needs its input.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null, { gelu: withGelu = false, residual }: { gelu?: boolean; residual?: Tensor } = {}): Tensor {
  const recording = isGradEnabled() && [x, weight, bias, residual].some((t) => t?.requiresGrad);
  if (!recording) return matmul(x, weight, { bias: bias ?? undefined, epilogue: { gelu: withGelu, residual } });
  const y = matmul(x, weight, { bias: bias ?? undefined });
  const activated = withGelu ? gelu(y) : y;
  return residual ? add(activated, residual) : activated;
}

/** Softmax over the last axis. */
export function softmax(x: Tensor): Tensor {
  const dim = x.shape[x.rank - 1];
  const rows = x.size / dim;
  const out = new Tensor(x.backend, x.backend.softmax(x.storage, rows, dim), x.shape);
  return record(out, 'softmax', [x], { rows, dim }, [out]);
}

/** Causal self-attention on q, k, v of [B, H, T, hs]. */
export function attention(q: Tensor, k: Tensor, v: Tensor): Tensor {
  if (q.rank !== 4) throw new Error(`attention expects q of [B, H, T, hs], got [${q.shape}]`);
  expectShape('attention k', k, q.shape);
  expectShape('attention v', v, q.shape);
  const [B, H, T, hs] = q.shape;
  const shape = { B, H, T, hs };
  const { out, logSumExp } = q.backend.attention(q.storage, k.storage, v.storage, shape);
  const outT = new Tensor(q.backend, out, q.shape);
  const lse = new Tensor(q.backend, logSumExp, [B, H, T]);
  record(outT, 'attention', [q, k, v], shape, [q, k, v, outT, lse]);
  lse.dispose();
  return outT;
}

function expectPosition(position: number): void {
  if (!Number.isInteger(position) || position < 0) throw new Error(`cache position must be a non-negative integer, got ${position}`);
}

/** Caches [slots, H, maxLen, hs], k and v alike. */
function cacheShape(what: string, kCache: Tensor, vCache: Tensor): { slots: number; H: number; maxLen: number; hs: number } {
  if (kCache.rank !== 4) throw new Error(`${what} expects caches of [slots, H, maxLen, hs], got [${kCache.shape}]`);
  expectShape(`${what} value cache`, vCache, kCache.shape);
  const [slots, H, maxLen, hs] = kCache.shape;
  return { slots, H, maxLen, hs };
}

/** The shape of a cached call: qkv [B, T, 3C] against cache sequences [slot, slot + B) with H·hs = C. */
function cachedShape(what: string, qkv: Tensor, kCache: Tensor, vCache: Tensor, position: number, slot: number): CachedAttentionShape {
  const { slots, H, maxLen, hs } = cacheShape(what, kCache, vCache);
  expectPosition(position);
  if (qkv.rank !== 3) throw new Error(`${what} expects qkv of [B, T, 3C], got [${qkv.shape}]`);
  const [B, T] = qkv.shape;
  expectShape(`${what} qkv`, qkv, [B, T, 3 * H * hs]);
  if (!Number.isInteger(slot) || slot < 0 || slot + B > slots) throw new Error(`${what}: ${B} sequences from slot ${slot} do not fit caches of ${slots}`);
  if (position + T > maxLen) throw new Error(`cache of ${maxLen} positions cannot take ${T} more at position ${position}`);
  return { B, H, T, position, maxLen, hs, slot };
}

/**
 * Appends the keys and values of qkv [B, T, 3C] (c_attn's output: q, k, v side by side, each [H, hs]
 * per token) to preallocated caches [slots, H, maxLen, hs] at `position` of sequences
 * [slot, slot + B), in place, then attends its queries (positions [position, position + T)) to those
 * sequences' first position + T rows. Returns [B, T, C], the heads side by side. Inference only.
 */
export function cachedAttention(qkv: Tensor, kCache: Tensor, vCache: Tensor, position: number, slot = 0): Tensor {
  if (isGradEnabled() && qkv.requiresGrad) throw new Error('cachedAttention is for inference: call it inside noGrad()');
  const shape = cachedShape('cachedAttention', qkv, kCache, vCache, position, slot);
  const { B, T, H, hs } = shape;
  return new Tensor(qkv.backend, qkv.backend.cachedAttention(qkv.storage, kCache.storage, vCache.storage, shape), [B, T, H * hs]);
}

/**
 * One decode token per row of qkv [B, 1, 3C], row b in cache sequence slots[b] (i32, B distinct
 * slots) at positions[b] (i32, B values, each < `longest`, the caller's bound): appends each row's key
 * and value to its sequence in place and attends its query to that sequence's rows 0..positions[b].
 * Returns [B, 1, C]. Inference only.
 */
export function slotAttention(qkv: Tensor, kCache: Tensor, vCache: Tensor, slots: Tensor, positions: Tensor, longest: number): Tensor {
  if (isGradEnabled() && qkv.requiresGrad) throw new Error('slotAttention is for inference: call it inside noGrad()');
  const { slots: slotCount, H, maxLen, hs } = cacheShape('slotAttention', kCache, vCache);
  const B = qkv.shape[0];
  expectShape('slotAttention qkv', qkv, [B, 1, 3 * H * hs]);
  for (const [name, t] of [['slots', slots], ['positions', positions]] as const) {
    if (t.dtype !== 'i32' || t.size !== B) throw new Error(`slotAttention ${name} must be ${B} i32 values, got ${t.dtype} [${t.shape}]`);
  }
  if (B > slotCount) throw new Error(`slotAttention: ${B} rows exceed caches of ${slotCount} slots`);
  if (!Number.isInteger(longest) || longest < 1 || longest > maxLen) throw new Error(`slotAttention: longest must be an integer in [1, ${maxLen}], got ${longest}`);
  const shape = { B, H, hs, slots: slotCount, maxLen, longest };
  return new Tensor(qkv.backend, qkv.backend.slotAttention(qkv.storage, kCache.storage, vCache.storage, slots.storage, positions.storage, shape), [B, 1, H * hs]);
}

/** Rows of table [V, C] for each i32 id; the result has shape [...ids.shape, C]. */
export function embedding(ids: Tensor, table: Tensor): Tensor {
  if (ids.dtype !== 'i32') throw new Error(`embedding ids must be i32, got ${ids.dtype}`);
  if (table.rank !== 2) throw new Error(`embedding table must be [V, C], got [${table.shape}]`);
  const [V, C] = table.shape;
  const n = ids.size;
  const out = new Tensor(table.backend, table.backend.embedding(ids.storage, table.storage, n, V, C), [...ids.shape, C]);
  return record(out, 'embedding', [table], { n, V, C }, [ids]);
}

/**
 * Mean cross-entropy of logits [..., V] against i32 targets over the positions whose mask is 1.
 * The mask comes from the host (the collate function made it), so an empty mask is caught here.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, mask: Float32Array): Tensor {
  const V = logits.shape[logits.rank - 1];
  const rows = logits.size / V;
  if (targets.dtype !== 'i32') throw new Error(`crossEntropy targets must be i32, got ${targets.dtype}`);
  if (targets.size !== rows || mask.length !== rows) {
    throw new Error(`crossEntropy: ${rows} rows of logits but ${targets.size} targets and ${mask.length} mask values`);
  }
  let count = 0;
  for (const m of mask) count += m;
  if (count === 0) throw new Error('crossEntropy: the loss mask selects no position (every target is padding)');
  const weights = tensor(mask.map((m) => m / count), [rows], { backend: logits.backend });
  const { loss, dLogits } = logits.backend.crossEntropy(logits.storage, targets.storage, weights.storage, rows, V);
  weights.dispose();
  const lossT = new Tensor(logits.backend, loss, []);
  const grad = new Tensor(logits.backend, dLogits, logits.shape);
  record(lossT, 'crossEntropy', [logits], {}, [grad]);
  grad.dispose();
  return lossT;
}

/** One AdamW step, in place on the parameter and its moments; the gradient is multiplied by the scalar `gradScale` first if given. */
export function adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hyper: AdamWHyper, gradScale: Tensor | null = null): void {
  for (const [name, t] of [['grad', grad], ['m', m], ['v', v]] as const) {
    if (t.size !== sizeOf(param.shape)) throw new Error(`adamw: ${name} has shape [${t.shape}], the parameter [${param.shape}]`);
  }
  if (gradScale !== null && gradScale.size !== 1) throw new Error(`adamw: the gradient scale has shape [${gradScale.shape}], not one element`);
  param.backend.adamw(param.storage, grad.storage, m.storage, v.storage, hyper, gradScale?.storage ?? null);
}
