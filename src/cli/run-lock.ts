/**
 * One run at a time in a run folder: `run.lock` holds the owner's pid and host. A lock whose process
 * is gone (kill -9, a power cut) is stale and taken over; a live one makes the second run fail with
 * a message naming the process, instead of both writing the same files.
 */
import { readFileSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE = 'run.lock';

interface LockOwner {
  pid: number;
  host: string;
  started: string;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // alive, someone else's
  }
}

function readOwner(path: string): LockOwner | null {
  try {
    const owner = JSON.parse(readFileSync(path, 'utf8')) as LockOwner;
    return Number.isSafeInteger(owner.pid) && typeof owner.host === 'string' ? owner : null;
  } catch {
    return null; // half-written by a crash, or removed meanwhile: stale
  }
}

export class RunLocked extends Error {
  override name = 'RunLocked';
}

/** Why `folder` is in use by a live run, or null when its lock is absent or stale. */
export function liveLockProblem(folder: string): string | null {
  const path = join(folder, LOCK_FILE);
  const owner = readOwner(path);
  // Another host's pid means nothing here (a shared file system): its lock is trusted as it stands.
  if (owner === null || (owner.host === hostname() && !isAlive(owner.pid))) return null;
  return `${folder} is in use by another run (process ${owner.pid} on ${owner.host}, started ${owner.started}); wait for it to finish or stop it (if that process is no training run, delete ${path})`;
}

/** Takes the folder's lock (the folder must exist) and returns its release. */
export async function lockRunFolder(folder: string): Promise<() => Promise<void>> {
  const path = join(folder, LOCK_FILE);
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(path, 'wx');
      const owner: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
      await fh.writeFile(JSON.stringify(owner));
      await fh.close();
      return () => rm(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
    }
    const problem = liveLockProblem(folder);
    if (problem !== null) throw new RunLocked(problem);
    await rm(path, { force: true });
  }
}
