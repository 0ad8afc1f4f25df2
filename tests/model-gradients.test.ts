/**
 * Whole-model gradients (llm.c's test_gpt2): the masked cross-entropy loss of a tiny GPT-2 and the
 * gradient of every parameter on WebGPU against the CPU reference, and the CPU reference's
 * gradients against float64 central differences of the whole model on a few entries (the largest
 * and one drawn at random) of one parameter behind each kind of op (a float64 pass through the
 * 50257-row head takes a good part of a second, so not of all 28).
 */
import { afterEach, describe, expect, test } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { initializeWeights } from '../src/gpt/init.js';
import { GPT2 } from '../src/gpt/model.js';
import { backward } from '../src/tensor/autograd.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { crossEntropy } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { expectClose, maxRelativeError } from './helpers/close.js';
import { float64 } from './helpers/gradcheck.js';
import { freshSeed, randomArray, randomInts } from './helpers/random-data.js';

const config = PRESETS.tiny;
const [B, T] = [2, 7];
// As in tests/model.test.ts: a whole pass chains ~10 f32 reductions whose order differs between
// backends, so model-level comparisons allow 5e-4 (each kernel alone is held to 1e-4).
const MODEL_TOLERANCE = 5e-4;
/**
 * The f32 backward against exact differences: a few roundings per rule, measured up to 2e-5 (the
 * floor as in expectClose: 1e-3 of the parameter's largest gradient).
 */
const DIFFERENCE_TOLERANCE = 1e-4;
/** The embeddings (wte also as the head), layer norms, attention, the MLP with its GELU, ln_f. */
const DIFFERENCED = [
  'wte.weight', 'wpe.weight', 'h.0.ln_1.weight', 'h.0.attn.c_attn.weight', 'h.0.attn.c_proj.bias', 'h.1.ln_2.bias',
  'h.1.mlp.c_fc.weight', 'h.1.mlp.c_proj.weight', 'ln_f.weight',
];
const models: GPT2[] = [];
afterEach(() => models.splice(0).forEach((m) => m.dispose()));

interface Batch {
  ids: Int32Array;
  targets: Int32Array;
  mask: Float32Array;
}

function batch(seed: number): Batch {
  const mask = Float32Array.from(randomArray(B * T, seed, 3), (u) => (u < -0.5 ? 0 : 1));
  mask[0] = 1;
  return { ids: randomInts(B * T, seed, 1, config.vocab_size), targets: randomInts(B * T, seed, 2, config.vocab_size), mask };
}

function build(backend: Backend, seed: number): GPT2 {
  const model = new GPT2(config, backend);
  initializeWeights(model, seed);
  models.push(model);
  return model;
}

function loss(model: GPT2, { ids, targets, mask }: Batch) {
  const backend = model.backend;
  const logits = model.forward(tensor(ids, [B, T], { backend }));
  return crossEntropy(logits, tensor(targets, [B * T], { backend }), mask);
}

/** The loss and every parameter's gradient after one backward(). */
async function gradients(model: GPT2, data: Batch): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const l = loss(model, data);
  backward(l);
  const value = (await l.toFloat32())[0];
  l.dispose();
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of model.namedParameters()) {
    expect(p.grad, name).not.toBeNull();
    grads.set(name, await p.grad!.toFloat32());
  }
  return { loss: value, grads };
}

describe('whole-model gradients of a tiny GPT-2', () => {
  test('WebGPU: the loss and every parameter\'s gradient equal the CPU reference', async () => {
    const gpu = await webgpuOrSkip();
    if (!gpu) return;
    const seed = freshSeed();
    const data = batch(seed);
    const expected = await gradients(build(cpu, seed), data);
    const actual = await gradients(build(gpu, seed), data);
    expectClose([actual.loss], [expected.loss], { tolerance: MODEL_TOLERANCE, seed });
    expect([...actual.grads.keys()]).toEqual([...expected.grads.keys()]);
    for (const [name, grad] of expected.grads) {
      expect(grad.some((g) => g !== 0), `${name} has a zero gradient`).toBe(true);
      const error = maxRelativeError(actual.grads.get(name)!, grad);
      expect(error, `${name}: max relative error ${error.toExponential(2)} (replay with TEST_SEED=${seed})`).toBeLessThanOrEqual(MODEL_TOLERANCE);
    }
  });

  test('CPU: the gradients equal float64 central differences of the whole model on a few entries', async () => {
    const seed = freshSeed();
    const data = batch(seed);
    const reference = build(cpu, seed);
    const { grads } = await gradients(reference, data);
    // The same f32 weights, held in float64 (float64's own random draws would not be rounded to f32).
    const exact = new GPT2(config, float64);
    const weights = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, p] of reference.namedParameters()) weights.set(name, { shape: [...p.shape], data: await p.toFloat32() });
    exact.loadStateDict(weights);
    const parameters = new Map(exact.namedParameters());
    const lossAt = () => float64.read64(noGrad(() => loss(exact, data)).storage)[0];
    const pick = randomArray(DIFFERENCED.length, seed, 4, 0, 1);
    for (const [k, name] of DIFFERENCED.entries()) {
      const grad = grads.get(name)!;
      const values = float64.data64(parameters.get(name)!.storage);
      let largest = 0;
      for (let i = 1; i < grad.length; i++) if (Math.abs(grad[i]) > Math.abs(grad[largest])) largest = i;
      const scale = Math.abs(grad[largest]);
      for (const i of [largest, Math.floor(pick[k] * grad.length)]) {
        const x = values[i];
        const h = 1e-6 * Math.max(1, Math.abs(x));
        values[i] = x + h;
        const plus = lossAt();
        values[i] = x - h;
        const minus = lossAt();
        values[i] = x;
        const numeric = (plus - minus) / (2 * h);
        const error = Math.abs(grad[i] - numeric) / (Math.abs(numeric) + 1e-3 * scale);
        expect(error, `${name}[${i}]: backward ${grad[i]}, differences ${numeric} (replay with TEST_SEED=${seed})`).toBeLessThanOrEqual(DIFFERENCE_TOLERANCE);
      }
    }
  });
});
