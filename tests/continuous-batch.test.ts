/**
 * Continuous batching on both backends: requests of different prompt lengths, lengths and sampling
 * settings, arriving while others decode, with fewer slots than requests (so slots are reused),
 * each equal to `generate` alone; the pooled decode step (rows in slots of one KVCachePool, each at
 * its own position), the prefill into a slot and a step where prompts join decoding rows against
 * rows prefilled and decoded alone, bit for bit; the pool's
 * slot bookkeeping; an aborted request frees its slot; the queue bound; requests that do not fit in
 * the context.
 */
import { describe, expect, it } from 'vitest';
import { ClosedError, ContinuousBatcher, QueueFullError } from '../src/gpt/continuous-batch.js';
import { generate, type GenerateOptions, type GenerateResult } from '../src/gpt/generate.js';
import { KVCache } from '../src/gpt/kv-cache.js';
import { KVCachePool } from '../src/gpt/kv-cache-pool.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { noGrad } from '../src/tensor/graph.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { freshSeed, randomInts } from './helpers/random-data.js';
import { rejectionOf } from './helpers/rejection.js';
import { sharpTinyModel } from './helpers/sharp-model.js';

const gpu = await webgpuOrSkip();
const backends: [string, Backend | null][] = [['cpu', cpu], ['webgpu', gpu]];
const prompt = (length: number, seed: number, stream: number): number[] => Array.from(randomInts(length, seed, stream, 50000));
const summary = (r: GenerateResult) => ({ ids: r.ids, text: r.text, promptTokens: r.promptTokens, newTokens: r.newTokens, stopReason: r.stopReason });

describe.each(backends)('%s', (_name, backend) => {
  it.runIf(backend !== null)('one decode step over rows at different positions in pooled slots equals each row decoded alone', async () => {
    const seed = freshSeed();
    const model = sharpTinyModel(backend!, seed % 1000);
    const lengths = [1, 7, 30, 33];
    const pool = new KVCachePool(model.config, 5, backend!);
    // Rows in slots out of order, one slot left free between them: [3, 0, 4, 2].
    const taken = [0, 1, 2, 3, 4].map(() => pool.acquire());
    pool.release(taken[1]);
    const slots = [3, 0, 4, 2];
    const alone = lengths.map(() => new KVCache(model.config, 1, backend!));
    const next = prompt(lengths.length, seed, 99);
    const expected: Float32Array[] = [];
    for (const [i, length] of lengths.entries()) {
      const ids = tensor(Int32Array.from(prompt(length, seed, i)), [1, length], { backend: backend! });
      const prefilled = await noGrad(() => model.forward(ids, { pooled: { pool, slots: [slots[i]] }, lastOnly: true })).toFloat32();
      const prefilledAlone = await noGrad(() => model.forward(ids, { cache: alone[i], lastOnly: true })).toFloat32();
      expect(Array.from(prefilled), `seed ${seed}, prefill ${i}`).toEqual(Array.from(prefilledAlone));
      const one = tensor(Int32Array.of(next[i]), [1, 1], { backend: backend! });
      expected.push(await noGrad(() => model.forward(one, { cache: alone[i], lastOnly: true })).toFloat32());
    }
    const batch = tensor(Int32Array.from(next), [lengths.length, 1], { backend: backend! });
    const rows = await noGrad(() => model.forward(batch, { pooled: { pool, slots }, lastOnly: true })).toFloat32();
    const V = model.config.vocab_size;
    for (const [i, length] of lengths.entries()) {
      expect(Array.from(rows.subarray(i * V, (i + 1) * V)), `seed ${seed}, row ${i}`).toEqual(Array.from(expected[i]));
      expect(pool.length(slots[i])).toBe(length + 1);
    }
    expect(() => model.forward(batch, { pooled: { pool, slots: slots.slice(1) } })).toThrow(/one distinct slot per row/);
    expect(() => model.forward(batch, { pooled: { pool, slots: [3, 0, 3, 2] } })).toThrow(/one distinct slot per row/);
    expect(() => model.forward(tensor(Int32Array.of(1, 2), [1, 2], { backend: backend! }), { pooled: { pool, slots: [1] } })).toThrow('slot 1 is not a taken slot of this pool of 5');
    pool.dispose();
  });

  it.runIf(backend !== null)('a step where prompts join decoding rows equals each prefilled and decoded alone', async () => {
    const seed = freshSeed();
    const model = sharpTinyModel(backend!, seed % 1000);
    const pool = new KVCachePool(model.config, 4, backend!);
    const slots = [0, 1, 2, 3].map(() => pool.acquire());
    const alone = slots.map(() => new KVCache(model.config, 1, backend!));
    const ids = (values: readonly number[]) => tensor(Int32Array.from(values), [1, values.length], { backend: backend! });
    // Slots 0 and 1 hold 7 and 30 tokens and decode one each; a prompt of 5 and one of 1 join slots 2 and 3.
    for (const [i, length] of [7, 30].entries()) {
      const p = prompt(length, seed, i);
      noGrad(() => model.forward(ids(p), { pooled: { pool, slots: [slots[i]] }, lastOnly: true })).dispose();
      noGrad(() => model.forward(ids(p), { cache: alone[i], lastOnly: true })).dispose();
    }
    const fed = [prompt(1, seed, 10), prompt(1, seed, 11), prompt(5, seed, 12), prompt(1, seed, 13)];
    const expected: Float32Array[] = [];
    for (const [i, tokens] of fed.entries()) expected.push(await noGrad(() => model.forward(ids(tokens), { cache: alone[i], lastOnly: true })).toFloat32());
    // Joining and decoding sequences interleaved: rows come back in the order given.
    const order = [2, 0, 3, 1];
    const rows = await noGrad(() => model.head(model.stepHidden(pool, order.map((i) => ({ slot: slots[i], ids: fed[i] }))))).toFloat32();
    const V = model.config.vocab_size;
    for (const [r, i] of order.entries()) expect(Array.from(rows.subarray(r * V, (r + 1) * V)), `seed ${seed}, sequence ${i}`).toEqual(Array.from(expected[i]));
    expect(slots.map((slot) => pool.length(slot))).toEqual([8, 31, 5, 1]);
    expect(() => model.stepHidden(pool, [{ slot: 0, ids: [1] }, { slot: 0, ids: [2] }])).toThrow(/a slot of its own/);
    expect(() => model.stepHidden(pool, [{ slot: 0, ids: [] }])).toThrow(/a slot of its own/);
    pool.dispose();
  });

  it.runIf(backend !== null)('requests that join and leave a running batch each equal generate alone, slots reused', async () => {
    const seed = freshSeed();
    const model = sharpTinyModel(backend!, seed % 1000);
    const batcher = new ContinuousBatcher(model, { slots: 3, queue: 10 });
    const requests: [number[], GenerateOptions][] = [
      [prompt(5, seed, 0), { maxNewTokens: 20, eosId: null }],
      [prompt(33, seed, 1), { maxNewTokens: 12, eosId: null }],
      [prompt(1, seed, 2), { maxNewTokens: 25, eosId: null, temperature: 0.9, topK: 50, seed: 7 }],
      [prompt(12, seed, 3), { maxNewTokens: 9, eosId: null, repetitionPenalty: 1.3 }],
      [[], { maxNewTokens: 15, eosId: null, temperature: 1.2, topP: 0.8, seed: 3 }],
      [prompt(50, seed, 5), { maxNewTokens: 14, eosId: null }],
    ];
    const expected: GenerateResult[] = [];
    for (const [ids, options] of requests) expected.push(await generate(model, ids, options));
    expect(new Set(expected[0].ids).size, 'a varied output (else the test proves little)').toBeGreaterThan(5);

    const streamed = requests.map(() => '');
    const results: Promise<GenerateResult>[] = [];
    for (const [i, [ids, options]] of requests.entries()) {
      results.push(batcher.submit(ids, { ...options, onToken: (event) => (streamed[i] += event.text) }));
      // Later requests arrive while earlier ones are decoding.
      if (i === 2) {
        const stepsAtSubmit = batcher.steps;
        while (batcher.steps < stepsAtSubmit + 4) await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
    expect(batcher.activeCount + batcher.waitingCount).toBeGreaterThan(3); // more requests than slots
    const got = await Promise.all(results);
    got.forEach((result, i) => {
      expect(summary(result), `seed ${seed}, request ${i}`).toEqual(summary(expected[i]));
      expect(streamed[i]).toBe(result.text);
    });
    // Batched: fewer steps than the requests' tokens one by one, and more than one row per step on average.
    const tokens = expected.reduce((n, r) => n + r.newTokens, 0);
    expect(batcher.rowsServed).toBe(tokens); // every token, a request's first included, is a row of a step
    expect(batcher.steps).toBeLessThan(batcher.rowsServed);
    await batcher.close();
    expect(() => batcher.submit([1], {})).toThrow(ClosedError);
    batcher.dispose();
  });
});

describe('cpu', () => {
  it('a cache pool hands out each slot once, forgets a released slot and refuses overflow', () => {
    const model = sharpTinyModel(cpu, 3);
    const pool = new KVCachePool(model.config, 2, cpu, 8);
    expect(pool.layer(0).k.shape).toEqual([2, model.config.n_head, 8, model.config.n_embd / model.config.n_head]);
    const [a, b] = [pool.acquire(), pool.acquire()];
    expect([a, b]).toEqual([0, 1]);
    expect(() => pool.acquire()).toThrow('all 2 cache slots are taken');
    pool.advance(b, 5);
    expect(() => pool.advance(b, 4)).toThrow('cache slot 1 of 8 positions overflows at 9');
    pool.release(b);
    expect(() => pool.length(b)).toThrow('slot 1 is not a taken slot of this pool of 2');
    expect(() => pool.release(b)).toThrow('slot 1 is not a taken slot of this pool of 2');
    expect(pool.acquire()).toBe(1);
    expect(pool.length(1)).toBe(0);
    expect(pool.freeCount).toBe(0);
    expect(() => new KVCachePool(model.config, 0, cpu)).toThrow('a cache pool needs an integer ≥ 1 of slots, got 0');
    pool.dispose();
  });

  it('an aborted request frees its slot for the next; the queue is bounded; a request must fit the context', async () => {
    const model = sharpTinyModel(cpu, 11);
    const batcher = new ContinuousBatcher(model, { slots: 1, queue: 1 });
    const gone = new AbortController();
    let seen = 0;
    const first = batcher.submit(prompt(4, 1, 0), { maxNewTokens: 50, eosId: null, signal: gone.signal, onToken: () => ++seen === 3 && gone.abort() });
    const second = batcher.submit(prompt(4, 1, 1), { maxNewTokens: 5, eosId: null });
    expect(() => batcher.submit([1], { maxNewTokens: 1 })).toThrow(QueueFullError);
    const aborted = await first;
    expect(aborted.stopReason).toBe('aborted');
    expect(aborted.ids.length).toBe(3);
    expect((await second).ids).toEqual((await generate(model, prompt(4, 1, 1), { maxNewTokens: 5, eosId: null })).ids);
    expect(() => batcher.submit(prompt(60, 1, 2), { maxNewTokens: 5 })).toThrow(/60 prompt tokens \+ 5 new tokens exceed the context of 64/);
    expect((await rejectionOf((async () => batcher.submit([1], { temperature: -1 }))())).message).toMatch(/temperature/);
    const failing = batcher.submit([1, 2], { maxNewTokens: 5, onToken: () => { throw new Error('listener broke'); } });
    const fine = batcher.submit([3, 4], { maxNewTokens: 4, eosId: null });
    expect((await rejectionOf(failing)).message).toBe('listener broke');
    expect((await fine).ids.length).toBe(4);
    await batcher.close();
    batcher.dispose();
  });
});
