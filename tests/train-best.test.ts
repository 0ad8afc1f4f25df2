/**
 * Training runs beyond the loop: model.safetensors holds the weights of the lowest validation loss
 * (unless --save-last), early stopping, periodic checkpoints (--save-steps), a resume that extends
 * a finished run or says it is complete, a run whose state.json predates today's flags, and an
 * ETA counted from the resumed step.
 */
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { Progress } from '../src/cli/progress.js';
import { parseTrainOptions, type TrainOptions } from '../src/cli/train-options.js';
import { runTraining } from '../src/cli/train-run.js';
import { loadGpt2Weights } from '../src/node/weights-folder.js';
import type { StepRecord } from '../src/train/trainer.js';
import { freshDir } from './helpers/weights-fixtures.js';

const quiet = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
const train = (argv: string[], shouldStop = () => false) => runTraining(parseTrainOptions(argv) as TrainOptions, { shouldStop, stream: quiet });

/**
 * The tiny model at a high constant rate on the project's data set, validated every 3 steps: the
 * validation loss falls at step 6 and rises at step 9 (7.72, 5.48, 6.29 on the CPU).
 */
const BUMPY = ['--model', 'tiny', '--data', 'data/instructions.json', '--epochs', '100', '--batch-size', '4', '--val-fraction', '0.02', '--eval-steps', '3',
  '--learning-rate', '3e-2', '--lr-scheduler-type', 'constant', '--warmup-steps', '0', '--device', 'cpu'];

/**
 * Same steps, epochs, learning rates, token counts and losses, bit for bit: a resume on the device
 * of the run it continues retraces it exactly (the device is a session flag, not part of the run: a
 * resume without --device cpu would take WebGPU and differ in the last bits).
 */
function sameRecords(a: readonly StepRecord[], b: readonly StepRecord[]): boolean {
  const values = (records: readonly StepRecord[]) => records.map(({ step, epoch, lr, tokens, loss, val_loss }) => ({ step, epoch, lr, tokens, loss, val_loss }));
  expect(values(a)).toEqual(values(b));
  return true;
}

const weightsOf = async (folder: string) => (await loadGpt2Weights(folder)).weights;

describe('save-best and early stopping', () => {
  it('model.safetensors holds the weights of the lowest validation loss; --save-last the last ones', async () => {
    const dir = await freshDir();
    const run = await train([...BUMPY, '--max-steps', '9', '--output-dir', join(dir, 'best')]);
    const vals = run.records.filter((r) => r.val_loss !== undefined);
    expect(vals.map((r) => r.step)).toEqual([3, 6, 9]);
    const lowest = vals.reduce((a, b) => (b.val_loss! < a.val_loss! ? b : a));
    expect(run.best).toEqual({ step: lowest.step, valLoss: lowest.val_loss });
    expect(lowest.step).toBe(6); // the case this test is about: the last weights are not the best
    // The same trajectory stopped at step 6 with --save-last: those weights, bit for bit.
    const upTo6 = await train([...BUMPY, '--max-steps', '6', '--save-last', '--output-dir', join(dir, 'six')]);
    expect(upTo6.best).toBe(null);
    const best = await weightsOf(run.out);
    const six = await weightsOf(upTo6.out);
    for (const [name, t] of six) expect(best.get(name)!.data, name).toEqual(t.data);
    // The checkpoint (what a resume continues) holds the last weights, step 9's.
    const last = await weightsOf(join(run.out, 'checkpoint'));
    expect(last.get('wte.weight')!.data).not.toEqual(best.get('wte.weight')!.data);
  }, 300_000);

  it('--early-stopping-patience 1 stops at the first validation without a new lowest loss; a resume says the run is complete', async () => {
    const dir = await freshDir();
    const run = await train([...BUMPY, '--max-steps', '30', '--early-stopping-patience', '1', '--output-dir', join(dir, 'early')]);
    expect(run.stopped).toBe(true);
    expect(run.stoppedEarly).toBe(true);
    expect(run.records.at(-1)!.step).toBe(9);
    expect(run.best?.step).toBe(6);
    await expect(train(['--resume', run.out])).rejects.toThrow(/the run is complete: it stopped early at step 9/);
  }, 300_000);
});

describe('--save-steps', () => {
  it('writes a checkpoint every n steps within an epoch', async () => {
    const dir = await freshDir();
    const out = join(dir, 'run');
    const seen: number[] = [];
    const state = () => (JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')) as { position: { step: number } }).position.step;
    let polls = 0;
    // 24 steps an epoch (about 200 entries in batches of 8): these checkpoints are not the epoch's.
    await train(['--model', 'tiny', '--max-steps', '5', '--save-steps', '2', '--eval-steps', '0', '--device', 'cpu', '--output-dir', out], () => {
      polls++;
      if (polls === 3 || polls === 5) seen.push(state());
      return false;
    });
    expect(seen).toEqual([2, 4]);
  }, 300_000);
});

describe('--resume', () => {
  const flags = (out: string, steps = 4) => ['--model', 'tiny', '--data', 'data/instructions.json', '--max-steps', String(steps), '--batch-size', '4', '--val-fraction', '0.02', '--eval-steps', '2',
    '--lr-scheduler-type', 'constant', '--warmup-steps', '0', '--device', 'cpu', '--output-dir', out];

  it('a finished run is complete; a larger --max-steps continues it along the same trajectory', async () => {
    const dir = await freshDir();
    const whole = await train(flags(join(dir, 'whole'), 6));
    const first = await train(flags(join(dir, 'split')));
    expect(first.records.map((r) => r.step)).toEqual([1, 2, 3, 4]);
    await expect(train(['--resume', first.out])).rejects.toThrow(/the run is complete \(4 steps: .*\); to train further, give a larger --epochs or --max-steps/);
    await expect(train(['--resume', first.out, '--max-steps', '3'])).rejects.toThrow(/the run is at step 4 .* would end there or before/);
    const more = await train(['--resume', first.out, '--max-steps', '6', '--device', 'cpu']);
    expect(sameRecords(more.records, whole.records)).toBe(true);
  }, 300_000);

  it('resumes a run whose state.json predates today\'s flags (keeping its last weights as the model)', async () => {
    const dir = await freshDir();
    let polls = 0;
    const first = await train(flags(join(dir, 'old')), () => ++polls >= 2);
    expect(first.stopped).toBe(true);
    const stateFile = join(first.out, 'checkpoint', 'state.json');
    const state = JSON.parse(await readFile(stateFile, 'utf8')) as Record<string, unknown> & { flags: Record<string, unknown> };
    for (const key of ['warmupRatio', 'minLr', 'saveSteps', 'saveLast', 'earlyStoppingPatience', 'loggingSteps', 'dropout']) delete state.flags[key];
    for (const key of ['best', 'evalsWithoutImprovement', 'stoppedEarly']) delete state[key];
    await writeFile(stateFile, JSON.stringify(state));
    const resumed = await train(['--resume', first.out, '--device', 'cpu']);
    const straight = await train(flags(join(dir, 'straight')));
    expect(sameRecords(resumed.records, straight.records)).toBe(true);
    expect(resumed.best).toBe(null); // such a run kept its last weights
    const top = await weightsOf(resumed.out);
    const last = await weightsOf(join(resumed.out, 'checkpoint'));
    expect(top.get('wte.weight')!.data).toEqual(last.get('wte.weight')!.data);
  }, 300_000);
});

describe('Progress', () => {
  it('counts the ETA from the step it was started at (a resumed run), not from step 0', () => {
    let now = 0;
    const clock = vi.spyOn(performance, 'now').mockImplementation(() => now);
    const lines: string[] = [];
    const progress = new Progress({ write: (t: string) => lines.push(t), isTTY: false } as unknown as NodeJS.WriteStream, 1);
    progress.start(90);
    now = 2000; // 2 s for one step: 9 steps left take 18 s
    progress.update({ epoch: 0, epochs: 1, step: 91, totalSteps: 100, loss: 1, lr: 1e-3, tokensPerSecond: 1 });
    clock.mockRestore();
    expect(lines[0]).toMatch(/91\/100 .*ETA 18s/);
  });
});
