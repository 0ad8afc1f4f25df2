/**
 * A whole fine-tuning run (src/cli/train-run.ts, src/train.ts) on the tiny preset and a few short entries:
 * 10 steps in one run equal 5 + 5 with a resume; a checkpoint write killed at any moment leaves a
 * loadable checkpoint; Ctrl-C on the command line leaves a loadable checkpoint; bad flags and
 * malformed data files exit with code 2, a message naming the problem, and nothing written.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadGpt2Weights } from '../src/node/weights-folder.js';
import { loadModel } from '../src/node/load-model.js';
import { Tokenizer } from '../src/gpt/tokenizer.js';
import { CpuBackend } from '../src/tensor/cpu-backend.js';
import { loadCheckpoint } from '../src/node/checkpoint-folder.js';
import { encodeEntry } from '../src/train/instruction-data.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { parseTrainOptions, type TrainOptions } from '../src/cli/train-options.js';
import { runTraining } from '../src/cli/train-run.js';
import type { StepRecord } from '../src/train/trainer.js';
import { webgpuOrSkip } from './helpers/backends.js';
import { freshDir } from './helpers/weights-fixtures.js';

await webgpuOrSkip(); // the validating device, shared with runTraining's 'auto'

/** The 8 shortest entries of the project's data set, as a data file in `dir`. */
async function smallDataFile(dir: string): Promise<string> {
  const tokenizer = new Tokenizer();
  const entries = loadInstructionFile('data/instructions.json');
  const lengths = entries.map((e) => encodeEntry(e, tokenizer).ids.length);
  const shortest = entries.map((e, i) => ({ e, n: lengths[i] })).sort((a, b) => a.n - b.n).slice(0, 8).map(({ e }) => e);
  const path = join(dir, 'data.json');
  await writeFile(path, JSON.stringify(shortest));
  return path;
}

const options = (argv: string[]): TrainOptions => parseTrainOptions(argv) as TrainOptions;
const readRecords = async (out: string) => JSON.parse(await readFile(join(out, 'training.json'), 'utf8')) as StepRecord[];

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `tsx <script> args`; `onStderr` sees stderr as it comes and may signal the child. */
function run(script: string, args: string[], onStderr?: (text: string, child: ReturnType<typeof spawn>) => void): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { env: { ...process.env, HF_HUB_OFFLINE: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('a training run', () => {
  it('10 steps in one run equal 5 steps, a stop with a checkpoint, and a resume for 5 more', async () => {
    const dir = await freshDir();
    const data = await smallDataFile(dir);
    // 6 training entries in batches of 2: epochs of 3 steps, so the run crosses epoch ends (with
    // their validation and checkpoints) before and after the stop.
    const flags = ['--model', 'tiny', '--data', data, '--epochs', '10', '--max-steps', '10', '--batch-size', '2', '--val-fraction', '0.25', '--eval-every', '4', '--seed', '7'];
    const whole = await runTraining(options([...flags, '--out', join(dir, 'whole')]), { shouldStop: () => false });
    expect(whole.stopped).toBe(false);
    expect(whole.records.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

    // shouldStop is polled once after each step until it says yes: the run stops after step 5.
    let polls = 0;
    const first = await runTraining(options([...flags, '--out', join(dir, 'split')]), { shouldStop: () => ++polls >= 5 });
    expect(first.stopped).toBe(true);
    expect((await readRecords(first.out)).map((r) => r.step)).toEqual([1, 2, 3, 4, 5]);
    const second = await runTraining(options(['--resume', first.out]), { shouldStop: () => false });
    expect(second.stopped).toBe(false);
    expect(second.records).toEqual(whole.records);
    expect(await readRecords(second.out)).toEqual(await readRecords(whole.out));
    expect(second.samples.map((s) => s.generated)).toEqual(whole.samples.map((s) => s.generated));
    for (const file of ['model.safetensors', 'config.json', 'training.json', 'loss.svg', 'samples.json']) expect(existsSync(join(second.out, file)), file).toBe(true);
  });

  it('a checkpoint write killed at any moment leaves a complete, consistent checkpoint', async () => {
    const out = await freshDir();
    // Kill times spread over a write (a tiny-model checkpoint takes tens of milliseconds).
    for (const delayMs of [0, 7, 19, 31, 53, 97]) {
      let saved = 0;
      const exit = await new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'tests/helpers/checkpoint-writer.ts', out]);
        child.stdout.on('data', (d: Buffer) => {
          saved = Math.max(saved, ...String(d).match(/\d+/g)!.map(Number));
          if (saved >= 2) setTimeout(() => child.kill('SIGKILL'), delayMs);
        });
        child.on('close', resolve);
      });
      expect(exit).toBe(null); // killed, not finished
      const { state, moments, folder } = await loadCheckpoint(out);
      const step = state.position.step;
      expect(step).toBeGreaterThanOrEqual(saved);
      // The newest complete copy may be a staging or .old folder a kill left: the one resume takes.
      const { weights } = await loadGpt2Weights(folder);
      for (const [name, t] of weights) expect(t.data.every((x) => x === step), `${name} of step ${step}`).toBe(true);
      for (const [name, t] of moments) expect(t.data.every((x) => x === step), `${name} of step ${step}`).toBe(true);
      // The model at the top of the folder is a whole checkpoint's too (this one or the one before).
      const top = await loadModel(out, { backend: new CpuBackend() });
      const value = (await top.model.wte.weight.toFloat32())[0];
      expect([step, step - 1]).toContain(value);
      top.model.dispose();
    }
  }, 600_000);
});

describe('tsx src/train.ts', () => {
  it('Ctrl-C finishes the step in flight, writes a loadable checkpoint and exits 0', async () => {
    const dir = await freshDir();
    const data = await smallDataFile(dir);
    const out = join(dir, 'run');
    let sent = false;
    const exit = await run('src/train.ts', ['--model', 'tiny', '--data', data, '--out', out, '--epochs', '1000', '--batch-size', '2', '--eval-every', '0'], (stderr, child) => {
      // Once training has begun (the line naming the output folder), interrupt it.
      if (!sent && stderr.includes('output in')) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    expect(exit.code, exit.stderr).toBe(0);
    expect(exit.stderr).toMatch(/stopping after the step in flight/);
    expect(exit.stdout).toMatch(new RegExp(`continue with: npx tsx src/train.ts --resume ${out}`));
    const { state } = await loadCheckpoint(out);
    expect(state.position.step).toBeGreaterThanOrEqual(1);
    expect((await readRecords(out)).length).toBe(state.position.step);
    const { model } = await loadModel(out, { backend: new CpuBackend() });
    expect(model.parameterCount()).toBeGreaterThan(0);
    model.dispose();
  }, 300_000);

  it('bad flags, data files and folders: exit code 2, a message naming the problem, nothing written', async () => {
    const dir = await freshDir();
    const data = await smallDataFile(dir);
    const file = async (name: string, text: string) => {
      const path = join(dir, name);
      await writeFile(path, text);
      return path;
    };
    const existingRun = join(dir, 'existing');
    mkdirSync(join(existingRun, 'checkpoint'), { recursive: true });
    const cases: [string[], RegExp][] = [
      [['--lr=-1'], /--lr must be a positive number, got "-1"/],
      [['--batch-size', '0'], /--batch-size must be a positive integer, got "0"/],
      [['--epochs', 'many'], /--epochs must be a positive integer, got "many"/],
      [['--bogus'], /Unknown option '--bogus'/],
      [['--lr', '-1'], /--lr must be a positive number, got "-1"/],
      [['--lr', '0x10'], /--lr must be a positive number, got "0x10"/],
      [['--epochs', '2', '--epochs', '3'], /--epochs is given twice/],
      [['--data', data, '--out', data], /is a file, not a folder/],
      [['--data', join(dir, 'missing.json')], /missing\.json: no such file/],
      [['--data', await file('bad.json', '[{"instruction": "a",')], /bad\.json: not valid JSON/],
      [['--data', await file('object.json', '{"instruction": "a"}')], /object\.json: expected a JSON array of \{instruction, input, output\}, got an object/],
      [['--data', await file('empty.json', '[]')], /empty\.json: the data set is empty/],
      [['--data', await file('string.json', '[{"instruction": "a", "output": "b"}, "c"]')], /string\.json: entry 1 \(0-based\) is a string/],
      [['--data', await file('field.json', '[{"instruction": "a", "input": "", "response": "b"}]')], /field\.json: entry 0 \(0-based\) has no "output" field/],
      [['--data', await file('type.json', '[{"instruction": "a", "input": 3, "output": "b"}]')], /type\.json: entry 0 \(0-based\): "input" must be a string, got a number/],
      [["--data", data, "--model", join(dir, "no-model")], /no-model: no such model folder/],
      [['--data', data, '--out', existingRun], /already holds a run: continue it with --resume/],
      [['--resume', existingRun, '--lr', '1e-4'], /--lr cannot be given with it/],
      [['--resume', join(dir, 'no-run')], /no-run: no such folder/],
    ];
    const out = join(dir, 'out');
    const exits = await Promise.all(cases.map(([args]) => run('src/train.ts', args.includes('--out') || args.includes('--resume') ? args : [...args, '--out', out])));
    exits.forEach((exit, i) => {
      expect(exit.code, `${cases[i][0].join(' ')}: ${exit.stderr}`).toBe(2);
      expect(exit.stderr, cases[i][0].join(' ')).toMatch(cases[i][1]);
    });
    expect(existsSync(out), 'the output folder').toBe(false);
    expect(existsSync(join(existingRun, 'training.json'))).toBe(false);
  }, 300_000);
});
