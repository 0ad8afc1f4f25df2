/**
 * GPU memory stays flat over training: 100 steps of forward + backward + update of a small MLP
 * (matmul + bias, tanh, relu, a weight used twice, a mean-squared loss) inside tidy leave the same
 * live buffers and bytes after step 100 as after step 1, and the pool creates no buffer after the
 * warm-up steps. Three updates: SGD that replaces each parameter by a new tensor (disposing the old),
 * AdamW in place (adamwStep), and the trainer's AdamW over flat buffers with the gradient clip. The
 * same loop on the CPU backend, counting its storages. The pool's trim with recorded work in flight.
 */
import { describe, expect, it } from 'vitest';
import { backward } from '../src/tensor/autograd.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor, zeros } from '../src/tensor/create.js';
import { adamwStep } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import { matmul, mean, mul, relu, sub, tanh } from '../src/tensor/ops.js';
import { keep, tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { Module } from '../src/nn/module.js';
import { AdamW } from '../src/train/adamw.js';
import { clipGradNorm } from '../src/train/clip.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { counting } from './helpers/counting.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

const [BATCH, D, HIDDEN] = [16, 24, 40];

interface Params {
  w1: Tensor; b1: Tensor; w2: Tensor; b2: Tensor;
}

const tensorsOf = (p: Params): Tensor[] => [p.w1, p.b1, p.w2, p.b2];

function initParams(backend: Backend, seed: number): Params {
  const make = (shape: number[], stream: number, scale: number) =>
    tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed, stream, -scale, scale), shape, { backend, requiresGrad: true });
  return { w1: make([D, HIDDEN], 1, 0.3), b1: make([HIDDEN], 2, 0.1), w2: make([HIDDEN, HIDDEN], 3, 0.3), b2: make([HIDDEN], 4, 0.1) };
}

/** Mean squared error of relu(tanh(x·W1 + b1)·W2 + b2)·W1ᵀ against y: W1 is used twice. */
function lossOf(p: Params, x: Tensor, y: Tensor): Tensor {
  const h = tanh(matmul(x, p.w1, { bias: p.b1 }));
  const g = relu(matmul(h, p.w2, { bias: p.b2 }));
  const diff = sub(matmul(g, p.w1, { transB: true }), y);
  return mean(mul(diff, diff));
}

type Update = (p: Params, state: Map<Tensor, { m: Tensor; v: Tensor }>, step: number) => Params;

/** SGD: each parameter is replaced by a new tensor made under noGrad; the old one is disposed. */
const sgd: Update = (p) => {
  const next = {} as Params;
  for (const key of Object.keys(p) as (keyof Params)[]) {
    const param = p[key];
    const updated = keep(noGrad(() => sub(param, mul(param.grad!, 0.05))));
    updated.requiresGrad = true;
    param.dispose(); // also disposes its grad
    next[key] = updated;
  }
  return next;
};

/** AdamW in place on the parameter and its moments; the gradient is then dropped. */
const adamw: Update = (p, state, step) => {
  for (const param of tensorsOf(p)) {
    let moments = state.get(param);
    if (moments === undefined) {
      moments = { m: keep(zeros(param.shape, { backend: param.backend })), v: keep(zeros(param.shape, { backend: param.backend })) };
      state.set(param, moments);
    }
    adamwStep(param, param.grad!, moments.m, moments.v, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step });
    param.grad!.dispose();
    param.grad = null;
  }
  return p;
};

/** Runs `steps` training steps; `probe` sees each step's index after its update (1-based) and the loss read every 10 steps. */
async function train(backend: Backend, update: Update, steps: number, seed: number, probe: (step: number) => void): Promise<{ losses: number[]; params: Params; state: Map<Tensor, { m: Tensor; v: Tensor }> }> {
  let params = initParams(backend, seed);
  const state = new Map<Tensor, { m: Tensor; v: Tensor }>();
  // A fixed batch: the loss must fall, which shows the updates really happen.
  const xh = randomArray(BATCH * D, seed, 10);
  const yh = randomArray(BATCH * D, seed, 11, -0.5, 0.5);
  const losses: number[] = [];
  for (let step = 1; step <= steps; step++) {
    const loss = tidy(() => {
      const x = tensor(xh, [BATCH, D], { backend });
      const y = tensor(yh, [BATCH, D], { backend });
      const l = lossOf(params, x, y);
      backward(l);
      params = update(params, state, step);
      return l;
    });
    if (step % 10 === 1) losses.push(await loss.item());
    loss.dispose();
    probe(step);
  }
  return { losses, params, state };
}

function disposeAll(params: Params, state: Map<Tensor, { m: Tensor; v: Tensor }>): void {
  for (const p of tensorsOf(params)) p.dispose();
  for (const { m, v } of state.values()) {
    m.dispose();
    v.dispose();
  }
}

describe.runIf(gpu !== null)('WebGPU memory over 100 training steps', () => {
  for (const [name, update] of [['SGD replacing each parameter', sgd], ['AdamW in place', adamw]] as const) {
    it(`${name}: live buffers and bytes flat, no buffer created after warm-up`, async () => {
      const seed = freshSeed();
      const stats = () => gpu!.gpu.memoryStats();
      const start = stats();
      const at = new Map<number, ReturnType<typeof stats>>();
      const { losses, params, state } = await train(gpu!, update, 100, seed, (step) => at.set(step, stats()));
      const [first, warm, last] = [at.get(1)!, at.get(3)!, at.get(100)!];
      expect({ liveBuffers: last.liveBuffers, liveBytes: last.liveBytes }, `seed ${seed}`).toEqual({ liveBuffers: first.liveBuffers, liveBytes: first.liveBytes });
      for (let step = 1; step <= 100; step++) expect(at.get(step)!.liveBuffers, `live buffers after step ${step}`).toBe(first.liveBuffers);
      expect(last.createdBuffers, 'buffers created after the warm-up').toBe(warm.createdBuffers);
      expect(losses.at(-1)!, `seed ${seed}: the loss falls (${losses.map((l) => l.toFixed(4))})`).toBeLessThan(losses[0] * 0.9);
      disposeAll(params, state);
      expect(stats().liveBuffers, 'nothing left once the parameters and moments are disposed').toBe(start.liveBuffers);
    });
  }
});

/** The parameters as a Module, whose fields AdamW replaces by views of its flat buffer. */
class Mlp extends Module implements Params {
  w1: Tensor; b1: Tensor; w2: Tensor; b2: Tensor;
  constructor(p: Params) {
    super();
    ({ w1: this.w1, b1: this.b1, w2: this.w2, b2: this.b2 } = p);
  }
}

describe.runIf(gpu !== null)('WebGPU memory over 100 steps of the flat AdamW', () => {
  it('clip + AdamW over flat buffers: live buffers flat, no buffer created after warm-up, all freed at the end', async () => {
    const b = gpu!;
    const seed = freshSeed();
    const start = b.gpu.memoryStats();
    const model = new Mlp(initParams(b, seed));
    const optimizer = new AdamW(model, { weightDecay: 0.01 });
    const xh = randomArray(BATCH * D, seed, 10);
    const yh = randomArray(BATCH * D, seed, 11, -0.5, 0.5);
    const live: number[] = [];
    const losses: number[] = [];
    let warmCreated = 0;
    for (let step = 1; step <= 100; step++) {
      const loss = tidy(() => {
        const l = lossOf(model, tensor(xh, [BATCH, D], { backend: b }), tensor(yh, [BATCH, D], { backend: b }));
        backward(l);
        optimizer.update(1e-2, clipGradNorm(optimizer.flat, 1).scale);
        optimizer.zeroGrad();
        return l;
      });
      if (step % 10 === 1) losses.push(await loss.item());
      loss.dispose();
      live.push(b.gpu.memoryStats().liveBuffers);
      if (step === 3) warmCreated = b.gpu.memoryStats().createdBuffers;
    }
    expect(new Set(live).size, `seed ${seed}: live buffers per step ${[...new Set(live)]}`).toBe(1);
    expect(b.gpu.memoryStats().createdBuffers, 'buffers created after the warm-up').toBe(warmCreated);
    // Parameters, gradients, m, v: one buffer each, whatever the number of parameters.
    expect(live[0] - start.liveBuffers).toBe(4);
    expect(losses.at(-1)!, `seed ${seed}: the loss falls (${losses.map((l) => l.toFixed(4))})`).toBeLessThan(losses[0] * 0.9);
    optimizer.dispose();
    expect(b.gpu.memoryStats().liveBuffers, 'the parameters\' views keep their buffer, not the gradients\'').toBe(start.liveBuffers + 1);
    model.dispose();
    expect(b.gpu.memoryStats().liveBuffers, 'nothing left once the model is disposed').toBe(start.liveBuffers);
  });
});

describe.runIf(gpu !== null)('moving parameters into the flat buffers', () => {
  it('gives their former buffers back to the device: after the optimizer is built, only the four flat buffers are new, nothing pooled', () => {
    const b = gpu!;
    const model = new Mlp(initParams(b, freshSeed()));
    const before = b.gpu.memoryStats();
    const optimizer = new AdamW(model);
    const after = b.gpu.memoryStats();
    expect(after.pooledBytes, 'pooled bytes: the parameters\' former buffers').toBe(0);
    expect(after.liveBuffers, 'the four flat buffers made, the four parameters\' own gone').toBe(before.liveBuffers);
    optimizer.dispose();
    model.dispose();
  });
});

describe.runIf(gpu !== null)('the buffer pool', () => {
  it('trimPool destroys only free buffers, after submitting recorded work that may still read them', async () => {
    const b = gpu!;
    const x = b.upload(new Float32Array(1000).fill(2));
    const y = b.unary('exp', x); // recorded, not yet submitted
    const z = b.unary('neg', y);
    b.release(y); // free in the pool while the batch still reads it
    const before = b.gpu.memoryStats();
    b.gpu.trimPool();
    const after = b.gpu.memoryStats();
    expect(after.pooledBytes).toBe(0);
    expect(after.liveBuffers).toBe(before.liveBuffers);
    expect((await b.read(z))[0]).toBeCloseTo(-Math.exp(2), 5);
    b.release(x);
    b.release(z);
  });
});

describe('CPU storages over 100 training steps', () => {
  it('SGD: live storages flat, and none left after disposal', async () => {
    const backend = counting(cpu);
    const seed = freshSeed();
    const live: number[] = [];
    const { losses, params, state } = await train(backend, sgd, 100, seed, () => live.push(backend.live));
    expect(new Set(live).size, `live storages per step: ${[...new Set(live)]}`).toBe(1);
    expect(losses.at(-1)!).toBeLessThan(losses[0] * 0.9);
    disposeAll(params, state);
    expect(backend.live).toBe(0);
  });
});
