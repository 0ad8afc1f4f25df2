/**
 * From a validated body to what the batcher takes: the prompt's token ids and the request options.
 *
 * - `temperature` defaults to 1 and `top_p` to 1, as OpenAI's API; 0 is greedy. `top_k` (an
 *   extension, as vLLM's and llama.cpp's servers) defaults to 0, off.
 * - `repetition_penalty` (an extension) is CTRL's multiplicative penalty on every token already in
 *   the prompt or the output, as `generate`'s. OpenAI's `frequency_penalty` f ∈ [−2, 2] maps onto
 *   it as repetition_penalty = 2^(f/2): 0 is off, 2 halves a seen token's positive logit, negative
 *   values favour repetition. (OpenAI's own penalty subtracts f × count from the logits; this model
 *   only has the CTRL one.) Giving both is an error.
 * - `seed` defaults to a random one; the same seed and settings give the same text.
 * - `max_tokens` (chat: also `max_completion_tokens`) defaults to 16 for completions, as OpenAI's
 *   completions endpoint, and to the rest of the context for chat. The prompt and max_tokens must
 *   fit in the context together (400 `context_length_exceeded` otherwise): no window ever slides.
 * - Chat adds the Alpaca section headers to the stop strings (the model's reply ends at the next one).
 */
import type { BatchRequestOptions } from '../gpt/continuous-batch.js';
import type { Tokenizer } from '../gpt/tokenizer.js';
import { ALPACA_SECTION_STOPS } from '../train/instruction-data.js';
import { fitChat } from './chat-template.js';
import { ApiError } from './errors.js';
import type { ChatFields, CompletionFields, SamplingFields } from './schemas.js';

export const COMPLETION_DEFAULT_MAX_TOKENS = 16;

export interface PreparedRequest {
  prompt: number[];
  options: BatchRequestOptions;
}

const contextError = (message: string, param: string) => new ApiError(400, message, 'invalid_request_error', param, 'context_length_exceeded');

function repetitionPenalty({ repetition_penalty: rp, frequency_penalty: fp }: SamplingFields): number | undefined {
  if (rp != null && fp != null && fp !== 0) {
    throw new ApiError(400, 'give repetition_penalty or frequency_penalty, not both', 'invalid_request_error', 'frequency_penalty');
  }
  return rp ?? (fp != null ? 2 ** (fp / 2) : undefined);
}

function samplingOptions(fields: SamplingFields, maxNewTokens: number, extraStops: readonly string[]): BatchRequestOptions {
  const stop = fields.stop == null ? [] : typeof fields.stop === 'string' ? [fields.stop] : fields.stop;
  return {
    temperature: fields.temperature ?? 1,
    topP: fields.top_p ?? 1,
    topK: fields.top_k ?? 0,
    repetitionPenalty: repetitionPenalty(fields),
    seed: fields.seed ?? Math.floor(Math.random() * 2 ** 31),
    stop: [...stop, ...extraStops],
    maxNewTokens,
  };
}

/** The new tokens a request gets: its own max_tokens if prompt + max_tokens fit, else an error. */
function newTokens(requested: number | null | undefined, fallback: number, promptTokens: number, context: number, promptParam: string): number {
  if (promptTokens >= context) {
    throw contextError(`the prompt holds ${promptTokens} tokens, but the model's context is ${context} tokens and must leave room for one new token`, promptParam);
  }
  if (requested == null) return Math.min(fallback, context - promptTokens);
  if (promptTokens + requested > context) {
    throw contextError(`this model's context is ${context} tokens, but ${promptTokens + requested} were requested (${promptTokens} in the prompt, ${requested} in max_tokens)`, 'max_tokens');
  }
  return requested;
}

export function prepareCompletion(fields: CompletionFields, tokenizer: Tokenizer, context: number, vocab: number): PreparedRequest {
  const prompt = typeof fields.prompt === 'string' ? tokenizer.encode(fields.prompt) : fields.prompt;
  const outside = prompt.find((id) => id >= vocab);
  if (outside !== undefined) throw new ApiError(400, `token id ${outside} is outside the vocabulary of ${vocab}`, 'invalid_request_error', 'prompt');
  const max = newTokens(fields.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS, Math.max(1, prompt.length), context, 'prompt');
  return { prompt, options: samplingOptions(fields, max, []) };
}

export function prepareChat(fields: ChatFields, tokenizer: Tokenizer, context: number): PreparedRequest {
  const requested = fields.max_completion_tokens ?? fields.max_tokens;
  const room = context - (requested ?? 1);
  const text = fitChat(fields.messages, (prompt) => tokenizer.encode(prompt).length <= room);
  if (text === null) {
    throw contextError(`the system messages and the last user message alone exceed the context of ${context} tokens${requested != null ? ` with max_tokens ${requested}` : ''}`, 'messages');
  }
  const prompt = tokenizer.encode(text);
  return { prompt, options: samplingOptions(fields, newTokens(requested, context, prompt.length, context, 'messages'), ALPACA_SECTION_STOPS) };
}
