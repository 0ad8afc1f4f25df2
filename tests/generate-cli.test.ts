/**
 * `tsx src/generate.ts` as a user runs it (a child process): the --json object on the tiny preset
 * (its fields, ids that decode to its text, the same ids without the cache and on WebGPU), a model
 * folder as written by saveGpt2Weights with an Alpaca instruction, a prompt piped on stdin, and exit
 * code 2 with a message for bad flags, bad values and missing model folders.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { saveGpt2Weights } from '../src/node/weights-folder.js';
import { PRESETS } from '../src/gpt/config.js';
import { initializeWeights } from '../src/gpt/init.js';
import { GPT2 } from '../src/gpt/model.js';
import { Tokenizer } from '../src/gpt/tokenizer.js';
import { formatInput } from '../src/train/instruction-data.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { randomGpt2Weights } from './helpers/weights-fixtures.js';

const gpu = await webgpuOrSkip();
const tokenizer = new Tokenizer();
const scratch = mkdtempSync(join(tmpdir(), 'generate-cli-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], input = ''): Run {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/generate.ts', ...args], {
    encoding: 'utf8',
    input,
    timeout: 120_000,
    env: { ...process.env, HF_HUB_OFFLINE: '1' },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface JsonOut {
  ids: number[];
  text: string;
  tokens_per_s: number;
  prompt_tokens: number;
  new_tokens: number;
  stop_reason: string;
}

function json(run: Run): JsonOut {
  expect(run.code, run.stderr).toBe(0);
  const lines = run.stdout.trim().split('\n');
  expect(lines.length).toBe(1); // --json prints the object alone on stdout
  return JSON.parse(lines[0]) as JsonOut;
}

describe('--json', () => {
  const prompt = 'The capital of France is';

  it('prints {ids, text, tokens_per_s, prompt_tokens, new_tokens} on the tiny preset, the same with --no-cache', () => {
    const out = json(cli(['--model', 'tiny', '--prompt', prompt, '--max-tokens', '9', '--json', '--device', 'cpu']));
    expect(Object.keys(out)).toEqual(expect.arrayContaining(['ids', 'text', 'tokens_per_s', 'prompt_tokens', 'new_tokens']));
    expect(out.prompt_tokens).toBe(tokenizer.encode(prompt).length);
    expect(out.new_tokens).toBe(out.ids.length + (out.stop_reason === 'eos' ? 1 : 0));
    expect(out.ids.length === 9 || out.stop_reason === 'eos').toBe(true);
    expect(out.text).toBe(tokenizer.decode(out.ids));
    expect(out.tokens_per_s).toBeGreaterThan(0);
    const uncached = json(cli(['--model', 'tiny', '--prompt', prompt, '--max-tokens', '9', '--json', '--device', 'cpu', '--no-cache']));
    expect(uncached.ids).toEqual(out.ids);
  });

  it.each(['f16', 'bf16'])('--dtype %s stores the weight matrices in 16 bits: the tiny preset gives the greedy ids of f32', (dtype) => {
    const args = ['--model', 'tiny', '--prompt', prompt, '--max-tokens', '9', '--json', '--device', 'cpu'];
    expect(json(cli([...args, '--dtype', dtype])).ids).toEqual(json(cli([...args, '--dtype', 'f32'])).ids);
  });

  it.runIf(gpu !== null)('gives the same greedy ids on WebGPU as on the CPU', () => {
    const args = ['--model', 'tiny', '--prompt', prompt, '--max-tokens', '9', '--json'];
    expect(json(cli([...args, '--device', 'webgpu'])).ids).toEqual(json(cli([...args, '--device', 'cpu'])).ids);
  });

  it('loads a model folder (config.json + model.safetensors) and formats an instruction with the Alpaca template', async () => {
    const model = new GPT2(PRESETS.tiny, cpu);
    initializeWeights(model, 0); // what --model tiny builds
    const folder = join(scratch, 'run');
    const weights = new Map(await Promise.all(model.namedParameters().map(async ([name, p]) => [name, { shape: p.shape, data: await p.toFloat32() }] as const)));
    await saveGpt2Weights(folder, PRESETS.tiny, weights);
    const args = ['--instruction', 'Name a color.', '--input', 'Think of the sky.', '--max-tokens', '6', '--json', '--device', 'cpu'];
    const fromFolder = json(cli(['--model', folder, ...args]));
    const fromPreset = json(cli(['--model', 'tiny', ...args]));
    expect(fromFolder.ids).toEqual(fromPreset.ids);
    const alpaca = formatInput({ instruction: 'Name a color.', input: 'Think of the sky.', output: '' }).prompt;
    expect(fromFolder.prompt_tokens).toBe(tokenizer.encode(alpaca).length);
  });

  it('reads the prompt from stdin when it is not a terminal (less the final newline)', () => {
    const out = json(cli(['--model', 'tiny', '--max-tokens', '3', '--json', '--device', 'cpu'], 'Hello\n'));
    expect(out.prompt_tokens).toBe(1);
  });
});

describe('streaming to stdout', () => {
  it('echoes the prompt, streams the text, summarises on stderr', () => {
    const run = cli(['--model', 'tiny', '--prompt', 'Hi there', '--max-tokens', '4', '--device', 'cpu', '--temperature', '0.8', '--seed', '3']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.startsWith('Hi there')).toBe(true);
    expect(run.stderr).toMatch(/\[4 tokens in [\d.]+ s: [\d.]+ tokens\/s, 2 prompt tokens, stop: length, cache on, seed 3\]/);
    // Same seed, same text.
    const again = cli(['--model', 'tiny', '--prompt', 'Hi there', '--max-tokens', '4', '--device', 'cpu', '--temperature', '0.8', '--seed', '3']);
    expect(again.stdout).toBe(run.stdout);
  });
});

describe('conventional flags', () => {
  it('-m, -p, -n, -t, -s read as --model, --prompt, --max-new-tokens, --temperature, --seed', () => {
    const long = json(cli(['--model', 'tiny', '--prompt', 'Hi', '--max-new-tokens', '5', '--temperature', '1', '--seed', '4', '--json', '--device', 'cpu']));
    const short = json(cli(['-m', 'tiny', '-p', 'Hi', '-n', '5', '-t', '1', '-s', '4', '--json', '--device', 'cpu']));
    expect(short).toMatchObject({ ids: long.ids, text: long.text });
    expect(long.ids.length === 5 || long.stop_reason === 'eos').toBe(true);
  });

  it('--ignore-eos generates to the length, past end-of-text', () => {
    // Greedy on the tiny model from "Hi": find a seed-free case by asking for many tokens; with
    // --ignore-eos the stop is always the length.
    const out = json(cli(['-m', 'tiny', '-p', 'Hi', '-n', '30', '-t', '1', '-s', '2', '--ignore-eos', '--json', '--device', 'cpu']));
    expect(out.stop_reason).toBe('length');
    expect(out.ids.length).toBe(30);
  });

  it('--num-samples: one sample per seed, seed, seed+1, …; the same as asking for each seed alone', () => {
    const run = cli(['-m', 'tiny', '-p', 'Hi', '-n', '6', '-t', '1', '-s', '10', '--num-samples', '3', '--json', '--device', 'cpu']);
    expect(run.code, run.stderr).toBe(0);
    const samples = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as JsonOut & { seed: number });
    expect(samples.map((s) => s.seed)).toEqual([10, 11, 12]);
    const alone = json(cli(['-m', 'tiny', '-p', 'Hi', '-n', '6', '-t', '1', '-s', '11', '--json', '--device', 'cpu']));
    expect(samples[1].ids).toEqual(alone.ids);
  });

  it('a random seed is printed in the summary, and that seed gives the same text again', () => {
    const run = cli(['-m', 'tiny', '-p', 'Hi', '-n', '8', '-t', '1', '--device', 'cpu']);
    expect(run.code, run.stderr).toBe(0);
    const seed = /seed (\d+)\]/.exec(run.stderr)?.[1];
    expect(seed).toBeDefined();
    expect(cli(['-m', 'tiny', '-p', 'Hi', '-n', '8', '-t', '1', '-s', seed!, '--device', 'cpu']).stdout).toBe(run.stdout);
  });

  it('warns that --top-k and --top-p do nothing at temperature 0, and not when sampling', () => {
    const greedy = cli(['-m', 'tiny', '-p', 'Hi', '-n', '2', '--top-k', '5', '--top-p', '0.9', '--device', 'cpu']);
    expect(greedy.code, greedy.stderr).toBe(0);
    expect(greedy.stderr).toMatch(/warning: --top-k and --top-p have no effect at temperature 0 \(greedy decoding\)/);
    const sampled = cli(['-m', 'tiny', '-p', 'Hi', '-n', '2', '--top-k', '5', '-t', '0.7', '--device', 'cpu']);
    expect(sampled.stderr).not.toMatch(/warning/);
  });

  it('-h and --help list every flag with its description and default', async () => {
    const { GENERATE_FLAGS } = await import('../src/cli/generate-options.js');
    const run = cli(['-h']);
    expect(run.code).toBe(0);
    for (const flag of GENERATE_FLAGS) {
      const line = run.stdout.split('\n').find((l) => new RegExp(`^ +(-\\w, )?--${flag.name}[ ,]`).test(l));
      expect(line, flag.name).toContain(flag.description);
      if (flag.default !== undefined) expect(line).toContain(`(default: ${flag.default})`);
    }
  });
});

describe('a closed stdout (| head)', () => {
  it('ends generation quietly with exit 0', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/generate.ts', '--model', 'tiny', '--prompt', 'Hello', '--max-tokens', '400', '--device', 'cpu', '--seed', '1', '--temperature', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.once('data', () => child.stdout.destroy()); // what head does after its first bytes
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).not.toMatch(/EPIPE|Error/);
    expect(code).toBe(0);
  });
});

describe('non-finite weights', () => {
  it('generate warns, naming the tensor and the count, and goes on', async () => {
    const dir = join(scratch, 'nan-model');
    const weights = randomGpt2Weights(PRESETS.tiny, 5);
    weights.get('h.1.mlp.c_fc.weight')!.data.fill(NaN, 0, 3);
    await saveGpt2Weights(dir, PRESETS.tiny, weights);
    const run = cli(['--model', dir, '--prompt', 'x', '--max-tokens', '2', '--device', 'cpu']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/warning: the weights hold non-finite values \(h\.1\.mlp\.c_fc\.weight: 3\)/);
  });
});

describe('errors: exit code 2 and a message', () => {
  it.each([
    [['--bogus'], /Unknown option '--bogus'/],
    [['--model', 'tiny', '--prompt', 'x', 'stray'], /positional/],
    [['--model', 'tiny', '--prompt', 'x', '--temperature=-1'], /--temperature must be a number ≥ 0/],
    [['--model', 'tiny', '--prompt', 'x', '--temperature', '-1'], /--temperature must be a number ≥ 0 \(0 = greedy\), got "-1"/],
    [['--model', 'tiny', '--prompt', 'x', '--top-p', '1.5'], /--top-p must be in \(0, 1\]/],
    [['--model', 'tiny', '--prompt', 'x', '--max-tokens', 'ten'], /--max-tokens must be an integer in \[0, 1048576\], got "ten"/],
    [['--model', 'tiny', '--prompt', 'x', '--device', 'tpu'], /--device must be auto, webgpu or cpu/],
    [['--model', 'tiny', '--prompt', 'x', '--dtype', 'f8'], /--dtype must be f32, f16 or bf16/],
    [['--model', 'tiny', '--prompt', 'x', '--instruction', 'y'], /--prompt or --instruction, not both/],
    [['--model', 'tiny', '--input', 'y'], /--input goes with --instruction/],
    [['--model', 'tiny', '--prompt', 'x', '--max-tokens', '1e21'], /--max-tokens must be an integer in \[0, 1048576\], got "1e21"/],
    [['--model', 'tiny', '--prompt', 'x', '--max-tokens', '0x10'], /--max-tokens must be an integer in \[0, 1048576\], got "0x10"/],
    [['--model', 'tiny', '--prompt', 'x', '--seed', '1', '--seed', '2'], /--seed is given twice/],
  ])('%j', (args, message) => {
    const run = cli(args);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(run.stderr).toMatch(/usage: tsx src\/generate.ts/);
  });

  it('a model folder that does not exist', () => {
    const run = cli(['--model', './no-such-run', '--prompt', 'x', '--device', 'cpu']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--model \.\/no-such-run: no such model folder/);
  });

  it('a missing folder under an existing one is a folder, not a hub repo', () => {
    const run = cli(['--model', join('tests', 'no-such-run'), '--prompt', 'x', '--device', 'cpu']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--model tests\/no-such-run: no such model folder/);
    expect(run.stderr).not.toMatch(/download|hub/i);
  });

  it('a folder without the model files', () => {
    const run = cli(['--model', scratch, '--prompt', 'x', '--device', 'cpu']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/lacks config\.json and model\.safetensors/);
  });

  it('an empty stdin, before the model is looked for', () => {
    // gpt2 is not in the (offline) cache: had the model been loaded first, that would be the error.
    const run = cli(['--model', 'gpt2', '--device', 'cpu'], '');
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/no prompt: .*stdin was empty/);
  });

  it('a spec that is no preset, folder or repo', () => {
    const run = cli(['--model', 'not a model', '--prompt', 'x', '--device', 'cpu']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/not a preset/);
  });
});
