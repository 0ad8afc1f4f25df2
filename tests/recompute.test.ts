/**
 * Activation recomputation per block (GPT2.checkpointActivations): the same loss and gradients as
 * the recorded pass, for full training and for LoRA adapters over a frozen base, on the CPU
 * reference and WebGPU; and fewer live tensors after the forward.
 */
import { describe, expect, it } from 'vitest';
import { randomModel } from '../src/gpt/load-model.js';
import { addLoRA } from '../src/gpt/lora.js';
import type { GPT2 } from '../src/gpt/model.js';
import { backward } from '../src/tensor/autograd.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { crossEntropy } from '../src/tensor/fused.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { counting } from './helpers/counting.js';
import { freshSeed, randomInts } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();
const [B, T] = [2, 11];

async function lossAndGrads(model: GPT2, seed: number): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const { backend } = model;
  const V = model.config.vocab_size;
  const logits = model.forward(tensor(randomInts(B * T, seed, 1, V), [B, T], { backend }));
  const loss = crossEntropy(logits, tensor(randomInts(B * T, seed, 2, V), [B * T], { backend }), new Float32Array(B * T).fill(1));
  logits.dispose();
  backward(loss);
  const value = await loss.item();
  loss.dispose();
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of model.namedTrainableParameters()) {
    expect(p.grad, name).not.toBeNull();
    grads.set(name, await p.grad!.toFloat32());
  }
  return { loss: value, grads };
}

describe.each([['CPU', cpu], ['WebGPU', gpu]] as [string, Backend | null][])('checkpointActivations on %s', (_name, backend) => {
  it.runIf(backend !== null).each([['full training'], ['LoRA']])('gives the recorded pass\'s loss and gradients (%s)', async (mode) => {
    const seed = freshSeed();
    const build = (checkpoint: boolean) => {
      const { model } = randomModel('tiny', { seed, backend: backend! });
      if (mode === 'LoRA') {
        addLoRA(model, { rank: 4, seed });
        // B = 0 would leave A without a gradient: give B values.
        for (const [name, p] of model.namedTrainableParameters()) {
          if (name.endsWith('lora_B.weight')) model.replaceParameter(name, tensor(Float32Array.from({ length: p.size }, (_, i) => Math.sin(i + seed % 97) * 0.1), p.shape, { backend: backend! }));
        }
      }
      model.train().checkpointActivations = checkpoint;
      return model;
    };
    const expected = await lossAndGrads(build(false), seed);
    const actual = await lossAndGrads(build(true), seed);
    expectClose([actual.loss], [expected.loss], { tolerance: 1e-5, seed });
    expect([...actual.grads.keys()]).toEqual([...expected.grads.keys()]);
    // The first pass fuses GELU and the residual into the matmuls (it records nothing): a rounding apart.
    for (const [name, grad] of expected.grads) expectClose(actual.grads.get(name)!, grad, { tolerance: 1e-4, seed });
  });
});

it('keeps only the blocks\' inputs alive between the forward and backward', () => {
  const live = (checkpoint: boolean) => {
    const backend = counting(cpu);
    const { model } = randomModel('tiny', { seed: 1, backend });
    model.train().checkpointActivations = checkpoint;
    const before = backend.live;
    const logits = model.forward(tensor(randomInts(B * T, 1, 1, 64), [B, T], { backend }));
    const held = backend.live - before;
    logits.dispose();
    return held;
  };
  const [recorded, recomputed] = [live(false), live(true)];
  expect(recomputed).toBeLessThan(recorded / 2);
});
