/**
 * 16-bit floats on the host, as bit patterns in a Uint16Array (Node 20 has no Float16Array): IEEE
 * half precision (f16), and bfloat16 (bf16: the top half of an f32, so f32's range with 8 bits of
 * significand) in a Bfloat16Array. f32 → 16 bits rounds to nearest, ties to even, with subnormals,
 * ±Infinity and NaN kept; 16 bits → f32 is exact.
 */
import type { HalfDType } from './backend.js';

/**
 * bfloat16 bit patterns: a Uint16Array whose class says how its bits read (a plain Uint16Array holds
 * f16), so host tensors keep the one `Float32Array | Uint16Array` shape. slice and subarray keep the class.
 */
export class Bfloat16Array extends Uint16Array {}

/** How a host array of 16-bit patterns is read. */
export const halfDTypeOf = (bits: Uint16Array): HalfDType => (bits instanceof Bfloat16Array ? 'bf16' : 'f16');

/** The largest finite f16. */
export const HALF_MAX = 65504;
/** The smallest magnitude that rounds to Infinity in f16: the midpoint of 65504 and 2^16, a tie that goes to the even 2^16. */
const HALF_OVERFLOW = 65520;

const word = new Float32Array(1);
const wordBits = new Uint32Array(word.buffer);

/** The f16 bit pattern nearest to x (ties to even); finite values from 65520 up become ±Infinity. */
export function floatToHalfBits(x: number): number {
  word[0] = x;
  const f = wordBits[0];
  const sign = (f >>> 16) & 0x8000;
  const exponent = (f >>> 23) & 0xff;
  const mantissa = f & 0x7fffff;
  // NaN stays NaN (quiet, with the payload's top bits); Infinity stays Infinity.
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 | (mantissa >>> 13) : 0);
  const e = exponent - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  // Below f16's subnormals, down to half the smallest one (which ties to zero, the even neighbour).
  if (e < -10) return sign;
  // Normal: drop 13 mantissa bits. Subnormal: the implicit 1 shifts in, and 14 - e bits go.
  const significand = e > 0 ? mantissa : mantissa | 0x800000;
  const shift = e > 0 ? 13 : 14 - e;
  let half = (e > 0 ? e << 10 : 0) | (significand >>> shift);
  const rest = significand & ((1 << shift) - 1);
  const midpoint = 1 << (shift - 1);
  // A carry out of the mantissa lands in the exponent: the next binade, or Infinity past 65504.
  if (rest > midpoint || (rest === midpoint && (half & 1) === 1)) half++;
  return sign | half;
}

let halfTable: Float32Array | undefined;

/** All 65536 f16 values as f32: widening is one lookup per element. */
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

export function halfBitsToFloat(h: number): number {
  return halfToFloatTable()[h & 0xffff];
}

/** f16 bit patterns widened to f32 (exact), into `out` from `at` (a new array by default). */
export function widenHalf(halves: Uint16Array, out: Float32Array = new Float32Array(halves.length), at = 0): Float32Array {
  const table = halfToFloatTable();
  for (let i = 0; i < halves.length; i++) out[at + i] = table[halves[i]];
  return out;
}

/** bfloat16 bit patterns widened to f32 (exact: bf16 is the top half of an f32), into `out` from `at` (a new array by default). */
export function widenBfloat16(halves: Uint16Array, out: Float32Array = new Float32Array(halves.length), at = 0): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < halves.length; i++) bits[at + i] = halves[i] << 16;
  return out;
}

/** 16-bit patterns widened to f32 as their class says (Bfloat16Array: bf16, else f16), into `out` from `at`. */
export function widen16(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length), at = 0): Float32Array {
  return bits instanceof Bfloat16Array ? widenBfloat16(bits, out, at) : widenHalf(bits, out, at);
}

/** The smallest f32 bit pattern (magnitude) that rounds to Infinity in bf16: 2^128·(1 - 2^-9), the tie between f32's max and 2^128. */
const BFLOAT16_OVERFLOW_BITS = 0x7f7f8000;

/** The bf16 bit pattern nearest to x (ties to even); a NaN stays a quiet NaN, ±Infinity stays; finite values from 2^128·(1 - 2^-9) up become ±Infinity. */
export function floatToBfloat16Bits(x: number): number {
  word[0] = x;
  const f = wordBits[0];
  // Rounding could carry a NaN's payload into Infinity: keep its top bits and set the quiet bit.
  if ((f & 0x7fffffff) > 0x7f800000) return (f >>> 16) | 0x40;
  // Adding half an ulp less one, plus the kept part's low bit, rounds to nearest with ties to even;
  // a carry out of the significand moves to the next binade (Infinity past f32's max). Subnormals
  // are f32's own and round the same way.
  return (f + 0x7fff + ((f >>> 16) & 1)) >>> 16;
}

/** f32 values rounded to bf16 (see floatToBfloat16Bits). Callers that must not overflow check bfloat16Overflow first. */
export function narrowToBfloat16(values: Float32Array): Bfloat16Array {
  const out = new Bfloat16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = floatToBfloat16Bits(values[i]);
  return out;
}

/** How many finite values would become ±Infinity in bf16 (within half a bf16 ulp of f32's max, or beyond). */
export function bfloat16Overflow(values: Float32Array): number {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  let count = 0;
  for (let i = 0; i < bits.length; i++) {
    const magnitude = bits[i] & 0x7fffffff;
    if (magnitude >= BFLOAT16_OVERFLOW_BITS && magnitude < 0x7f800000) count++;
  }
  return count;
}

/** f32 values rounded to f16 (see floatToHalfBits). Callers that must not overflow check halfOverflow first. */
export function narrowToHalf(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = floatToHalfBits(values[i]);
  return out;
}

/** How many finite values would become ±Infinity in f16 (magnitude 65520 or more). */
export function halfOverflow(values: Float32Array): number {
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    const v = Math.abs(values[i]);
    if (v >= HALF_OVERFLOW && v !== Infinity) count++;
  }
  return count;
}

/** f32 values rounded to a 16-bit storage type (a Bfloat16Array for bf16). */
export function narrowTo(dtype: HalfDType, values: Float32Array): Uint16Array {
  return dtype === 'bf16' ? narrowToBfloat16(values) : narrowToHalf(values);
}

/** How many finite values would become ±Infinity in `dtype`. */
export function overflowIn(dtype: HalfDType, values: Float32Array): number {
  return dtype === 'bf16' ? bfloat16Overflow(values) : halfOverflow(values);
}

/** The finite range of a 16-bit storage type, for messages. */
export const rangeOf = (dtype: HalfDType): string => (dtype === 'bf16' ? "bf16's range (±3.39e38)" : "f16's range (±65504)");

/** f32 values rounded through a 16-bit type and back: what a weight stored in it holds. */
export function roundTo(dtype: HalfDType, values: Float32Array): Float32Array {
  return widen16(narrowTo(dtype, values));
}
