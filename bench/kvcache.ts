/**
 * Generation speed with and without the KV cache: tokens per second (generated tokens, prefill
 * included) for 64, 128, 256 and 512 new tokens after a 64-token prompt, the speed-up, the cached
 * per-token latency early and late, and the cached decode rate against its memory-bound limit.
 * Prints a table and, last, one JSON line:
 * {"bench":"kvcache","device":…,"config":{…},"prompt_tokens":64,"results":[{"new_tokens":64,
 *  "cached_tokens_per_s":…,"uncached_tokens_per_s":…,"speedup":…},…],"memory_bound_fraction":…,…}
 *
 *   npx tsx bench/kvcache.ts [--shapes default|gpt2|gpt2-medium] [--device webgpu|cpu] [--runs 3] [--full] [--dtype f32|f16|bf16]
 *
 * Shapes (random weights, GPT-2's init, GPT-2's vocabulary of 50257 and 1024 positions): `default`
 * d 256, 4 layers, 4 heads (runs in about 2 minutes on lavapipe); `gpt2` and `gpt2-medium` the presets.
 *
 * Method. Greedy decoding (temperature 0, no end-of-text stop), so a run of 512 tokens does exactly
 * the work of a run of N < 512 up to its N-th token: each run records when every token arrives, and
 * the time to N tokens is read off it (median over --runs runs, after a warm-up run).
 * - Cached: --runs whole runs of 512 tokens.
 * - Uncached, default: the uncached path's step that makes token k recomputes a window of 64 + k − 1
 *   tokens, and its cost depends on that length alone (it is affine in it: the table shows the
 *   samples). So one step is timed (median of --runs after a warm-up) at windows of 64 to 575 tokens
 *   in steps of 64, and the time to N tokens is the sum of the steps' times, interpolated linearly
 *   between the samples. A whole uncached run of 64 tokens is also timed and printed beside its
 *   estimate, as a check. Whole uncached runs up to 512 tokens take ~7 minutes each on lavapipe at the
 *   default shapes: --full times those instead (one run, or --runs).
 * - Each of the --runs rounds measures the copy, takes a cached run, then the uncached samples (or
 *   run): all three sample the same minutes, so a shared host whose speed drifts (±30% between runs
 *   here, the copy 17–28 GB/s) moves them alike instead of skewing their ratios.
 * - Memory-bound limit: a cached decode step reads every weight once (the tied head reads all of wte;
 *   the embeddings one row each). Its floor is those bytes ÷ the bandwidth of a 64 MiB device-to-device
 *   copy (bench/kernel-rows/copy.ts, bytes read + written per second, as bench/kernels.ts measures it;
 *   the median of the rounds').
 *   The decode rate is 1000 ÷ the median step time from token 2 to 512 (the prefill excluded).
 * - `--dtype f16` (or bf16): the same weights rounded to that type (the matrices; biases and
 *   LayerNorms stay f32) in a second model, whose cached run follows the f32 one in every round; a
 *   second table compares the two (bytes read a token, decode rate, tokens/s at each length), and
 *   the JSON line gains `f16` (or `bf16`).
 */
import { parseArgs } from 'node:util';
import { copyRows } from './kernel-rows/copy.js';
import { printTable } from './harness.js';
import { benchShapes } from './shapes.js';
import { generate, generateStream } from '../src/gpt/generate.js';
import { initializeWeights } from '../src/gpt/init.js';
import { modelFromStateDict } from '../src/gpt/load-model.js';
import { hostWeights } from '../src/gpt/model-bytes.js';
import { GPT2 } from '../src/gpt/model.js';
import { Tokenizer } from '../src/gpt/tokenizer.js';
import { createBackend, releaseBackend } from '../src/node/backend.js';
import { isHalfDType, type Backend } from '../src/tensor/backend.js';

const PROMPT_TOKENS = 64;
const LENGTHS = [64, 128, 256, 512];
const MAX_NEW = Math.max(...LENGTHS);

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`--${flag} must be ${allowed.join(' or ')}, got ${value}`);
  return value as T;
}

function parseFlags() {
  const { values } = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      shapes: { type: 'string', default: 'default' },
      device: { type: 'string', default: 'webgpu' },
      runs: { type: 'string', default: '3' },
      full: { type: 'boolean', default: false },
      dtype: { type: 'string', default: 'f32' },
    },
  });
  const dtype = oneOf('dtype', values.dtype, ['f32', 'f16', 'bf16']);
  benchShapes(values.shapes);
  const device = oneOf('device', values.device, ['webgpu', 'cpu']);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got ${values.runs}`);
  return { shapes: values.shapes, device, runs, full: values.full, dtype };
}

/**
 * Bytes a cached decode step reads: every parameter once in its storage type, but only one row of
 * the position embedding (wte is read whole by the tied head; an untied head would add its own matrix).
 */
function weightBytesPerToken(model: GPT2): number {
  let bytes = 0;
  for (const [name, p] of model.namedParameters()) {
    const elements = name === 'wpe.weight' ? model.config.n_embd : p.size;
    bytes += elements * (isHalfDType(p.dtype) ? 2 : 4);
  }
  return bytes;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Milliseconds from the start of a greedy run to the arrival of each of its `count` tokens. */
async function arrivals(model: GPT2, prompt: readonly number[], count: number, useCache: boolean): Promise<number[]> {
  const times: number[] = [];
  const start = performance.now();
  for await (const _ of generateStream(model, prompt, { temperature: 0, maxNewTokens: count, eosId: null, useCache })) {
    times.push(performance.now() - start);
  }
  if (times.length !== count) throw new Error(`expected ${count} tokens, got ${times.length}`);
  return times;
}

/** Element-wise median of several runs' arrival times. */
const medianArrivals = (runs: readonly number[][]): number[] => runs[0].map((_, i) => median(runs.map((a) => a[i])));

/** One uncached step at a window of `window` tokens: a 1-token generation from a prompt that long (ms). */
async function uncachedStepMs(model: GPT2, prompt: readonly number[], window: number): Promise<number> {
  const start = performance.now();
  await generate(model, prompt.slice(0, window), { temperature: 0, maxNewTokens: 1, eosId: null, useCache: false });
  return performance.now() - start;
}

/** Piecewise-linear interpolation through (xs[i], ys[i]), xs ascending. */
function interpolate(xs: readonly number[], ys: readonly number[], x: number): number {
  let i = 1;
  while (i < xs.length - 1 && x > xs[i]) i++;
  const t = (x - xs[i - 1]) / (xs[i] - xs[i - 1]);
  return ys[i - 1] + t * (ys[i] - ys[i - 1]);
}

/** A fixed 64-token prompt of ordinary text. */
function makePrompt(tokenizer: Tokenizer, length: number): number[] {
  const text = 'The quick brown fox jumps over the lazy dog while the committee reviews the annual budget report. ';
  const ids: number[] = [];
  while (ids.length < length) ids.push(...tokenizer.encode(text));
  return ids.slice(0, length);
}

async function main(): Promise<void> {
  let flags: ReturnType<typeof parseFlags>;
  try {
    flags = parseFlags();
  } catch (e) {
    console.error(`bench/kvcache.ts: ${(e as Error).message}`);
    process.exitCode = 2;
    return;
  }
  const backend: Backend = await createBackend(flags.device);
  try {
    const config = benchShapes(flags.shapes);
    console.log(`device: ${backend.description}`);
    console.log(`shapes: ${flags.shapes} (d ${config.n_embd}, ${config.n_layer} layers, ${config.n_head} heads, ${config.n_positions} positions, vocabulary ${config.vocab_size}), random weights`);
    const model = new GPT2(config, backend);
    initializeWeights(model, 0);
    model.eval();
    // The same weights, the matrices rounded to 16 bits, beside the f32 model (see Method).
    const half = flags.dtype !== 'f32' ? modelFromStateDict(config, await hostWeights(model), 'bench', [], backend, { dtype: flags.dtype }).model : null;
    const tokenizer = new Tokenizer();
    const prompt = makePrompt(tokenizer, PROMPT_TOKENS + MAX_NEW); // longer, for the uncached windows

    const promptIds = prompt.slice(0, PROMPT_TOKENS);
    const windows: number[] = [];
    for (let w = PROMPT_TOKENS; w < PROMPT_TOKENS + MAX_NEW; w += 64) windows.push(w);
    windows.push(PROMPT_TOKENS + MAX_NEW - 1);
    // Warm-ups, then --runs rounds of a cached run and the uncached measurements (see Method).
    await arrivals(model, promptIds, 16, true);
    if (half) await arrivals(half, promptIds, 16, true);
    if (flags.full) await arrivals(model, promptIds, 4, false);
    else for (const w of windows) await uncachedStepMs(model, prompt, w);
    const cachedRuns: number[][] = [];
    const halfRuns: number[][] = [];
    const uncachedRuns: number[][] = [];
    const copyRates: number[] = [];
    for (let r = 0; r < flags.runs; r++) {
      copyRates.push((await copyRows(backend))[0].gbps);
      cachedRuns.push(await arrivals(model, promptIds, MAX_NEW, true));
      if (half) halfRuns.push(await arrivals(half, promptIds, MAX_NEW, true));
      if (flags.full) uncachedRuns.push(await arrivals(model, promptIds, MAX_NEW, false));
      else {
        const stepMs: number[] = [];
        for (const w of windows) stepMs.push(await uncachedStepMs(model, prompt, w));
        uncachedRuns.push(stepMs);
      }
    }
    const cached = medianArrivals(cachedRuns);
    const copyGbps = median(copyRates);
    const steps = cached.map((t, i) => (i === 0 ? t : t - cached[i - 1]));
    const stepAround = (token: number) => median(steps.slice(Math.max(1, token - 8), token + 8));

    // Uncached.
    let uncached: number[];
    let uncachedMethod: string;
    const samples: Record<string, number | string>[] = [];
    if (flags.full) {
      uncached = medianArrivals(uncachedRuns);
      uncachedMethod = `whole runs (median of ${flags.runs})`;
    } else {
      const ms = medianArrivals(uncachedRuns);
      windows.forEach((w, i) => samples.push({ window: w, 'uncached step ms': ms[i], 'ms per window token': ms[i] / w }));
      uncached = [];
      let total = 0;
      for (let k = 1; k <= MAX_NEW; k++) uncached.push((total += interpolate(windows, ms, PROMPT_TOKENS + k - 1)));
      uncachedMethod = `per-step samples at ${windows.length} window lengths (median of ${flags.runs}), interpolated`;
      const check = await arrivals(model, promptIds, 64, false);
      console.log('\nuncached step time by window length (the step that makes token k sees 64 + k − 1 tokens):');
      printTable(samples);
      console.log(`check: a whole uncached run of 64 tokens took ${(check[63] / 1000).toFixed(2)} s; the per-step samples give ${(uncached[63] / 1000).toFixed(2)} s`);
    }

    const results = LENGTHS.map((n) => {
      const cachedPerS = (1000 * n) / cached[n - 1];
      const uncachedPerS = (1000 * n) / uncached[n - 1];
      return { new_tokens: n, cached_tokens_per_s: cachedPerS, uncached_tokens_per_s: uncachedPerS, speedup: cachedPerS / uncachedPerS };
    });
    const weightBytes = weightBytesPerToken(model);
    const limitPerS = (copyGbps * 1e9) / weightBytes;
    const decodeMs = median(steps.slice(1));
    const decodePerS = 1000 / decodeMs;
    const memoryBoundFraction = decodePerS / limitPerS;

    console.log(`\nuncached: ${uncachedMethod}`);
    printTable(results.map((r) => ({
      'new tokens': r.new_tokens,
      'cached tok/s': r.cached_tokens_per_s,
      'uncached tok/s': r.uncached_tokens_per_s,
      'speed-up': r.speedup,
      'cached ms/token here': stepAround(r.new_tokens),
    })));
    console.log(
      `cached decode: ${decodeMs.toFixed(2)} ms/token (${decodePerS.toFixed(1)} tokens/s; prefill of 64 + first token ${cached[0].toFixed(1)} ms); ` +
        `per-token latency at token 64: ${stepAround(64).toFixed(2)} ms, at token 512: ${stepAround(512).toFixed(2)} ms`,
    );
    console.log(
      `memory-bound limit: ${(weightBytes / 1e6).toFixed(1)} MB of weights a token ÷ ${copyGbps.toFixed(2)} GB/s (device copy) = ` +
        `${limitPerS.toFixed(1)} tokens/s; cached decode reaches ${(100 * memoryBoundFraction).toFixed(0)}% of it`,
    );
    let halfSummary: Record<string, unknown> | undefined;
    if (half) {
      const halfCached = medianArrivals(halfRuns);
      const halfSteps = halfCached.map((t, i) => (i === 0 ? t : t - halfCached[i - 1]));
      const halfBytes = weightBytesPerToken(half);
      const halfDecodeMs = median(halfSteps.slice(1));
      const halfLimit = (copyGbps * 1e9) / halfBytes;
      halfSummary = {
        weight_bytes_per_token: halfBytes,
        decode_ms_per_token: halfDecodeMs,
        cached_tokens_per_s: LENGTHS.map((n) => ({ new_tokens: n, tokens_per_s: (1000 * n) / halfCached[n - 1] })),
        memory_bound_tokens_per_s: halfLimit,
        memory_bound_fraction: 1000 / halfDecodeMs / halfLimit,
      };
      const row = (dtype: string, bytes: number, ms: number, times: number[]) => ({
        weights: dtype,
        'MB read a token': bytes / 1e6,
        'decode tok/s': 1000 / ms,
        ...Object.fromEntries(LENGTHS.map((n) => [`tok/s to ${n}`, (1000 * n) / times[n - 1]])),
      });
      console.log(`\ncached decoding, f32 against ${flags.dtype} weights (rounds interleaved, median of ${flags.runs}):`);
      printTable([row('f32', weightBytes, decodeMs, cached), row(flags.dtype, halfBytes, halfDecodeMs, halfCached)]);
      console.log(`${flags.dtype}: ${(halfBytes / weightBytes).toFixed(3)}× the bytes, ${(decodeMs / halfDecodeMs).toFixed(2)}× the decode rate`);
    }
    console.log(JSON.stringify({
      bench: 'kvcache',
      device: backend.description,
      config: { n_embd: config.n_embd, n_layer: config.n_layer, n_head: config.n_head, n_positions: config.n_positions, vocab_size: config.vocab_size },
      prompt_tokens: PROMPT_TOKENS,
      results,
      memory_bound_fraction: memoryBoundFraction,
      decode_ms_per_token: decodeMs,
      latency_ms_at_64: stepAround(64),
      latency_ms_at_512: stepAround(512),
      memory_bound_tokens_per_s: limitPerS,
      weight_bytes_per_token: weightBytes,
      copy_gbps: copyGbps,
      uncached_method: flags.full ? 'full' : 'per-step samples',
      runs: flags.runs,
      ...(halfSummary && { [flags.dtype]: halfSummary }),
    }));
    model.dispose();
    half?.dispose();
  } finally {
    releaseBackend();
  }
}

await main();
