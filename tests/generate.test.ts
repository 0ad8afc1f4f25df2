/**
 * The generation loop, on both backends: cached and uncached greedy decoding agree token for token
 * (prompts of 1 to 90 tokens, most crossing the 64-position context, one cut with a warning); a
 * batch of prompts of different lengths equals generating each alone (cached and uncached, with a
 * stop string that ends one sequence early); seeded sampling reproduces; the decode loop allocates no
 * GPU buffer after its first steps. A scripted model (its logits spell a fixed text) checks what the
 * loop does around the model: streaming multi-byte characters, stop strings, end-of-text, the window
 * policy at the context's end.
 */
import { describe, expect, it } from 'vitest';
import { PRESETS, type GPT2Config } from '../src/gpt/config.js';
import { generate, generateBatch, generateStream, type GenerateOptions, type TokenEvent } from '../src/gpt/generate.js';
import { initializeWeights } from '../src/gpt/init.js';
import type { KVCache } from '../src/gpt/kv-cache.js';
import { GPT2 } from '../src/gpt/model.js';
import { EOS_ID, Tokenizer } from '../src/gpt/tokenizer.js';
import type { Backend } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { noGrad } from '../src/tensor/graph.js';
import { mul } from '../src/tensor/ops.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { freshSeed, randomInts } from './helpers/random-data.js';

const gpu = await webgpuOrSkip();
const tokenizer = new Tokenizer();
const CONTEXT = PRESETS.tiny.n_positions; // 64

/**
 * The tiny preset (d 32, 2 layers, 64 positions, GPT-2's vocabulary) with its matrices (but the tied
 * embedding) scaled by 5: at GPT-2's init scale a random model mostly repeats its last token, which
 * would let a cache that ignores the past pass; scaled, its greedy output varies with the context.
 */
function sharpTinyModel(backend: Backend, seed: number): GPT2 {
  const model = new GPT2(PRESETS.tiny, backend);
  initializeWeights(model, seed);
  noGrad(() => {
    for (const [name, p] of model.namedParameters()) if (p.rank >= 2 && name !== 'wte.weight') model.replaceParameter(name, mul(p, 5));
  });
  return model.eval();
}

const randomPrompt = (length: number, seed: number, stream: number): number[] => Array.from(randomInts(length, seed, stream, 50000));

const backends: [string, Backend | null][] = [['cpu', cpu], ['webgpu', gpu]];

describe.each(backends)('%s', (_name, backend) => {
  it.runIf(backend !== null)('cached and uncached greedy decoding give the same ids, across the context\'s end', async () => {
    const seed = freshSeed();
    const model = sharpTinyModel(backend!, seed % 1000);
    for (const [i, length] of [1, 9, 33, 64, 90].entries()) {
      const warnings: string[] = [];
      const options: GenerateOptions = { temperature: 0, maxNewTokens: 40, eosId: null, onWarning: (w) => warnings.push(w) };
      const prompt = randomPrompt(length, seed, i);
      const cached = await generate(model, prompt, { ...options, useCache: true });
      const uncached = await generate(model, prompt, { ...options, useCache: false });
      expect(cached.ids, `seed ${seed}, prompt of ${length}`).toEqual(uncached.ids);
      expect(cached.ids.length).toBe(40);
      expect(new Set(cached.ids).size, 'a varied output (else the test proves little)').toBeGreaterThan(10);
      expect(cached.promptTokens).toBe(Math.min(length, CONTEXT));
      expect(warnings.length).toBe(length > CONTEXT ? 2 : 0); // one per run
      if (length > CONTEXT) expect(warnings[0]).toMatch(/90 tokens exceeds the context of 64: keeping its last 64/);
    }
    model.dispose();
  });

  it.runIf(backend !== null)('a batch of prompts of different lengths equals each alone at temperature 0', async () => {
    const seed = freshSeed();
    const model = sharpTinyModel(backend!, seed % 1000);
    const prompts = [5, 17, 40].map((n, i) => randomPrompt(n, seed, 10 + i));
    const base: GenerateOptions = { temperature: 0, maxNewTokens: 30, eosId: null };
    // A stop string from the middle of the second prompt's output ends that sequence early in the batch.
    const probe = await generate(model, prompts[1], base);
    const stop = tokenizer.decode(probe.ids.slice(8, 10));
    for (const useCache of [true, false]) {
      const options = { ...base, useCache, stop: [stop] };
      const alone = [];
      for (const prompt of prompts) alone.push(await generate(model, prompt, options));
      const batch = await generateBatch(model, prompts, options);
      expect(alone[1].stopReason).toBe('stop');
      expect(alone[1].ids.length).toBeLessThan(30);
      for (let i = 0; i < prompts.length; i++) {
        expect(batch[i].ids, `seed ${seed}, prompt ${i}, cache ${useCache}`).toEqual(alone[i].ids);
        expect(batch[i].text).toBe(alone[i].text);
        expect(batch[i].stopReason).toBe(alone[i].stopReason);
      }
    }
    model.dispose();
  });

  it.runIf(backend !== null)('fixed-seed sampling reproduces, with or without the cache; another seed differs', async () => {
    const model = sharpTinyModel(backend!, 3);
    const prompt = tokenizer.encode('Once upon a time');
    const options: GenerateOptions = { temperature: 1, topK: 200, topP: 0.95, repetitionPenalty: 1.3, maxNewTokens: 24, eosId: null };
    const a = await generate(model, prompt, { ...options, seed: 42 });
    const b = await generate(model, prompt, { ...options, seed: 42 });
    const c = await generate(model, prompt, { ...options, seed: 42, useCache: false });
    const d = await generate(model, prompt, { ...options, seed: 43 });
    expect(b.ids).toEqual(a.ids);
    expect(c.ids).toEqual(a.ids);
    expect(d.ids).not.toEqual(a.ids);
    // The first sequence of a batch draws with the same stream as a lone generation.
    const [first] = await generateBatch(model, [prompt, tokenizer.encode('Hello')], { ...options, seed: 42 });
    expect(first.ids).toEqual(a.ids);
    model.dispose();
  });
});

describe.runIf(gpu !== null)('webgpu memory', () => {
  it('the cached decode loop allocates no GPU buffer after its first steps, and frees everything at the end', async () => {
    const model = sharpTinyModel(gpu!, 1);
    const before = gpu!.gpu.memoryStats();
    const stats: { created: number; live: number }[] = [];
    const stream = generateStream(model, randomPrompt(12, 5, 0), { temperature: 0.8, maxNewTokens: 30, eosId: null, seed: 1 });
    for await (const _ of stream) {
      const s = gpu!.gpu.memoryStats();
      stats.push({ created: s.createdBuffers, live: s.liveBuffers });
    }
    expect(stats.length).toBe(30);
    // Step 1 is the prefill, step 2 the first decode step; from step 3 on, every buffer comes from the pool.
    for (const s of stats.slice(3)) expect(s).toEqual(stats[2]);
    const after = gpu!.gpu.memoryStats();
    expect(after.liveBuffers).toBe(before.liveBuffers);
    model.dispose();
  });
});

/**
 * A stand-in for GPT2 whose logits spell `script`: its k-th forward call puts 10 on script[k]
 * (0 elsewhere) for every row. It records the length of each call's input.
 */
class ScriptedModel {
  training = false;
  readonly calls: number[] = [];
  constructor(readonly config: GPT2Config, readonly backend: Backend, private readonly script: readonly number[]) {}

  eval(): this {
    return this;
  }

  train(): this {
    return this;
  }

  forward(ids: Tensor, { cache }: { cache?: KVCache; lastOnly?: boolean } = {}): Tensor {
    const [B, T] = ids.shape;
    const V = this.config.vocab_size;
    const next = this.script[Math.min(this.calls.length, this.script.length - 1)];
    this.calls.push(T);
    cache?.advance(T);
    const logits = new Float32Array(B * V);
    for (let b = 0; b < B; b++) logits[b * V + next] = 10;
    return tensor(logits, [B, 1, V], { backend: this.backend });
  }
}

function scripted(script: readonly number[], config: GPT2Config = PRESETS.tiny): ScriptedModel & GPT2 {
  return new ScriptedModel(config, cpu, script) as unknown as ScriptedModel & GPT2;
}

async function collect(model: GPT2, prompt: number[], options: GenerateOptions) {
  const events: TokenEvent[] = [];
  const result = await generate(model, prompt, { ...options, onToken: (e) => events.push(e) });
  return { events, result, streamed: events.map((e) => e.text).join('') };
}

describe('around the model (scripted logits)', () => {
  it('streams multi-byte characters whole: no U+FFFD, no lone surrogate, pieces add up to the text', async () => {
    const text = ' Ünïcödé ǅ ẞ 日本語 🎉🚀👍🏽 🇪🇸 𝔘𝔫𝔦';
    const ids = tokenizer.encode(text);
    for (const useCache of [true, false]) {
      const { events, result, streamed } = await collect(scripted(ids), [464], { temperature: 0, maxNewTokens: ids.length, eosId: null, useCache });
      expect(result.ids).toEqual(ids);
      expect(result.text).toBe(text);
      expect(streamed).toBe(text);
      for (const { text: piece } of events) {
        expect(piece).not.toContain('\uFFFD');
        expect(Buffer.from(piece, 'utf8').toString('utf8')).toBe(piece);
      }
      expect(events.some((e) => e.text === '')).toBe(true); // some token ended mid-character
    }
  });

  it('stops at a stop string (cut before it), holding back text that may start one', async () => {
    const ids = tokenizer.encode(' A STAR then STOP here');
    const { events, result, streamed } = await collect(scripted(ids), [464], { temperature: 0, maxNewTokens: 50, stop: ['STOP', 'never'] });
    expect(result.text).toBe(' A STAR then ');
    expect(result.stopReason).toBe('stop');
    expect(streamed).toBe(result.text);
    expect(events.at(-1)!.done).toBe('stop');
    expect(tokenizer.decode(result.ids)).toContain('STOP'); // ids keep the token that completed it
    // " ST" of "STAR" was held back until "AR" showed it was no stop.
    const starAt = events.findIndex((e) => e.text.includes('AR'));
    expect(events.slice(0, starAt).map((e) => e.text).join('')).not.toContain('ST');
  });

  it('stops at end-of-text (not part of the output, counted as generated), or not with eosId null', async () => {
    const ids = [...tokenizer.encode(' Hello there'), EOS_ID, ...tokenizer.encode(' more')];
    const stopped = await generate(scripted(ids), [464], { temperature: 0, maxNewTokens: 50 });
    expect(stopped.stopReason).toBe('eos');
    expect(stopped.text).toBe(' Hello there');
    expect(stopped.ids).toEqual(tokenizer.encode(' Hello there'));
    expect(stopped.newTokens).toBe(stopped.ids.length + 1);
    const through = await generate(scripted(ids), [464], { temperature: 0, maxNewTokens: ids.length, eosId: null });
    expect(through.ids).toEqual(ids);
    expect(through.stopReason).toBe('length');
  });

  it('maxNewTokens 0 generates nothing; an empty prompt starts from end-of-text', async () => {
    const none = await generate(scripted([11]), [464, 465], { maxNewTokens: 0 });
    expect(none).toMatchObject({ ids: [], text: '', newTokens: 0, promptTokens: 2, stopReason: 'length' });
    const model = scripted(tokenizer.encode(' ok'));
    const fromEmpty = await generate(model, [], { temperature: 0, maxNewTokens: 1 });
    expect(fromEmpty.promptTokens).toBe(1);
    expect(fromEmpty.text).toBe(' ok');
    expect(model.calls).toEqual([1]);
  });

  it('window policy: the cached path re-prefills the last ⌈context/2⌉ tokens when the context is full', async () => {
    const script = Array.from({ length: 100 }, (_, i) => 1000 + i);
    const ones = (n: number) => Array<number>(n).fill(1);
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    // Prompt of 10, then one token a step until 64 positions are filled (54 steps); the 100-token
    // script then needs two restarts of the window at its last 32 tokens (the new one included),
    // each followed by one token a step until the window is full again (32 steps), then 11 more.
    const cached = scripted(script);
    await generate(cached, randomPrompt(10, 1, 0), { temperature: 0, maxNewTokens: 100, eosId: null });
    expect(cached.calls).toEqual([10, ...ones(54), 32, ...ones(32), 32, ...ones(11)]);
    // The uncached path feeds the same windows whole.
    const uncached = scripted(script);
    await generate(uncached, randomPrompt(10, 1, 0), { temperature: 0, maxNewTokens: 100, eosId: null, useCache: false });
    expect(uncached.calls).toEqual([10, ...range(11, 64), 32, ...range(33, 64), 32, ...range(33, 43)]);
  });

  it('rejects ids outside the vocabulary and bad options', async () => {
    await expect(generate(scripted([1]), [50257], {})).rejects.toThrow(/outside the vocabulary/);
    await expect(generate(scripted([1]), [1], { maxNewTokens: -1 })).rejects.toThrow(/max tokens/);
    await expect(generate(scripted([1]), [1], { topP: 0 })).rejects.toThrow(/top-p/);
    await expect(generate(scripted([1]), [1], { stop: [''] })).rejects.toThrow(/stop string/);
  });
});
