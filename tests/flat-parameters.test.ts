/**
 * The flat layout (src/train/flat-parameters.ts) against the per-tensor path it replaced, on every
 * backend and on WebGPU with a lowered binding limit (4 KiB bindings at 256 B: the flat buffers and
 * one parameter are each larger than a binding): three steps of backward, the global-norm clip and
 * AdamW give the same parameters, moments and norms as per-tensor gradients clipped by composition
 * and one AdamW op per tensor; gradients accumulated over two backward passes; a parameter that gets
 * no gradient in a step is neither updated nor counted in the norm (its slot still holds the last
 * step's gradient); a layout past one device buffer cut into blocks; views share memory both ways
 * and keep their base alive; each buffer of the layout starts its slots at its own lead.
 */
import { describe, expect, it } from 'vitest';
import { Module } from '../src/nn/module.js';
import { backward } from '../src/tensor/autograd.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor, zeros } from '../src/tensor/create.js';
import { adamwStep } from '../src/tensor/fused.js';
import { noGrad } from '../src/tensor/graph.js';
import { add, assign, div, matmul, maximum, mean, mul, sqrt, sum, tanh } from '../src/tensor/ops.js';
import { keep, tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { AdamW } from '../src/train/adamw.js';
import { clipGradNorm } from '../src/train/clip.js';
import { cpu, webgpuOrSkip, withBindingLimits } from './helpers/backends.js';
import { expectClose } from './helpers/close.js';
import { counting } from './helpers/counting.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

const [BATCH, D, HIDDEN] = [9, 37, 41];
const SHAPES: Record<string, number[]> = { w1: [D, HIDDEN], b1: [HIDDEN], w2: [HIDDEN, 3], b2: [3], unused: [5] };

class Mlp extends Module {
  w1: Tensor;
  b1: Tensor;
  w2: Tensor;
  b2: Tensor;
  /** Used only when the step asks: a parameter that may get no gradient. */
  unused: Tensor;

  constructor(backend: Backend, seed: number) {
    super();
    const make = (name: string, stream: number) => {
      const shape = SHAPES[name];
      return tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed, stream, -0.5, 0.5), shape, { backend, requiresGrad: true });
    };
    this.w1 = make('w1', 1);
    this.b1 = make('b1', 2);
    this.w2 = make('w2', 3);
    this.b2 = make('b2', 4);
    this.unused = make('unused', 5);
  }

  loss(x: Tensor, y: Tensor, useAll: boolean): Tensor {
    const h = tanh(matmul(x, this.w1, { bias: this.b1 }));
    const out = matmul(h, this.w2, { bias: this.b2 });
    const diff = add(out, mul(y, -1));
    const l = mean(mul(diff, diff));
    return useAll ? add(l, mul(sum(mul(this.unused, this.unused)), 0.1)) : l;
  }
}

interface Outcome {
  params: Map<string, Float32Array>;
  unusedAfterStep1: Float32Array;
  m: Map<string, Float32Array>;
  norms: number[];
}

/** Step s uses `unused` only when s is 1; step 2 runs two backward passes (accumulation). Big gradients, so the clip bites. */
const STEPS = 3;
const data = (seed: number, step: number, backend: Backend) => ({
  x: tensor(randomArray(BATCH * D, seed, 10 + step, -3, 3), [BATCH, D], { backend }),
  y: tensor(randomArray(BATCH * 3, seed, 20 + step, -4, 4), [BATCH, 3], { backend }),
});
const hyper = (step: number) => ({ lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step });
const MAX_NORM = 0.5;

async function readAll(named: [string, Tensor][]): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of named) out.set(name, await t.toFloat32());
  return out;
}

function backwardPasses(model: Mlp, seed: number, step: number, backend: Backend): void {
  for (let pass = 0; pass < (step === 2 ? 2 : 1); pass++) {
    const { x, y } = data(seed, step * 10 + pass, backend);
    backward(model.loss(x, y, step === 1));
  }
}

/** The flat path: AdamW over FlatParameters, clipGradNorm's scale applied inside it. */
async function flatRun(backend: Backend, seed: number): Promise<Outcome> {
  const model = new Mlp(backend, seed);
  const optimizer = new AdamW(model, { weightDecay: 0.1 });
  const norms: number[] = [];
  let unusedAfterStep1: Float32Array = new Float32Array();
  for (let step = 1; step <= STEPS; step++) {
    const norm = tidy(() => {
      backwardPasses(model, seed, step, backend);
      const { norm, scale } = clipGradNorm(optimizer.flat, MAX_NORM);
      optimizer.update(1e-2, scale);
      optimizer.zeroGrad();
      return keep(norm);
    });
    norms.push(await norm.item());
    norm.dispose();
    if (step === 1) unusedAfterStep1 = await model.unused.toFloat32();
  }
  const params = await readAll(model.namedParameters());
  const m = await readAll([...optimizer.moments].map(([name, s]) => [name, s.m]));
  optimizer.dispose();
  model.dispose();
  return { params, unusedAfterStep1, m, norms };
}

/** The per-tensor path: fresh gradient tensors, the clip by composition, one AdamW op per tensor. */
async function perTensorRun(backend: Backend, seed: number): Promise<Outcome> {
  const model = new Mlp(backend, seed);
  const moments = new Map(model.namedParameters().map(([name, p]) => [name, { m: keep(zeros(p.shape, { backend })), v: keep(zeros(p.shape, { backend })) }]));
  const norms: number[] = [];
  for (let step = 1; step <= STEPS; step++) {
    const norm = tidy(() => {
      backwardPasses(model, seed, step, backend);
      const withGrad = model.namedParameters().filter(([, p]) => p.grad !== null);
      const norm = noGrad(() => sqrt(withGrad.map(([, p]) => sum(mul(p.grad!, p.grad!))).reduce((a, b) => add(a, b))));
      const scale = noGrad(() => div(MAX_NORM, maximum(add(norm, 1e-6), MAX_NORM)));
      for (const [name, p] of withGrad) {
        const clipped = noGrad(() => mul(p.grad!, scale));
        adamwStep(p, clipped, moments.get(name)!.m, moments.get(name)!.v, hyper(step));
      }
      for (const p of model.parameters()) {
        p.grad?.dispose();
        p.grad = null;
      }
      return keep(norm);
    });
    norms.push(await norm.item());
    norm.dispose();
  }
  const params = await readAll(model.namedParameters());
  const m = await readAll([...moments].map(([name, s]) => [name, s.m]));
  for (const { m: mm, v } of moments.values()) {
    mm.dispose();
    v.dispose();
  }
  model.dispose();
  return { params, unusedAfterStep1: new Float32Array(), m, norms };
}

function expectSame(actual: Outcome, expected: Outcome, seed: number): void {
  expect(expected.norms[0], 'the clip bites in every step').toBeGreaterThan(MAX_NORM);
  expectClose(actual.norms, expected.norms, { seed, tolerance: 1e-5 });
  for (const name of Object.keys(SHAPES)) {
    expectClose(actual.params.get(name)!, expected.params.get(name)!, { seed, tolerance: 1e-5 });
    expectClose(actual.m.get(name)!, expected.m.get(name)!, { seed, tolerance: 1e-4 });
  }
}

for (const [name, backend] of [['cpu', cpu], ['webgpu', gpu]] as const) {
  describe.runIf(backend !== null)(`flat parameters on ${name}`, () => {
    it('three steps (clip, AdamW, an accumulated step, a parameter left without gradient) equal the per-tensor path', async () => {
      const seed = freshSeed();
      const flat = await flatRun(backend!, seed);
      expectSame(flat, await perTensorRun(backend!, seed), seed);
      // `unused` got a gradient in step 1 only: steps 2 and 3 left it alone, though its slot still held step 1's gradient.
      expect(Array.from(flat.params.get('unused')!)).toEqual(Array.from(flat.unusedAfterStep1));
    });
  });
}

describe('flat parameters past one device buffer', () => {
  it('are cut into blocks at slot boundaries, with the same numbers', async () => {
    // 1600 elements for slots, past the leads of the four buffers (0, 256, 512, 768 on the CPU).
    const small = Object.create(cpu, { maxStorageSize: { value: 1600 + 768 } }) as Backend;
    const model = new Mlp(small, 1);
    const optimizer = new AdamW(model);
    expect(optimizer.flat.slots.map((s) => [s.name, s.block, s.offset])).toEqual([['w1', 0, 0], ['b1', 0, 1517], ['w2', 1, 0], ['b2', 1, 123], ['unused', 1, 126]]);
    expect(optimizer.flat.blockSizes).toEqual([1558, 131]);
    optimizer.dispose();
    model.dispose();
    const seed = freshSeed();
    expectSame(await flatRun(small, seed), await perTensorRun(cpu, seed), seed);
  });
});

describe('flat buffers', () => {
  it('start their slots at different leads, 1 KiB apart, the lead left zero', async () => {
    const model = new Mlp(cpu, 1);
    const w1 = await model.w1.toFloat32();
    const optimizer = new AdamW(model);
    const { params, grads } = optimizer.flat;
    expect([params.lead, grads.lead]).toEqual([0, 256]);
    const block = await grads.blocks[0].toFloat32();
    expect(block.length).toBe(256 + optimizer.flat.blockSizes[0]);
    expect(block.subarray(0, 256).every((x) => x === 0)).toBe(true);
    assign(model.w1.gradTarget!, tensor(w1, SHAPES.w1, { backend: cpu }));
    expect(Array.from((await grads.blocks[0].toFloat32()).subarray(256, 256 + w1.length))).toEqual(Array.from(w1));
    expect(Array.from((await params.blocks[0].toFloat32()).subarray(0, w1.length))).toEqual(Array.from(w1));
    optimizer.dispose();
    model.dispose();
  });
});

describe.runIf(gpu !== null)('flat parameters past a binding (WebGPU, 4 KiB bindings)', () => {
  it('equal the per-tensor path under the same limits', async () => {
    const seed = freshSeed();
    // w1 is 37·41·4 = 6068 B, the flat buffers 7424 B: both are bound in windows. The reference
    // runs under the same limits: the matmuls' own windows change gradients by rounding, which
    // Adam's m̂/√v̂ magnifies where a gradient is near zero (3e-4 of p against whole bindings).
    const flat = await withBindingLimits(gpu!, 4096, 256, (limited) => flatRun(limited, seed));
    const reference = await withBindingLimits(gpu!, 4096, 256, (limited) => perTensorRun(limited, seed));
    expectSame(flat, reference, seed);
  });

  it('lays slots out at the binding alignment', async () => {
    await withBindingLimits(gpu!, 4096, 256, (limited) => {
      const model = new Mlp(limited, 1);
      const optimizer = new AdamW(model);
      expect(optimizer.flat.slots.map((s) => [s.name, s.offset])).toEqual([['w1', 0], ['b1', 1536], ['w2', 1600], ['b2', 1728], ['unused', 1792]]);
      expect(optimizer.flat.blockSizes).toEqual([1856]);
      optimizer.dispose();
      model.dispose();
    });
  });
});

describe('views', () => {
  it('share memory both ways, and keep their base alive until the last is disposed', async () => {
    const backend = counting(cpu);
    const base = tensor(Float32Array.from({ length: 10 }, (_, i) => i), [10], { backend });
    const v = base.view(4, [2, 3]);
    assign(v, tensor(new Float32Array(6).fill(-1), [6], { backend }));
    expect(Array.from(await base.toFloat32())).toEqual([0, 1, 2, 3, -1, -1, -1, -1, -1, -1]);
    assign(base, tensor(new Float32Array(10).fill(7), [10], { backend }));
    expect(Array.from(await v.toFloat32())).toEqual([7, 7, 7, 7, 7, 7]);
    expect(() => base.view(6, [5])).toThrow(/lies outside storage of 10/);
    const live = backend.live;
    base.dispose();
    expect(Array.from(await v.toFloat32()), 'the view still reads its base').toEqual([7, 7, 7, 7, 7, 7]);
    v.dispose();
    expect(backend.live, 'the view and its base released').toBe(live - 2);
  });

  it.runIf(gpu !== null)('on WebGPU: a view reads and writes at its offset, and must start aligned', async () => {
    const b = gpu!;
    const align = b.viewAlignment;
    const base = tensor(Float32Array.from({ length: 3 * align }, (_, i) => i), [3 * align], { backend: b });
    const v = base.view(align, [5]);
    expect(Array.from(await v.toFloat32())).toEqual([0, 1, 2, 3, 4].map((i) => align + i));
    assign(v, tensor(new Float32Array(5).fill(-2), [5], { backend: b }));
    const all = await base.toFloat32();
    expect(Array.from(all.subarray(align - 1, align + 6))).toEqual([align - 1, -2, -2, -2, -2, -2, align + 5]);
    expect(() => base.view(1, [5])).toThrow(/not aligned/);
    v.dispose();
    base.dispose();
  });
});
