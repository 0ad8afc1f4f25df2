/**
 * Text generation from the command line:
 *
 *   npx tsx src/generate.ts --model gpt2 --prompt "The meaning of life is"
 *   npx tsx src/generate.ts --model runs/ift --instruction "Rewrite in passive voice" --input "The cat ate the fish."
 *   npx tsx src/generate.ts --model tiny --prompt "Hello" --max-tokens 20 --json
 *   npx tsx src/generate.ts --model runs/ift            # interactive: one instruction per line
 *
 * Text streams to stdout as it is made (a --prompt is echoed first; an instruction's output is the
 * response alone); a summary goes to stderr. --json prints one object instead:
 * {ids, text, tokens_per_s, prompt_tokens, new_tokens, stop_reason, seed}, where tokens_per_s counts
 * generated tokens (end-of-text included when it ended the text) over the generation's wall time.
 * With neither --prompt nor --instruction, a terminal gets the interactive mode and a pipe is read
 * to its end as the prompt (less one final newline). Exit codes: 0 done, 2 bad flags or a model that cannot be found or read,
 * 1 anything else.
 */
import { createInterface } from 'node:readline';
import { decimal, parseFlags, UsageError } from './cli/flags.js';
import { generate, type GenerateOptions, type GenerateResult } from './gpt/generate.js';
import { ModelLoadError } from './gpt/load-model.js';
import type { GPT2 } from './gpt/model.js';
import { createBackend, releaseBackend } from './node/backend.js';
import { checkModelSpec, loadModel } from './node/load-model.js';
import { ALPACA_SECTION_STOPS, alpacaPrompt } from './train/instruction-data.js';

const USAGE = `usage: tsx src/generate.ts --model <preset|folder|owner/name> [--prompt <text> | --instruction <text> [--input <text>]]
  [--temperature 0] [--top-k K] [--top-p P] [--repetition-penalty R] [--max-tokens 256] [--seed S]
  [--stop <text>]... [--no-cache] [--device auto|webgpu|cpu] [--json]`;

/** Past the context, generation re-prefills and goes on: a bound keeps a typo from running for days. */
const MAX_NEW_TOKENS = 1 << 20;

interface Flags {
  model: string;
  prompt?: string;
  instruction?: string;
  input?: string;
  options: GenerateOptions;
  seed: number;
  device: 'auto' | 'webgpu' | 'cpu';
  json: boolean;
}

function numberFlag(values: Record<string, unknown>, name: string, check: (x: number) => boolean, what: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const x = decimal(String(raw));
  if (!Number.isFinite(x) || !check(x)) throw new UsageError(`--${name} must be ${what}, got ${JSON.stringify(raw)}`);
  return x;
}

function parseGenerateFlags(argv: string[]): Flags {
  const values = parseFlags(argv, {
    model: { type: 'string', default: 'gpt2' },
    prompt: { type: 'string' },
    instruction: { type: 'string' },
    input: { type: 'string' },
    temperature: { type: 'string' },
    'top-k': { type: 'string' },
    'top-p': { type: 'string' },
    'repetition-penalty': { type: 'string' },
    'max-tokens': { type: 'string' },
    seed: { type: 'string' },
    stop: { type: 'string', multiple: true },
    'no-cache': { type: 'boolean', default: false },
    device: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (values.prompt !== undefined && values.instruction !== undefined) throw new UsageError('give --prompt or --instruction, not both');
  if (values.input !== undefined && values.instruction === undefined) throw new UsageError('--input goes with --instruction');
  const device = values.device;
  if (device !== 'auto' && device !== 'webgpu' && device !== 'cpu') throw new UsageError(`--device must be auto, webgpu or cpu, got ${JSON.stringify(device)}`);
  const int = (x: number) => Number.isInteger(x) && x >= 0;
  const seed = numberFlag(values, 'seed', (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer') ?? Math.floor(Math.random() * 2 ** 31);
  const options: GenerateOptions = {
    temperature: numberFlag(values, 'temperature', (x) => x >= 0, 'a number ≥ 0 (0 = greedy)') ?? 0,
    topK: numberFlag(values, 'top-k', int, 'an integer ≥ 0 (0 = off)'),
    topP: numberFlag(values, 'top-p', (x) => x > 0 && x <= 1, 'in (0, 1]'),
    repetitionPenalty: numberFlag(values, 'repetition-penalty', (x) => x > 0, 'a number > 0 (1 = off)'),
    maxNewTokens: numberFlag(values, 'max-tokens', (x) => int(x) && x <= MAX_NEW_TOKENS, `an integer in [0, ${MAX_NEW_TOKENS}]`) ?? 256,
    seed,
    useCache: !values['no-cache'],
    stop: values.stop ?? [],
  };
  if ((values.stop ?? []).some((s) => s === '')) throw new UsageError('--stop must not be empty');
  return {
    model: values.model, prompt: values.prompt, instruction: values.instruction, input: values.input,
    options, seed, device, json: values.json,
  };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * A reader that went away (`| head`) closes stdout: generation then ends quietly, with exit 0, as
 * Unix tools do, instead of an EPIPE trace.
 */
const outputClosed = new AbortController();
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  outputClosed.abort();
});
const write = (text: string) => {
  if (!outputClosed.signal.aborted) process.stdout.write(text);
};

/** Generates for one prompt: streamed to stdout, or one JSON line. `stopped` ends it early (Ctrl-C). */
async function run(model: GPT2, text: string, echo: string, flags: Flags, stops: readonly string[], stopped?: AbortSignal): Promise<GenerateResult> {
  if (!flags.json) write(echo);
  const result = await generate(model, text, {
    ...flags.options,
    stop: [...(flags.options.stop ?? []), ...stops],
    signal: stopped ? AbortSignal.any([stopped, outputClosed.signal]) : outputClosed.signal,
    onToken: flags.json ? undefined : (event) => write(event.text),
  });
  if (outputClosed.signal.aborted) return result;
  const perSecond = result.newTokens / result.seconds;
  if (flags.json) {
    console.log(JSON.stringify({
      ids: result.ids, text: result.text, tokens_per_s: perSecond, prompt_tokens: result.promptTokens,
      new_tokens: result.newTokens, stop_reason: result.stopReason, seed: flags.seed,
    }));
  } else {
    write('\n');
    console.error(
      `[${result.newTokens} tokens in ${result.seconds.toFixed(2)} s: ${perSecond.toFixed(1)} tokens/s, ` +
        `${result.promptTokens} prompt tokens, stop: ${result.stopReason}, cache ${flags.options.useCache ? 'on' : 'off'}]`,
    );
  }
  return result;
}

/**
 * One instruction per line. Ctrl-C during a response stops it and returns to the prompt; Ctrl-C at
 * an empty prompt, or Ctrl-D, quits. (The terminal is in raw mode here, so Ctrl-C is a key that
 * readline reports, not a signal.)
 */
async function interactive(model: GPT2, flags: Flags): Promise<void> {
  console.error('One instruction per line; Ctrl-C stops a response; Ctrl-C at an empty prompt or Ctrl-D quits.');
  const lines = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  let response: AbortController | null = null;
  lines.on('SIGINT', () => {
    if (response !== null) response.abort();
    else if (lines.line === '') lines.close();
    else {
      // Ctrl-C on a half-typed line discards it, as a shell does.
      lines.write(null, { ctrl: true, name: 'u' });
      process.stderr.write('^C\n');
      lines.prompt();
    }
  });
  lines.setPrompt('instruction> ');
  lines.prompt();
  // The iterator buffers lines typed while a response is being generated.
  for await (const line of lines) {
    if (line.trim() !== '') {
      response = new AbortController();
      try {
        await run(model, alpacaPrompt({ instruction: line.trim() }), '', flags, ALPACA_SECTION_STOPS, response.signal);
      } finally {
        response = null;
      }
    }
    if (outputClosed.signal.aborted) break;
    lines.prompt();
  }
}

async function main(argv: string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = parseGenerateFlags(argv);
  } catch (e) {
    if (!(e instanceof UsageError) && !(e instanceof RangeError)) throw e;
    console.error(`generate: ${e.message}\n${USAGE}`);
    return 2;
  }
  try {
    checkModelSpec(flags.model);
    const fromStdin = flags.instruction === undefined && flags.prompt === undefined && !process.stdin.isTTY;
    // Read (and refuse an empty prompt) before the model costs seconds or minutes to load.
    const piped = fromStdin ? (await readStdin()).replace(/\r?\n$/, '') : null; // the newline echo and editors end a file with
    if (piped === '') throw new UsageError('no prompt: give --prompt, --instruction, or text on stdin (stdin was empty)');
    const backend = await createBackend(flags.device);
    const { model, source, nonFinite } = await loadModel(flags.model, { backend });
    if (nonFinite.length > 0) {
      const shown = nonFinite.slice(0, 3).map((t) => `${t.name}: ${t.count}`).join(', ');
      console.error(`generate: warning: the weights hold non-finite values (${shown}${nonFinite.length > 3 ? ', …' : ''}); the output will likely be garbage`);
    }
    if (!flags.json) console.error(`model: ${flags.model} (${source}) on ${backend.name} (${backend.description})`);
    if (flags.instruction !== undefined) {
      await run(model, alpacaPrompt({ instruction: flags.instruction, input: flags.input }), '', flags, ALPACA_SECTION_STOPS);
    } else if (flags.prompt !== undefined) {
      await run(model, flags.prompt, flags.prompt, flags, []);
    } else if (piped !== null) {
      await run(model, piped, piped, flags, []);
    } else {
      await interactive(model, flags);
    }
    return 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof ModelLoadError) {
      console.error(`generate: ${e.message}`);
      return 2;
    }
    console.error(`generate: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  } finally {
    releaseBackend();
  }
}

process.exitCode = await main(process.argv.slice(2));
