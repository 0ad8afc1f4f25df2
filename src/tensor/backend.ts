/**
 * The contract every backend implements: storage, a small closed set of primitive ops, and the fused
 * ops a transformer needs. Everything else (mean, transpose, linear, the model) is composed above it
 * in `ops.ts`. Backends see flat storage and the shapes they need, never `Tensor`s or autograd.
 *
 * Conventions: storage is row-major and contiguous; every op returns fresh storage that the caller
 * owns and eventually passes to `release` (a `view` shares its base's memory, and only `copy` and
 * `adamw` write in place); shapes are plain arrays; masks and comparison results are
 * f32 0/1; integer data (token ids, targets) is i32.
 *
 * f16 and bf16 are storage types for frozen weights, read into f32 arithmetic: only matmul's B and
 * the embedding's table accept them, and no op produces them. WebGPU packs two to a u32 word (read
 * with core WGSL only, so every adapter can); the CPU backend holds the bit patterns.
 */

export type DType = 'f32' | 'i32' | 'f16' | 'bf16';
/** The 16-bit storage types of frozen weights. */
export type HalfDType = 'f16' | 'bf16';
/** The types ops compute in and produce. */
export type ComputeDType = Exclude<DType, HalfDType>;

export const isHalfDType = (dtype: DType): dtype is HalfDType => dtype === 'f16' || dtype === 'bf16';

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
export interface MatmulEpilogue<S extends Storage = Storage> {
  /** GPT-2's tanh approximation. */
  gelu?: boolean;
  /** Added last; C's shape. */
  residual?: S;
}

/** Sizes of a `[B, H, T, hs]` attention problem. */
export interface AttentionShape {
  B: number;
  H: number;
  T: number;
  hs: number;
}

/**
 * T new queries, for positions [position, position + T), against a cache holding position + T valid
 * rows. The batch's B sequences sit in cache sequences [slot, slot + B) of caches that may hold more.
 */
export interface CachedAttentionShape {
  B: number;
  H: number;
  T: number;
  position: number;
  /** Rows the cache was allocated for: its shape is [slots, H, maxLen, hs], slots ≥ slot + B. */
  maxLen: number;
  hs: number;
  slot: number;
}

/**
 * One new token per row, each of the B rows decoding in its own sequence (slot) of pooled caches
 * [slots, H, maxLen, hs] at its own position.
 */
export interface SlotAttentionShape {
  B: number;
  H: number;
  hs: number;
  slots: number;
  maxLen: number;
  /** Keys the longest row attends to: 1 + the largest position (bounds the work per row). */
  longest: number;
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

/**
 * Generic over the backend's storage type, so that each backend's op table is checked against this
 * contract: a missing or mistyped op is a compile error. Code above the backends uses `Backend`
 * (storage of any backend, never inspected).
 */
export interface Backend<S extends Storage = Storage> {
  readonly name: 'cpu' | 'webgpu';
  /** What a human would call the device, e.g. "llvmpipe (LLVM 19, 256 bits)". */
  readonly description: string;

  // --- storage ---
  /** A Uint16Array holds f16 bit patterns, a Bfloat16Array bf16 ones (see tensor/half.ts): 16-bit storage. */
  upload(data: Float32Array | Int32Array | Uint16Array): S;
  /** 16-bit storage reads back widened to f32 (exactly). */
  read(x: S): Promise<Float32Array | Int32Array>;
  release(x: S): void;
  /** Submit recorded work; a no-op for backends that compute eagerly. */
  flush(): void;
  /** Resolves when all submitted work has finished (for benchmarks). */
  sync(): Promise<void>;
  /**
   * Gives back to the device the memory kept for reuse that no storage holds (WebGPU's pooled
   * buffers): after a phase whose temporaries no later step allocates again, such as moving a model's
   * parameters into one buffer. A no-op where nothing is kept.
   */
  releaseCached(): void;
  /** Elements one storage may hold (one device buffer: WebGPU's maxBufferSize). */
  readonly maxStorageSize: number;
  /** Elements at which a view may start: kernels bind a view where it begins. */
  readonly viewAlignment: number;
  /**
   * `size` elements of `base` from element `offset` (a multiple of viewAlignment), sharing its memory:
   * releasing the view leaves `base` alone, and `base` must outlive it.
   */
  view(base: S, offset: number, size: number): S;
  /** Writes src's elements into dst, in place (same size and dtype). */
  copy(src: S, dst: S): void;

  // --- primitives ---
  fill(size: number, value: number, dtype: ComputeDType): S;
  /** Counter-based: element i depends only on (seed, i), so every backend draws the same numbers. */
  random(size: number, seed: number, distribution: RandomDistribution): S;
  cast(x: S, dtype: ComputeDType): S;
  unary(op: UnaryOp, x: S): S;
  /** Broadcasting as in NumPy; shapes are already padded to the output's rank. */
  binary(op: BinaryOp, a: S, aShape: readonly number[], b: S, bShape: readonly number[], outShape: readonly number[]): S;
  /** out = cond != 0 ? a : b, all three broadcast to outShape (shapes padded to its rank). */
  where(
    cond: S, condShape: readonly number[],
    a: S, aShape: readonly number[],
    b: S, bShape: readonly number[],
    outShape: readonly number[],
  ): S;
  /** Reduces one axis, keeping it with size 1. */
  reduce(op: ReduceOp, x: S, shape: readonly number[], axis: number): S;
  permute(x: S, shape: readonly number[], perm: readonly number[]): S;
  slice(x: S, shape: readonly number[], begin: readonly number[], size: readonly number[]): S;
  /** The inverse of slice: x placed at `begin` inside zeros of `outShape`. */
  pad(x: S, shape: readonly number[], begin: readonly number[], outShape: readonly number[]): S;

  // --- fused ops ---
  /** B may be f16 or bf16 (a frozen weight); A, the bias and the residual are f32. */
  matmul(a: S, b: S, bias: S | null, shape: MatmulShape, epilogue?: MatmulEpilogue<S>): S;

  /** Over the last axis of [rows, C]; also returns what backward needs. */
  layerNorm(x: S, weight: S, bias: S, rows: number, C: number, eps: number): { y: S; mean: S; rstd: S };
  layerNormBackward(
    dy: S, x: S, weight: S, mean: S, rstd: S, rows: number, C: number,
  ): { dx: S; dWeight: S; dBias: S };

  /** GPT-2's tanh approximation. */
  gelu(x: S): S;
  geluBackward(x: S, dy: S): S;

  softmax(x: S, rows: number, dim: number): S;
  softmaxBackward(y: S, dy: S, rows: number, dim: number): S;

  /** Causal attention on q, k, v of [B, H, T, hs], scaled by 1/sqrt(hs); `logSumExp` [B, H, T] is kept for backward. */
  attention(q: S, k: S, v: S, shape: AttentionShape): { out: S; logSumExp: S };
  attentionBackward(
    dOut: S, q: S, k: S, v: S, out: S, logSumExp: S, shape: AttentionShape,
  ): { dq: S; dk: S; dv: S };
  /**
   * Appends the keys and values of qkv [B, T, 3C] (c_attn's output, C = H·hs: q, then k, then
   * v, each [H, hs] per token) to the caches [B, H, maxLen, hs] at `position`, in place, then
   * attends its queries to the caches' first position + T rows, causally. Returns
   * [B, T, C]: each token's heads side by side, the layout c_proj takes.
   */
  cachedAttention(qkv: S, kCache: S, vCache: S, shape: CachedAttentionShape): S;
  /**
   * Continuous batching's decode step: row b of qkv [B, 1, 3C] writes its key and value into cache
   * sequence slots[b] (i32 [B], distinct) at positions[b] (i32 [B], each < longest), in place, then
   * attends its query to that sequence's rows 0..positions[b]. Returns [B, 1, C].
   */
  slotAttention(qkv: S, kCache: S, vCache: S, slots: S, positions: S, shape: SlotAttentionShape): S;

  /** Gathers rows of table [V, C] (f32, f16 or bf16) for i32 ids [n]; the rows come out f32. */
  embedding(ids: S, table: S, n: number, V: number, C: number): S;
  /** The table's gradient: rows of dOut [n, C] summed into [V, C] (deterministic order). */
  embeddingBackward(ids: S, dOut: S, n: number, V: number, C: number): S;

  /**
   * Weighted cross-entropy over the rows of logits [rows, V] with its gradient in the same pass:
   * loss = sum_r weight[r] * -log softmax(logits[r])[target[r]], dLogits[r] = (softmax - onehot) * weight[r].
   * The caller passes weight = mask / count, so the loss is the mean over counted rows; rows of
   * weight 0 are skipped (their gradient is 0).
   */
  crossEntropy(logits: S, targets: S, weights: S, rows: number, V: number): { loss: S; dLogits: S };

  /**
   * One AdamW step in place on param, m and v (PyTorch semantics, decoupled weight decay), with the
   * gradient multiplied first by `gradScale`'s one element when given (global-norm clipping).
   */
  adamw(param: S, grad: S, m: S, v: S, hyper: AdamWHyper, gradScale: S | null): void;
}
