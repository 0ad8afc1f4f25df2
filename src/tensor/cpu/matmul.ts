/** CPU reference for the batched matmul with transposes, bias and epilogue, accumulating in float64; B may be f16 or bf16. */
import type { MatmulEpilogue, MatmulShape, Storage } from '../backend.js';
import { geluAt } from './gelu.js';
import { CpuStorage, f32, weightValues } from './storage.js';

export function matmul(a: Storage, b: Storage, bias: Storage | null, s: MatmulShape, epilogue: MatmulEpilogue = {}): CpuStorage {
  const { batch, m, k, n, transA, transB, broadcastB } = s;
  const av = f32(a);
  const bv = weightValues(b);
  const biasv = bias ? f32(bias) : null;
  const residual = epilogue.residual ? f32(epilogue.residual) : null;
  if (residual && residual.length !== batch * m * n) throw new Error(`matmul: the residual holds ${residual.length} elements, C ${batch * m * n}`);
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
      for (let j = 0; j < n; j++) {
        // Rounded to f32 where the composed ops (matmul, gelu, add) round, as WebGPU's store does:
        // a fused layer computes bitwise what the same layer recorded for training computes.
        const z = Math.fround(row[j] + (biasv ? biasv[j] : 0));
        out[o + j] = (epilogue.gelu ? Math.fround(geluAt(z)) : z) + (residual ? residual[o + j] : 0);
      }
    }
  }
  return new CpuStorage(out);
}
