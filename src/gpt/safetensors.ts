/**
 * safetensors: an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the raw
 * little-endian data, offsets counted from its start.
 *
 * This module works on bytes: the header's checks, the dtype conversions, and whole files held in
 * memory (a browser's ArrayBuffer). Streaming a file from disk without a second copy of it, and
 * writing one atomically, is Node's part (src/node/safetensors-file.ts), built on the same pieces.
 * Typed-array views are used as little-endian: true of every platform WebGPU runs on.
 */
import type { HalfDType } from '../tensor/backend.js';
import { Bfloat16Array, halfDTypeOf, widenBfloat16, widenHalf } from '../tensor/half.js';

/** A tensor read from or written to a file: f32, or f16 bit patterns in a Uint16Array, or bf16 ones in a Bfloat16Array. */
export interface HostTensor {
  shape: number[];
  data: Float32Array | Uint16Array;
}
export type StateDict = Map<string, HostTensor>;

export class WeightsError extends Error {
  override name = 'WeightsError';
}

const DTYPE_BYTES = { F32: 4, F16: 2, BF16: 2 } as const;
type Dtype = keyof typeof DTYPE_BYTES;

/** The reference implementation refuses larger headers; checked before allocating one. */
const MAX_HEADER_BYTES = 100_000_000;

/** A tensor's place in the data section, as its header entry gives it (checked). */
export interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export function elementCount(shape: readonly number[]): number {
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

function parseHeaderJson(text: string, dataBytes: number, file: string): Entry[] {
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

/** Bytes per element of an entry's dtype. */
export const bytesPerElement = (entry: Entry): number => DTYPE_BYTES[entry.dtype];

/** The file dtype that holds a 16-bit storage type. */
const FILE_DTYPE = { f16: 'F16', bf16: 'BF16' } as const;

/** Widens n F16 or BF16 values into out[at…]. */
export function widenHalves(halves: Uint16Array, n: number, dtype: 'F16' | 'BF16', out: Float32Array, at: number): void {
  if (dtype === 'F16') widenHalf(halves.subarray(0, n), out, at);
  else widenBfloat16(halves.subarray(0, n), out, at);
}

/** Whether an entry stays 16-bit when read with `keep16`. */
export const keeps = (entry: Entry, keep16: HalfDType | undefined): boolean => keep16 !== undefined && entry.dtype === FILE_DTYPE[keep16];

/** An F16 or BF16 tensor's bytes as bit patterns of its type (a Bfloat16Array for BF16). */
export const sixteenBits = (dtype: Dtype, buffer: ArrayBuffer): Uint16Array => (dtype === 'BF16' ? new Bfloat16Array(buffer) : new Uint16Array(buffer));

/**
 * The header length from the file's first 8 bytes, checked against the file's size and the
 * reference implementation's limit before anything is allocated for it.
 */
export function headerLength(first8: Uint8Array, size: number, file: string): number {
  if (size < 8) throw new WeightsError(`${file}: ${size} bytes, too short for a safetensors file (8-byte header length)`);
  const length = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(size - 8)) {
    throw new WeightsError(`${file}: header length ${length} runs past the end of the file (${size} bytes)`);
  }
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new WeightsError(`${file}: header length ${length} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  return Number(length);
}

/** The header's entries, each checked against the data section's size, none overlapping. */
export function parseHeader(headerBytes: Uint8Array, dataBytes: number, file: string): Entry[] {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new WeightsError(`${file}: the header is not valid UTF-8`);
  }
  return parseHeaderJson(text, dataBytes, file);
}

/** A tensor as the header declares it, before any of its data is read. */
export interface TensorHeader {
  name: string;
  shape: readonly number[];
}

export interface ReadOptions {
  /**
   * Tensors of this 16-bit type stay 16-bit instead of widening to f32 (F16 as a Uint16Array, BF16
   * as a Bfloat16Array); the other 16-bit type still widens (neither holds the other's values).
   */
  keep16?: HalfDType;
  /**
   * Sees the header's tensors before any data is read, and throws to refuse them: the caller knows
   * what shapes to expect, so a file naming one huge tensor costs nothing before it is rejected.
   */
  checkHeader?(tensors: readonly TensorHeader[]): void;
}

/** Every tensor of a safetensors file held in memory, as f32 (F16 or BF16 kept 16-bit with keep16), in header order. */
export function parseSafetensors(bytes: Uint8Array, file: string, options: ReadOptions = {}): StateDict {
  const length = headerLength(bytes.subarray(0, 8), bytes.length, file);
  const dataStart = 8 + length;
  const entries = parseHeader(bytes.subarray(8, dataStart), bytes.length - dataStart, file);
  options.checkHeader?.(entries);
  const out: StateDict = new Map();
  for (const entry of entries) {
    const raw = bytes.subarray(dataStart + entry.begin, dataStart + entry.end);
    // Copied, never viewed: the data section need not be aligned to 4 bytes, and the caller's buffer is not ours.
    if (keeps(entry, options.keep16)) {
      out.set(entry.name, { shape: entry.shape, data: sixteenBits(entry.dtype, raw.slice().buffer) });
      continue;
    }
    const data = new Float32Array(elementCount(entry.shape));
    if (entry.dtype === 'F32') new Uint8Array(data.buffer).set(raw);
    else widenHalves(new Uint16Array(raw.slice().buffer), data.length, entry.dtype, data, 0);
    out.set(entry.name, { shape: entry.shape, data });
  }
  return out;
}

type TensorsIn = ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array | Uint16Array }>;

/**
 * The 8-byte length and the JSON header for the tensors in map order, F32 (or F16 for a Uint16Array
 * of f16 bit patterns, BF16 for a Bfloat16Array); the data section is their bytes in the same order. `metadata` becomes the header's `__metadata__` (transformers wants
 * `{format: "pt"}` there).
 */
export function safetensorsHeader(tensors: TensorsIn, metadata: Record<string, string> | undefined, file: string): Uint8Array {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, { shape, data }] of tensors) {
    if (name === '__metadata__') throw new WeightsError(`${file}: "__metadata__" is reserved and cannot name a tensor`);
    if (!shape.every(isCount) || elementCount(shape) !== data.length) {
      throw new WeightsError(`${file}: tensor "${name}": shape [${shape.join(', ')}] does not match its ${data.length} values`);
    }
    header[name] = { dtype: data instanceof Uint16Array ? FILE_DTYPE[halfDTypeOf(data)] : 'F32', shape: [...shape], data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  // Space padding to a multiple of 8 puts the data on an aligned offset (and every f32 tensor, when none is 16-bit).
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** A whole safetensors file in memory (see safetensorsHeader). */
export function serializeSafetensors(tensors: TensorsIn, metadata?: Record<string, string>, file = 'model.safetensors'): Uint8Array {
  const header = safetensorsHeader(tensors, metadata, file);
  let size = header.length;
  for (const { data } of tensors.values()) size += data.byteLength;
  const out = new Uint8Array(size);
  out.set(header);
  let at = header.length;
  for (const { data } of tensors.values()) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}
