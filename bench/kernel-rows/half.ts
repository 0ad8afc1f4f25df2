/**
 * Bench rows for matmul with a 16-bit B (a frozen weight: `matmul_f16`, read by unpack2x16float, and
 * `matmul_bf16`, read by a shift or a mask) beside the same product with B in f32 (`matmul_f32`), at GPT-2 small's shapes: decoding's c_attn x·W [m, 768]·[768, 2304] and
 * head x·wteᵀ [m, 768]·[50257, 768]ᵀ for m 1 and 16, and a LoRA step's frozen-base products over 552
 * tokens, the MLP's x·W [552, 768]·[768, 3072] and its backward dY·Wᵀ [552, 3072]·[768, 3072]ᵀ. The
 * three alternate over ROUNDS rounds, so a shared host's drift moves both alike. GB/s: bytes of B read.
 */
import { medianMs } from '../harness.js';
import type { Backend, MatmulShape } from '../../src/tensor/backend.js';
import { narrowToBfloat16, narrowToHalf } from '../../src/tensor/half.js';
import type { BenchRow } from './types.js';

const ROUNDS = 2;

/** [m, k, n, transB]. */
const SHAPES: [number, number, number, boolean][] = [
  [1, 768, 2304, false], [16, 768, 2304, false], [1, 768, 50257, true], [16, 768, 50257, true],
  [552, 768, 3072, false], [552, 3072, 768, true],
];

export async function halfRows(backend: Backend): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const [m, k, n, transB] of SHAPES) {
    const s: MatmulShape = { batch: 1, m, k, n, transA: false, transB, broadcastB: true };
    const a = backend.random(m * k, 1, 'normal');
    const full = backend.random(k * n, 2, 'normal');
    const values = (await backend.read(full)) as Float32Array;
    const halves = [backend.upload(narrowToHalf(values)), backend.upload(narrowToBfloat16(values))];
    const timing = n > 10000 || m > 100 ? { warmup: 1, runs: 3 } : { warmup: 1, runs: 5 };
    for (let round = 0; round < ROUNDS; round++) {
      for (const b of [full, ...halves]) {
        const ms = await medianMs(backend, () => backend.release(backend.matmul(a, b, null, s)), timing);
        const bytes = k * n * (b === full ? 4 : 2);
        rows.push({ op: `matmul_${b.dtype}`, shape: [m, k, n], ms, gflops: (2 * m * k * n) / ms / 1e6, gbps: bytes / ms / 1e6 });
      }
    }
    for (const x of [a, full, ...halves]) backend.release(x);
  }
  return rows;
}
