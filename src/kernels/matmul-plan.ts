/**
 * Splitting a matmul whose operands exceed one storage binding (GPT-2's wte [50257, 768] is 154 MB,
 * its logits' gradient [1024, 50257] 206 MB; lavapipe and many GPUs bind at most 128 MiB).
 *
 * Every operand is a stack of row-major matrices [batch][outer][inner] with a leading dimension
 * (ld = the full inner size) and a batch stride. A chunk of the problem covers a range of batches,
 * rows M, columns N and depth K; the bytes it touches in an operand run from its first element to
 * its last, so the only ways to shrink an operand's window are fewer batches, fewer of its outer
 * rows, or (when one row alone is too long) fewer inner columns:
 *   A [m, k] -> split M;  Aᵀ stored [k, m] -> split K;
 *   B [k, n] -> split K;  Bᵀ stored [n, k] -> split N (the GPT-2 output head x·wteᵀ);
 *   C [m, n] -> split M.
 * K is also split past MAX_K_CHUNK, for accuracy, or past what the kernel holds (MatmulLimits.maxK).
 * A split of K accumulates: its first chunk writes C (and adds the bias), the others add to C.
 * Each window starts at the chunk's first element rounded down to the binding alignment; the
 * remainder travels to the kernel as an element offset, with ld and the batch stride, in uniforms.
 */
import type { MatmulShape } from '../tensor/backend.js';

export interface MatmulLimits {
  /** maxStorageBufferBindingSize, bytes. */
  maxBindingBytes: number;
  /** minStorageBufferOffsetAlignment, bytes (a multiple of 16: WebGPU requires at least 32). */
  alignment: number;
  /** maxComputeWorkgroupsPerDimension. */
  maxWorkgroups: number;
  /** Rows and columns of C one workgroup computes (bounds M and N chunks by the grid limit). */
  rowsPerGroup: number;
  colsPerGroup: number;
  /** Longest K one dispatch may sum, when the kernel bounds it below MAX_K_CHUNK. */
  maxK?: number;
}

/** A range of elements bound as one binding, and where the chunk's first element sits in it. */
export interface Window {
  /** First element of the binding (a multiple of alignment / 4). */
  first: number;
  /** Elements bound. */
  count: number;
  /** Element offset, inside the window, of the chunk's origin. */
  offset: number;
}

export interface MatmulChunk {
  batch0: number;
  batches: number;
  m0: number;
  m: number;
  n0: number;
  n: number;
  k0: number;
  k: number;
  /** C += this chunk's product (every K chunk after the first); the bias is added by the first only. */
  accumulate: boolean;
  a: Window;
  b: Window;
  c: Window;
  /** Over the bias [n], for this chunk's columns. */
  bias: Window;
}

export interface MatmulPlan {
  /** Chunk sizes (the last chunk along a dimension may be smaller). */
  sizes: { batch: number; m: number; n: number; k: number };
  chunks: MatmulChunk[];
  /** Leading dimensions and batch strides of the whole operands (elements). */
  lda: number;
  ldb: number;
  ldc: number;
  strideA: number;
  strideB: number;
  strideC: number;
}

type Dim = 'm' | 'n' | 'k';

interface OperandLayout {
  outer: Dim;
  inner: Dim;
  ld: number;
  stride: number;
}

/**
 * Longest K one dispatch sums: a longer K is split and accumulated in C, which costs a read and a
 * write of C per chunk but keeps f32 rounding from growing with K (GPT-2's head gradient sums 50257 terms).
 */
const MAX_K_CHUNK = 4096;

/** Chunks are multiples of this many elements along every dimension (when the dimension is larger), keeping vec4 loads and tiles aligned. */
const GRANULE = 64;

/** The largest balanced chunk size <= max (a multiple of GRANULE where possible) for a dimension of `full`. */
function balancedChunk(full: number, max: number): number {
  if (full <= max) return full;
  if (max < GRANULE) return Math.max(1, max);
  for (let count = Math.ceil(full / max); ; count++) {
    const size = Math.ceil(Math.ceil(full / count) / GRANULE) * GRANULE;
    if (size <= max) return size;
  }
}

export function layouts(s: MatmulShape): { a: OperandLayout; b: OperandLayout; c: OperandLayout } {
  const { m, n, k } = s;
  return {
    a: s.transA ? { outer: 'k', inner: 'm', ld: m, stride: k * m } : { outer: 'm', inner: 'k', ld: k, stride: m * k },
    b: s.transB
      ? { outer: 'n', inner: 'k', ld: k, stride: s.broadcastB ? 0 : n * k }
      : { outer: 'k', inner: 'n', ld: n, stride: s.broadcastB ? 0 : k * n },
    c: { outer: 'm', inner: 'n', ld: n, stride: m * n },
  };
}

/** Elements from a chunk's first to its last element in an operand. */
function span(l: OperandLayout, batches: number, dims: Record<Dim, number>): number {
  if (batches === 0 || dims[l.outer] === 0 || dims[l.inner] === 0) return 0;
  return (batches - 1) * l.stride + (dims[l.outer] - 1) * l.ld + dims[l.inner];
}

function window(l: OperandLayout, batch0: number, batches: number, origin: Record<Dim, number>, dims: Record<Dim, number>, alignElements: number): Window {
  const start = batch0 * l.stride + origin[l.outer] * l.ld + origin[l.inner];
  const first = Math.floor(start / alignElements) * alignElements;
  return { first, count: start - first + span(l, batches, dims), offset: start - first };
}

/**
 * Batch, m and n must be at least 1 (the caller returns an empty C otherwise); k may be 0. B's
 * elements take `bBytes` bytes (2: f16 or bf16, two to a word), A's and C's 4.
 */
export function planMatmul(s: MatmulShape, limits: MatmulLimits, bBytes = 4): MatmulPlan {
  const alignOf = (bytes: number) => limits.alignment / bytes;
  // A window may start up to alignElements - 1 elements before its chunk, and binds whole words.
  const maxSpanOf = (bytes: number) => Math.floor(limits.maxBindingBytes / 4) * (4 / bytes) - alignOf(bytes);
  const alignElements = alignOf(4);
  if (maxSpanOf(4) < GRANULE) throw new Error(`matmul: a binding of ${limits.maxBindingBytes} B is too small to plan over`);
  const full: Record<Dim, number> = { m: s.m, n: s.n, k: s.k };
  const dims: Record<Dim, number> = { ...full };
  const g = limits.maxWorkgroups;
  let batches = Math.min(s.batch, g);
  dims.m = balancedChunk(s.m, g * limits.rowsPerGroup);
  dims.n = balancedChunk(s.n, g * limits.colsPerGroup);
  dims.k = balancedChunk(s.k, Math.min(MAX_K_CHUNK, limits.maxK ?? Infinity));
  const l = layouts(s);

  for (let changed = true; changed; ) {
    changed = false;
    for (const [op, bytes] of [[l.a, 4], [l.b, bBytes], [l.c, 4]] as const) {
      const maxSpan = maxSpanOf(bytes);
      while (span(op, batches, dims) > maxSpan) {
        changed = true;
        if (op.stride > 0 && batches > 1) {
          batches = Math.max(1, Math.floor(maxSpan / op.stride));
        } else if (dims[op.outer] > 1) {
          const room = maxSpan - dims[op.inner];
          dims[op.outer] = room < 0 ? 1 : balancedChunk(full[op.outer], Math.floor(room / op.ld) + 1);
        } else {
          dims[op.inner] = balancedChunk(full[op.inner], maxSpan);
        }
      }
    }
  }

  const chunks: MatmulChunk[] = [];
  for (let batch0 = 0; batch0 < s.batch; batch0 += batches) {
    const bc = Math.min(batches, s.batch - batch0);
    for (let m0 = 0; m0 < s.m; m0 += dims.m) {
      for (let n0 = 0; n0 < s.n; n0 += dims.n) {
        // K = 0 still needs one chunk: C = bias (or 0).
        for (let k0 = 0; k0 < s.k || k0 === 0; k0 += Math.max(1, dims.k)) {
          const origin = { m: m0, n: n0, k: k0 };
          const size = { m: Math.min(dims.m, s.m - m0), n: Math.min(dims.n, s.n - n0), k: Math.min(dims.k, s.k - k0) };
          chunks.push({
            batch0, batches: bc, m0, m: size.m, n0, n: size.n, k0, k: size.k,
            accumulate: k0 > 0,
            a: window(l.a, batch0, bc, origin, size, alignElements),
            b: s.broadcastB ? window(l.b, 0, 1, origin, size, alignOf(bBytes)) : window(l.b, batch0, bc, origin, size, alignOf(bBytes)),
            c: window(l.c, batch0, bc, origin, size, alignElements),
            bias: window({ outer: 'm', inner: 'n', ld: 0, stride: 0 }, 0, 1, { m: 0, n: n0, k: 0 }, { m: 1, n: size.n, k: 1 }, alignElements),
          });
          if (s.k === 0) break;
        }
      }
    }
  }
  return {
    sizes: { batch: batches, ...dims },
    chunks,
    lda: l.a.ld, ldb: l.b.ld, ldc: l.c.ld,
    strideA: l.a.stride, strideB: l.b.stride, strideC: l.c.stride,
  };
}
