/**
 * Text generation from the command line (flags as llama.cpp and Hugging Face name them):
 *
 *   npx tsx src/generate.ts -m gpt2 -p "The meaning of life is"
 *   npx tsx src/generate.ts -m runs/ift --instruction "Rewrite in passive voice" --input "The cat ate the fish."
 *   npx tsx src/generate.ts -m tiny -p "Hello" -n 20 --json
 *   npx tsx src/generate.ts -m runs/ift            # interactive: one instruction per line (/help)
 *   npx tsx src/generate.ts -m gpt2-large --adapter runs/lora --merge --instruction "Name three primary colors."
 *
 * Text streams to stdout as it is made (a --prompt is echoed first; an instruction's output is the
 * response alone); a summary with the seed goes to stderr. --json prints one object per sample instead:
 * {ids, text, tokens_per_s, prompt_tokens, new_tokens, stop_reason, seed}, where tokens_per_s counts
 * generated tokens (end-of-text included when it ended the text) over the generation's wall time.
 * With neither --prompt nor --instruction, a terminal gets the interactive mode and a pipe is read
 * to its end as the prompt (less one final newline). Exit codes: 0 done, 2 bad flags or a model that cannot be found or read,
 * 1 anything else.
 */
import { createInterface } from 'node:readline';
import { ChatSession } from './cli/chat-session.js';
import { UsageError } from './cli/flags.js';
import { HELP, parseGenerateFlags, USAGE, type GenerateFlags } from './cli/generate-options.js';
import { generate, type GenerateResult } from './gpt/generate.js';
import { ModelLoadError } from './gpt/load-model.js';
import type { GPT2 } from './gpt/model.js';
import { Tokenizer } from './gpt/tokenizer.js';
import { createBackend, releaseBackend } from './node/backend.js';
import { showDriverMessages } from './node/driver-messages.js';
import { checkModelSpec, loadModel } from './node/load-model.js';
import { ALPACA_SECTION_STOPS, alpacaPrompt } from './train/instruction-data.js';

type Flags = GenerateFlags;

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

/**
 * Generates for one prompt with `seed`: streamed to stdout, or one JSON line. `stopped` ends it
 * early (Ctrl-C). The summary names the seed, so that a good sample can be made again.
 */
async function run(model: GPT2, text: string, echo: string, flags: Flags, seed: number, stops: readonly string[], stopped?: AbortSignal): Promise<GenerateResult> {
  if (!flags.json) write(echo);
  const result = await generate(model, text, {
    ...flags.options,
    seed,
    stop: [...(flags.options.stop ?? []), ...stops],
    signal: stopped ? AbortSignal.any([stopped, outputClosed.signal]) : outputClosed.signal,
    onToken: flags.json ? undefined : (event) => write(event.text),
  });
  if (outputClosed.signal.aborted) return result;
  const perSecond = result.newTokens / result.seconds;
  if (flags.json) {
    console.log(JSON.stringify({
      ids: result.ids, text: result.text, tokens_per_s: perSecond, prompt_tokens: result.promptTokens,
      new_tokens: result.newTokens, stop_reason: result.stopReason, seed,
    }));
  } else {
    write('\n');
    console.error(
      `[${result.newTokens} tokens in ${result.seconds.toFixed(2)} s: ${perSecond.toFixed(1)} tokens/s, ` +
        `${result.promptTokens} prompt tokens, stop: ${result.stopReason}, cache ${flags.options.useCache ? 'on' : 'off'}, seed ${seed}]`,
    );
  }
  return result;
}

/** --num-samples samples of one prompt, the i-th with seed + i. */
async function samples(model: GPT2, text: string, echo: string, flags: Flags, stops: readonly string[]): Promise<void> {
  for (let i = 0; i < flags.numSamples && !outputClosed.signal.aborted; i++) {
    if (flags.numSamples > 1 && !flags.json) console.error(`--- sample ${i + 1} of ${flags.numSamples}`);
    await run(model, text, echo, flags, flags.options.seed + i, stops);
  }
}

/**
 * One instruction (or raw prompt) per line, each turn with its own seed (seed + turn). Ctrl-C
 * during a response stops it and returns to the prompt; Ctrl-C at an empty prompt, or Ctrl-D,
 * quits. (The terminal is in raw mode here, so Ctrl-C is a key that readline reports, not a signal.)
 */
async function interactive(model: GPT2, flags: Flags): Promise<void> {
  const tokenizer = new Tokenizer();
  const session = new ChatSession({
    raw: flags.raw, conversation: flags.conversation, countTokens: (text) => tokenizer.encode(text).length,
    contextLength: model.config.n_positions, responseTokens: flags.options.maxNewTokens ?? 256,
  });
  console.error(`${flags.raw ? 'One prompt' : 'One instruction'} per line${flags.conversation ? ', earlier turns kept' : ''}; /help lists the commands; Ctrl-C stops a response; Ctrl-C at an empty prompt or Ctrl-D quits.`);
  const lines = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  let response: AbortController | null = null;
  lines.on('SIGINT', () => {
    if (response !== null) response.abort();
    else if (lines.line === '' && session.promptLabel !== '... ') lines.close();
    else {
      // Ctrl-C on a half-typed line discards it (and its continued lines), as a shell does.
      lines.write(null, { ctrl: true, name: 'u' });
      session.cancel();
      process.stderr.write('^C\n');
      lines.setPrompt(session.promptLabel);
      lines.prompt();
    }
  });
  lines.setPrompt(session.promptLabel);
  lines.prompt();
  let turn = 0;
  // The iterator buffers lines typed while a response is being generated.
  for await (const line of lines) {
    const step = session.feed(line);
    if (step.kind === 'say') console.error(step.text);
    if (step.kind === 'prompt') {
      response = new AbortController();
      try {
        const result = await run(model, step.text, '', flags, flags.options.seed + turn++, step.stops, response.signal);
        session.answered(result.text);
      } finally {
        response = null;
      }
    }
    if (outputClosed.signal.aborted) break;
    lines.setPrompt(session.promptLabel);
    lines.prompt();
  }
}

async function main(argv: string[]): Promise<number> {
  let parsed: Flags | 'help';
  try {
    parsed = parseGenerateFlags(argv);
  } catch (e) {
    if (!(e instanceof UsageError) && !(e instanceof RangeError)) throw e;
    console.error(`generate: ${e.message}\n${USAGE}`);
    return 2;
  }
  if (parsed === 'help') {
    console.log(HELP);
    return 0;
  }
  const flags = parsed;
  for (const warning of flags.warnings) console.error(`generate: warning: ${warning}`);
  try {
    checkModelSpec(flags.model, flags.adapter);
    const fromStdin = flags.instruction === undefined && flags.prompt === undefined && !process.stdin.isTTY;
    // Read (and refuse an empty prompt) before the model costs seconds or minutes to load.
    const piped = fromStdin ? (await readStdin()).replace(/\r?\n$/, '') : null; // the newline echo and editors end a file with
    if (piped === '') throw new UsageError('no prompt: give --prompt, --instruction, or text on stdin (stdin was empty)');
    if (flags.verbose) showDriverMessages();
    const backend = await createBackend(flags.device);
    const { model, source, nonFinite } = await loadModel(flags.model, { backend, dtype: flags.dtype, adapter: flags.adapter, merge: flags.merge });
    if (nonFinite.length > 0) {
      const shown = nonFinite.slice(0, 3).map((t) => `${t.name}: ${t.count}`).join(', ');
      console.error(`generate: warning: the weights hold non-finite values (${shown}${nonFinite.length > 3 ? ', …' : ''}); the output will likely be garbage`);
    }
    if (!flags.json) console.error(`model: ${flags.model} (${source}) on ${backend.name} (${backend.description})`);
    if (flags.instruction !== undefined) {
      await samples(model, alpacaPrompt({ instruction: flags.instruction, input: flags.input }), '', flags, ALPACA_SECTION_STOPS);
    } else if (flags.prompt !== undefined) {
      await samples(model, flags.prompt, flags.prompt, flags, []);
    } else if (piped !== null) {
      await samples(model, piped, piped, flags, []);
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
