/**
 * The OpenAI-compatible server, talked to by the official `openai` client on loopback (CPU backend,
 * a tiny model with varied greedy output): completions and chat, plain and streamed, equal the
 * library's `generate` text and token counts; concurrent requests each equal generate alone; the
 * chat rendering; bad input gets the right status and OpenAI's error shape; a client that
 * disconnects mid-stream frees its slot; the API key. The command line's SIGTERM drain runs the
 * real `src/serve.ts` as a child process.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContinuousBatcher } from '../src/gpt/continuous-batch.js';
import { generate, type GenerateOptions } from '../src/gpt/generate.js';
import type { GPT2 } from '../src/gpt/model.js';
import { Tokenizer } from '../src/gpt/tokenizer.js';
import { buildServer, type ServerOptions } from '../src/serve/server.js';
import { ALPACA_SECTION_STOPS, alpacaPrompt } from '../src/train/instruction-data.js';
import { cpu } from './helpers/backends.js';
import { sharpTinyModel } from './helpers/sharp-model.js';

const MODEL = 'tiny-test';
const tokenizer = new Tokenizer();

async function startServer(model: GPT2, options: Partial<ServerOptions> & { slots?: number; queue?: number } = {}) {
  const batcher = new ContinuousBatcher(model, { slots: options.slots ?? 4, queue: options.queue ?? 16 });
  const app = buildServer({ batcher, modelId: MODEL, ...options });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, batcher, url };
}

const clientFor = (url: string, apiKey = 'unused') => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 });

const post = (url: string, path: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  fetch(`${url}${path}`, { method: 'POST', headers, body });

/** The reference: the library's generate with the server's mapping of the same settings. */
const reference = (model: GPT2, prompt: string, options: GenerateOptions) => generate(model, prompt, { temperature: 0, ...options });

describe('the server with the openai client', () => {
  const model = sharpTinyModel(cpu, 5);
  let server: { app: FastifyInstance; batcher: ContinuousBatcher; url: string };
  let client: OpenAI;
  beforeAll(async () => {
    server = await startServer(model, { bodyLimit: 4096 });
    client = clientFor(server.url);
  });
  afterAll(async () => {
    await server.app.close();
    await server.batcher.close();
    server.batcher.dispose();
  });

  it('completions: text, usage and finish_reason equal generate; a stop string; token ids as the prompt', async () => {
    const prompt = 'The quick brown fox';
    const expected = await reference(model, prompt, { maxNewTokens: 12, eosId: null });
    expect(new Set(expected.ids).size, 'a varied output').toBeGreaterThan(4);
    const got = await client.completions.create({ model: MODEL, prompt, max_tokens: 12, temperature: 0 });
    expect(got.object).toBe('text_completion');
    expect(got.choices).toEqual([{ index: 0, text: expected.text, logprobs: null, finish_reason: 'length' }]);
    expect(got.usage).toEqual({ prompt_tokens: expected.promptTokens, completion_tokens: 12, total_tokens: expected.promptTokens + 12 });

    const stop = tokenizer.decode(expected.ids.slice(3, 5));
    const stopped = await client.completions.create({ model: MODEL, prompt, max_tokens: 12, temperature: 0, stop: [stop] });
    expect(stopped.choices[0].text).toBe(expected.text.slice(0, expected.text.indexOf(stop)));
    expect(stopped.choices[0].finish_reason).toBe('stop');

    const ids = tokenizer.encode(prompt);
    const byIds = await client.completions.create({ model: MODEL, prompt: ids, max_tokens: 12, temperature: 0 });
    expect(byIds.choices[0].text).toBe(expected.text);
  });

  it('chat: the messages rendered as one Alpaca prompt (system = preamble, earlier turns in order), equal generate', async () => {
    const one = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Name a color.' }], max_tokens: 8, temperature: 0 });
    const alone = await reference(model, alpacaPrompt({ instruction: 'Name a color.' }), { maxNewTokens: 8, stop: ALPACA_SECTION_STOPS });
    expect(one.choices[0].message).toEqual({ role: 'assistant', content: alone.text, refusal: null });
    expect(one.usage?.prompt_tokens).toBe(alone.promptTokens);
    expect(one.usage?.completion_tokens).toBe(alone.newTokens);

    const messages: ChatCompletionMessageParam[] = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello.' },
      { role: 'user', content: [{ type: 'text', text: 'Bye' }] },
    ];
    const rendered = 'Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello.\n\n### Instruction:\nBye\n\n### Response:\n';
    const expected = await reference(model, rendered, { maxNewTokens: 10, stop: ALPACA_SECTION_STOPS });
    const got = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, temperature: 0 });
    expect(got.choices[0].message.content).toBe(expected.text);
    expect(got.choices[0].finish_reason).toBe(expected.stopReason === 'length' ? 'length' : 'stop');
    expect(got.usage).toEqual({ prompt_tokens: expected.promptTokens, completion_tokens: expected.newTokens, total_tokens: expected.promptTokens + expected.newTokens });

    // Over the context, the oldest turns go first; the system message and the last user message stay.
    const long: ChatCompletionMessageParam[] = [
      { role: 'system', content: 'Be brief.' },
      ...Array.from({ length: 6 }, (_, i): ChatCompletionMessageParam => (i % 2 ? { role: 'assistant', content: `turn ${i} `.repeat(4) } : { role: 'user', content: `turn ${i} `.repeat(4) })),
      { role: 'user', content: 'Bye' },
    ];
    const fitted = await client.chat.completions.create({ model: MODEL, messages: long, max_tokens: 4, temperature: 0 });
    const prompt = fitted.usage!.prompt_tokens;
    expect(prompt + 4).toBeLessThanOrEqual(64);
    expect(prompt).toBeGreaterThan(tokenizer.encode('Be brief.\n\n### Instruction:\nBye\n\n### Response:\n').length); // some history kept
  });

  it('streaming: chunks in OpenAI\'s format join to generate\'s text, then finish_reason, usage and [DONE]', async () => {
    const prompt = 'Once upon a time';
    const expected = await reference(model, prompt, { maxNewTokens: 15, eosId: null });
    const stream = await client.completions.create({ model: MODEL, prompt, max_tokens: 15, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const finishes: (string | null)[] = [];
    let usage;
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        text += choice.text;
        finishes.push(choice.finish_reason);
      }
      usage ??= chunk.usage;
    }
    expect(text).toBe(expected.text);
    expect(finishes.filter((f) => f !== null)).toEqual(['length']);
    expect(finishes.length).toBeGreaterThan(5); // streamed, not one chunk
    expect(usage).toEqual({ prompt_tokens: expected.promptTokens, completion_tokens: 15, total_tokens: expected.promptTokens + 15 });

    const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 9, temperature: 0, stream: true });
    const chatExpected = await reference(model, alpacaPrompt({ instruction: 'Hi' }), { maxNewTokens: 9, stop: ALPACA_SECTION_STOPS });
    let content = '';
    let role;
    for await (const chunk of chat) {
      role ??= chunk.choices[0]?.delta.role;
      content += chunk.choices[0]?.delta.content ?? '';
    }
    expect(role).toBe('assistant');
    expect(content).toBe(chatExpected.text);

    // The raw bytes end with OpenAI's terminator.
    const raw = await (await post(server.url, '/v1/completions', JSON.stringify({ model: MODEL, prompt, max_tokens: 3, stream: true }))).text();
    expect(raw.endsWith('data: [DONE]\n\n')).toBe(true);
  });

  it('concurrent requests decode together, each equal to generate alone', async () => {
    const prompts = ['A', 'Two words', 'The first line of a longer prompt', 'x y z', 'Hello there', 'Numbers: 1 2 3'];
    const expected = await Promise.all(prompts.map((p, i) => reference(model, p, { maxNewTokens: 8 + i, eosId: null })));
    const stepsBefore = server.batcher.steps;
    const got = await Promise.all(prompts.map((prompt, i) => client.completions.create({ model: MODEL, prompt, max_tokens: 8 + i, temperature: 0 })));
    got.forEach((g, i) => expect(g.choices[0].text, prompts[i]).toBe(expected[i].text));
    const rows = expected.reduce((n, r) => n + r.newTokens - 1, 0);
    expect(server.batcher.steps - stepsBefore, 'fewer steps than rows: rows shared steps').toBeLessThan(rows);
  });

  it('bad input gets the right status and an OpenAI-shaped error; good requests are unaffected', async () => {
    const body = (fields: object) => JSON.stringify({ model: MODEL, prompt: 'hi', max_tokens: 2, ...fields });
    const cases: [string, Response | Promise<Response>, number, string | null, string][] = [
      ['not JSON', post(server.url, '/v1/completions', '{"model": '), 400, null, 'invalid_json'],
      ['not JSON at all', post(server.url, '/v1/completions', 'hello', { 'content-type': 'text/plain' }), 415, null, 'unsupported_media_type'],
      ['missing prompt', post(server.url, '/v1/completions', JSON.stringify({ model: MODEL })), 400, 'prompt', 'missing_required_parameter'],
      ['missing messages', post(server.url, '/v1/chat/completions', JSON.stringify({ model: MODEL })), 400, 'messages', 'missing_required_parameter'],
      ['max_tokens as a string', post(server.url, '/v1/completions', body({ max_tokens: '5' })), 400, 'max_tokens', 'invalid_value'],
      ['temperature as a string', post(server.url, '/v1/completions', body({ temperature: 'hot' })), 400, 'temperature', 'invalid_value'],
      ['a message without role', post(server.url, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ content: 'x' }] })), 400, 'messages', 'missing_required_parameter'],
      ['n = 2', post(server.url, '/v1/completions', body({ n: 2 })), 400, 'n', 'invalid_value'],
      ['max_tokens 0', post(server.url, '/v1/completions', body({ max_tokens: 0 })), 400, 'max_tokens', 'invalid_value'],
      ['max_tokens -3', post(server.url, '/v1/completions', body({ max_tokens: -3 })), 400, 'max_tokens', 'invalid_value'],
      ['max_tokens over the context', post(server.url, '/v1/completions', body({ max_tokens: 64 })), 400, 'max_tokens', 'context_length_exceeded'],
      ['a prompt over the context', post(server.url, '/v1/completions', body({ prompt: 'word '.repeat(70) })), 400, 'prompt', 'context_length_exceeded'],
      ['a chat over the context', post(server.url, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'word '.repeat(70) }] })), 400, 'messages', 'context_length_exceeded'],
      ['the last message not the user\'s', post(server.url, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'assistant', content: 'x' }] })), 400, 'messages', ''],
      ['both penalties', post(server.url, '/v1/completions', body({ frequency_penalty: 1, repetition_penalty: 1.2 })), 400, 'frequency_penalty', ''],
      ['an unknown model', post(server.url, '/v1/completions', body({ model: 'gpt-4' })), 404, 'model', 'model_not_found'],
      ['a body over the limit', post(server.url, '/v1/completions', body({ prompt: 'x'.repeat(5000) })), 413, null, 'body_too_large'],
    ];
    const good = client.completions.create({ model: MODEL, prompt: 'Still fine', max_tokens: 6, temperature: 0 });
    for (const [what, pending, status, param, code] of cases) {
      const response = await pending;
      const json = (await response.json()) as { error: { message: string; type: string; param: string | null; code: string | null } };
      expect(response.status, what).toBe(status);
      expect(Object.keys(json.error).sort(), what).toEqual(['code', 'message', 'param', 'type']);
      expect(json.error.type, what).toBe(status === 404 ? 'not_found_error' : 'invalid_request_error');
      expect(json.error.param, what).toBe(param);
      if (code !== '') expect(json.error.code, what).toBe(code);
      expect(json.error.message.length, what).toBeGreaterThan(5);
    }
    expect((await good).choices[0].text).toBe((await reference(model, 'Still fine', { maxNewTokens: 6, eosId: null })).text);
    // The openai client sees the same as its own error class.
    const refused = await client.completions.create({ model: MODEL, prompt: 'hi', max_tokens: 64 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
    expect((refused as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('context_length_exceeded');
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
  });
});

describe('the README\'s client example', () => {
  it('docs/examples/serve-client.mjs runs against the server and prints the reply and the stream', async () => {
    const model = sharpTinyModel(cpu, 3);
    const server = await startServer(model);
    try {
      const child = spawn(process.execPath, ['docs/examples/serve-client.mjs'], { env: { ...process.env, OPENAI_BASE_URL: `${server.url}/v1` }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      expect(await new Promise((resolve) => child.on('exit', resolve)), stderr).toBe(0);
      const reply = await reference(model, alpacaPrompt({ instruction: 'Name three primary colors.' }), { maxNewTokens: 20, stop: ALPACA_SECTION_STOPS });
      expect(stdout.startsWith(reply.text), stdout).toBe(true);
      expect(stdout).toContain(`completion_tokens: ${reply.newTokens}`);
    } finally {
      await server.app.close();
      await server.batcher.close();
      server.batcher.dispose();
    }
  });
});

describe('slots, the queue bound and the API key', () => {
  const model = sharpTinyModel(cpu, 9);

  it('a client that disconnects mid-stream frees its slot; past the queue bound, 429', async () => {
    const server = await startServer(model, { slots: 1, queue: 0 });
    try {
      const gone = new AbortController();
      const response = await post(server.url, '/v1/completions', JSON.stringify({ model: MODEL, prompt: 'Go on', max_tokens: 60, stream: true }));
      const reader = response.body!.getReader();
      await reader.read(); // the stream has started: the only slot is taken
      const busy = await post(server.url, '/v1/completions', JSON.stringify({ model: MODEL, prompt: 'Me too', max_tokens: 2 }));
      expect(busy.status).toBe(429);
      expect(((await busy.json()) as { error: { type: string; code: string } }).error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded' });
      await reader.cancel();
      gone.abort();
      const rowsAtCancel = server.batcher.rowsServed;
      for (let i = 0; i < 200 && server.batcher.activeCount > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(server.batcher.activeCount).toBe(0);
      expect(server.batcher.rowsServed - rowsAtCancel, 'stopped well before its 60 tokens').toBeLessThan(30);
      const next = await clientFor(server.url).completions.create({ model: MODEL, prompt: 'Me too', max_tokens: 3, temperature: 0 });
      expect(next.choices[0].text).toBe((await reference(model, 'Me too', { maxNewTokens: 3, eosId: null })).text);
    } finally {
      await server.app.close();
      await server.batcher.close();
      server.batcher.dispose();
    }
  });

  it('with an API key, only Authorization: Bearer <key> gets in (/health stays open)', async () => {
    const server = await startServer(model, { apiKey: 'sekret' });
    try {
      const denied = await clientFor(server.url, 'wrong').models.list().catch((e: unknown) => e);
      expect(denied).toBeInstanceOf(OpenAI.AuthenticationError);
      const bare = await post(server.url, '/v1/completions', JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 1 }));
      expect(bare.status).toBe(401);
      expect(((await bare.json()) as { error: { type: string } }).error.type).toBe('authentication_error');
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
      const ok = await clientFor(server.url, 'sekret').completions.create({ model: MODEL, prompt: 'x', max_tokens: 2 });
      expect(ok.usage?.completion_tokens).toBeGreaterThan(0);
    } finally {
      await server.app.close();
      await server.batcher.close();
      server.batcher.dispose();
    }
  });
});

describe('the command line', () => {
  it('SIGTERM lets the stream in flight finish, refuses new requests, and exits 0', async () => {
    // The demo preset (256 positions, d 64) on the CPU backend: slow enough that the stream is still going when the signal lands.
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/serve.ts', '--model', 'demo', '--port', '0', '--device', 'cpu', '--drain-timeout', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (line) => {
          const match = /^listening on (http:\/\/\S+)$/.exec(line);
          if (match) resolve(match[1]);
        });
        child.on('exit', () => reject(new Error(`the server exited before listening: ${stderr}`)));
      });
      const response = await post(url, '/v1/completions', JSON.stringify({ model: 'demo', prompt: 'Count', max_tokens: 200, stream: true }));
      const reader = response.body!.getReader();
      let text = new TextDecoder().decode((await reader.read()).value);
      child.kill('SIGTERM');
      for (let i = 0; i < 500 && !stderr.includes('SIGTERM'); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      const late = await post(url, '/v1/completions', JSON.stringify({ model: 'demo', prompt: 'x', max_tokens: 1 })).then((r) => r.status, () => 'refused');
      expect([503, 'refused']).toContain(late);
      for (let i = 0; i < 10_000; i++) {
        const { done, value } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      expect(text.endsWith('data: [DONE]\n\n'), stderr).toBe(true);
      expect(text).toContain('"finish_reason":"length"');
      expect(text.match(/"text"/g)?.length, 'every token streamed, none cut').toBeGreaterThan(150);
      expect(await exited, stderr).toBe(0);
      expect(stderr).toMatch(/SIGTERM: finishing 1 requests/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('rejects bad flags with exit code 2', async () => {
    for (const flags of [['--port', '70000'], ['--slots', '0'], ['--bogus'], ['--api-key', '']]) {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/serve.ts', '--model', 'tiny', ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(code, flags.join(' ')).toBe(2);
      expect(stderr).toMatch(/^serve: /);
    }
  });

  it('refuses more cache slots than one buffer holds before allocating them, naming the memory (exit code 2)', async () => {
    // tiny: 64 positions × 32 dims a slot; the CPU backend's buffers hold 2³² − 1 floats, 2097151 slots.
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/serve.ts', '--model', 'tiny', '--device', 'cpu', '--slots', '3000000'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, stderr).toBe(2);
    expect(stderr).toMatch(/^serve: --slots 3000000: 3000000 cache slots need 4 buffers of 24\.6 GB each .*98\.3 GB in all; one buffer of .* holds at most 17\.2 GB, enough for 2097151 slots/);
  });
});
