/**
 * Dawn writes some messages to the process's stderr itself, from C++: finding the adapter of a
 * Vulkan driver that reports more dynamic buffers than Dawn supports (lavapipe, RADV) prints two
 * "…artificially reduced…" warnings on every run. They are not errors and ask nothing of a user, so
 * the adapter is found with file descriptor 2 pointed at the null device, unless a user asks to
 * see them (`--verbose`); nothing else runs then, at start-up, that could have something to say. Node cannot duplicate a descriptor, so libc's dup and dup2 are called
 * through koffi; where that is not possible (not Linux, or no glibc), nothing is hidden.
 */
import { closeSync, openSync } from 'node:fs';

interface Descriptors {
  dup(fd: number): number;
  dup2(from: number, to: number): number;
  close(fd: number): number;
}

let shown = false;
let descriptors: Descriptors | null | undefined;

/** Lets the driver's own messages through from now on. */
export function showDriverMessages(): void {
  shown = true;
}

async function libcDescriptors(): Promise<Descriptors | null> {
  if (descriptors !== undefined) return descriptors;
  descriptors = null;
  if (process.platform !== 'linux') return null;
  try {
    const { default: koffi } = await import('koffi');
    const libc = koffi.load('libc.so.6');
    descriptors = {
      dup: libc.func('int dup(int)') as (fd: number) => number,
      dup2: libc.func('int dup2(int, int)') as (from: number, to: number) => number,
      close: libc.func('int close(int)') as (fd: number) => number,
    };
  } catch {
    // No glibc (musl) or no prebuilt koffi for this machine: the messages stay.
  }
  return descriptors;
}

/** Runs `find` with stderr silenced, unless the messages are shown. */
export async function hidingDriverMessages<T>(find: () => Promise<T>): Promise<T> {
  const libc = shown ? null : await libcDescriptors();
  const saved = libc === null ? -1 : libc.dup(2);
  if (libc === null || saved < 0) return find();
  const devNull = openSync('/dev/null', 'w');
  libc.dup2(devNull, 2);
  closeSync(devNull);
  try {
    return await find();
  } finally {
    libc.dup2(saved, 2);
    libc.close(saved);
  }
}
