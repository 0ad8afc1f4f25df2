/**
 * safetensors files: an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the raw
 * little-endian data, offsets counted from its start.
 *
 * Reading never holds a second copy of the file: each tensor's bytes go straight into its own
 * Float32Array (F32) or through a small reused buffer converted chunk by chunk (F16, BF16).
 * Writing streams the tensors into a temporary file beside the target, syncs it and renames it over
 * the target, so a crash never leaves a half-written file under the real name.
 * Typed-array views are used as little-endian: true of every platform Node runs on.
 */
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}
export type StateDict = Map<string, HostTensor>;

export class WeightsError extends Error {
  override name = 'WeightsError';
}

const DTYPE_BYTES = { F32: 4, F16: 2, BF16: 2 } as const;
type Dtype = keyof typeof DTYPE_BYTES;

/** The reference implementation refuses larger headers; checked before allocating one. */
const MAX_HEADER_BYTES = 100_000_000;
/** Bytes read per step when converting F16/BF16. */
const CHUNK_BYTES = 1 << 22;
/** Node caps one read or write at 2 GiB - 1. */
const MAX_IO_BYTES = 1 << 30;

interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function parseEntry(name: string, value: unknown, dataBytes: number, file: string): Entry {
  const fail = (message: string): never => {
    throw new WeightsError(`${file}: tensor "${name}": ${message}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('header entry is not an object');
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string') return fail(`dtype ${JSON.stringify(dtype)} is not a string`);
  if (!Object.hasOwn(DTYPE_BYTES, dtype)) {
    return fail(`unsupported dtype "${dtype}" (readable: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) return fail(`shape ${JSON.stringify(shape)} is not a list of sizes`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
    return fail(`data_offsets ${JSON.stringify(offsets)} is not a pair [begin, end] with begin <= end`);
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataBytes) return fail(`data_offsets [${begin}, ${end}] run past the data section (${dataBytes} bytes)`);
  const needed = elementCount(shape) * DTYPE_BYTES[dtype as Dtype];
  if (end - begin !== needed) {
    return fail(`holds ${end - begin} bytes, but shape [${shape.join(', ')}] of ${dtype} needs ${needed}`);
  }
  return { name, dtype: dtype as Dtype, shape, begin, end };
}

function parseHeader(text: string, dataBytes: number, file: string): Entry[] {
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new WeightsError(`${file}: the header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new WeightsError(`${file}: the header is not a JSON object`);
  }
  const entries = Object.entries(header)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, value]) => parseEntry(name, value, dataBytes, file));
  const byStart = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < byStart.length; i++) {
    const [a, b] = [byStart[i - 1], byStart[i]];
    if (b.begin < a.end) {
      throw new WeightsError(
        `${file}: tensors "${a.name}" [${a.begin}, ${a.end}) and "${b.name}" [${b.begin}, ${b.end}) overlap`,
      );
    }
  }
  return entries;
}

async function readExactly(fh: FileHandle, target: Uint8Array, position: number, what: string): Promise<void> {
  for (let done = 0; done < target.length; ) {
    const length = Math.min(target.length - done, MAX_IO_BYTES);
    const { bytesRead } = await fh.read(target, done, length, position + done);
    if (bytesRead === 0) throw new WeightsError(`${what}: the file ended early (did it change while being read?)`);
    done += bytesRead;
  }
}

let halfTable: Float32Array | undefined;

/** All 65536 half-precision values as f32: conversion becomes one lookup per element. */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    halfTable[h] =
      exponent === 0 ? sign * fraction * 2 ** -24
      : exponent === 31 ? (fraction ? NaN : sign * Infinity)
      : sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }
  return halfTable;
}

async function readTensor(fh: FileHandle, entry: Entry, dataStart: number, file: string): Promise<Float32Array> {
  const what = `${file}: tensor "${entry.name}"`;
  const out = new Float32Array(elementCount(entry.shape));
  const start = dataStart + entry.begin;
  if (entry.dtype === 'F32') {
    await readExactly(fh, new Uint8Array(out.buffer), start, what);
    return out;
  }
  const chunk = new Uint16Array(Math.min(out.length, CHUNK_BYTES / 2));
  const bits = new Uint32Array(out.buffer);
  const table = entry.dtype === 'F16' ? halfToFloatTable() : null;
  for (let i = 0; i < out.length; i += chunk.length) {
    const n = Math.min(chunk.length, out.length - i);
    await readExactly(fh, new Uint8Array(chunk.buffer, 0, 2 * n), start + 2 * i, what);
    if (table) {
      for (let j = 0; j < n; j++) out[i + j] = table[chunk[j]];
    } else {
      // bfloat16 is the top half of a float32.
      for (let j = 0; j < n; j++) bits[i + j] = chunk[j] << 16;
    }
  }
  return out;
}

/** A tensor as the header declares it, before any of its data is read. */
export interface TensorHeader {
  name: string;
  shape: readonly number[];
}

export interface ReadOptions {
  /**
   * Sees the header's tensors before any data is read, and throws to refuse them: the caller knows
   * what shapes to expect, so a file naming one huge tensor costs nothing before it is rejected.
   */
  checkHeader?(tensors: readonly TensorHeader[]): void;
}

/** Every tensor of a safetensors file as f32, in header order. */
export async function readSafetensors(file: string, options: ReadOptions = {}): Promise<StateDict> {
  // Checked before opening: opening a FIFO would wait for a writer.
  if (!(await stat(file)).isFile()) throw new WeightsError(`${file}: not a regular file`);
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    if (size < 8) throw new WeightsError(`${file}: ${size} bytes, too short for a safetensors file (8-byte header length)`);
    const lengthBytes = new Uint8Array(8);
    await readExactly(fh, lengthBytes, 0, file);
    const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (headerLength > BigInt(size - 8)) {
      throw new WeightsError(`${file}: header length ${headerLength} runs past the end of the file (${size} bytes)`);
    }
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw new WeightsError(`${file}: header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    const headerBytes = new Uint8Array(Number(headerLength));
    await readExactly(fh, headerBytes, 8, file);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      throw new WeightsError(`${file}: the header is not valid UTF-8`);
    }
    const dataStart = 8 + headerBytes.length;
    const entries = parseHeader(text, size - dataStart, file);
    options.checkHeader?.(entries);
    const out: StateDict = new Map();
    for (const entry of entries) {
      out.set(entry.name, { shape: entry.shape, data: await readTensor(fh, entry, dataStart, file) });
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

/**
 * Writes the tensors as F32 in map order, atomically. `metadata` becomes the header's
 * `__metadata__` (transformers wants `{format: "pt"}` there).
 */
export async function writeSafetensors(
  path: string,
  tensors: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>,
  metadata?: Record<string, string>,
): Promise<void> {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, { shape, data }] of tensors) {
    if (name === '__metadata__') throw new WeightsError(`${path}: "__metadata__" is reserved and cannot name a tensor`);
    if (!shape.every(isCount) || elementCount(shape) !== data.length) {
      throw new WeightsError(`${path}: tensor "${name}": shape [${shape.join(', ')}] does not match its ${data.length} values`);
    }
    header[name] = { dtype: 'F32', shape: [...shape], data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  const json = JSON.stringify(header);
  // Space padding to a multiple of 8 puts the data, and so every f32 tensor, on an aligned offset.
  const headerBytes = Buffer.from(json.padEnd(json.length + ((8 - (Buffer.byteLength(json) % 8)) % 8), ' '));
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.length));
  await atomicWrite(path, async (fh) => {
    await writeAll(fh, lengthBytes);
    await writeAll(fh, headerBytes);
    for (const { data } of tensors.values()) await writeAll(fh, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  });
}
