/**
 * safetensors files on disk (the format and its checks: src/gpt/safetensors.ts).
 *
 * Reading never holds a second copy of the file: each tensor's bytes go straight into its own
 * Float32Array (F32) or through a small reused buffer converted chunk by chunk (F16, BF16), and
 * the header is checked (by the caller's expectations too) before any tensor data is read.
 * Writing streams the tensors into a temporary file beside the target, syncs it and renames it over
 * the target, so a crash never leaves a half-written file under the real name.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import {
  elementCount, headerLength, keeps, parseHeader, safetensorsHeader, sixteenBits, WeightsError, widenHalves,
  type Entry, type ReadOptions, type StateDict,
} from '../gpt/safetensors.js';
import type { HalfDType } from '../tensor/backend.js';
import { atomicWrite } from './atomic-write.js';

/** Bytes read per step when converting F16/BF16. */
const CHUNK_BYTES = 1 << 22;
/** Node caps one read or write at 2 GiB - 1. */
const MAX_IO_BYTES = 1 << 30;

async function readExactly(fh: FileHandle, target: Uint8Array, position: number, what: string): Promise<void> {
  for (let done = 0; done < target.length; ) {
    const length = Math.min(target.length - done, MAX_IO_BYTES);
    const { bytesRead } = await fh.read(target, done, length, position + done);
    if (bytesRead === 0) throw new WeightsError(`${what}: the file ended early (did it change while being read?)`);
    done += bytesRead;
  }
}

async function readTensor(fh: FileHandle, entry: Entry, dataStart: number, file: string, keep16: HalfDType | undefined): Promise<Float32Array | Uint16Array> {
  const what = `${file}: tensor "${entry.name}"`;
  const start = dataStart + entry.begin;
  if (keeps(entry, keep16)) {
    const halves = sixteenBits(entry.dtype, new ArrayBuffer(2 * elementCount(entry.shape)));
    await readExactly(fh, new Uint8Array(halves.buffer), start, what);
    return halves;
  }
  const out = new Float32Array(elementCount(entry.shape));
  if (entry.dtype === 'F32') {
    await readExactly(fh, new Uint8Array(out.buffer), start, what);
    return out;
  }
  const chunk = new Uint16Array(Math.min(out.length, CHUNK_BYTES / 2));
  for (let i = 0; i < out.length; i += chunk.length) {
    const n = Math.min(chunk.length, out.length - i);
    await readExactly(fh, new Uint8Array(chunk.buffer, 0, 2 * n), start + 2 * i, what);
    widenHalves(chunk, n, entry.dtype, out, i);
  }
  return out;
}

/** Every tensor of a safetensors file as f32 (F16 or BF16 kept 16-bit with keep16), in header order. */
export async function readSafetensors(file: string, options: ReadOptions = {}): Promise<StateDict> {
  // Checked before opening: opening a FIFO would wait for a writer.
  if (!(await stat(file)).isFile()) throw new WeightsError(`${file}: not a regular file`);
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const lengthBytes = new Uint8Array(8);
    if (size >= 8) await readExactly(fh, lengthBytes, 0, file);
    const headerBytes = new Uint8Array(headerLength(lengthBytes, size, file));
    await readExactly(fh, headerBytes, 8, file);
    const dataStart = 8 + headerBytes.length;
    const entries = parseHeader(headerBytes, size - dataStart, file);
    options.checkHeader?.(entries);
    const out: StateDict = new Map();
    for (const entry of entries) {
      out.set(entry.name, { shape: entry.shape, data: await readTensor(fh, entry, dataStart, file, options.keep16) });
    }
    return out;
  } finally {
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const length = Math.min(bytes.length - done, MAX_IO_BYTES);
    const { bytesWritten } = await fh.write(bytes, done, length);
    done += bytesWritten;
  }
}

/**
 * Writes the tensors in map order, atomically: F32, or F16 for a Uint16Array of f16 bit patterns, BF16 for a Bfloat16Array. `metadata` becomes the header's
 * `__metadata__` (transformers wants `{format: "pt"}` there).
 */
export async function writeSafetensors(
  path: string,
  tensors: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array | Uint16Array }>,
  metadata?: Record<string, string>,
): Promise<void> {
  const header = safetensorsHeader(tensors, metadata, path);
  await atomicWrite(path, async (fh) => {
    await writeAll(fh, header);
    for (const { data } of tensors.values()) await writeAll(fh, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  });
}
