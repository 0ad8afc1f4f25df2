/**
 * The OpenAI-compatible HTTP API on fastify: POST /v1/completions, POST /v1/chat/completions (both
 * streamed as Server-Sent Events with `stream: true`), GET /v1/models, GET /health. Every request
 * decodes through one ContinuousBatcher, which owns the model. Bodies are validated by JSON schema
 * (schemas.ts); every error is OpenAI-shaped (errors.ts). A client that disconnects aborts its
 * request, which leaves the batch before the next step.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { ClosedError, QueueFullError, type ContinuousBatcher } from '../gpt/continuous-batch.js';
import type { GenerateResult, StopReason } from '../gpt/generate.js';
import { Tokenizer } from '../gpt/tokenizer.js';
import { ApiError, apiErrorOf } from './errors.js';
import { prepareChat, prepareCompletion, type PreparedRequest } from './requests.js';
import { chatBody, completionBody, type ChatFields, type CompletionFields, type SamplingFields } from './schemas.js';
import { SseStream } from './sse.js';

export const DEFAULT_BODY_LIMIT = 1 << 20;

export interface ServerOptions {
  batcher: ContinuousBatcher;
  /** The id clients name in `model` and /v1/models lists. */
  modelId: string;
  /** When set, every route but /health requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Bytes a request body may hold (413 beyond). Default 1 MiB. */
  bodyLimit?: number;
  /** Aborts every request in flight (the end of a shutdown's grace period). */
  stopSignal?: AbortSignal;
}

type Kind = 'completion' | 'chat';

const finishReason = (stop: StopReason): 'stop' | 'length' => (stop === 'eos' || stop === 'stop' ? 'stop' : 'length');

const usageOf = (r: GenerateResult) => ({ prompt_tokens: r.promptTokens, completion_tokens: r.newTokens, total_tokens: r.promptTokens + r.newTokens });

function bearerMatches(header: string | undefined, key: string): boolean {
  const given = Buffer.from(header ?? '');
  const wanted = Buffer.from(`Bearer ${key}`);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

export function buildServer({ batcher, modelId, apiKey, bodyLimit = DEFAULT_BODY_LIMIT, stopSignal }: ServerOptions): FastifyInstance {
  const app = Fastify({ bodyLimit, ajv: { customOptions: { coerceTypes: false, removeAdditional: false } } });
  app.removeContentTypeParser('text/plain'); // JSON only: anything else is a 415
  const tokenizer = new Tokenizer();
  const { n_positions: context, vocab_size: vocab } = batcher.model.config;
  const created = Math.floor(Date.now() / 1000);

  app.setErrorHandler((error, _request, reply) => {
    const e = apiErrorOf(error as Error);
    if (e.status >= 500) console.error(`serve: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return reply.code(e.status).send(e.body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send(new ApiError(404, `no route ${request.method} ${request.url}`, 'not_found_error').body),
  );
  if (apiKey !== undefined) {
    app.addHook('onRequest', (request, _reply, done) => {
      if (request.url === '/health' || bearerMatches(request.headers.authorization, apiKey)) return done();
      done(new ApiError(401, 'a valid API key is required: send Authorization: Bearer <key>', 'authentication_error', null, 'invalid_api_key'));
    });
  }

  const checkModel = ({ model }: SamplingFields) => {
    if (model !== modelId) throw new ApiError(404, `the model '${model}' does not exist; this server serves '${modelId}'`, 'not_found_error', 'model', 'model_not_found');
  };

  /** Queues a request, mapping the batcher's refusals to HTTP errors. */
  const submit = (prepared: PreparedRequest, signal: AbortSignal, onText?: (text: string) => void): Promise<GenerateResult> => {
    try {
      return batcher.submit(prepared.prompt, { ...prepared.options, signal, onToken: onText && ((event) => event.text !== '' && onText(event.text)) });
    } catch (e) {
      if (e instanceof QueueFullError) throw new ApiError(429, e.message, 'rate_limit_error', null, 'rate_limit_exceeded');
      if (e instanceof ClosedError) throw new ApiError(503, e.message, 'server_error', null, 'shutting_down');
      if (e instanceof RangeError) throw new ApiError(400, e.message);
      throw e;
    }
  };

  const shutdownError = () => new ApiError(503, 'the server shut down before the request finished', 'server_error', null, 'shutting_down');

  async function respond(kind: Kind, fields: SamplingFields, prepared: PreparedRequest, reply: FastifyReply) {
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const object = kind === 'chat' ? 'chat.completion' : 'text_completion';
    const clientGone = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) clientGone.abort();
    });
    const signal = stopSignal ? AbortSignal.any([clientGone.signal, stopSignal]) : clientGone.signal;
    const head = { id, created: Math.floor(Date.now() / 1000), model: modelId };

    if (!fields.stream) {
      const result = await submit(prepared, signal);
      if (result.stopReason === 'aborted') {
        if (clientGone.signal.aborted) return reply; // nobody to answer
        throw shutdownError();
      }
      const choice = kind === 'chat'
        ? { index: 0, message: { role: 'assistant', content: result.text, refusal: null }, logprobs: null, finish_reason: finishReason(result.stopReason) }
        : { index: 0, text: result.text, logprobs: null, finish_reason: finishReason(result.stopReason) };
      return { ...head, object, choices: [choice], usage: usageOf(result) };
    }

    const chunkObject = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (text: string | null, finish: 'stop' | 'length' | null) => ({
      ...head, object: chunkObject,
      choices: [kind === 'chat'
        ? { index: 0, delta: text === null ? {} : { content: text }, logprobs: null, finish_reason: finish }
        : { index: 0, text: text ?? '', logprobs: null, finish_reason: finish }],
    });
    let sse: SseStream | null = null;
    const done = submit(prepared, signal, (text) => sse?.send(chunk(text, null))); // 429 and 503 before any byte is sent
    reply.hijack();
    sse = new SseStream(reply.raw);
    if (kind === 'chat') sse.send({ ...chunk(null, null), choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
    try {
      const result = await done;
      if (result.stopReason === 'aborted') {
        if (!clientGone.signal.aborted) sse.send(shutdownError().body);
      } else {
        sse.send(chunk(null, finishReason(result.stopReason)));
        if (fields.stream_options?.include_usage) sse.send({ ...head, object: chunkObject, choices: [], usage: usageOf(result) });
      }
    } catch (e) {
      sse.send(apiErrorOf(e as Error).body);
    }
    sse.done();
    return reply;
  }

  app.post<{ Body: CompletionFields }>('/v1/completions', { schema: { body: completionBody } }, async (request, reply) => {
    checkModel(request.body);
    return respond('completion', request.body, prepareCompletion(request.body, tokenizer, context, vocab), reply);
  });

  app.post<{ Body: ChatFields }>('/v1/chat/completions', { schema: { body: chatBody } }, async (request, reply) => {
    checkModel(request.body);
    return respond('chat', request.body, prepareChat(request.body, tokenizer, context), reply);
  });

  app.get('/v1/models', () => ({ object: 'list', data: [{ id: modelId, object: 'model', created, owned_by: 'gpt2-webgpu' }] }));

  app.get('/health', () => ({
    status: 'ok', model: modelId, context, slots: batcher.slots, active: batcher.activeCount, waiting: batcher.waitingCount,
  }));

  return app;
}
