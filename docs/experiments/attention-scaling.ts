/**
 * Why attention divides q·k by √(head dim): with q and k of unit-variance components, q·k has
 * variance d, so the unscaled softmax saturates as d grows (one key takes nearly all the weight)
 * and its gradient vanishes; q·k/√d has variance 1 at every d. Measured with the project's own
 * ops on the CPU reference backend: random (normal), matmul, softmax (the fused op the attention
 * kernels compute inside), and autograd for the gradient that reaches the scores.
 *
 *   npx tsx docs/experiments/attention-scaling.ts
 *
 * For each head dim d: 64 queries against 128 keys, entries N(0, 1). Columns: the scores' standard
 * deviation, the mean over queries of the largest attention weight, and the mean |∂L/∂score| for
 * L = Σ p·g with a random upstream gradient g ~ N(0, 1) (what backward sends into the scores).
 * Last line: {"experiment":"attention-scaling","keys":128,"results":[{"head_dim":…,"unscaled":{…},"scaled":{…}},…]}
 */
import { backward } from '../../src/tensor/autograd.js';
import { CpuBackend } from '../../src/tensor/cpu-backend.js';
import { random, tensor } from '../../src/tensor/create.js';
import { softmax } from '../../src/tensor/fused.js';
import { matmul, mul, sum } from '../../src/tensor/ops.js';
import { fmt } from './quick-model.js';

const backend = new CpuBackend();
const QUERIES = 64;
const KEYS = 128;
const HEAD_DIMS = [4, 16, 64, 256, 1024];

interface Stats {
  score_std: number;
  max_weight: number;
  mean_abs_grad: number;
}

async function measure(scores: Float32Array, scale: number, seed: number): Promise<Stats> {
  const x = tensor(scores.map((s) => s * scale), [QUERIES, KEYS], { backend, requiresGrad: true });
  const p = softmax(x); // over the 128 keys of each query
  const g = random([QUERIES, KEYS], seed, { backend });
  backward(sum(mul(p, g)));
  const probs = await p.toFloat32();
  const grad = await x.grad!.toFloat32();
  const xs = await x.toFloat32();
  let maxWeight = 0;
  for (let r = 0; r < QUERIES; r++) maxWeight += Math.max(...probs.subarray(r * KEYS, (r + 1) * KEYS));
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length);
  const meanAbsGrad = grad.reduce((a, b) => a + Math.abs(b), 0) / grad.length;
  for (const t of [x, p, g]) t.dispose();
  return { score_std: std, max_weight: maxWeight / QUERIES, mean_abs_grad: meanAbsGrad };
}

const results: { head_dim: number; unscaled: Stats; scaled: Stats }[] = [];
for (const [i, d] of HEAD_DIMS.entries()) {
  const q = random([QUERIES, d], 100 + i, { backend });
  const k = random([KEYS, d], 200 + i, { backend });
  const s = matmul(q, k, { transB: true }); // [Q, d] · [K, d]ᵀ → [Q, K]
  const scores = await s.toFloat32();
  for (const t of [q, k, s]) t.dispose();
  results.push({ head_dim: d, unscaled: await measure(scores, 1, 300 + i), scaled: await measure(scores, 1 / Math.sqrt(d), 300 + i) });
}

console.log(`${QUERIES} queries × ${KEYS} keys, q and k entries N(0, 1); uniform attention would give each key 1/${KEYS} = ${fmt(1 / KEYS, 4)}\n`);
console.log('| head dim d | score std, q·k | score std, q·k/√d | max weight, q·k | max weight, q·k/√d | mean abs grad, q·k | mean abs grad, q·k/√d |');
console.log('|---:|---:|---:|---:|---:|---:|---:|');
for (const { head_dim, unscaled: u, scaled: s } of results) {
  console.log(`| ${head_dim} | ${fmt(u.score_std)} | ${fmt(s.score_std)} | ${fmt(u.max_weight, 3)} | ${fmt(s.max_weight, 3)} | ${u.mean_abs_grad.toExponential(2)} | ${s.mean_abs_grad.toExponential(2)} |`);
}
console.log(JSON.stringify({ experiment: 'attention-scaling', queries: QUERIES, keys: KEYS, results }));
