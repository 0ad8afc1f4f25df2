/** Writing a file so that a crash never leaves it half-written under its real name. */
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

let tempCounter = 0;

/**
 * Writes `path` through a temporary file in the same folder (a rename is atomic only within one
 * file system), synced before the rename, and the folder synced after it so the rename survives a
 * power cut too.
 */
export async function atomicWrite(path: string, write: (fh: FileHandle) => Promise<void>): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${tempCounter++}`);
  let renamed = false;
  try {
    const fh = await open(temp, 'w');
    try {
      await write(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(temp, path);
    renamed = true;
  } catch (e) {
    // Node names no file for a failed write (ENOSPC, EIO): the user needs to know which one.
    throw new Error(`${path}: cannot be written (${(e as Error).message})`, { cause: e });
  } finally {
    if (!renamed) await rm(temp, { force: true });
  }
  if (process.platform !== 'win32') {
    const folder = await open(dirname(path), 'r');
    try {
      await folder.sync();
    } finally {
      await folder.close();
    }
  }
}
