/**
 * The autograd engine and memory scopes, on every backend: micrograd's example with gradients
 * derived by hand, accumulation where a tensor is used more than once, a diamond, a chain of 10000
 * ops (the walk is iterative), noGrad, broadcast inputs' gradients reduced to their shapes, ties of
 * max, saved tensors released by backward (buffers counted), what a second backward does, and
 * tidy/keep.
 */
import { describe, expect, it } from 'vitest';
import { backward } from '../src/tensor/autograd.js';
import { tensor } from '../src/tensor/create.js';
import { isGradEnabled, noGrad } from '../src/tensor/graph.js';
import { add, div, exp, max, mul, neg, pow, relu, sub, sum, tanh } from '../src/tensor/ops.js';
import { keep, tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { counting } from './helpers/counting.js';
import { expectClose } from './helpers/close.js';
import { freshSeed, randomArray } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();

const BACKENDS = [['cpu', counting(cpu)], ['webgpu', gpu === null ? null : counting(gpu)]] as const;

for (const [name, backend] of BACKENDS) {
  describe.runIf(backend !== null)(`autograd on ${name}`, () => {
    const b = backend!;
    const scalar = (v: number, requiresGrad = true) => tensor([v], [], { backend: b, requiresGrad });
    const values = async (t: Tensor | null) => Array.from(await t!.toFloat32());

    it("micrograd's example: g = 24.7041, dg/da = 138.8338, dg/db = 645.5773", async () => {
      const a = scalar(-4);
      const bb = scalar(2);
      let c = add(a, bb);
      let d = add(mul(a, bb), pow(bb, 3));
      c = add(c, add(c, 1));
      c = add(c, add(add(1, c), neg(a)));
      d = add(d, add(mul(d, 2), relu(add(bb, a))));
      d = add(d, add(mul(3, d), relu(sub(bb, a))));
      const e = sub(c, d);
      const f = pow(e, 2);
      let g = div(f, 2);
      g = add(g, div(10, f));
      // By hand, with a = -4, b = 2:
      //   c = 2(2(a + b) + 1) + 1 - a = 3a + 4b + 3 = -1
      //   d = 4(3(ab + b³) + relu(a + b)) + relu(b - a) = 12(ab + b³) + 4·relu(a + b) + relu(b - a) = 0 + 0 + 6 = 6
      //   e = c - d = -7, f = e² = 49, g = f/2 + 10/f = 24.5 + 0.2040816 = 24.7040816
      //   dg/df = 1/2 - 10/f² = 0.4958351, df/de = 2e = -14, so dg/de = -6.9416910
      //   dc/da = 3, dc/db = 4
      //   dd/da = 12b + 4·[a + b > 0] - [b - a > 0] = 24 + 0 - 1 = 23
      //   dd/db = 12(a + 3b²) + 4·[a + b > 0] + [b - a > 0] = 12·8 + 0 + 1 = 97
      //   dg/da = -6.9416910·(3 - 23) = 138.8338192, dg/db = -6.9416910·(4 - 97) = 645.5772593
      expect(await g.item()).toBeCloseTo(24.7040816, 4);
      backward(g);
      expect(await a.grad!.item()).toBeCloseTo(138.8338192, 3);
      expect(await bb.grad!.item()).toBeCloseTo(645.5772593, 3);
    });

    it('a tensor used twice accumulates: d(x·x)/dx = 2x; x across two branches gets both', async () => {
      const seed = freshSeed();
      const xh = randomArray(37, seed, 1);
      const wh = randomArray(37, seed, 2);
      const x = tensor(xh, [37], { backend: b, requiresGrad: true });
      backward(sum(mul(x, x)));
      expectClose(await x.grad!.toFloat32(), xh.map((v) => 2 * v), { seed });

      // L = Σ x·w + Σ tanh(x): dL/dx = w + 1 - tanh²(x), dL/dw = x.
      const y = tensor(xh, [37], { backend: b, requiresGrad: true });
      const w = tensor(wh, [37], { backend: b, requiresGrad: true });
      backward(add(sum(mul(y, w)), sum(tanh(y))));
      expectClose(await y.grad!.toFloat32(), Float64Array.from(xh, (v, i) => wh[i] + 1 - Math.tanh(v) ** 2), { seed });
      expectClose(await w.grad!.toFloat32(), xh, { seed });
    });

    it('gradients accumulate across backward passes until cleared', async () => {
      const x = tensor([1, 2, 3], [3], { backend: b, requiresGrad: true });
      backward(sum(mul(x, 3)));
      backward(sum(mul(x, x)));
      expect(await values(x.grad)).toEqual([5, 7, 9]); // 3 + 2x
    });

    it('a diamond: b = 2a, c = 3a, d = b·c = 6a², dd/da = 12a', async () => {
      const a = tensor([1, -2, 0.5], [3], { backend: b, requiresGrad: true });
      const left = mul(a, 2);
      const right = mul(a, 3);
      backward(sum(mul(left, right)));
      expect(await values(a.grad)).toEqual([12, -24, 6]);
    });

    it('a chain of 10000 adds neither overflows the stack nor loses the gradient', async () => {
      const x = scalar(0.5);
      let y = x;
      for (let i = 0; i < 10_000; i++) y = add(y, 1e-4);
      expect(await y.item()).toBeCloseTo(1.5, 3);
      backward(y);
      expect(await x.grad!.item()).toBe(1);
    });

    it('noGrad records nothing, nests, and restores the previous mode even on a throw', () => {
      const x = tensor([1, 2], [2], { backend: b, requiresGrad: true });
      const y = noGrad(() => {
        expect(isGradEnabled()).toBe(false);
        noGrad(() => undefined);
        expect(isGradEnabled()).toBe(false);
        return exp(mul(x, x));
      });
      expect(isGradEnabled()).toBe(true);
      expect(y.requiresGrad).toBe(false);
      expect(y.node).toBeNull();
      expect(() => backward(sum(y))).toThrow(/nothing in this graph requires a gradient/);
      expect(() => noGrad(() => { throw new Error('boom'); })).toThrow('boom');
      expect(isGradEnabled()).toBe(true);
      expect(mul(x, x).node?.op).toBe('mul');
    });

    it('backward needs a scalar (any shape of one element)', async () => {
      const x = tensor([1, 2, 3, 4], [2, 2], { backend: b, requiresGrad: true });
      expect(() => backward(mul(x, 2))).toThrow(/scalar, got shape \[2,2\]/);
      backward(sum(x, undefined, true)); // shape [1, 1]
      expect(await values(x.grad)).toEqual([1, 1, 1, 1]);
    });

    it('gradients of broadcast inputs are summed back to their shapes: [3,1] + [1,4], [4] · [3,4], scalar', async () => {
      const seed = freshSeed();
      const r = randomArray(12, seed, 1);
      const weight = tensor(r, [3, 4], { backend: b });
      const col = tensor([1, 2, 3], [3, 1], { backend: b, requiresGrad: true });
      const row = tensor([4, 5, 6, 7], [1, 4], { backend: b, requiresGrad: true });
      backward(sum(mul(add(col, row), weight)));
      expect(col.grad!.shape).toEqual([3, 1]);
      expect(row.grad!.shape).toEqual([1, 4]);
      // d/dcol[i] = Σ_j r[i][j], d/drow[j] = Σ_i r[i][j].
      expectClose(await col.grad!.toFloat32(), [0, 1, 2].map((i) => r[4 * i] + r[4 * i + 1] + r[4 * i + 2] + r[4 * i + 3]), { seed });
      expectClose(await row.grad!.toFloat32(), [0, 1, 2, 3].map((j) => r[j] + r[4 + j] + r[8 + j]), { seed });

      const v = tensor([1, 2, 3, 4], [4], { backend: b, requiresGrad: true });
      const m = tensor(r, [3, 4], { backend: b, requiresGrad: true });
      const s = scalar(2);
      backward(sum(mul(mul(v, m), s)));
      expect(v.grad!.shape).toEqual([4]);
      expectClose(await v.grad!.toFloat32(), [0, 1, 2, 3].map((j) => 2 * (r[j] + r[4 + j] + r[8 + j])), { seed });
      expectClose(await m.grad!.toFloat32(), Array.from(r, (_, i) => 2 * (1 + (i % 4))), { seed });
      expect(s.grad!.shape).toEqual([]);
      expect(await s.grad!.item()).toBeCloseTo([...r].reduce((acc, ri, i) => acc + ri * (1 + (i % 4)), 0), 4);
    });

    it('max over an axis sends the gradient to the largest element, split evenly among ties', async () => {
      const x = tensor([1, 3, 3, 2, -1, 5, 0, 4], [2, 4], { backend: b, requiresGrad: true });
      backward(sum(max(x, 1)));
      expect(await values(x.grad)).toEqual([0, 0.5, 0.5, 0, 0, 1, 0, 0]);
    });

    it('backward releases what the graph saved; a second backward through a consumed graph throws', async () => {
      const seed = freshSeed();
      const x = tensor(randomArray(1000, seed, 1), [1000], { backend: b, requiresGrad: true });
      const before = b.live;
      // exp saves its output, mul both inputs; the scope disposes the intermediates but not what the graph saved.
      const loss = tidy(() => sum(mul(exp(x), tanh(x))));
      const withGraph = b.live;
      expect(withGraph).toBeGreaterThan(before + 1);
      backward(loss);
      // Left: x (already counted), loss and x.grad.
      expect(b.live).toBe(before + 2);
      expectClose(await x.grad!.toFloat32(), Float64Array.from(randomArray(1000, seed, 1), (v) => Math.exp(v) * (Math.tanh(v) + 1 - Math.tanh(v) ** 2)), { seed });
      // Decision: the graph is consumed by backward (like PyTorch without retain_graph); backward
      // through it again throws rather than silently treating the consumed tensors as leaves.
      expect(() => backward(loss)).toThrow(/consumed by an earlier backward/);
      const [hidden, first] = tidy(() => {
        const h = exp(x);
        return [h, sum(h)];
      });
      backward(first);
      expect(() => tidy(() => backward(sum(mul(hidden, 2))))).toThrow(/consumed/);
      for (const t of [loss, hidden, first]) t.dispose();
      x.grad!.dispose();
      x.grad = null;
      expect(b.live).toBe(before);
    });

    it('a graph that is never differentiated frees what it saved when its last tensor goes', async () => {
      const x = tensor(new Float32Array(64).fill(0.25), [64], { backend: b, requiresGrad: true });
      const before = b.live;
      const loss = tidy(() => sum(mul(exp(x), tanh(mul(x, 3)))));
      expect(b.live).toBeGreaterThan(before + 1); // the loss and what its graph saved
      loss.dispose();
      expect(b.live).toBe(before);
      // A graph shared by two outputs: disposing one (and every intermediate) keeps what the other needs.
      const q = tidy(() => {
        const shared = exp(x);
        sum(mul(shared, 2));
        return sum(tanh(shared));
      });
      expect(b.live).toBeGreaterThan(before + 1);
      backward(q);
      expectClose(await x.grad!.toFloat32(), new Float32Array(64).fill(Math.exp(0.25) * (1 - Math.tanh(Math.exp(0.25)) ** 2)));
      q.dispose();
      x.grad!.dispose();
      x.grad = null;
      expect(b.live).toBe(before);
      x.dispose();
    });

    it('tidy disposes intermediates and keeps what it returns (arrays, objects, nested scopes) and what it keeps', async () => {
      const before = b.live;
      const x = tensor([1, 2, 3], [3], { backend: b });
      let inner: Tensor | null = null;
      let kept: Tensor | null = null;
      let dropped: Tensor | null = null;
      const result = tidy(() => {
        dropped = mul(x, 2);
        const nested = tidy(() => {
          inner = add(x, 1);
          kept = keep(mul(inner, 10));
          return { pair: [exp(x), neg(x)], single: inner };
        });
        expect(nested.single.isDisposed).toBe(false);
        return { ...nested, total: sum(nested.single) };
      });
      expect(dropped!.isDisposed).toBe(true);
      expect(x.isDisposed).toBe(false); // made outside any scope
      expect(inner!.isDisposed).toBe(false);
      expect(await values(result.total)).toEqual([9]);
      expect(await values(result.pair[1])).toEqual([-1, -2, -3]);
      expect(await values(kept)).toEqual([20, 30, 40]);
      // x, kept, pair (2), single, total.
      expect(b.live).toBe(before + 6);
      for (const t of [x, kept!, ...result.pair, result.single, result.total]) t.dispose();
      expect(b.live).toBe(before);
    });

    it('tidy disposes its tensors when fn throws, and refuses an async function', () => {
      const before = b.live;
      const x = tensor([1, 2], [2], { backend: b });
      expect(() => tidy(() => {
        mul(x, 3);
        throw new Error('inside');
      })).toThrow('inside');
      expect(b.live).toBe(before + 1);
      // @ts-expect-error: tidy's type already rejects a function returning a Promise
      // eslint-disable-next-line @typescript-eslint/require-await -- the point: an async function, refused
      expect(() => tidy(async () => mul(x, 2))).toThrow(/synchronous/);
      expect(b.live).toBe(before + 1);
      x.dispose();
    });

    it('a loss returned from a tidy still differentiates (the disposed intermediates keep their nodes)', async () => {
      const x = tensor([0.5, -1, 2], [3], { backend: b, requiresGrad: true });
      const loss = tidy(() => sum(mul(mul(x, x), 3)));
      backward(loss);
      expect(await values(x.grad)).toEqual([3, -6, 12]); // 6x
    });
  });
}

describe.runIf(gpu !== null)('the counting backend agrees with the WebGPU buffer pool', () => {
  it('live storages and liveBuffers move together through forward, backward and dispose', () => {
    const b = counting(gpu!);
    const pool = () => gpu!.gpu.memoryStats().liveBuffers;
    const start = { counted: b.live, pool: pool() };
    const x = tensor(new Float32Array(100).fill(0.5), [100], { backend: b, requiresGrad: true });
    const loss = tidy(() => sum(exp(mul(x, x))));
    expect(pool() - start.pool).toBe(b.live - start.counted);
    backward(loss);
    expect(pool() - start.pool).toBe(b.live - start.counted);
    for (const t of [x, loss]) t.dispose();
    expect(pool()).toBe(start.pool);
  });
});
