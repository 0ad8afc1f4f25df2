/**
 * A full disk and a read-only one, on small tmpfs mounts (root only, as in CI): a read-only --out
 * fails before training with exit-code-2 wording; a full one fails at the first write, naming the
 * file, and leaves no half-written staging folder taking the space.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { parseTrainOptions, UsageError, type TrainOptions } from '../src/cli/train-options.js';
import { runTraining } from '../src/cli/train-run.js';
import { freshDir } from './helpers/weights-fixtures.js';

const mounted: string[] = [];
afterEach(() => {
  for (const dir of mounted.splice(0)) execFileSync('umount', [dir]);
});

/** A tmpfs of `size` at a fresh folder, or null where this process may not mount. */
async function smallDisk(size: string, readOnly = false): Promise<string | null> {
  const dir = join(await freshDir(), 'disk');
  mkdirSync(dir);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}${readOnly ? ',ro' : ''}`, 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    return null;
  }
  mounted.push(dir);
  return dir;
}

const canMount = process.getuid?.() === 0;
const quiet = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;

async function train(out: string, extra: string[] = []): Promise<Error> {
  const dir = await freshDir();
  const data = join(dir, 'data.json');
  await writeFile(data, JSON.stringify(loadInstructionFile('data/instructions.json').slice(0, 6)));
  const options = parseTrainOptions(['--model', 'tiny', '--data', data, '--out', out, '--epochs', '1', '--batch-size', '2', '--device', 'cpu', ...extra]) as TrainOptions;
  try {
    await runTraining(options, { shouldStop: () => false, stream: quiet });
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the run to fail');
}

describe.runIf(canMount)('disks that refuse writes', () => {
  it('a read-only --out is refused before training', async () => {
    const disk = await smallDisk('1m', true);
    expect(disk).not.toBeNull();
    const error = await train(join(disk!, 'run'));
    expect(error).toBeInstanceOf(UsageError);
    expect(error.message).toMatch(/--out .*\/run: cannot create the folder \(the file system is read-only\)/);
  }, 120_000);

  it('a full disk fails naming the file, and leaves no staging folder behind', async () => {
    // The tiny model's checkpoint is ~13 MB; 2 MB holds the log but not it.
    const disk = await smallDisk('2m');
    expect(disk).not.toBeNull();
    const out = join(disk!, 'run');
    const error = await train(out, ['--save-last']);
    expect(error.message).toMatch(/checkpoint\.tmp-\d+\/model\.safetensors: cannot be written \(ENOSPC/);
    expect(readdirSync(out).filter((f) => f.startsWith('checkpoint'))).toEqual([]);
    // Saving the best weights (the default) is the first large write: it fails the same way.
    const best = join(disk!, 'best');
    expect((await train(best)).message).toMatch(/best\/model\.safetensors: cannot be written \(ENOSPC/);
    expect(readdirSync(best).filter((f) => f.includes('.tmp'))).toEqual([]);
  }, 120_000);
});
