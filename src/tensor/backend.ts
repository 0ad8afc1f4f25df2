/**
 * The contract every backend implements: storage, a small closed set of primitive ops, and the fused
 * ops a transformer needs. Everything else (mean, transpose, linear, the model) is composed above it
 * in `ops.ts`. Backends see flat storage and the shapes they need, never `Tensor`s or autograd.
 *
 * Conventions: storage is row-major and contiguous; every op returns fresh storage that the caller
 * owns and eventually passes to `release`; shapes are plain arrays; masks and comparison results are
 * f32 0/1; integer data (token ids, targets) is i32.
 */

export type DType = 'f32' | 'i32';

/** A backend's handle on a block of device memory. Only the backend that made it may read it. */
export interface Storage {
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
}

export type UnaryOp = 'neg' | 'exp' | 'log' | 'sqrt' | 'tanh' | 'relu' | 'abs';
/** `gt` and `eq` give 1 where true, else 0. */
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'pow' | 'gt' | 'eq';
export type ReduceOp = 'sum' | 'max';
export type RandomDistribution = 'uniform' | 'normal';

/**
 * C = op(A) · op(B) (+ bias over the last axis), for `batch` independent products.
 * A is [batch, m, k] ([batch, k, m] when transA), B is [batch, k, n] ([batch, n, k] when transB),
 * C is [batch, m, n]; `bias` is [n]. With `broadcastB`, B has no batch axis and serves every batch.
 */
export interface MatmulShape {
  batch: number;
  m: number;
  k: number;
  n: number;
  transA: boolean;
  transB: boolean;
  broadcastB: boolean;
}

/** Work done in the matmul's own store, after the bias: C = gelu(op(A)·op(B) + bias) + residual. */
export interface MatmulEpilogue {
  /** GPT-2's tanh approximation. */
  gelu?: boolean;
  /** Added last; C's shape. */
  residual?: Storage;
}

/** Sizes of a `[B, H, T, hs]` attention problem. */
export interface AttentionShape {
  batch: number;
  heads: number;
  seqLen: number;
  headSize: number;
}

/** Queries for positions [position, position + newLen) against a cache holding position + newLen valid rows. */
export interface CachedAttentionShape {
  batch: number;
  heads: number;
  newLen: number;
  position: number;
  /** Rows the cache was allocated for: its shape is [B, H, maxLen, hs]. */
  maxLen: number;
  headSize: number;
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
}

export interface Backend {
  readonly name: 'cpu' | 'webgpu';
  /** What a human would call the device, e.g. "llvmpipe (LLVM 19, 256 bits)". */
  readonly description: string;

  // --- storage ---
  upload(data: Float32Array | Int32Array): Storage;
  read(x: Storage): Promise<Float32Array | Int32Array>;
  release(x: Storage): void;
  /** Submit recorded work; a no-op for backends that compute eagerly. */
  flush(): void;
  /** Resolves when all submitted work has finished (for benchmarks). */
  sync(): Promise<void>;

  // --- primitives ---
  fill(size: number, value: number, dtype: DType): Storage;
  /** Counter-based: element i depends only on (seed, i), so every backend draws the same numbers. */
  random(size: number, seed: number, distribution: RandomDistribution): Storage;
  cast(x: Storage, dtype: DType): Storage;
  unary(op: UnaryOp, x: Storage): Storage;
  /** Broadcasting as in NumPy; shapes are already padded to the output's rank. */
  binary(op: BinaryOp, a: Storage, aShape: readonly number[], b: Storage, bShape: readonly number[], outShape: readonly number[]): Storage;
  /** out = cond != 0 ? a : b, all three broadcast to outShape (shapes padded to its rank). */
  where(
    cond: Storage, condShape: readonly number[],
    a: Storage, aShape: readonly number[],
    b: Storage, bShape: readonly number[],
    outShape: readonly number[],
  ): Storage;
  /** Reduces one axis, keeping it with size 1. */
  reduce(op: ReduceOp, x: Storage, shape: readonly number[], axis: number): Storage;
  permute(x: Storage, shape: readonly number[], perm: readonly number[]): Storage;
  slice(x: Storage, shape: readonly number[], begin: readonly number[], size: readonly number[]): Storage;
  /** The inverse of slice: x placed at `begin` inside zeros of `outShape`. */
  pad(x: Storage, shape: readonly number[], begin: readonly number[], outShape: readonly number[]): Storage;

  // --- fused ops ---
  matmul(a: Storage, b: Storage, bias: Storage | null, shape: MatmulShape, epilogue?: MatmulEpilogue): Storage;

  /** Over the last axis of [rows, dim]; also returns what backward needs. */
  layerNorm(x: Storage, weight: Storage, bias: Storage, rows: number, dim: number, eps: number): { y: Storage; mean: Storage; rstd: Storage };
  layerNormBackward(
    dy: Storage, x: Storage, weight: Storage, mean: Storage, rstd: Storage, rows: number, dim: number,
  ): { dx: Storage; dWeight: Storage; dBias: Storage };

  /** GPT-2's tanh approximation. */
  gelu(x: Storage): Storage;
  geluBackward(x: Storage, dy: Storage): Storage;

  softmax(x: Storage, rows: number, dim: number): Storage;
  softmaxBackward(y: Storage, dy: Storage, rows: number, dim: number): Storage;

  /** Causal attention on q, k, v of [B, H, T, hs], scaled by 1/sqrt(hs); `logSumExp` [B, H, T] is kept for backward. */
  attention(q: Storage, k: Storage, v: Storage, shape: AttentionShape): { out: Storage; logSumExp: Storage };
  attentionBackward(
    dOut: Storage, q: Storage, k: Storage, v: Storage, out: Storage, logSumExp: Storage, shape: AttentionShape,
  ): { dq: Storage; dk: Storage; dv: Storage };
  /**
   * Appends the keys and values of qkv [B, newLen, 3C] (c_attn's output, C = H·hs: q, then k, then
   * v, each [H, hs] per token) to the caches [B, H, maxLen, hs] at `position`, in place, then
   * attends its queries to the caches' first position + newLen rows, causally. Returns
   * [B, newLen, C]: each token's heads side by side, the layout c_proj takes.
   */
  cachedAttention(qkv: Storage, kCache: Storage, vCache: Storage, shape: CachedAttentionShape): Storage;

  /** Gathers rows of table [vocab, dim] for i32 ids [n]. */
  embedding(ids: Storage, table: Storage, n: number, vocab: number, dim: number): Storage;
  /** The table's gradient: rows of dOut [n, dim] summed into [vocab, dim] (deterministic order). */
  embeddingBackward(ids: Storage, dOut: Storage, n: number, vocab: number, dim: number): Storage;

  /**
   * Weighted cross-entropy over the rows of logits [rows, vocab] with its gradient in the same pass:
   * loss = sum_r weight[r] * -log softmax(logits[r])[target[r]], dLogits[r] = (softmax - onehot) * weight[r].
   * The caller passes weight = mask / count, so the loss is the mean over counted rows; rows of
   * weight 0 are skipped (their gradient is 0).
   */
  crossEntropy(logits: Storage, targets: Storage, weights: Storage, rows: number, vocab: number): { loss: Storage; dLogits: Storage };

  /** One AdamW step in place on param, m and v (PyTorch semantics, decoupled weight decay). */
  adamw(param: Storage, grad: Storage, m: Storage, v: Storage, hyper: AdamWHyper): void;
}
