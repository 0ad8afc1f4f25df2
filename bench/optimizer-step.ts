/**
 * The optimizer's share of a training step on GPT-2-shaped parameters with random gradients: putting
 * each gradient where the optimizer reads it, the global-norm clip, AdamW and dropping the gradients.
 * The flat layout (src/train/flat-parameters.ts: backward copies each gradient into its slot, the clip
 * measures the flat buffer, AdamW is one dispatch per binding window with the clip's factor applied
 * inside) against the per-tensor path it replaced, kept here as the baseline (each gradient its own
 * tensor, the clip by composition per tensor, a scaled copy of every gradient, one AdamW per tensor).
 * Paired: the two alternate in one process, `--rounds` times; each is timed from an idle device to
 * an idle device, in wall time and in the process's CPU time (on a software device the kernels run
 * on the host's cores, and CPU time is less swayed by other jobs sharing them). Prints a table and,
 * last, one JSON line:
 * {"bench":"optimizer-step","device":…,"shapes":…,"parameters":…,"flat_ms":…,"per_tensor_ms":…,"flat_cpu_ms":…,"per_tensor_cpu_ms":…,"rounds":[…]}
 *
 *   npx tsx bench/optimizer-step.ts [--shapes default|gpt2|gpt2-medium] [--rounds 5]
 */
import { parseArgs } from 'node:util';
import { printTable, timed } from './harness.js';
import { benchShapes } from './shapes.js';
import { initializeWeights } from '../src/gpt/init.js';
import { GPT2 } from '../src/gpt/model.js';
import { createBackend, releaseBackend } from '../src/node/backend.js';
import { random, zeros } from '../src/tensor/create.js';
import { adamwStep } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import { add, assign, div, maximum, mul, sqrt, sum } from '../src/tensor/ops.js';
import { keep } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { AdamW } from '../src/train/adamw.js';
import { clipGradNorm } from '../src/train/clip.js';

const { values } = parseArgs({ strict: true, options: { shapes: { type: 'string', default: 'default' }, rounds: { type: 'string', default: '5' } } });
const config = benchShapes(values.shapes);
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${values.rounds}`);
const hyper = (step: number) => ({ lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step });

const backend = await createBackend('webgpu');
console.log(`device: ${backend.description}`);
const flatModel = new GPT2(config, backend);
const tensorModel = new GPT2(config, backend);
initializeWeights(flatModel, 0);
initializeWeights(tensorModel, 0);
const parameters = flatModel.parameterCount();
// One random gradient per parameter, standing in for what backward() hands each leaf.
const grads = new Map(flatModel.namedParameters().map(([name, p], i) => [name, keep(random(p.shape, i, { backend }))]));

const optimizer = new AdamW(flatModel);
const flatStep = () => {
  for (const [name, p] of flatModel.namedParameters()) {
    assign(p.gradTarget!, grads.get(name)!);
    p.grad = keep(p.gradTarget!.share());
  }
  optimizer.update(1e-4, clipGradNorm(optimizer.flat, 1).scale);
  optimizer.zeroGrad();
};

const moments = new Map(tensorModel.namedParameters().map(([name, p]) => [name, { m: keep(zeros(p.shape, { backend })), v: keep(zeros(p.shape, { backend })) }]));
let tensorSteps = 0;
const perTensorStep = () => {
  const params = tensorModel.namedParameters();
  for (const [name, p] of params) p.grad = keep(grads.get(name)!.share());
  tensorSteps++;
  noGrad(() => {
    let squares: Tensor | null = null;
    for (const [, p] of params) {
      const s = sum(mul(p.grad!, p.grad!));
      squares = squares === null ? s : add(squares, s);
    }
    const scale = div(1, maximum(add(sqrt(squares!), 1e-6), 1));
    for (const [, p] of params) {
      const clipped = keep(mul(p.grad!, scale));
      p.grad!.dispose();
      p.grad = clipped;
    }
  });
  for (const [name, p] of params) adamwStep(p, p.grad!, moments.get(name)!.m, moments.get(name)!.v, hyper(tensorSteps));
  for (const [, p] of params) {
    p.grad!.dispose();
    p.grad = null;
  }
};

// Warm-up: pipelines compiled, pool buckets made.
await timed(backend, flatStep);
await timed(backend, perTensorStep);
const results: { round: number; flat_ms: number; per_tensor_ms: number; flat_cpu_ms: number; per_tensor_cpu_ms: number }[] = [];
for (let round = 1; round <= rounds; round++) {
  // Alternate which goes first, so neither always follows the other.
  const first = round % 2 === 1;
  const a = await timed(backend, first ? flatStep : perTensorStep);
  const b = await timed(backend, first ? perTensorStep : flatStep);
  const [flat, perTensor] = first ? [a, b] : [b, a];
  results.push({ round, flat_ms: flat.wall, per_tensor_ms: perTensor.wall, flat_cpu_ms: flat.cpu, per_tensor_cpu_ms: perTensor.cpu });
}
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const medians = {
  flat_ms: median(results.map((r) => r.flat_ms)),
  per_tensor_ms: median(results.map((r) => r.per_tensor_ms)),
  flat_cpu_ms: median(results.map((r) => r.flat_cpu_ms)),
  per_tensor_cpu_ms: median(results.map((r) => r.per_tensor_cpu_ms)),
};
printTable(results.map((r) => ({ round: r.round, 'flat ms': r.flat_ms, 'per-tensor ms': r.per_tensor_ms, 'flat cpu ms': r.flat_cpu_ms, 'per-tensor cpu ms': r.per_tensor_cpu_ms })));
console.log(
  `${values.shapes} (${(parameters / 1e6).toFixed(1)} M parameters), medians of ${rounds}: flat ${medians.flat_ms.toFixed(1)} ms (CPU ${medians.flat_cpu_ms.toFixed(1)}), ` +
    `per-tensor ${medians.per_tensor_ms.toFixed(1)} ms (CPU ${medians.per_tensor_cpu_ms.toFixed(1)})`,
);
console.log(JSON.stringify({ bench: 'optimizer-step', device: backend.description, shapes: values.shapes, parameters, ...medians, rounds: results }));
optimizer.dispose();
flatModel.dispose();
tensorModel.dispose();
releaseBackend();
