/**
 * The last lines of defence of a run's work, each checked on its own: saveCheckpoint itself refuses
 * NaN or infinite weights and moments (a Ctrl-C right after the update that broke them takes no
 * validation pass that would notice), resume takes the newest of several complete checkpoints (a
 * crash after the staging copy was complete but before its swap), and a diverged run on the command
 * line ends with its one message, no trace of the device released under a pending step; and a
 * resume of a folder a live run holds is told so, not that its checkpoint is missing.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { initializeWeights } from '../src/gpt/init.js';
import { GPT2 } from '../src/gpt/model.js';
import { full } from '../src/tensor/create.js';
import { assign } from '../src/tensor/ops.js';
import { AdamW } from '../src/train/adamw.js';
import { loadCheckpoint, saveCheckpoint } from '../src/node/checkpoint-folder.js';
import { NonFiniteState } from '../src/train/training-state.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { parseTrainOptions, UsageError, type TrainOptions } from '../src/cli/train-options.js';
import { runTraining } from '../src/cli/train-run.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { rejectionOf } from './helpers/rejection.js';
import { freshDir } from './helpers/weights-fixtures.js';

await webgpuOrSkip();

const options = (argv: string[]): TrainOptions => parseTrainOptions(argv) as TrainOptions;

/** A progress stream that keeps what is written to it. */
function capture() {
  let text = '';
  const stream = { write: (s: string) => ((text += s), true), isTTY: false } as unknown as NodeJS.WriteStream;
  return { stream, text: () => text };
}

async function dataFile(dir: string, count: number): Promise<string> {
  const path = join(dir, 'data.json');
  await writeFile(path, JSON.stringify(loadInstructionFile('data/instructions.json').slice(0, count)));
  return path;
}

describe('saveCheckpoint', () => {
  it('refuses non-finite weights or moments, writing nothing and keeping the previous checkpoint', async () => {
    const out = join(await freshDir(), 'run');
    const model = new GPT2(PRESETS.tiny, cpu);
    initializeWeights(model, 1);
    const optimizer = new AdamW(model);
    const save = (step: number) => {
      optimizer.step = step;
      return saveCheckpoint(out, model, PRESETS.tiny, optimizer, { position: { step, epoch: 0, batchInEpoch: step }, optimizerStep: step, seed: 0, flags: {} });
    };
    await save(1);
    const files = readdirSync(out).sort();

    const weight = model.namedParameters().find(([name]) => name === 'h.1.mlp.c_fc.bias')!;
    const finite = full(weight[1].shape, 0.5, { backend: cpu });
    model.replaceParameter('h.1.mlp.c_fc.bias', full(weight[1].shape, NaN, { backend: cpu }));
    let error = await rejectionOf(save(2));
    expect(error).toBeInstanceOf(NonFiniteState);
    expect(error.message).toMatch(/h\.1\.mlp\.c_fc\.bias: 128/);
    model.replaceParameter('h.1.mlp.c_fc.bias', finite);

    const slot = optimizer.moments.get('wpe.weight')!;
    assign(slot.v, full(slot.v.shape, Infinity, { backend: cpu }));
    error = await rejectionOf(save(3));
    expect(error).toBeInstanceOf(NonFiniteState);
    expect(error.message).toMatch(/v\.wpe\.weight: 2048/);

    expect(readdirSync(out).sort()).toEqual(files); // no staging folder, nothing swapped
    expect((await loadCheckpoint(out)).state.position.step).toBe(1);
    optimizer.dispose();
    model.dispose();
  });
});

describe('resume', () => {
  it('takes the newest complete checkpoint when an older one is live', async () => {
    const dir = await freshDir();
    const data = await dataFile(dir, 8);
    // 6 steps, epochs of 3; stopAfter counts the polls of shouldStop, one a step and one more to stop.
    const run = (argv: string[], stopAfter?: number, stream = capture().stream) => {
      let polls = 0;
      return runTraining(options(argv), { shouldStop: () => stopAfter !== undefined && ++polls >= stopAfter, stream });
    };
    const flags = (out: string) => ['--model', 'tiny', '--data', data, '--epochs', '2', '--batch-size', '2', '--val-fraction', '0.25', '--seed', '3', '--out', out];
    const whole = await run(flags(join(dir, 'whole')));
    const out = join(dir, 'split');
    await run(flags(out), 2);
    expect((await loadCheckpoint(out)).state.position.step).toBe(2);
    cpSync(join(out, 'checkpoint'), join(dir, 'older'), { recursive: true });
    await run(['--resume', out], 2);
    expect((await loadCheckpoint(out)).state.position.step).toBe(4);
    // A crash after the staging copy of step 4 was complete, before it replaced step 2's.
    renameSync(join(out, 'checkpoint'), join(out, 'checkpoint.tmp-999999'));
    cpSync(join(dir, 'older'), join(out, 'checkpoint'), { recursive: true });

    const log = capture();
    const resumed = await run(['--resume', out], undefined, log.stream);
    expect(log.text()).toMatch(/resuming at step 4 of 6/);
    expect(resumed.records).toEqual(whole.records);
    expect(readdirSync(out).filter((f) => f.startsWith('checkpoint'))).toEqual(['checkpoint']);
  }, 300_000);
});

describe('--resume of a folder a live run holds', () => {
  it('says the folder is in use, even before the run has written its first checkpoint', async () => {
    const out = join(await freshDir(), 'run');
    mkdirSync(out);
    writeFileSync(join(out, 'run.lock'), JSON.stringify({ pid: process.pid, host: hostname(), started: 'now' }));
    const error = await rejectionOf(runTraining(options(['--resume', out]), { shouldStop: () => false, stream: capture().stream }));
    expect(error).toBeInstanceOf(UsageError);
    expect(error.message).toMatch(`${out} is in use by another run (process ${process.pid}`);
  });
});

describe('a diverged run on the command line', () => {
  it('exits 1 with its one message and no stack trace', async () => {
    const dir = await freshDir();
    const data = await dataFile(dir, 64);
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/train.ts', '--model', 'tiny', '--data', data, '--out', join(dir, 'run'), '--lr', '1e6', '--warmup-steps', '0', '--max-steps', '30'], {
      encoding: 'utf8',
      env: { ...process.env, HF_HUB_OFFLINE: '1' },
    });
    expect(run.stderr).toMatch(/error: the loss became NaN at step \d+: training stopped/);
    expect(run.stderr).not.toMatch(/AbortError|DOMException|\n\s+at /);
    expect(run.status, run.stderr).toBe(1);
  }, 120_000);
});
