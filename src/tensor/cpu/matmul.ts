/** CPU reference for the batched matmul with transposes and bias, accumulating in float64. */
import type { MatmulShape, Storage } from '../backend.js';
import { CpuStorage, f32 } from './storage.js';

export function matmul(a: Storage, b: Storage, bias: Storage | null, s: MatmulShape): CpuStorage {
  const { batch, m, k, n, transA, transB, broadcastB } = s;
  const av = f32(a);
  const bv = f32(b);
  const biasv = bias ? f32(bias) : null;
  const out = new Float32Array(batch * m * n);
  const row = new Float64Array(n);
  for (let p = 0; p < batch; p++) {
    const aBase = p * m * k;
    const bBase = broadcastB ? 0 : p * k * n;
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let kk = 0; kk < k; kk++) {
        const aik = av[aBase + (transA ? kk * m + i : i * k + kk)];
        if (transB) {
          for (let j = 0; j < n; j++) row[j] += aik * bv[bBase + j * k + kk];
        } else {
          const bRow = bBase + kk * n;
          for (let j = 0; j < n; j++) row[j] += aik * bv[bRow + j];
        }
      }
      const o = (p * m + i) * n;
      for (let j = 0; j < n; j++) out[o + j] = row[j] + (biasv ? biasv[j] : 0);
    }
  }
  return new CpuStorage(out);
}
