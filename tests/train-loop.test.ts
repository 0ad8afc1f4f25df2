/**
 * The training loop (src/train/trainer.ts) on the tiny preset and entries of the project's data set:
 * five steps on WebGPU equal five on the CPU reference, the loss falls over 30 steps, gradient
 * accumulation of two half batches equals one whole batch of sequences of different lengths, the output head on the counted
 * positions alone gives the loss of the whole logits, and a steady-state step allocates nothing.
 */
import { describe, expect, it } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { initializeWeights } from '../src/gpt/init.js';
import { GPT2 } from '../src/gpt/model.js';
import { Tokenizer } from '../src/gpt/tokenizer.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { crossEntropy } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import { reshape } from '../src/tensor/ops.js';
import { AdamW } from '../src/train/adamw.js';
import { collate } from '../src/train/collate.js';
import { encodeEntry, type EncodedExample } from '../src/train/instruction-data.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { Trainer, type TrainerConfig } from '../src/train/trainer.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { maxRelativeError } from './helpers/close.js';
import { freshSeed } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();
const tokenizer = new Tokenizer();
const entries = loadInstructionFile('data/instructions.json');
// The shortest entries first: at V = 50257 the output head is most of a step, on the CPU reference too.
const byLength = entries.map((e) => encodeEntry(e, tokenizer)).sort((a, b) => a.ids.length - b.ids.length);
const examples = (from: number, count: number): EncodedExample[] => byLength.slice(from, from + count);

const baseConfig: TrainerConfig = {
  epochs: 100, batchSize: 2, lr: 1e-3, lrSchedule: 'cosine', warmupSteps: 2, maxSteps: 5, gradAccum: 1,
  clip: 1, seed: 0, shuffle: true, evalEvery: 0, maskPrompt: false, contextLength: PRESETS.tiny.n_positions,
};

/** Trains a freshly initialised tiny model; returns each step's loss and the model. */
async function train(backend: Backend, seed: number, data: EncodedExample[], config: Partial<TrainerConfig>, onStep?: () => void) {
  const model = new GPT2(PRESETS.tiny, backend);
  initializeWeights(model, seed);
  const optimizer = new AdamW(model, { weightDecay: 0.01 });
  const trainer = new Trainer(model, optimizer, data, [], { ...baseConfig, seed, ...config }, { onStep });
  await trainer.run();
  optimizer.dispose();
  return { losses: trainer.records.map((r) => r.loss), model };
}

describe('the training loop', () => {
  it.runIf(gpu !== null)('5 steps on WebGPU equal 5 steps on the CPU backend (per-step loss within 1e-4)', async () => {
    const seed = freshSeed();
    const data = examples(0, 6);
    const onGpu = await train(gpu!, seed, data, {});
    const onCpu = await train(cpu, seed, data, {});
    expect(onGpu.losses.length).toBe(5);
    for (let i = 0; i < 5; i++) {
      const err = maxRelativeError([onGpu.losses[i]], [onCpu.losses[i]], 0);
      expect(err, `step ${i + 1}: ${onGpu.losses[i]} vs ${onCpu.losses[i]} (TEST_SEED=${seed})`).toBeLessThan(1e-4);
    }
    // The updates happened: the steps' losses differ.
    expect(new Set(onCpu.losses).size).toBe(5);
    onGpu.model.dispose();
    onCpu.model.dispose();
  });

  it('a validation pass reports its progress batch by batch', async () => {
    const model = new GPT2(PRESETS.tiny, gpu ?? cpu);
    initializeWeights(model, 1);
    const optimizer = new AdamW(model);
    const seen: [number, number][] = [];
    const trainer = new Trainer(model, optimizer, examples(0, 2), examples(2, 7), { ...baseConfig, maxSteps: 1 }, {
      onValidationProgress: (done, total) => seen.push([done, total]),
    });
    await trainer.validate();
    expect(seen).toEqual([[0, 4], [1, 4], [2, 4], [3, 4]]); // 7 entries in batches of 2
    optimizer.dispose();
    model.dispose();
  });

  it('the loss falls over 30 steps on a few entries', async () => {
    const seed = freshSeed();
    const { losses, model } = await train(gpu ?? cpu, seed, examples(10, 4), { maxSteps: 30, lr: 1e-2 });
    expect(losses.length).toBe(30);
    const first = losses[0];
    const last = losses.slice(-3).reduce((a, b) => a + b, 0) / 3;
    expect(last, `losses ${losses.map((l) => l.toFixed(2))} (TEST_SEED=${seed})`).toBeLessThan(first * 0.6);
    model.dispose();
  });

  it('two micro-batches of 2 accumulated equal one batch of 4 (sequences of different lengths: the loss is the mean over all counted targets)', async () => {
    const seed = freshSeed();
    const data = [examples(0, 1)[0], examples(100, 1)[0], examples(200, 1)[0], examples(260, 1)[0]];
    expect(new Set(data.map((e) => e.ids.length)).size, 'four different lengths').toBe(4);
    const whole = await train(gpu ?? cpu, seed, data, { maxSteps: 3, batchSize: 4, shuffle: false });
    const accumulated = await train(gpu ?? cpu, seed, data, { maxSteps: 3, batchSize: 2, gradAccum: 2, shuffle: false });
    for (let i = 0; i < 3; i++) expect(maxRelativeError([accumulated.losses[i]], [whole.losses[i]], 0), `step ${i + 1} (TEST_SEED=${seed})`).toBeLessThan(1e-5);
    whole.model.dispose();
    accumulated.model.dispose();
  });

  it('the loss over the counted positions equals the masked loss over every position', async () => {
    const backend = gpu ?? cpu;
    const model = new GPT2(PRESETS.tiny, backend);
    initializeWeights(model, freshSeed());
    const batch = collate(examples(60, 3), PRESETS.tiny.n_positions, { maskPrompt: true });
    const ids = tensor(batch.inputs, [batch.batchSize, batch.seqLen], { backend });
    const targets = tensor(batch.targets, [batch.batchSize * batch.seqLen], { backend });
    const full = await noGrad(() => crossEntropy(reshape(model.forward(ids), [batch.batchSize * batch.seqLen, -1]), targets, batch.mask)).item();
    // Through the trainer's path: one step at lr 0 reports the loss before any change.
    const optimizer = new AdamW(model);
    const trainer = new Trainer(model, optimizer, examples(60, 3), [], { ...baseConfig, batchSize: 3, maskPrompt: true, shuffle: false, maxSteps: 1, lr: 0, warmupSteps: 0, lrSchedule: 'constant' });
    await trainer.run();
    expect(maxRelativeError([trainer.records[0].loss], [full], 0)).toBeLessThan(1e-5);
    optimizer.dispose();
    model.dispose();
  });

  it.runIf(gpu !== null)('a steady-state step allocates no GPU buffer: live buffers flat over 20 steps', async () => {
    const stats = () => gpu!.gpu.memoryStats();
    const model = new GPT2(PRESETS.tiny, gpu!);
    initializeWeights(model, 1);
    const optimizer = new AdamW(model);
    const after: ReturnType<typeof stats>[] = [];
    // One batch of two entries, seen every step: the same shapes each step.
    const trainer = new Trainer(model, optimizer, examples(30, 2), [], { ...baseConfig, maxSteps: 20, epochs: 20 }, { onStep: () => void after.push(stats()) });
    await trainer.run();
    expect(after.length).toBe(20);
    for (let i = 3; i < 20; i++) {
      expect(after[i].liveBuffers, `live buffers after step ${i + 1}`).toBe(after[2].liveBuffers);
      expect(after[i].createdBuffers, `buffers created by step ${i + 1}`).toBe(after[2].createdBuffers);
    }
    optimizer.dispose();
    model.dispose();
  });
});
