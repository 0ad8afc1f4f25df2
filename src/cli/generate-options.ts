/**
 * The generation command's flags: one table (names as llama.cpp and Hugging Face's generate have
 * them, older names as aliases) that drives both parsing and `--help`.
 */
import type { GenerateOptions } from '../gpt/generate.js';
import type { WeightDType } from '../nn/layers.js';
import { FlagReader, flagHelp, nonNegativeInt, parseFlagTable, positiveInt, UsageError, VERBOSE_FLAG, type FlagTable } from './flags.js';

/** Past the context, generation re-prefills and goes on: a bound keeps a typo from running for days. */
const MAX_NEW_TOKENS = 1 << 20;

export interface GenerateFlags {
  model: string;
  /** A LoRA adapter folder run on the model. */
  adapter?: string;
  /** Fold the adapter into the weights at load. */
  merge: boolean;
  prompt?: string;
  instruction?: string;
  input?: string;
  /** Sampling, length and stops; `seed` is the first sample's (or turn's) seed. */
  options: GenerateOptions & { seed: number };
  /** Whether the seed was given (else drawn at random). */
  seedGiven: boolean;
  numSamples: number;
  /** Interactive: lines are prompts as they are, without the instruction template. */
  raw: boolean;
  /** Interactive: earlier turns stay in the prompt, as far as the context holds them. */
  conversation: boolean;
  device: 'auto' | 'webgpu' | 'cpu';
  /** Storage of the weight matrices (f16, bf16: half the memory and the bytes a token reads). */
  dtype: WeightDType;
  json: boolean;
  /** Let the GPU driver's own messages through. */
  verbose: boolean;
  /** Warnings about the flags (sampling flags that greedy decoding ignores). */
  warnings: string[];
}

export const GENERATE_FLAGS: FlagTable = [
  { name: 'model', short: 'm', value: '<preset|folder|owner/name>', description: 'tiny/demo (random init), gpt2…gpt2-xl, a hub repo, or a model or run folder (a LoRA run\'s: its base with its adapter)', default: 'gpt2' },
  { name: 'adapter', value: '<folder>', description: 'a LoRA adapter (PEFT\'s adapter_config.json + adapter_model.safetensors) run on --model' },
  { name: 'merge', description: 'fold the adapter into the weights once, at load (as fast as the base; without it the adapter runs beside them)' },
  { name: 'prompt', short: 'p', value: '<text>', description: 'text to continue, as it is' },
  { name: 'instruction', value: '<text>', description: 'an instruction, put in the Alpaca template a fine-tuned model answers' },
  { name: 'input', value: '<text>', description: 'the instruction\'s input (goes with --instruction)' },
  { name: 'max-new-tokens', short: 'n', aliases: ['max-tokens'], value: '<n>', description: 'new tokens at most', default: '256' },
  { name: 'temperature', short: 't', value: '<x>', description: 'sampling temperature, 0 = greedy (the most likely token)', default: '0' },
  { name: 'top-k', value: '<k>', description: 'sample among the k most likely tokens, 0 = all', default: '0' },
  { name: 'top-p', value: '<p>', description: 'sample among the most likely tokens holding probability p', default: '1' },
  { name: 'repetition-penalty', value: '<r>', description: 'penalise tokens already seen, 1 = off (greedy too)', default: '1' },
  { name: 'seed', short: 's', value: '<n>', description: 'seed of the first sample; later samples and turns take seed+1, seed+2, …', default: 'random, printed' },
  { name: 'num-samples', value: '<n>', description: 'samples of the same prompt, each with its own seed', default: '1' },
  { name: 'stop', value: '<text>', multiple: true, description: 'end the text where it first contains this (repeatable)' },
  { name: 'ignore-eos', description: 'go on past the end-of-text token, to --max-new-tokens' },
  { name: 'raw', description: 'interactive: each line is a prompt as it is, not an instruction' },
  { name: 'conversation', description: 'interactive: keep earlier turns in the prompt, as far as the context holds them' },
  { name: 'no-cache', description: 'recompute every position each step (no KV cache: slower, same text)' },
  { name: 'device', value: '<auto|webgpu|cpu>', description: 'where to run', default: 'auto' },
  { name: 'dtype', value: '<f32|f16|bf16>', description: 'how the weight matrices are stored: f16 or bf16 halves their memory and the bytes a token reads (arithmetic stays f32; bf16 keeps f32\'s range, f16 more precision)', default: 'f32' },
  { name: 'json', description: 'print one JSON object per sample: {ids, text, tokens_per_s, prompt_tokens, new_tokens, stop_reason, seed}' },
  VERBOSE_FLAG,
  { name: 'help', short: 'h', description: 'this text' },
];

export const USAGE = 'usage: tsx src/generate.ts [-m <model>] [-p <text> | --instruction <text> [--input <text>]] [flags] (--help lists them)';

export const HELP = `Usage: npx tsx src/generate.ts [flags]

Generates text with GPT-2. With neither --prompt nor --instruction, a terminal gets an interactive
session (one instruction per line; /help lists its commands) and a pipe is read as the prompt.

${flagHelp(GENERATE_FLAGS)}`;

/** Sampling flags that greedy decoding (temperature 0) does not use: Hugging Face warns about them too. */
const SAMPLING_ONLY = ['top-k', 'top-p'];

export function parseGenerateFlags(argv: string[]): GenerateFlags | 'help' {
  const flags = new FlagReader(parseFlagTable(argv, GENERATE_FLAGS));
  if (flags.switch('help')) return 'help';
  const prompt = flags.string('prompt');
  const instruction = flags.string('instruction');
  const input = flags.string('input');
  if (prompt !== undefined && instruction !== undefined) throw new UsageError('give --prompt or --instruction, not both');
  if (input !== undefined && instruction === undefined) throw new UsageError('--input goes with --instruction');
  const stop = flags.strings('stop');
  if (stop.some((s) => s === '')) throw new UsageError('--stop must not be empty');
  const seed = flags.number('seed', (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
  const temperature = flags.number('temperature', (x) => x >= 0, 'a number ≥ 0 (0 = greedy)') ?? 0;
  const numSamples = flags.number('num-samples', (x) => positiveInt(x) && x <= 1000, 'an integer in [1, 1000]') ?? 1;
  const warnings: string[] = [];
  if (temperature === 0) {
    const ignored = SAMPLING_ONLY.filter((name) => flags.given(name)).map((name) => flags.written(name));
    if (ignored.length > 0) warnings.push(`${ignored.join(' and ')} ${ignored.length === 1 ? 'has' : 'have'} no effect at temperature 0 (greedy decoding): give --temperature > 0 to sample`);
    if (numSamples > 1) warnings.push(`--num-samples ${numSamples} at temperature 0 gives the same text every time: give --temperature > 0 to sample`);
  }
  return {
    model: flags.string('model') ?? 'gpt2',
    adapter: flags.string('adapter'),
    merge: flags.switch('merge'),
    prompt,
    instruction,
    input,
    options: {
      temperature,
      topK: flags.number('top-k', nonNegativeInt, 'an integer ≥ 0 (0 = off)'),
      topP: flags.number('top-p', (x) => x > 0 && x <= 1, 'in (0, 1]'),
      repetitionPenalty: flags.number('repetition-penalty', (x) => x > 0, 'a number > 0 (1 = off)'),
      maxNewTokens: flags.number('max-new-tokens', (x) => nonNegativeInt(x) && x <= MAX_NEW_TOKENS, `an integer in [0, ${MAX_NEW_TOKENS}]`) ?? 256,
      seed: seed ?? Math.floor(Math.random() * 2 ** 31),
      useCache: !flags.switch('no-cache'),
      eosId: flags.switch('ignore-eos') ? null : undefined,
      stop,
    },
    seedGiven: seed !== undefined,
    numSamples,
    raw: flags.switch('raw'),
    conversation: flags.switch('conversation'),
    device: flags.choice('device', ['auto', 'webgpu', 'cpu'] as const) ?? 'auto',
    dtype: flags.choice('dtype', ['f32', 'f16', 'bf16'] as const) ?? 'f32',
    json: flags.switch('json'),
    verbose: flags.switch('verbose'),
    warnings,
  };
}
