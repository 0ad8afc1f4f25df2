/**
 * IEEE half precision (f16) on the host, as bit patterns in a Uint16Array (Node 20 has no
 * Float16Array): f32 → f16 rounds to nearest, ties to even, with subnormals, ±Infinity and NaN kept;
 * f16 → f32 is exact. Also bfloat16 → f32 (exact: bf16 is the top half of an f32).
 */

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

/** bfloat16 bit patterns widened to f32 (exact: bf16 is the top half of an f32), into `out` from `at`. */
export function widenBfloat16(halves: Uint16Array, out: Float32Array, at = 0): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < halves.length; i++) bits[at + i] = halves[i] << 16;
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

/** f32 values rounded through f16 and back: what a weight stored in 16 bits holds. */
export function roundToHalf(values: Float32Array): Float32Array {
  return widenHalf(narrowToHalf(values));
}
