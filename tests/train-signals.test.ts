/**
 * Ctrl-C and SIGTERM on the documented command, sent as a terminal and `kill` send them: to the
 * whole process group of `npx tsx src/train.ts` (npm, its shell, tsx's CLI, our processes). The run
 * must finish its step, write a resumable checkpoint and say so. The signal comes as training begins,
 * while the first step of a 24-layer model compiles its kernels synchronously for far longer than
 * tsx's 30 ms grace: without the supervisor, tsx's second signal and SIGKILL hit the run before its
 * checkpoint (src/cli/supervise.ts).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { saveGpt2Weights } from '../src/node/weights-folder.js';
import type { GPT2Config } from '../src/gpt/config.js';
import { loadCheckpoint } from '../src/node/checkpoint-folder.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { webgpuOrSkip } from './helpers/backends.js';
import { freshDir, randomGpt2Weights } from './helpers/weights-fixtures.js';

await webgpuOrSkip();

const DEEP: GPT2Config = { n_embd: 16, n_layer: 24, n_head: 2, n_positions: 64, vocab_size: 50257, layer_norm_epsilon: 1e-5 };

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Starts `command` in a process group of its own and sends `signal` to the group once training has begun. */
function runAndSignal(command: string, args: string[], signal: NodeJS.Signals): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { detached: true, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      // Training begins: the first steps compile their kernels, synchronously, for seconds.
      if (!sent && stderr.includes('output in')) {
        sent = true;
        process.kill(-child.pid!, signal);
      }
    });
    child.on('error', reject);
    // 'close' waits for every process holding the pipes, the worker included.
    child.on('close', (code, sig) => resolve({ code, signal: sig, stdout, stderr }));
  });
}

async function setUp(): Promise<{ dir: string; args: (out: string) => string[] }> {
  const dir = await freshDir();
  const model = join(dir, 'deep');
  await saveGpt2Weights(model, DEEP, randomGpt2Weights(DEEP, 1));
  const data = join(dir, 'data.json');
  await writeFile(data, JSON.stringify(loadInstructionFile('data/instructions.json').slice(0, 16)));
  return {
    dir,
    args: (out) => ['src/train.ts', '--model', model, '--data', data, '--out', out, '--epochs', '1000', '--batch-size', '4', '--eval-every', '2', '--val-fraction', '0.25'],
  };
}

async function expectResumableStop(exit: Exit, out: string): Promise<void> {
  expect(exit.stderr).toMatch(/stopping after the step in flight and writing a checkpoint/);
  expect(exit.stdout, exit.stderr).toMatch(`continue with: npx tsx src/train.ts --resume ${out}`);
  const { state } = await loadCheckpoint(out);
  expect(state.position.step).toBeGreaterThanOrEqual(1);
}

describe('signals to the process group of the training command', () => {
  it('Ctrl-C through npx tsx writes a resumable checkpoint', async () => {
    const { dir, args } = await setUp();
    const out = join(dir, 'run');
    const exit = await runAndSignal('npx', ['tsx', ...args(out)], 'SIGINT');
    await expectResumableStop(exit, out);
    // npm runs tsx through /bin/sh; dash re-raises a Ctrl-C it saw whatever its child's exit code,
    // bash passes the child's 0 on: either way no process of ours failed.
    expect(exit.code === 0 || exit.signal === 'SIGINT', `exit ${exit.code} ${exit.signal}`).toBe(true);
  }, 300_000);

  it('Ctrl-C through tsx exits 0 with a resumable checkpoint', async () => {
    const { dir, args } = await setUp();
    const out = join(dir, 'run');
    const exit = await runAndSignal('node_modules/.bin/tsx', args(out), 'SIGINT');
    await expectResumableStop(exit, out);
    expect(exit.code).toBe(0);
  }, 300_000);

  it('SIGTERM stops like one Ctrl-C', async () => {
    const { dir, args } = await setUp();
    const out = join(dir, 'run');
    const exit = await runAndSignal('node_modules/.bin/tsx', args(out), 'SIGTERM');
    await expectResumableStop(exit, out);
    expect(exit.code).toBe(0);
  }, 300_000);
});
