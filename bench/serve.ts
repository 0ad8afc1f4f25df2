/**
 * Load test of the OpenAI-compatible server on loopback: for each client count N (default 1, 4, 16,
 * 64), N concurrent clients each send a fixed number of streaming completions, one after another,
 * to an in-process server (src/serve/server.ts, continuous batching) on random weights of the bench
 * shapes. Faults ride along: every fifth request disconnects after its third chunk, and each client
 * sends a malformed body (expected: 400) before each request; every good request's text must equal
 * that prompt's text when it ran alone (temperature 0).
 *
 * Reports per N: requests/s, generated tokens/s in total, time to first token and per-token latency
 * (median and p95 over requests), the decode step's mean rows (sequences served per batched step), and
 * the device memory in use (buffer pool: live bytes) before and after. Prints a table, then one JSON line:
 *   {"bench":"serve","device":…,"config":{…},"max_tokens":…,"results":[{"clients":N,"requests":…,
 *    "requests_per_s":…,"tokens_per_s":…,"ttft_ms":{"median":…,"p95":…},"token_ms":{"median":…,"p95":…},
 *    "rows_per_step":…,"failed":…,"mismatched":…,"disconnects":…,"malformed":…,"gpu_live_bytes_before":…,"gpu_live_bytes_after":…}]}
 *
 *   npx tsx bench/serve.ts [--clients 1,4,16,64] [--requests 4] [--max-tokens 32] [--slots 64] [--shapes default] [--device webgpu|cpu]
 */
import { parseArgs } from 'node:util';
import { ContinuousBatcher } from '../src/gpt/continuous-batch.js';
import { initializeWeights } from '../src/gpt/init.js';
import { GPT2 } from '../src/gpt/model.js';
import type { WebGpuBackend } from '../src/kernels/webgpu-backend.js';
import { createBackend, releaseBackend } from '../src/node/backend.js';
import { cacheSlotsProblem } from '../src/serve/capacity.js';
import { buildServer } from '../src/serve/server.js';
import { printTable } from './harness.js';
import { benchShapes } from './shapes.js';

const MODEL = 'bench';
const PROMPTS = [
  'The quick brown fox jumps over the lazy dog',
  'Once upon a time, in a land far away,',
  'The committee reviews the annual budget report and',
  'Write a short poem about the sea:',
];

function parseFlags() {
  const { values } = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      clients: { type: 'string', default: '1,4,16,64' },
      requests: { type: 'string', default: '4' },
      'max-tokens': { type: 'string', default: '32' },
      slots: { type: 'string', default: '64' },
      shapes: { type: 'string', default: 'default' },
      device: { type: 'string', default: 'webgpu' },
    },
  });
  const positive = (raw: string, name: string) => {
    const x = Number(raw);
    if (!/^\d+$/.test(raw) || x < 1) throw new Error(`--${name} must be a positive integer, got ${raw}`);
    return x;
  };
  if (values.device !== 'webgpu' && values.device !== 'cpu') throw new Error(`--device must be webgpu or cpu, got ${values.device}`);
  const device: 'webgpu' | 'cpu' = values.device;
  return {
    clients: values.clients.split(',').map((c) => positive(c, 'clients')),
    requests: positive(values.requests, 'requests'),
    maxTokens: positive(values['max-tokens'], 'max-tokens'),
    slots: positive(values.slots, 'slots'),
    config: benchShapes(values.shapes),
    shapes: values.shapes,
    device,
  };
}

const quantile = (xs: readonly number[], q: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

interface Outcome {
  text: string;
  tokens: number;
  ttftMs: number;
  tokenMs: number | null;
}

/** One streaming completion; with `disconnectAfter`, the client goes away after that many chunks. */
async function streamCompletion(url: string, prompt: string, maxTokens: number, disconnectAfter?: number): Promise<Outcome | null> {
  const started = performance.now();
  const response = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (response.status !== 200) throw new Error(`status ${response.status}: ${await response.text()}`);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  let text = '';
  let tokens = 0;
  let chunks = 0;
  let first = 0;
  let last = 0;
  let done = false;
  while (!done) {
    const { value, done: ended } = await reader.read();
    if (ended) throw new Error('the stream ended before [DONE]');
    buffered += value;
    let end;
    while ((end = buffered.indexOf('\n\n')) !== -1) {
      const event = buffered.slice(0, end).replace(/^data: /, '');
      buffered = buffered.slice(end + 2);
      if (event === '[DONE]') {
        done = true;
        break;
      }
      const chunk = JSON.parse(event) as { choices: { text: string }[]; usage?: { completion_tokens: number }; error?: unknown };
      if (chunk.error) throw new Error(`stream error: ${JSON.stringify(chunk.error)}`);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      if (chunk.choices[0]?.text) {
        const now = performance.now();
        if (first === 0) first = now;
        last = now;
        text += chunk.choices[0].text;
        if (disconnectAfter !== undefined && ++chunks >= disconnectAfter) {
          await reader.cancel();
          return null;
        }
      }
    }
  }
  return { text, tokens, ttftMs: first - started, tokenMs: tokens > 1 ? (last - first) / (tokens - 1) : null };
}

async function malformed(url: string): Promise<boolean> {
  const response = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model": "bench", "prompt": ' });
  await response.arrayBuffer();
  return response.status === 400;
}

async function main(): Promise<void> {
  let flags: ReturnType<typeof parseFlags>;
  try {
    flags = parseFlags();
  } catch (e) {
    console.error(`bench/serve.ts: ${(e as Error).message}`);
    process.exitCode = 2;
    return;
  }
  const backend = await createBackend(flags.device);
  const liveBytes = () => (backend.name === 'webgpu' ? (backend as WebGpuBackend).gpu.memoryStats().liveBytes : 0);
  const { config } = flags;
  const slotsProblem = cacheSlotsProblem(config, flags.slots, backend);
  if (slotsProblem !== null) {
    console.error(`bench/serve.ts: --slots ${flags.slots}: ${slotsProblem}`);
    releaseBackend();
    process.exitCode = 2;
    return;
  }
  const model = new GPT2(config, backend);
  initializeWeights(model, 0);
  const batcher = new ContinuousBatcher(model, { slots: flags.slots, queue: Math.max(...flags.clients) });
  const app = buildServer({ batcher, modelId: MODEL });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    console.log(`device: ${backend.description}`);
    console.log(`shapes: ${flags.shapes} (d ${config.n_embd}, ${config.n_layer} layers, ${config.n_head} heads, ${config.n_positions} positions), random weights; ` +
      `${flags.slots} slots; ${flags.requests} requests per client, ${flags.maxTokens} new tokens each`);
    // Each prompt alone: the text every good request of that prompt must reproduce (and the warm-up).
    const reference: string[] = [];
    for (const prompt of PROMPTS) reference.push((await streamCompletion(url, prompt, flags.maxTokens))!.text);

    const results = [];
    for (const clients of flags.clients) {
      const before = liveBytes();
      const [stepsBefore, rowsBefore] = [batcher.steps, batcher.rowsServed];
      let failed = 0;
      let mismatched = 0;
      let disconnects = 0;
      let malformedOk = 0;
      const outcomes: Outcome[] = [];
      const started = performance.now();
      await Promise.all(Array.from({ length: clients }, async (_, c) => {
        for (let r = 0; r < flags.requests; r++) {
          if (await malformed(url)) malformedOk++;
          const which = (c + r) % PROMPTS.length;
          const disconnect = (c * flags.requests + r) % 5 === 4;
          try {
            const outcome = await streamCompletion(url, PROMPTS[which], flags.maxTokens, disconnect ? 3 : undefined);
            if (outcome === null) {
              disconnects++;
              continue;
            }
            outcomes.push(outcome);
            if (outcome.text !== reference[which]) mismatched++;
          } catch (e) {
            failed++;
            console.error(`client ${c}, request ${r}: ${(e as Error).message}`);
          }
        }
      }));
      const seconds = (performance.now() - started) / 1000;
      // Disconnected requests leave at the next step: wait for the batch to empty before measuring memory.
      for (let i = 0; i < 1000 && batcher.activeCount > 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
      const tokens = outcomes.reduce((n, o) => n + o.tokens, 0);
      const tokenMs = outcomes.flatMap((o) => (o.tokenMs === null ? [] : [o.tokenMs]));
      results.push({
        clients, requests: outcomes.length, requests_per_s: outcomes.length / seconds, tokens_per_s: tokens / seconds,
        ttft_ms: { median: quantile(outcomes.map((o) => o.ttftMs), 0.5), p95: quantile(outcomes.map((o) => o.ttftMs), 0.95) },
        token_ms: { median: quantile(tokenMs, 0.5), p95: quantile(tokenMs, 0.95) },
        rows_per_step: (batcher.rowsServed - rowsBefore) / (batcher.steps - stepsBefore),
        failed, mismatched, disconnects, malformed: malformedOk,
        gpu_live_bytes_before: before, gpu_live_bytes_after: liveBytes(),
      });
    }
    printTable(results.map((r) => ({
      clients: r.clients, 'ok requests': r.requests, 'req/s': r.requests_per_s, 'tokens/s': r.tokens_per_s,
      'TTFT ms (med)': r.ttft_ms.median, 'TTFT ms (p95)': r.ttft_ms.p95, 'ms/token (med)': r.token_ms.median, 'ms/token (p95)': r.token_ms.p95,
      'rows/step': r.rows_per_step,
      failed: r.failed, mismatched: r.mismatched, disconnects: r.disconnects, '400s': r.malformed,
      'MB before': r.gpu_live_bytes_before / 1e6, 'MB after': r.gpu_live_bytes_after / 1e6,
    })));
    const single = results.find((r) => r.clients === 1);
    const sixteen = results.find((r) => r.clients === 16);
    if (single && sixteen) console.log(`tokens/s at 16 clients ÷ at 1: ${(sixteen.tokens_per_s / single.tokens_per_s).toFixed(2)}×`);
    console.log(JSON.stringify({
      bench: 'serve', device: backend.description,
      config: { n_embd: config.n_embd, n_layer: config.n_layer, n_head: config.n_head, n_positions: config.n_positions, vocab_size: config.vocab_size },
      slots: flags.slots, max_tokens: flags.maxTokens, requests_per_client: flags.requests, results,
    }));
  } finally {
    await app.close();
    await batcher.close();
    batcher.dispose();
    releaseBackend();
  }
}

await main();
