/**
 * Why a model returns logits and leaves the softmax to the loss and to the sampler. One row of
 * V = 50257 float32 logits in which the model is confident (one token at +20 over a N(0, 2²)
 * background) and the token that really comes next sits at −90: 110 below the top one.
 * - The loss from logits: the project's fused cross-entropy (src/tensor/fused.ts crossEntropy,
 *   log-sum-exp form) and its gradient softmax − onehot.
 * - The loss from probabilities: −log(softmax(z)[target]) with the project's softmax, log and slice
 *   ops, as a model whose last layer were a softmax would have to compute it.
 * - Temperature: softmax(z / T) at T = 2 from the logits, against the float32 probability at T = 1,
 *   the only thing a probability-returning model would hand the sampler.
 * Runs on the CPU reference backend (the WebGPU kernels compute the same formulas).
 *
 *   npx tsx docs/experiments/logits.ts
 *
 * Last line: {"experiment":"logits","from_logits":{"loss":…,"nonfinite_grads":…},"from_probabilities":{"loss":…,"nonfinite_grads":…},…}
 */
import { backward } from '../../src/tensor/autograd.js';
import { CpuBackend } from '../../src/tensor/cpu-backend.js';
import { random, tensor } from '../../src/tensor/create.js';
import { crossEntropy, softmax } from '../../src/tensor/fused.js';
import { log, mul, neg, slice } from '../../src/tensor/ops.js';
import type { Tensor } from '../../src/tensor/tensor.js';

const backend = new CpuBackend();
const V = 50257;
const TOP = 1000;
const TARGET = 2000;

const background = random([V], 7, { backend });
const z = (await background.toFloat32()).map((x) => 2 * x);
background.dispose();
z[TOP] = 20;
z[TARGET] = -90;

async function nonFinite(t: Tensor): Promise<number> {
  return (await t.toFloat32()).filter((x) => !Number.isFinite(x)).length;
}

// Loss from logits: log-sum-exp inside the fused kernel; gradient softmax(z) − onehot(target).
const a = tensor(z, [1, V], { backend, requiresGrad: true });
const lossA = crossEntropy(a, tensor(Int32Array.of(TARGET), [1], { backend }), Float32Array.of(1));
const lossAValue = await lossA.item();
backward(lossA);
const gradA = await a.grad!.toFloat32();
const fromLogits = { loss: lossAValue, nonfinite_grads: await nonFinite(a.grad!), grad_at_target: gradA[TARGET], grad_at_top: gradA[TOP] };

// Loss from probabilities: softmax first (float32 storage), then −log of the target's probability.
const b = tensor(z, [1, V], { backend, requiresGrad: true });
const probs = softmax(b);
const pTarget = (await probs.toFloat32())[TARGET];
const lossB = neg(log(slice(probs, [0, TARGET], [1, 1])));
const lossBValue = (await lossB.toFloat32())[0];
backward(lossB);
const fromProbabilities = { loss: String(lossBValue), p_target: pTarget, nonfinite_grads: await nonFinite(b.grad!) };

// Temperature acts on logits: softmax(z / 2) still gives the target a (tiny) probability.
const hot = softmax(mul(tensor(z, [1, V], { backend }), 1 / 2));
const pTargetT2 = (await hot.toFloat32())[TARGET];
// logsumexp(z) − z_target in float64: 20 + log(1 + Σ_{i≠top} e^(z_i − 20)) + 90.
const exact = 110 + Math.log1p(Array.from(z).reduce((s, x, i) => (i === TOP ? s : s + Math.exp(x - 20)), 0));
// log p_target at T = 2 in float64: z_t/2 − logsumexp(z/2).
const exactLogPT2 = -90 / 2 - (10 + Math.log1p(Array.from(z).reduce((s, x, i) => (i === TOP ? s : s + Math.exp((x - 20) / 2)), 0)));

console.log(`one row of ${V} float32 logits: top token ${z[TOP]}, true next token ${z[TARGET]}, the rest N(0, 2²)\n`);
console.log('| | loss (nats) | non-finite gradient entries | gradient at the target |');
console.log('|---|---:|---:|---:|');
console.log(`| fused cross-entropy on logits | ${fromLogits.loss.toFixed(3)} | ${fromLogits.nonfinite_grads} of ${V} | ${fromLogits.grad_at_target.toFixed(4)} |`);
console.log(`| −log(softmax(z)[target]) | ${fromProbabilities.loss} | ${fromProbabilities.nonfinite_grads} of ${V} | ${fromProbabilities.nonfinite_grads ? 'NaN' : ''} |`);
console.log(`\nexact loss (float64): ${exact.toFixed(3)} nats; the float32 softmax gives the target p = ${pTarget} (e^−110 ≈ 1.7e−48 is below float32's smallest number, 1.4e−45)`);
console.log(`at temperature 2, softmax(z / 2) from the logits gives it p = ${pTargetT2.toExponential(2)}; from the float32 probabilities (p^(1/T), renormalised) it stays ${pTarget ** 0.5}`);
console.log(JSON.stringify({ experiment: 'logits', vocab: V, gap: z[TOP] - z[TARGET], from_logits: fromLogits, from_probabilities: fromProbabilities, exact_loss: exact, p_target_at_t2: pTargetT2, exact_log_p_target_at_t2: exactLogPT2 }));
