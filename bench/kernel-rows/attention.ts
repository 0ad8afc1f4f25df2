/**
 * Bench rows for causal attention at GPT-2 small's shapes (B=8, H=12, hs=64; T=128 and T=1024) and a
 * single-token KV-cached decode step against 512 cached positions (B=1, H=12, hs=64).
 *
 * FLOP counts (the causal half of the dense counts, as in the kernel's header):
 *   forward  2·B·H·T²·hs  (QKᵀ and P·V, each 2·T²·hs per pair, halved by the mask);
 *   backward 5·B·H·T²·hs  (QKᵀ again, dOut·Vᵀ, Pᵀ·dOut, dSᵀ·Q, dS·K). The kernels recompute QKᵀ and
 *   dOut·Vᵀ once more (the dk/dv pass and the dq pass each need them), which this count leaves out.
 * Decode reports GB/s of the cache rows it reads (K and V, 2·H·512·hs f32), against the copy bandwidth.
 */
import { medianMs } from '../harness.js';
import type { Backend, Storage } from '../../src/tensor/backend.js';
import type { BenchRow } from './types.js';

export async function attentionRows(backend: Backend, copyGbps: number): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const [B, H, hs] = [8, 12, 64];
  for (const T of [128, 1024]) {
    const size = B * H * T * hs;
    const shape = { B, H, T, hs };
    const [q, k, v, dOut] = [1, 2, 3, 4].map((seed) => backend.random(size, seed, 'normal'));
    // T = 1024 takes seconds a run on a software rasterizer: fewer runs there.
    const timing = T > 256 ? { warmup: 1, runs: 3 } : {};
    const forward = backend.attention(q, k, v, shape);
    const flops = 2 * B * H * T * T * hs;
    const fwdMs = await medianMs(backend, () => release(backend, Object.values(backend.attention(q, k, v, shape))), timing);
    rows.push({ op: 'attention_fwd', shape: [B, H, T, hs], ms: fwdMs, gflops: flops / fwdMs / 1e6 });
    const bwdMs = await medianMs(
      backend,
      () => release(backend, Object.values(backend.attentionBackward(dOut, q, k, v, forward.out, forward.logSumExp, shape))),
      timing,
    );
    rows.push({ op: 'attention_bwd', shape: [B, H, T, hs], ms: bwdMs, gflops: (2.5 * flops) / bwdMs / 1e6 });
    release(backend, [q, k, v, dOut, forward.out, forward.logSumExp]);
  }

  // One decode step: the query at position 511 attends the 512 rows of a cache allocated for 1024.
  const maxLen = 1024;
  const position = 511;
  const kCache = backend.random(H * maxLen * hs, 5, 'normal');
  const vCache = backend.random(H * maxLen * hs, 6, 'normal');
  const qkv = backend.random(3 * H * hs, 7, 'normal'); // c_attn's output for one token: q, k, v
  const cacheShape = { B: 1, H, T: 1, position, maxLen, hs, slot: 0 };
  const ms = await medianMs(backend, () => backend.release(backend.cachedAttention(qkv, kCache, vCache, cacheShape)), { warmup: 3, runs: 21 });
  const gbps = (2 * H * (position + 1) * hs * 4) / ms / 1e6;
  rows.push({ op: 'attention_decode', shape: [1, H, position + 1, hs], ms, gbps, fraction_of_copy: gbps / copyGbps });
  release(backend, [kCache, vCache, qkv]);
  return rows;
}

function release(backend: Backend, storages: Storage[]): void {
  for (const s of storages) backend.release(s);
}
