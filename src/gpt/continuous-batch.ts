/**
 * Continuous batching: many independent requests decode through one model, one batched step at a
 * time. A request waits in a bounded queue until a slot of the cache pool (KVCachePool, allocated
 * up front) is free, then joins the next step with its whole prompt, and from the step after feeds
 * one token a step, each sequence in its own slot at its own position (GPT2.stepHidden). A step's
 * matmuls run once over all its tokens, prompts and decoding rows together: a prompt that joins
 * costs the decoding rows little, where a prefill of its own stalled them for a whole forward pass
 * and an output head. Prompts join a step while their tokens fit in the context (one at least), so
 * a step's activations stay about those of one context-long prefill. A request that stops leaves the batch at
 * once and its slot serves the next one; a request whose signal aborts (a client gone) leaves before
 * the next step.
 *
 * Every row computes what the request would compute alone (its prompt attends in its own slot with
 * the kernel of a prefill, its decode rows to its own slot only), and it draws with Rng(seed, 0) as a
 * single `generate` does: at temperature 0, and seeded, a request's output equals `generate` alone.
 *
 * Unlike `generate`, a request must fit in the context (prompt + maxNewTokens ≤ n_positions): no
 * window restarts, so no slot ever re-prefills and a step never waits on one sequence.
 */
import { noGrad } from '../tensor/graph.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { advance, checkOptions, nextTurn, sequenceResult, startSequence, type GenerateOptions, type GenerateResult, type Sequence, type TokenEvent } from './generate.js';
import { KVCachePool } from './kv-cache-pool.js';
import type { GPT2 } from './model.js';
import { sampleToken, type SamplingOptions } from './sampling.js';
import { EOS_ID } from './tokenizer.js';

/** What a request may set: sampling, length, stops and the end-of-text id of GenerateOptions. */
export type BatchRequestOptions = Omit<GenerateOptions, 'useCache' | 'onWarning'>;

export interface ContinuousBatcherOptions {
  /** Sequences decoding at once: the pool holds a cache of the whole context for each, allocated up front. Default 8. */
  slots?: number;
  /** Requests that may wait for a slot; one more is refused with QueueFullError. Default 64. */
  queue?: number;
}

/** The queue is full: the caller should retry later (HTTP 429). */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

/** The batcher is closing and takes no new request (HTTP 503). */
export class ClosedError extends Error {
  override name = 'ClosedError';
}

interface Job {
  sequence: Sequence;
  sampling: SamplingOptions;
  maxNewTokens: number;
  eosId: number | null;
  stop: readonly string[];
  signal?: AbortSignal;
  onToken?: (event: TokenEvent) => void;
  started: number;
  slot: number | null;
  resolve: (result: GenerateResult) => void;
  reject: (error: unknown) => void;
}

export class ContinuousBatcher {
  readonly slots: number;
  readonly queueBound: number;
  private readonly waiting: Job[] = [];
  private readonly active: Job[] = [];
  private readonly pool: KVCachePool;
  private loop: Promise<void> | null = null;
  private closed = false;
  /** Steps run so far and the sequences they served (decoding and joining), for /health and the bench. */
  steps = 0;
  rowsServed = 0;

  constructor(readonly model: GPT2, { slots = 8, queue = 64 }: ContinuousBatcherOptions = {}) {
    if (!(Number.isInteger(slots) && slots >= 1)) throw new RangeError(`slots must be an integer ≥ 1, got ${slots}`);
    if (!(Number.isInteger(queue) && queue >= 0)) throw new RangeError(`queue must be an integer ≥ 0, got ${queue}`);
    this.slots = slots;
    this.queueBound = queue;
    this.pool = new KVCachePool(model.config, slots, model.backend);
    model.eval();
  }

  get activeCount(): number {
    return this.active.length;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /**
   * Queues a request for `prompt` (token ids; empty means one end-of-text, as `generate`). Resolves
   * with its result once it stops; `onToken` sees each token as its step's logits come back. Throws
   * QueueFullError when the queue is full, ClosedError after close(), RangeError for options out of
   * range or a request that does not fit in the context.
   */
  submit(prompt: readonly number[], options: BatchRequestOptions & { onToken?: (event: TokenEvent) => void } = {}): Promise<GenerateResult> {
    checkOptions(options);
    if (this.closed) throw new ClosedError('the server is shutting down');
    const { n_positions: context, vocab_size: V } = this.model.config;
    const { maxNewTokens = 256, seed = 0, eosId = EOS_ID, stop = [] } = options;
    const tokens = prompt.length > 0 ? [...prompt] : [eosId ?? EOS_ID];
    for (const id of tokens) if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`token id ${id} is outside the vocabulary of ${V}`);
    if (tokens.length + maxNewTokens > context) {
      throw new RangeError(`${tokens.length} prompt tokens + ${maxNewTokens} new tokens exceed the context of ${context}`);
    }
    if (this.active.length + this.waiting.length >= this.slots + this.queueBound) {
      throw new QueueFullError(`${this.slots} sequences are decoding and ${this.waiting.length} are waiting: try again later`);
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({
        sequence: startSequence(tokens, seed, 0, maxNewTokens === 0 ? 'length' : null),
        sampling: { ...options, temperature: options.temperature ?? 0 },
        maxNewTokens, eosId, stop, signal: options.signal, onToken: options.onToken,
        started: performance.now(), slot: null, resolve, reject,
      });
      this.loop ??= this.run().finally(() => (this.loop = null));
    });
  }

  /** Takes no new request; resolves once every queued and active one has finished. */
  async close(): Promise<void> {
    this.closed = true;
    await this.loop;
  }

  /** Frees the cache pool's device memory. Call after close() has resolved. */
  dispose(): void {
    this.pool.dispose();
  }

  private async run(): Promise<void> {
    while (this.waiting.length > 0 || this.active.length > 0) {
      // A turn of the event loop between steps: new requests and closed connections are seen
      // even where every await resolves at once (the CPU backend).
      await nextTurn();
      try {
        this.dropAborted();
        this.admit();
        if (this.active.length > 0) await this.step();
      } catch (e) {
        for (const job of this.active.splice(0)) this.settle(job, e);
      }
    }
  }

  private dropAborted(): void {
    for (const list of [this.waiting, this.active]) {
      for (let i = list.length - 1; i >= 0; i--) {
        const job = list[i];
        if (!job.signal?.aborted) continue;
        list.splice(i, 1);
        job.sequence.done = 'aborted';
        job.sequence.text += job.sequence.utf8.end();
        this.settle(job);
      }
    }
  }

  /** Moves waiting jobs into free slots while their prompts fit in this step's budget. */
  private admit(): void {
    const budget = this.model.config.n_positions;
    let joiningTokens = 0;
    while (this.waiting.length > 0 && this.active.length < this.slots) {
      const job = this.waiting[0];
      const tokens = job.sequence.tokens.length;
      if (joiningTokens > 0 && joiningTokens + tokens > budget) break;
      this.waiting.shift();
      if (job.sequence.done !== null) {
        this.settle(job); // maxNewTokens 0
        continue;
      }
      job.slot = this.pool.acquire();
      this.active.push(job);
      joiningTokens += tokens;
    }
  }

  /** One step: a joining job feeds its prompt into its empty slot, every other one its last token. */
  private async step(): Promise<void> {
    const jobs = [...this.active];
    const sequences = jobs.map((job) => {
      const { tokens } = job.sequence;
      return { slot: job.slot!, ids: this.pool.length(job.slot!) === 0 ? tokens : tokens.slice(-1) };
    });
    const rows = await readAndDispose(tidy(() => noGrad(() => this.model.head(this.model.stepHidden(this.pool, sequences)))));
    this.steps++;
    this.rowsServed += jobs.length;
    const V = this.model.config.vocab_size;
    jobs.forEach((job, b) => this.take(job, rows.subarray(b * V, (b + 1) * V)));
  }

  /** Draws a job's next token from its row of logits; a job that stops leaves the batch. */
  private take(job: Job, row: Float32Array): void {
    const s = job.sequence;
    const id = sampleToken(row, job.sampling, s.rng, s.seen);
    s.tokens.push(id);
    s.seen.add(id);
    const event = advance(s, 0, id, job.eosId, job.stop, job.maxNewTokens);
    let failure: unknown;
    try {
      job.onToken?.(event);
    } catch (e) {
      failure = e; // the listener's fault ends its own request only
    }
    if (s.done !== null || failure !== undefined) {
      this.active.splice(this.active.indexOf(job), 1);
      this.settle(job, failure);
    }
  }

  private settle(job: Job, error?: unknown): void {
    if (job.slot !== null) {
      this.pool.release(job.slot);
      job.slot = null;
    }
    if (error !== undefined) job.reject(error);
    else job.resolve(sequenceResult(job.sequence, (performance.now() - job.started) / 1000));
  }
}

async function readAndDispose(t: Tensor): Promise<Float32Array> {
  try {
    return await t.toFloat32();
  } finally {
    t.dispose();
  }
}
