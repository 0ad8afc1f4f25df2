/**
 * The matmul tuning in Node: a small JSON file under the OS cache folder, one record per adapter,
 * and GPT2_MATMUL_VARIANT=<name> to force a variant (experiments).
 *
 * Under vitest the file is neither read nor written unless GPT2_MATMUL_TUNE_FILE names one, so tests
 * see the same default on every machine; GPT2_MATMUL_TUNE_FILE=off disables the file everywhere.
 * Without a file nothing is measured: the adapter kind's default runs.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { TuneRecord, TuneStore } from '../kernels/matmul-tune.js';

export function tuneFilePath(): string | null {
  const named = process.env.GPT2_MATMUL_TUNE_FILE;
  if (named !== undefined) return named === '' || named === 'off' ? null : named;
  if (process.env.VITEST) return null;
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(cache, 'gpt2-webgpu', 'matmul-tune.json');
}

function readTuneFile(path: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {}; // missing or unreadable: measure again
  }
}

function writeTuneFile(path: string, adapter: string, record: TuneRecord): void {
  try {
    const file = readTuneFile(path);
    file[adapter] = record;
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(file, null, 2) + '\n');
    renameSync(tmp, path);
  } catch (e) {
    console.warn(`gpt2-webgpu: could not save the matmul tuning to ${path}: ${(e as Error).message}`);
  }
}

/**
 * The file store. The environment is read at every use, not once: a test or a long-lived process
 * may point it elsewhere meanwhile.
 */
export function fileTuneStore(): TuneStore {
  const remember: NonNullable<TuneStore['remember']> = {
    read: (adapter) => {
      const path = tuneFilePath();
      return path === null ? undefined : readTuneFile(path)[adapter];
    },
    write: (adapter, record) => {
      const path = tuneFilePath();
      if (path !== null) writeTuneFile(path, adapter, record);
    },
  };
  return {
    forcedName: 'GPT2_MATMUL_VARIANT',
    forced: () => process.env.GPT2_MATMUL_VARIANT,
    get remember() {
      return tuneFilePath() === null ? undefined : remember;
    },
  };
}
