/**
 * Why attention projects its input into q, k and v instead of using x itself: with q = k = x, a
 * token's score with itself is |x|² ≈ d while its scores with the others are ≈ N(0, d), so every
 * token attends mostly to itself, and the score matrix is symmetric (i scores j exactly as j
 * scores i). With learnt projections (here random ones, W ~ N(0, 1/d), the scale that keeps unit
 * variance) the query and the key of one token are different vectors and nothing forces the
 * diagonal. Measured with the project's ops on the CPU reference: random, matmul, softmax.
 *
 *   npx tsx docs/experiments/qkv-projections.ts
 *
 * 128 tokens, rows of x ~ N(0, 1) (what LayerNorm hands attention, before its gain), head dim 64,
 * scores scaled by 1/√d as GPT-2 does, every token attending to all 128.
 * Last line: {"experiment":"qkv-projections","results":[{"case":…,"self_weight":…,"self_is_top":…,"symmetric":…},…]}
 */
import { CpuBackend } from '../../src/tensor/cpu-backend.js';
import { random } from '../../src/tensor/create.js';
import { softmax } from '../../src/tensor/fused.js';
import { matmul, mul } from '../../src/tensor/ops.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { fmt } from './quick-model.js';

const backend = new CpuBackend();
const T = 128;
const D = 64;

const x = random([T, D], 1, { backend });
const wq = mul(random([D, D], 2, { backend }), 1 / Math.sqrt(D));
const wk = mul(random([D, D], 3, { backend }), 1 / Math.sqrt(D));

async function weights(q: Tensor, k: Tensor) {
  const scores = mul(matmul(q, k, { transB: true }), 1 / Math.sqrt(D)); // [T, D] · [T, D]ᵀ → [T, T]
  const s = await scores.toFloat32();
  const p = await softmax(scores).toFloat32();
  let self = 0;
  let selfTop = 0;
  let symmetric = true;
  for (let i = 0; i < T; i++) {
    const row = p.subarray(i * T, (i + 1) * T);
    self += row[i];
    if (row.every((w) => w <= row[i])) selfTop++;
    for (let j = 0; j < i; j++) if (s[i * T + j] !== s[j * T + i]) symmetric = false;
  }
  return { self_weight: self / T, self_is_top: selfTop / T, symmetric };
}

const results = [
  { case: 'q = k = x', ...(await weights(x, x)) },
  { case: 'q = x·W_q, k = x·W_k', ...(await weights(matmul(x, wq), matmul(x, wk))) },
];
console.log(`${T} tokens, head dim ${D}, scores q·k/√d, each token attends to all ${T} (uniform: 1/${T} = ${fmt(1 / T, 4)} each)\n`);
console.log('| q and k | mean weight a token gives itself | tokens whose largest weight is on themselves | scores symmetric |');
console.log('|---|---:|---:|---|');
for (const r of results) console.log(`| ${r.case} | ${fmt(r.self_weight, 3)} | ${fmt(100 * r.self_is_top, 0)}% | ${r.symmetric ? 'yes' : 'no'} |`);
console.log(JSON.stringify({ experiment: 'qkv-projections', tokens: T, head_dim: D, results }));
