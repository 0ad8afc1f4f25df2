/**
 * CPU reference for causal attention, its backward, and attention against a KV cache.
 * The WGSL twin is src/kernels/attention.ts.
 *
 * Plain loops over (pair, query, key) with float64 accumulation. The cores take any array-like of
 * numbers and write into caller-given arrays, so tests can run them in float64 end to end (the
 * finite-difference gradient checks) while the backend wraps them for f32 storage.
 */
import type { AttentionShape, CachedAttentionShape, SlotAttentionShape, Storage } from '../backend.js';
import { CpuStorage, f32, i32 } from './storage.js';

type Values = ArrayLike<number>;
type Out = Float32Array | Float64Array;

/** Where the queries of one attention problem sit and which keys they may see. */
export interface AttendLayout {
  /** (batch, head) pairs. */
  pairs: number;
  /** Queries per pair; q and out are [pairs, qLen, hs]. */
  qLen: number;
  /** Absolute position of query 0: query i sees keys 0..qPos + i. */
  qPos: number;
  /** Rows per pair in k and v ([pairs, kvStride, hs]); only the visible ones are read. */
  kvStride: number;
  hs: number;
}

/**
 * out[pair, i] = softmax_j≤qPos+i(scale · q_i·k_j) · v, scale = 1/sqrt(hs); lse[pair, i] is the log of
 * the softmax's denominator in the same scaled units (what backward needs to recompute the weights).
 */
export function attendCausal(q: Values, k: Values, v: Values, layout: AttendLayout, out: Out, lse: Out | null): void {
  const { pairs, qLen, qPos, kvStride, hs } = layout;
  const scale = 1 / Math.sqrt(hs);
  const scores = new Float64Array(qPos + qLen);
  const acc = new Float64Array(hs);
  for (let pair = 0; pair < pairs; pair++) {
    const kvBase = pair * kvStride * hs;
    for (let i = 0; i < qLen; i++) {
      const qRow = (pair * qLen + i) * hs;
      const visible = qPos + i + 1;
      let max = -Infinity;
      for (let j = 0; j < visible; j++) {
        let dot = 0;
        const kRow = kvBase + j * hs;
        for (let d = 0; d < hs; d++) dot += q[qRow + d] * k[kRow + d];
        scores[j] = dot * scale;
        if (scores[j] > max) max = scores[j];
      }
      let sum = 0;
      acc.fill(0);
      for (let j = 0; j < visible; j++) {
        const p = Math.exp(scores[j] - max);
        sum += p;
        const vRow = kvBase + j * hs;
        for (let d = 0; d < hs; d++) acc[d] += p * v[vRow + d];
      }
      for (let d = 0; d < hs; d++) out[qRow + d] = acc[d] / sum;
      if (lse) lse[pair * qLen + i] = max + Math.log(sum);
    }
  }
}

/**
 * Gradients of causal self-attention (q, k, v of [pairs, T, hs]) from dOut, recomputing the weights
 * from q, k and lse: p_ij = exp(scale·q_i·k_j − lse_i), D_i = dOut_i·out_i,
 * dv_j = Σ_i p_ij dOut_i, ds_ij = p_ij (dOut_i·v_j − D_i), dq_i = scale Σ_j ds_ij k_j, dk_j = scale Σ_i ds_ij q_i.
 * dq, dk, dv must be zero on entry.
 */
export function attendCausalBackward(
  dOut: Values, q: Values, k: Values, v: Values, out: Values, lse: Values,
  shape: AttentionShape, dq: Out, dk: Out, dv: Out,
): void {
  const { B, H, T, hs } = shape;
  const scale = 1 / Math.sqrt(hs);
  const dqRow = new Float64Array(hs);
  for (let pair = 0; pair < B * H; pair++) {
    const base = pair * T * hs;
    for (let i = 0; i < T; i++) {
      const iRow = base + i * hs;
      let delta = 0;
      for (let d = 0; d < hs; d++) delta += dOut[iRow + d] * out[iRow + d];
      const rowLse = lse[pair * T + i];
      dqRow.fill(0);
      for (let j = 0; j <= i; j++) {
        const jRow = base + j * hs;
        let s = 0;
        let dp = 0;
        for (let d = 0; d < hs; d++) {
          s += q[iRow + d] * k[jRow + d];
          dp += dOut[iRow + d] * v[jRow + d];
        }
        const p = Math.exp(s * scale - rowLse);
        const ds = p * (dp - delta) * scale;
        for (let d = 0; d < hs; d++) {
          dv[jRow + d] += p * dOut[iRow + d];
          dk[jRow + d] += ds * q[iRow + d];
          dqRow[d] += ds * k[jRow + d];
        }
      }
      for (let d = 0; d < hs; d++) dq[iRow + d] = dqRow[d];
    }
  }
}

/** Full causal self-attention over [B, H, T, hs] as an AttendLayout. */
function selfLayout({ B, H, T, hs }: AttentionShape): AttendLayout {
  return { pairs: B * H, qLen: T, qPos: 0, kvStride: T, hs };
}

export function attention(q: Storage, k: Storage, v: Storage, shape: AttentionShape): { out: CpuStorage; logSumExp: CpuStorage } {
  const layout = selfLayout(shape);
  const out = new Float32Array(q.size);
  const lse = new Float32Array(layout.pairs * layout.qLen);
  attendCausal(f32(q), f32(k), f32(v), layout, out, lse);
  return { out: new CpuStorage(out), logSumExp: new CpuStorage(lse) };
}

export function attentionBackward(
  dOut: Storage, q: Storage, k: Storage, v: Storage, out: Storage, logSumExp: Storage, shape: AttentionShape,
): { dq: CpuStorage; dk: CpuStorage; dv: CpuStorage } {
  const size = q.size;
  const dq = new Float64Array(size);
  const dk = new Float64Array(size);
  const dv = new Float64Array(size);
  attendCausalBackward(f32(dOut), f32(q), f32(k), f32(v), f32(out), f32(logSumExp), shape, dq, dk, dv);
  return { dq: new CpuStorage(Float32Array.from(dq)), dk: new CpuStorage(Float32Array.from(dk)), dv: new CpuStorage(Float32Array.from(dv)) };
}

/** Token (b, t)'s part (0 q, 1 k, 2 v) of qkv [B, T, 3C] as [B, H, T, hs]. */
function headsOf(qkv: Float32Array, part: number, { B, H, T, hs }: CachedAttentionShape): Float32Array {
  const C = H * hs;
  const out = new Float32Array(B * H * T * hs);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const src = (b * T + t) * 3 * C + part * C + h * hs;
        out.set(qkv.subarray(src, src + hs), ((b * H + h) * T + t) * hs);
      }
    }
  }
  return out;
}

function writeCache(kCache: Storage, vCache: Storage, qkv: Storage, shape: CachedAttentionShape): void {
  const { B, H, T, position, maxLen, hs, slot } = shape;
  for (const [part, cache] of [[1, kCache], [2, vCache]] as const) {
    const rows = headsOf(f32(qkv), part, shape);
    const dst = f32(cache);
    for (let pair = 0; pair < B * H; pair++) {
      dst.set(rows.subarray(pair * T * hs, (pair + 1) * T * hs), ((slot * H + pair) * maxLen + position) * hs);
    }
  }
}

/** Cache sequences [slot, slot + count) of [slots, H, maxLen, hs]. */
function sequences(cache: Storage, slot: number, count: number, { H, maxLen, hs }: { H: number; maxLen: number; hs: number }): Float32Array {
  const perSequence = H * maxLen * hs;
  return f32(cache).subarray(slot * perSequence, (slot + count) * perSequence);
}

/** Appends qkv's keys and values to the caches at shape.position, then attends its queries to them. */
export function cachedAttention(qkv: Storage, kCache: Storage, vCache: Storage, shape: CachedAttentionShape): CpuStorage {
  writeCache(kCache, vCache, qkv, shape);
  const { B, H, T, position, maxLen, hs, slot } = shape;
  const heads = new Float32Array(B * H * T * hs);
  const [k, v] = [kCache, vCache].map((cache) => sequences(cache, slot, B, shape));
  attendCausal(headsOf(f32(qkv), 0, shape), k, v, { pairs: B * H, qLen: T, qPos: position, kvStride: maxLen, hs }, heads, null);
  // [B, H, T, hs] → [B, T, H, hs] = [B, T, C]
  const out = new Float32Array(heads.length);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) out.set(heads.subarray(((b * H + h) * T + t) * hs, ((b * H + h) * T + t + 1) * hs), ((b * T + t) * H + h) * hs);
    }
  }
  return new CpuStorage(out);
}

/**
 * Each row b: cachedAttention of its one token at positions[b] in cache sequence slots[b]. A row's
 * q, k and v ([H, hs] each) and its output ([H, 1, hs] = [C]) are contiguous, so each row is one
 * batch-1 call.
 */
export function slotAttention(qkv: Storage, kCache: Storage, vCache: Storage, slots: Storage, positions: Storage, shape: SlotAttentionShape): CpuStorage {
  const { B, H, hs, slots: S, maxLen, longest } = shape;
  const [slotOf, positionOf] = [i32(slots), i32(positions)];
  if (slotOf.length !== B || positionOf.length !== B) throw new Error(`slotAttention: ${slotOf.length} slots and ${positionOf.length} positions for ${B} rows`);
  if (new Set(slotOf).size !== B) throw new Error(`slotAttention: rows share a slot (${slotOf.join(', ')})`);
  const C = H * hs;
  const out = new Float32Array(B * C);
  for (let b = 0; b < B; b++) {
    const [slot, position] = [slotOf[b], positionOf[b]];
    if (slot < 0 || slot >= S) throw new Error(`slotAttention: row ${b}'s slot ${slot} is outside [0, ${S})`);
    if (position < 0 || position >= longest) throw new Error(`slotAttention: row ${b}'s position ${position} is outside [0, ${longest})`);
    const row = new CpuStorage(f32(qkv).slice(b * 3 * C, (b + 1) * 3 * C));
    const one = cachedAttention(row, kCache, vCache, { B: 1, H, T: 1, position, maxLen, hs, slot });
    out.set(one.data, b * C);
  }
  return new CpuStorage(out);
}
