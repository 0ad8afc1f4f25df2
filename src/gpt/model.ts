/**
 * GPT-2: pre-LayerNorm transformer blocks, GELU (tanh), causal attention scaled by 1/sqrt(hs),
 * learned positions, and an output head tied to the token embedding. Field names are the Hugging
 * Face checkpoint's, so `namedParameters()` yields `wte.weight`, `h.0.attn.c_attn.weight`, …
 *
 * Sizes: B batch, T new tokens, C = n_embd, H = n_head, hs = C / H, V = vocab_size.
 */
import { Dropout, Embedding, LayerNorm, Linear, OutputHead, type WeightDType } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import type { Backend } from '../tensor/backend.js';
import { tensor } from '../tensor/create.js';
import { attention, cachedAttention, embedding, slotAttention } from '../tensor/fused.js';
import { add, concat, permute, reshape, slice, split } from '../tensor/ops.js';
import { recomputed } from '../tensor/recompute.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { GPT2Config } from './config.js';
import type { KVCache } from './kv-cache.js';
import type { KVCachePool } from './kv-cache-pool.js';

export interface ModelOptions {
  /** Keep an output head of its own instead of reusing wte (the notebook's book-style model does). */
  untiedHead?: boolean;
  /** Dropout on embeddings and residual branches; 0 (the default) for fine-tuning. */
  dropout?: number;
  seed?: number;
  /**
   * Storage of the weight matrices (wte, wpe, the linears' weights, an untied head): f16 or bf16
   * halves their memory and the bytes a decoding step reads, computing in f32 (f16 keeps 11 bits of
   * significand within ±65504, bf16 8 bits over f32's range); such weights cannot be fine-tuned.
   * Biases and LayerNorm parameters stay f32. Default f32.
   */
  dtype?: WeightDType;
}

/** Rows decoding one token each, row b in slots[b] at positions[b] (all below `longest`). */
interface DecodingRows {
  slots: Tensor;
  positions: Tensor;
  longest: number;
}

/**
 * A layer's cache: the batch's sequences from `slot` on, all at one position; or one token per row,
 * each in its own slot at its own position (continuous batching's decode step); or a step that also
 * takes in whole prompts (`joining`: after the decoding rows, each prompt's tokens into its own slot).
 */
type LayerCache =
  | { k: Tensor; v: Tensor; position: number; slot: number }
  | ({ k: Tensor; v: Tensor } & DecodingRows)
  | { k: Tensor; v: Tensor; decoding: DecodingRows | null; joining: readonly { slot: number; position: number; tokens: number }[] };

/**
 * Attention of a step that decodes some sequences and takes in others' prompts, qkv [1, N, 3C] with
 * the decoding rows first: those attend together (slotAttention), each prompt alone in its slot
 * (cachedAttention, as its prefill on its own would). Returns [1, N, C].
 */
function stepAttention(qkv: Tensor, { k, v, decoding, joining }: Extract<LayerCache, { joining: unknown }>): Tensor {
  const [, N, C3] = qkv.shape;
  const rows = (start: number, count: number) => (count === N ? qkv : slice(qkv, [0, start, 0], [1, count, C3]));
  const parts: Tensor[] = [];
  let start = 0;
  if (decoding) {
    const D = decoding.slots.size;
    const attended = slotAttention(reshape(rows(0, D), [D, 1, C3]), k, v, decoding.slots, decoding.positions, decoding.longest); // [D, 1, C]
    parts.push(reshape(attended, [1, D, C3 / 3]));
    start = D;
  }
  for (const { slot, position, tokens } of joining) {
    parts.push(cachedAttention(rows(start, tokens), k, v, position, slot)); // [1, tokens, C]
    start += tokens;
  }
  return parts.length === 1 ? parts[0] : concat(parts, 1);
}

class CausalSelfAttention extends Module {
  c_attn: Linear;
  c_proj: Linear;

  constructor(readonly config: GPT2Config, backend: Backend, dtype: WeightDType) {
    super();
    this.c_attn = new Linear(config.n_embd, 3 * config.n_embd, backend, { dtype });
    this.c_proj = new Linear(config.n_embd, config.n_embd, backend, { dtype });
  }

  /** With `residual`, returns residual + attention (the add fused into c_proj at inference). */
  forward(x: Tensor, cache?: LayerCache, residual?: Tensor): Tensor {
    const [B, T, C] = x.shape;
    const H = this.config.n_head;
    const hs = C / H;
    const qkv = this.c_attn.forward(x); // [B, T, 3C]: q, k, v, each [H, hs] per token
    // The cached kernels append k and v to the cache, read q, k, v in place and return [B, T, C]:
    // no copies while decoding.
    if (cache && 'joining' in cache) return this.c_proj.forward(stepAttention(qkv, cache), { residual });
    if (cache && 'slots' in cache) {
      return this.c_proj.forward(slotAttention(qkv, cache.k, cache.v, cache.slots, cache.positions, cache.longest), { residual });
    }
    if (cache) return this.c_proj.forward(cachedAttention(qkv, cache.k, cache.v, cache.position, cache.slot), { residual });
    const heads = permute(reshape(qkv, [B, T, 3, H, hs]), [2, 0, 3, 1, 4]); // [3, B, H, T, hs]
    const [q, k, v] = split(heads, [1, 1, 1], 0).map((t) => reshape(t, [B, H, T, hs]));
    const y = attention(q, k, v); // [B, H, T, hs]
    const merged = reshape(permute(y, [0, 2, 1, 3]), [B, T, C]); // [B, H, T, hs] → [B, T, H, hs] → [B, T, C]
    return this.c_proj.forward(merged, { residual });
  }
}

class MLP extends Module {
  c_fc: Linear;
  c_proj: Linear;

  constructor(config: GPT2Config, backend: Backend, dtype: WeightDType) {
    super();
    this.c_fc = new Linear(config.n_embd, 4 * config.n_embd, backend, { dtype });
    this.c_proj = new Linear(4 * config.n_embd, config.n_embd, backend, { dtype });
  }

  /** With `residual`, returns residual + MLP(x). */
  forward(x: Tensor, residual?: Tensor): Tensor {
    return this.c_proj.forward(this.c_fc.forward(x, { gelu: true }), { residual });
  }
}

class Block extends Module {
  ln_1: LayerNorm;
  attn: CausalSelfAttention;
  ln_2: LayerNorm;
  mlp: MLP;
  private readonly dropout: Dropout;

  constructor(config: GPT2Config, backend: Backend, dropout: Dropout, dtype: WeightDType) {
    super();
    this.ln_1 = new LayerNorm(config.n_embd, backend, config.layer_norm_epsilon);
    this.attn = new CausalSelfAttention(config, backend, dtype);
    this.ln_2 = new LayerNorm(config.n_embd, backend, config.layer_norm_epsilon);
    this.mlp = new MLP(config, backend, dtype);
    this.dropout = dropout;
  }

  forward(x: Tensor, cache?: LayerCache): Tensor {
    if (this.dropout.active) {
      const attended = add(x, this.dropout.forward(this.attn.forward(this.ln_1.forward(x), cache)));
      return add(attended, this.dropout.forward(this.mlp.forward(this.ln_2.forward(attended))));
    }
    // Without dropout between them, each residual add rides in its branch's last matmul.
    const attended = this.attn.forward(this.ln_1.forward(x), cache, x);
    return this.mlp.forward(this.ln_2.forward(attended), attended);
  }
}

export interface ForwardOptions {
  /** Attend through (and append to) this cache; positions continue from its length. */
  cache?: KVCache;
  /**
   * Rows in slots of a pooled cache, row b in slots[b] (distinct), each continuing from its slot's
   * length: sequences at different positions decode in one step (continuous batching). A call of more
   * than one token (a prefill) takes one row. Each row computes exactly what it would alone with a
   * cache of its own.
   */
  pooled?: { pool: KVCachePool; slots: readonly number[] };
  /** Compute logits for the last position only ([B, 1, V]): all that sampling needs. */
  lastOnly?: boolean;
}

/**
 * GPT-2: token and position embeddings, pre-LayerNorm blocks, the output head tied to the token
 * embedding (or a separate one). Parameter names match the Hugging Face checkpoint's; `dispose()`
 * frees the weights' device memory.
 */
export class GPT2 extends Module {
  wte: Embedding;
  wpe: Embedding;
  h: Block[];
  ln_f: LayerNorm;
  /** The output head: the token embedding's matrix unless untied; a LoRA adapter may sit on it. */
  lm_head: OutputHead;
  /**
   * While training, keep only each block's input and recompute its activations during backward:
   * a step's activation memory becomes one block's, for one more forward pass. Needs dropout 0 (the
   * model's and any adapter's), since the recomputation must draw nothing new.
   */
  checkpointActivations = false;
  private readonly dropout: Dropout;

  constructor(readonly config: GPT2Config, readonly backend: Backend, options: ModelOptions = {}) {
    super();
    this.dropout = new Dropout(options.dropout ?? 0, options.seed ?? 0);
    const dtype = options.dtype ?? 'f32';
    this.wte = new Embedding(config.vocab_size, config.n_embd, backend, dtype);
    this.wpe = new Embedding(config.n_positions, config.n_embd, backend, dtype);
    this.h = Array.from({ length: config.n_layer }, () => new Block(config, backend, this.dropout, dtype));
    this.ln_f = new LayerNorm(config.n_embd, backend, config.layer_norm_epsilon);
    // An untied head is stored [V, C] like wte (the checkpoint's layout) and has no bias.
    this.lm_head = new OutputHead(config.n_embd, config.vocab_size, backend, { untied: options.untiedHead, dtype });
  }

  /** ids: i32 [B, T] → logits [B, T, V] (or [B, 1, V] with lastOnly). */
  forward(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return this.head(this.hidden(ids, options));
  }

  /**
   * The output head: final hidden states [..., C] → logits [..., V]. Training applies it to the
   * positions whose targets count alone, since at V = 50257 it is most of a small model's work.
   */
  head(x: Tensor): Tensor {
    return this.lm_head.forward(x, this.wte.weight);
  }

  /**
   * Continuous batching's step: each sequence, in its own slot of `pool`, feeds `ids` from its slot's
   * length on: a sequence that is decoding its last token, one that joins its whole prompt (into an
   * empty slot). The matmuls, LayerNorms and embeddings run once over all of the step's tokens; a
   * decoding sequence attends with the others in one slotAttention per layer, a joining one alone
   * with cachedAttention, as its prefill on its own does. Returns, in the given order, the final
   * hidden state (after ln_f) of each sequence's last token: [S, C], for head().
   */
  stepHidden(pool: KVCachePool, sequences: readonly { slot: number; ids: readonly number[] }[]): Tensor {
    const C = this.config.n_embd;
    if (sequences.length === 0 || sequences.some((q) => q.ids.length === 0) || new Set(sequences.map((q) => q.slot)).size !== sequences.length) {
      throw new Error('stepHidden needs at least one sequence, each with tokens and a slot of its own');
    }
    const start = (q: { slot: number }) => pool.length(q.slot);
    const decoding = sequences.filter((q) => start(q) > 0 && q.ids.length === 1);
    const joining = sequences.filter((q) => !decoding.includes(q));
    const order = [...decoding, ...joining];
    const last = Math.max(...order.map((q) => start(q) + q.ids.length - 1));
    if (last >= this.config.n_positions) throw new Error(`position ${last} exceeds the model's context of ${this.config.n_positions}`);
    const ids = order.flatMap((q) => q.ids);
    const positionIds = order.flatMap((q) => q.ids.map((_, i) => start(q) + i));
    const i32 = (values: readonly number[], shape: number[]) => tensor(Int32Array.from(values), shape, { backend: this.backend });
    let x = this.dropout.forward(add(this.wte.forward(i32(ids, [1, ids.length])), this.wpe.forward(i32(positionIds, [1, ids.length])))); // [1, N, C]
    const decodingRows: DecodingRows | null = decoding.length === 0 ? null : {
      slots: i32(decoding.map((q) => q.slot), [decoding.length]),
      positions: i32(decoding.map(start), [decoding.length]),
      longest: Math.max(...decoding.map(start)) + 1,
    };
    const joined = joining.map((q) => ({ slot: q.slot, position: start(q), tokens: q.ids.length }));
    this.h.forEach((block, layer) => {
      const { k, v } = pool.layer(layer);
      x = tidy(() => block.forward(x, { k, v, decoding: decodingRows, joining: joined }));
    });
    const lastRows = new Map<object, number>();
    let end = 0;
    for (const q of order) lastRows.set(q, (end += q.ids.length) - 1);
    for (const q of order) pool.advance(q.slot, q.ids.length);
    // Each sequence's last row, gathered as an embedding lookup in the step's rows.
    const wanted = sequences.map((q) => lastRows.get(q)!);
    const flat = reshape(x, [ids.length, C]); // [1, N, C] → [N, C]
    const picked = wanted.every((row, i) => row === i) && wanted.length === ids.length ? flat : embedding(i32(wanted, [wanted.length]), flat); // [S, C]
    return this.ln_f.forward(picked);
  }

  /** ids: i32 [B, T] → final hidden states, after ln_f: [B, T, C] (or [B, 1, C] with lastOnly). */
  hidden(ids: Tensor, { cache, pooled, lastOnly = false }: ForwardOptions = {}): Tensor {
    const [B, T] = ids.shape;
    if (pooled && (cache || pooled.slots.length !== B || new Set(pooled.slots).size !== B || (T > 1 && B > 1))) {
      throw new Error(`pooled needs one distinct slot per row (${B} rows of ${T} tokens; one row for more than one token) and no shared cache`);
    }
    // Each row's first position: its slot's length, or the shared cache's.
    const starts = pooled ? pooled.slots.map((slot) => pooled.pool.length(slot)) : [cache?.length ?? 0];
    const last = Math.max(...starts) + T - 1;
    if (last >= this.config.n_positions) throw new Error(`position ${last} exceeds the model's context of ${this.config.n_positions}`);
    const positionIds = Int32Array.from({ length: starts.length * T }, (_, i) => starts[Math.floor(i / T)] + (i % T));
    const positions = tensor(positionIds, pooled ? [B, T] : [T], { backend: this.backend });
    const slots = pooled && T === 1 ? tensor(Int32Array.from(pooled.slots), [B], { backend: this.backend }) : null;
    let x = this.dropout.forward(add(this.wte.forward(ids), this.wpe.forward(positions))); // [B, T, C] + [T, C] or [B, T, C]
    const layerCache = (layer: number): LayerCache | undefined => {
      if (!pooled) return cache && { ...cache.layer(layer), position: starts[0], slot: 0 };
      const { k, v } = pooled.pool.layer(layer);
      return slots ? { k, v, slots, positions, longest: last + 1 } : { k, v, position: starts[0], slot: pooled.slots[0] };
    };
    if (this.checkpointActivations && this.dropout.active) throw new Error('checkpointActivations needs dropout 0: the recomputation must draw the same masks');
    this.h.forEach((block, layer) => {
      const blockCache = layerCache(layer);
      // A block's intermediates are freed as it returns, not at the end of the caller's scope: while
      // training, what backward needs stays alive through the graph's own handles (graph.ts).
      x = tidy(() => this.checkpointActivations && blockCache === undefined
        ? recomputed((input) => block.forward(input), x, block.parameters())
        : block.forward(x, blockCache));
    });
    cache?.advance(T);
    if (pooled) for (const slot of pooled.slots) pooled.pool.advance(slot, T);
    if (lastOnly && T > 1) x = slice(x, [0, T - 1, 0], [B, 1, this.config.n_embd]); // [B, T, C] → [B, 1, C]
    return this.ln_f.forward(x);
  }
}
