/**
 * Nothing a user has is lost: a diverged run keeps a finite checkpoint, --out never overwrites a
 * model or another run, two runs cannot share a folder, two crashes in a row leave a resumable run,
 * and resume survives a lost log, a malformed state and another working directory.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadGpt2Weights, saveGpt2Weights } from '../src/node/weights-folder.js';
import { nonFiniteTensors } from '../src/gpt/state-dict.js';
import { PRESETS } from '../src/gpt/config.js';
import { loadCheckpoint } from '../src/node/checkpoint-folder.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { parseTrainOptions, UsageError, type TrainOptions } from '../src/cli/train-options.js';
import { runTraining } from '../src/cli/train-run.js';
import { TrainingDiverged } from '../src/train/trainer.js';
import { webgpuOrSkip } from './helpers/backends.js';
import { rejectionOf } from './helpers/rejection.js';
import { freshDir, randomGpt2Weights } from './helpers/weights-fixtures.js';

await webgpuOrSkip();

const options = (argv: string[]): TrainOptions => parseTrainOptions(argv) as TrainOptions;
const quiet = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;

async function dataFile(dir: string, count = 8): Promise<string> {
  const path = join(dir, 'data.json');
  await writeFile(path, JSON.stringify(loadInstructionFile('data/instructions.json').slice(0, count)));
  return path;
}

/** A tiny run of 6 steps (epochs of 3), stopped after `stopAfter` steps when given. */
async function tinyRun(dir: string, out: string, stopAfter?: number, data?: string) {
  const flags = ['--model', 'tiny', '--data', data ?? (await dataFile(dir)), '--epochs', '2', '--batch-size', '2', '--val-fraction', '0.25', '--seed', '3', '--out', out];
  let polls = 0;
  return runTraining(options(flags), { shouldStop: () => stopAfter !== undefined && ++polls >= stopAfter, stream: quiet });
}

describe('the divergence guard', () => {
  it('keeps only a checkpoint with finite weights and moments, and says which step it holds', async () => {
    const dir = await freshDir();
    const out = join(dir, 'run');
    // One step an epoch, so a checkpoint follows every update: at lr 1e6 the weights blow up within two.
    const flags = ['--model', 'tiny', '--data', await dataFile(dir), '--out', out, '--lr', '1e6', '--warmup-steps', '0', '--epochs', '6', '--batch-size', '8', '--val-fraction', '0.125'];
    const error = await rejectionOf(runTraining(options(flags), { shouldStop: () => false, stream: quiet }));
    expect(error).toBeInstanceOf(TrainingDiverged);
    const match = /the checkpoint of step (\d+), whose weights are finite, is kept/.exec(error.message);
    expect(match, error.message).not.toBeNull();
    expect(error.message).not.toMatch(/--clip 1/); // clipping is on by default
    const { state, moments } = await loadCheckpoint(out);
    expect(state.position.step).toBe(Number(match![1]));
    expect(nonFiniteTensors(moments)).toEqual([]);
    expect(nonFiniteTensors((await loadGpt2Weights(join(out, 'checkpoint'))).weights)).toEqual([]);
    expect(nonFiniteTensors((await loadGpt2Weights(out)).weights)).toEqual([]);
  }, 300_000);

  it('suggests clipping only when it is off', async () => {
    const dir = await freshDir();
    const flags = ['--model', 'tiny', '--data', await dataFile(dir), '--out', join(dir, 'run'), '--lr', '1e6', '--warmup-steps', '0', '--epochs', '6', '--batch-size', '8', '--clip', '0'];
    expect((await rejectionOf(runTraining(options(flags), { shouldStop: () => false, stream: quiet }))).message).toMatch(/--clip 1/);
  }, 300_000);
});

describe('the output folder', () => {
  it('refuses a folder holding a model, and leaves it untouched', async () => {
    const dir = await freshDir();
    const model = join(dir, 'model');
    await saveGpt2Weights(model, PRESETS.tiny, randomGpt2Weights(PRESETS.tiny, 2));
    writeFileSync(join(model, 'training.json'), '"not ours"');
    const before = readdirSync(model).map((f) => [f, readFileSync(join(model, f)).toString('base64')]);
    const flags = ['--model', model, '--data', await dataFile(dir), '--out', model, '--max-steps', '1'];
    const error = await rejectionOf(runTraining(options(flags), { shouldStop: () => false, stream: quiet }));
    expect(error).toBeInstanceOf(UsageError);
    expect(error.message).toMatch(/is not empty \(it holds .*model\.safetensors/);
    expect(readdirSync(model).map((f) => [f, readFileSync(join(model, f)).toString('base64')])).toEqual(before);
  });

  it('refuses a file as the folder, and a path through a file', async () => {
    const dir = await freshDir();
    const file = join(dir, 'file');
    writeFileSync(file, 'mine');
    const data = await dataFile(dir);
    for (const [out, message] of [[file, /is a file, not a folder/], [join(file, 'run'), /cannot create the folder \(a file is in the way\)/]] as const) {
      const error = await rejectionOf(runTraining(options(['--model', 'tiny', '--data', data, '--out', out]), { shouldStop: () => false, stream: quiet }));
      expect(error.message).toMatch(message);
    }
    expect(readFileSync(file, 'utf8')).toBe('mine');
  });

  it('lets one run at a time use it; a stale lock is taken over', async () => {
    const dir = await freshDir();
    const data = await dataFile(dir);
    const out = join(dir, 'run');
    let second: Error | null = null;
    // The first run, mid-way, sees a second one (a resume of the same folder) refused.
    const first = runTraining(options(['--model', 'tiny', '--data', data, '--out', out, '--max-steps', '3', '--batch-size', '2']), {
      shouldStop: () => {
        if (second === null) second = new Error('pending');
        return false;
      },
      stream: quiet,
    });
    while (second === null) await new Promise((r) => setTimeout(r, 20));
    second = await rejectionOf(runTraining(options(['--model', 'tiny', '--data', data, '--out', out, '--max-steps', '3']), { shouldStop: () => false, stream: quiet }));
    expect(second.message).toMatch(new RegExp(`${basename(out)} is in use by another run \\(process ${process.pid}`));
    expect((await first).records.length).toBe(3);
    expect(existsSync(join(out, 'run.lock'))).toBe(false);

    // A lock left by a process that is gone (kill -9): the next run takes the folder.
    const dead = Number(execFileSync('sh', ['-c', 'echo $$']).toString());
    const crashed = join(dir, 'crashed');
    mkdirSync(crashed);
    writeFileSync(join(crashed, 'run.lock'), JSON.stringify({ pid: dead, host: hostname(), started: 'then' }));
    const taken = await runTraining(options(['--model', 'tiny', '--data', data, '--out', crashed, '--max-steps', '1']), { shouldStop: () => false, stream: quiet });
    expect(taken.records.length).toBe(1);
  }, 300_000);
});

describe('resume', () => {
  it('finds the newest complete checkpoint after two crashes, and clears the leftovers', async () => {
    const dir = await freshDir();
    const data = await dataFile(dir);
    const whole = await tinyRun(dir, join(dir, 'whole'), undefined, data);
    const out = join(dir, 'split');
    await tinyRun(dir, out, 2, data);
    // Crash 1 cut the swap after checkpoint → checkpoint.old; crash 2 came while the resumed run was
    // deleting checkpoint.old, whose state.json is gone; the complete copy waits in staging.
    renameSync(join(out, 'checkpoint'), join(out, 'checkpoint.tmp-999999'));
    cpSync(join(out, 'checkpoint.tmp-999999'), join(out, 'checkpoint.old'), { recursive: true });
    rmSync(join(out, 'checkpoint.old', 'state.json'));
    cpSync(join(out, 'checkpoint.tmp-999999'), join(out, 'checkpoint.tmp-999998'), { recursive: true });
    rmSync(join(out, 'checkpoint.tmp-999998', 'state.json')); // a staging folder cut before it was complete
    const resumed = await runTraining(options(['--resume', out]), { shouldStop: () => false, stream: quiet });
    expect(resumed.records).toEqual(whole.records);
    expect(readdirSync(out).filter((f) => f.startsWith('checkpoint')).sort()).toEqual(['checkpoint']);
  }, 300_000);

  it('survives a missing or corrupt training.json, and runs from another working directory', async () => {
    const dir = await freshDir();
    const whole = await tinyRun(dir, join(dir, 'whole'));
    for (const damage of [(path: string) => rmSync(path), (path: string) => writeFileSync(path, '[{"step": 1, "lo')]) {
      const out = join(dir, `split-${Math.random()}`);
      const cwd = process.cwd();
      process.chdir(dir);
      try {
        await tinyRun(dir, out, 2, 'data.json'); // relative to dir
      } finally {
        process.chdir(cwd);
      }
      damage(join(out, 'training.json'));
      const resumed = await runTraining(options(['--resume', out]), { shouldStop: () => false, stream: quiet });
      expect(resumed.records).toEqual(whole.records);
    }
  }, 300_000);

  it('reports a malformed state.json by file and field, never with a stack', async () => {
    const dir = await freshDir();
    const out = join(dir, 'run');
    await tinyRun(dir, out, 2);
    const stateFile = join(out, 'checkpoint', 'state.json');
    const good = JSON.parse(readFileSync(stateFile, 'utf8')) as { position: object; flags: object };
    const cases: [unknown, RegExp][] = [
      [{}, /"position" is missing or not an object/],
      [null, /expected a JSON object/],
      [{ ...good, position: { ...good.position, step: -1 } }, /position\.step must be an integer ≥ 0, got -1/],
      [{ ...good, position: { ...good.position, batchInEpoch: 99 } }, /position .* lies past the run/],
      [{ ...good, flags: { ...good.flags, lr: 'fast' } }, /flags\.lr is "fast", expected a number/],
    ];
    for (const [state, message] of cases) {
      writeFileSync(stateFile, JSON.stringify(state));
      const error = await rejectionOf(runTraining(options(['--resume', out]), { shouldStop: () => false, stream: quiet }));
      expect(error, String(error)).toBeInstanceOf(UsageError);
      expect(error.message).toMatch(message);
      expect(error.message).toContain('state.json');
    }
    expect(statSync(join(out, 'checkpoint', 'model.safetensors')).size).toBeGreaterThan(0);
  }, 300_000);
});
