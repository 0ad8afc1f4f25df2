/**
 * Bench row for the AdamW update on GPT-2 small's largest parameter, wte [50257·768] (38.6 M
 * elements, 154 MB, past one binding on lavapipe: two chunks). Bytes: p, g, m, v read, p, m, v
 * written: 28 B per element.
 */
import { medianMs } from '../harness.js';
import type { Backend } from '../../src/tensor/backend.js';
import type { BenchRow } from './types.js';

export async function adamwRows(backend: Backend, copyGbps: number): Promise<BenchRow[]> {
  const n = 50257 * 768;
  const p = backend.random(n, 1, 'normal');
  const g = backend.random(n, 2, 'normal');
  const m = backend.fill(n, 0, 'f32');
  const v = backend.fill(n, 0, 'f32');
  let step = 0;
  const hyper = () => ({ lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: ++step });
  const ms = await medianMs(backend, () => backend.adamw(p, g, m, v, hyper(), null), { warmup: 1, runs: 5 });
  for (const s of [p, g, m, v]) backend.release(s);
  const gbps = (7 * n * 4) / ms / 1e6;
  return [{ op: 'adamw', shape: [n], ms, gbps, fraction_of_copy: gbps / copyGbps }];
}
