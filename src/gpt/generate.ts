/**
 * Generation: a prompt (text, tokenized with GPT-2's BPE, or ids) in, new ids and their text out,
 * with or without the KV cache, one prompt or several at once, streamed token by token. Greedy
 * unless a temperature is given, as the command line.
 *
 * One loop serves every case. Each step feeds the model the next position of every sequence and
 * reads back one row of logits per sequence ([B, 1, V]: `lastOnly`), then samples on the host
 * (src/gpt/sampling.ts).
 * - Cached: the prompt is prefilled once into a preallocated KVCache, then each step feeds one token.
 * - Uncached (`useCache: false`): each step recomputes the whole window and keeps the last
 *   position's logits only, so the comparison with the cache measures attention reuse, not the head.
 *
 * Context policy (both paths, so they see the same context and pick the same tokens):
 * - A prompt longer than the context (`n_positions`) keeps its last n_positions tokens, with a warning.
 * - The model sees the window tokens[start:]. When the next token would not fit (the window already
 *   holds n_positions tokens), the window restarts at the last ⌈n_positions/2⌉ tokens, the new one
 *   included: the cached path resets its cache and prefills those tokens, the uncached path crops to
 *   them. GPT-2's positions are absolute (added to the input), so the cached keys and values of a
 *   shifted window are all wrong; re-prefilling half a window costs one prefill per n_positions/2
 *   tokens, where a window sliding by one token (nanoGPT's uncached crop) would cost a full prefill
 *   every token. Half a context of history is kept, never less.
 *
 * Batching (several prompts of different lengths): all sequences advance in lockstep through the
 * same positions, left-aligned at position 0 — no padding and no attention mask, so every row is
 * exactly the computation it would be alone. The common prefix length min(Lᵢ) is prefilled as one
 * [B, min Lᵢ] batch; after that every step feeds [B, 1]: a sequence whose prompt is longer still
 * feeds its own next prompt token (teacher forcing) and ignores that step's logits, the others feed
 * what they sampled. All sequences therefore share one position counter, one KVCache of batch B and
 * one window policy, and the same kernels as single-prompt decoding. The cost is that the tail of a
 * longer prompt goes through one token a step instead of in the prefill. Finished sequences keep
 * feeding end-of-text until the last one stops (their rows are wasted, not wrong). Sequence i samples
 * with Rng(seed, i), so the first sequence of a batch draws what it would draw alone.
 *
 * Stops: end-of-text (not part of the output), `maxNewTokens`, or a stop string (the text is cut
 * before it; `ids` still holds the token that completed it). Streamed text never holds half a UTF-8
 * character, nor a tail that may still turn out to start a stop string.
 *
 * Memory: each step runs inside `tidy` under `noGrad`, so its temporaries go back to the buffer pool
 * before the next one; after the first decode step the pool hands out the same buffers every step.
 *
 * Sampling stays on the host: the whole [B, 1, V] row comes back every step. On the adapters measured
 * so far reading the row back costs less than a device-side argmax would, and the JS thread has no
 * work to overlap with the device's (docs/kernels.md, "Sampling on the host").
 */
import { Rng } from '../tensor/rng.js';
import { tensor } from '../tensor/create.js';
import { noGrad } from '../tensor/graph.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { KVCache } from './kv-cache.js';
import type { GPT2 } from './model.js';
import { checkSamplingOptions, sampleToken, type SamplingOptions } from './sampling.js';
import { EOS_ID, Tokenizer } from './tokenizer.js';
import { Utf8Stream } from './utf8-stream.js';

/** A prompt as text (encoded with GPT-2's BPE; `<|endoftext|>` in it stays plain text) or as token ids. */
export type Prompt = string | readonly number[];

/** Sampling (temperature 0 = greedy, the default), length, stops and cancellation of a generation. */
export interface GenerateOptions extends SamplingOptions {
  /** Divides the logits before the draw; 0 (the default) = greedy, the most likely token every step. */
  temperature?: number;
  /** New tokens at most (the end-of-text token not counted). Default 256. */
  maxNewTokens?: number;
  /** Seed of the sampling draws: same seed, same output. Default 0. */
  seed?: number;
  /** Default true. */
  useCache?: boolean;
  /** Stop at this id (default 50256, GPT-2's end-of-text); null never stops early. */
  eosId?: number | null;
  /** Stop when the text contains one of these; the text is cut before it. */
  stop?: readonly string[];
  /** Where context warnings go. Default: console.warn. */
  onWarning?: (message: string) => void;
  /** Ends generation before the next step once aborted (Ctrl-C, a closed output, a client gone). */
  signal?: AbortSignal;
}

export type StopReason = 'eos' | 'stop' | 'length' | 'aborted';

export interface GenerateResult {
  /** New token ids, without the end-of-text token. */
  ids: number[];
  /** Their text, cut before a stop string. */
  text: string;
  /** Prompt tokens the model saw (after cutting an over-long prompt). */
  promptTokens: number;
  /** Tokens the model generated: ids.length, plus 1 when it stopped by emitting end-of-text. */
  newTokens: number;
  stopReason: StopReason;
  /** Wall time from the first forward to the last readback (all sequences of a batch together). */
  seconds: number;
  /** newTokens / seconds. */
  tokensPerSecond: number;
}

/** One sequence's progress after a step: the token it drew and the text that became final. */
export interface TokenEvent {
  /** Index of the prompt in the batch (0 for single generation). */
  sequence: number;
  id: number;
  /** Text that is now complete and final (often '' mid-character); concatenated, it is the result's text. */
  text: string;
  /** Set on the sequence's last event. */
  done: StopReason | null;
}

/** One sequence's decoding state: what the stop checks and the streamed text need. */
export interface Sequence {
  /** Cropped prompt, then drawn tokens, then end-of-text filler once done: the token at each position. */
  tokens: number[];
  promptLength: number;
  ids: number[];
  seen: Set<number>;
  rng: Rng;
  utf8: Utf8Stream;
  text: string;
  emitted: number;
  done: StopReason | null;
  emittedEos: boolean;
}

/** A sequence about to decode after `tokens` (its prompt, at least one token), drawing with Rng(seed, stream). */
export function startSequence(tokens: number[], seed: number, stream: number, done: StopReason | null = null): Sequence {
  return {
    tokens, promptLength: tokens.length, ids: [], seen: new Set(tokens), rng: new Rng(seed, stream),
    utf8: new Utf8Stream(), text: '', emitted: 0, done, emittedEos: false,
  };
}

/** The result of a sequence that has stopped (or `length` if it has not). */
export function sequenceResult(s: Sequence, seconds: number): GenerateResult {
  const newTokens = s.ids.length + (s.emittedEos ? 1 : 0);
  return {
    ids: s.ids, text: s.text, promptTokens: s.promptLength, newTokens, stopReason: s.done ?? 'length', seconds,
    tokensPerSecond: seconds > 0 ? newTokens / seconds : 0,
  };
}

/** Throws a RangeError naming the option when a value is out of range. */
export function checkOptions(options: GenerateOptions): void {
  checkSamplingOptions(options);
  const { maxNewTokens = 256, seed = 0, eosId = EOS_ID, stop = [] } = options;
  if (!(Number.isInteger(maxNewTokens) && maxNewTokens >= 0)) throw new RangeError(`max tokens must be an integer ≥ 0, got ${maxNewTokens}`);
  if (!(Number.isSafeInteger(seed) && seed >= 0)) throw new RangeError(`seed must be a non-negative integer, got ${seed}`);
  if (eosId !== null && !Number.isInteger(eosId)) throw new RangeError(`eosId must be an integer or null, got ${eosId}`);
  if (stop.some((s) => s === '')) throw new RangeError('a stop string must not be empty');
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function pendingStopPrefix(text: string, stops: readonly string[]): number {
  let longest = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > longest; n--) {
      if (text.endsWith(s.slice(0, n))) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

let tokenizer: Tokenizer | null = null;

const promptIds = (prompt: Prompt): readonly number[] => (typeof prompt === 'string' ? (tokenizer ??= new Tokenizer()).encode(prompt) : prompt);

/**
 * Generates for several prompts at once (see "Batching" above), yielding each sequence's token as soon
 * as its step's logits are read back; the return value holds one result per prompt, in order.
 */
export async function* generateBatchStream(
  model: GPT2,
  texts: readonly Prompt[],
  options: GenerateOptions = {},
): AsyncGenerator<TokenEvent, GenerateResult[]> {
  checkOptions(options);
  const prompts = texts.map(promptIds);
  const sampling: SamplingOptions = { ...options, temperature: options.temperature ?? 0 };
  const { maxNewTokens = 256, seed = 0, useCache = true, eosId = EOS_ID, stop = [], onWarning = console.warn } = options;
  const { n_positions: context, vocab_size: V } = model.config;
  if (prompts.length === 0) return [];
  const started = performance.now();

  const sequences: Sequence[] = prompts.map((prompt, i) => {
    for (const id of prompt) {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`prompt ${i}: token id ${id} is outside the vocabulary of ${V}`);
    }
    // GPT-2 needs at least one token; documents in its training data begin after an end-of-text.
    let tokens = prompt.length > 0 ? [...prompt] : [eosId ?? EOS_ID];
    if (tokens.length > context) {
      onWarning(`prompt${prompts.length > 1 ? ` ${i}` : ''} of ${tokens.length} tokens exceeds the context of ${context}: keeping its last ${context} tokens`);
      tokens = tokens.slice(tokens.length - context);
    }
    return startSequence(tokens, seed, i, maxNewTokens === 0 ? 'length' : null);
  });
  const finish = (): GenerateResult[] => {
    const seconds = (performance.now() - started) / 1000;
    return sequences.map((s) => sequenceResult(s, seconds));
  };
  if (maxNewTokens === 0) return finish();

  const B = sequences.length;
  const wasTraining = model.training;
  model.eval();
  const cache = useCache ? new KVCache(model.config, B, model.backend) : null;
  try {
    let start = 0; // first position of the window
    let fed = 0; // positions fed so far (absolute)
    let next = Math.min(...sequences.map((s) => s.promptLength)); // positions to feed this step
    while (true) {
      // On the CPU backend every await resolves at once: without a turn of the event loop, the
      // keypress or closed pipe that aborts would never be seen.
      if (options.signal) await nextTurn();
      if (options.signal?.aborted) {
        for (const s of sequences) {
          if (s.done !== null) continue;
          s.done = 'aborted';
          s.text += s.utf8.end();
        }
        break;
      }
      if (fed + next - start > context) {
        // The window is full: restart it at the last ⌈context/2⌉ tokens, the one to feed included.
        start = fed + 1 - Math.ceil(context / 2);
        cache?.reset();
      }
      // Cached: the positions the cache lacks. Uncached: the whole window.
      const from = cache ? start + cache.length : start;
      const to = fed + next;
      const ids = new Int32Array(B * (to - from));
      sequences.forEach((s, b) => ids.set(s.tokens.slice(from, to), b * (to - from)));
      const logits = tidy(() =>
        noGrad(() => model.forward(tensor(ids, [B, to - from], { backend: model.backend }), { cache: cache ?? undefined, lastOnly: true })),
      );
      const rows = await readAndDispose(logits); // [B, 1, V]
      fed = to;
      next = 1;

      const events: TokenEvent[] = [];
      sequences.forEach((s, b) => {
        if (s.done !== null) {
          s.tokens.push(EOS_ID); // filler: keeps the batch in lockstep
          return;
        }
        if (fed < s.tokens.length) return; // still feeding its prompt
        const id = sampleToken(rows.subarray(b * V, (b + 1) * V), sampling, s.rng, s.seen);
        s.tokens.push(id);
        s.seen.add(id);
        events.push(advance(s, b, id, eosId, stop, maxNewTokens));
      });
      for (const event of events) yield event;
      if (sequences.every((s) => s.done !== null)) break;
    }
  } finally {
    cache?.dispose();
    if (wasTraining) model.train();
  }
  return finish();
}

/** A turn of the event loop: lets a click, a key or a closed pipe be seen between steps that resolve at once (CPU backend). */
export const nextTurn = (): Promise<void> => new Promise((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)));

async function readAndDispose(t: Tensor): Promise<Float32Array> {
  try {
    return await t.toFloat32();
  } finally {
    t.dispose();
  }
}

/** Records a drawn token: stop checks, then the text that became final. */
export function advance(s: Sequence, sequence: number, id: number, eosId: number | null, stops: readonly string[], maxNewTokens: number): TokenEvent {
  if (id === eosId) {
    s.emittedEos = true;
    s.done = 'eos';
  } else {
    s.ids.push(id);
    const before = s.text.length;
    s.text += s.utf8.push(id);
    const cut = firstStop(s.text, before, stops);
    if (cut !== -1) {
      s.text = s.text.slice(0, cut);
      s.done = 'stop';
    } else if (s.ids.length >= maxNewTokens) {
      s.done = 'length';
    }
  }
  if (s.done === 'eos' || s.done === 'length') s.text += s.utf8.end();
  const final = s.done !== null ? s.text.length : s.text.length - pendingStopPrefix(s.text, stops);
  const text = s.text.slice(s.emitted, Math.max(s.emitted, final));
  s.emitted = Math.max(s.emitted, final);
  return { sequence, id, text, done: s.done };
}

/** Where the earliest stop string starts in `text`, looking only at matches that end after `oldLength`; -1 if none. */
function firstStop(text: string, oldLength: number, stops: readonly string[]): number {
  let first = -1;
  for (const s of stops) {
    const at = text.indexOf(s, Math.max(0, oldLength - s.length + 1));
    if (at !== -1 && (first === -1 || at < first)) first = at;
  }
  return first;
}

/**
 * One prompt, streamed: yields each token with the text it makes final (never half a UTF-8
 * character, nor the start of a stop string); returns the result.
 */
export async function* generateStream(model: GPT2, prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<TokenEvent, GenerateResult> {
  const [result] = yield* generateBatchStream(model, [prompt], options);
  return result;
}

/** Drives a stream to its end, passing each event to `onToken`. */
async function drain<R>(stream: AsyncGenerator<TokenEvent, R>, onToken?: (event: TokenEvent) => void): Promise<R> {
  while (true) {
    const step = await stream.next();
    if (step.done) return step.value;
    onToken?.(step.value);
  }
}

/**
 * Generates the continuation of one prompt (text or ids): greedy unless `temperature` is given,
 * up to `maxNewTokens` (default 256), stopping at end-of-text or a `stop` string. `onToken` sees
 * each token's final text as it comes.
 */
export function generate(
  model: GPT2,
  prompt: Prompt,
  options: GenerateOptions & { onToken?: (event: TokenEvent) => void } = {},
): Promise<GenerateResult> {
  return drain(generateStream(model, prompt, options), options.onToken);
}

/** Several prompts at once; at temperature 0 each result equals generating that prompt alone. */
export function generateBatch(
  model: GPT2,
  prompts: readonly Prompt[],
  options: GenerateOptions & { onToken?: (event: TokenEvent) => void } = {},
): Promise<GenerateResult[]> {
  return drain(generateBatchStream(model, prompts, options), options.onToken);
}
