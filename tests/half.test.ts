import { describe, expect, it } from 'vitest';
import {
  Bfloat16Array, bfloat16Overflow, floatToBfloat16Bits, floatToHalfBits, halfBitsToFloat, halfDTypeOf, halfOverflow, narrowToBfloat16, narrowToHalf,
  widen16, widenBfloat16, widenHalf,
} from '../src/tensor/half.js';
import { widenHalves } from '../src/gpt/safetensors.js';

const isNaNBits = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

/** The f16 value of bit pattern h, computed from its fields in float64 (independent of the module's table). */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 31) return f ? NaN : sign * Infinity;
  return e === 0 ? sign * f * 2 ** -24 : sign * (1024 + f) * 2 ** (e - 25);
}

describe('f16 host conversion', () => {
  it('widens and narrows all 65536 bit patterns back to themselves (NaNs stay NaN)', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, h) => h);
    const wide = widenHalf(all);
    const back = narrowToHalf(wide);
    const wrong: string[] = [];
    for (let h = 0; h < 65536; h++) {
      const ok = isNaNBits(h) ? Number.isNaN(wide[h]) && isNaNBits(back[h]) : Object.is(wide[h], halfValue(h)) && back[h] === h;
      if (!ok) wrong.push(`0x${h.toString(16)} → ${wide[h]} → 0x${back[h].toString(16)}`);
    }
    expect(wrong).toEqual([]);
  });

  it.each([
    ['1', 1, 0x3c00],
    ['1 + 2^-11, a tie: to the even 1', 1 + 2 ** -11, 0x3c00],
    ['1 + 3·2^-11, a tie: to the even 1 + 2^-9', 1 + 3 * 2 ** -11, 0x3c02],
    ['just above the tie after 1', 1 + 2 ** -11 + 2 ** -20, 0x3c01],
    ['just below the tie after 1', 1 + 2 ** -11 - 2 ** -20, 0x3c00],
    ['-2.5', -2.5, 0xc100],
    ['the largest finite, 65504', 65504, 0x7bff],
    ['65519 rounds down to 65504', 65519, 0x7bff],
    ['65520 ties to 2^16: Infinity', 65520, 0x7c00],
    ['-1e6 overflows to -Infinity', -1e6, 0xfc00],
    ['the smallest normal, 2^-14', 2 ** -14, 0x0400],
    ['the largest subnormal, 1023·2^-24', 1023 * 2 ** -24, 0x03ff],
    ['1023.5·2^-24 ties up into the normals', 1023.5 * 2 ** -24, 0x0400],
    ['the smallest subnormal, 2^-24', 2 ** -24, 0x0001],
    ['2^-25 ties to the even 0', 2 ** -25, 0x0000],
    ['-2^-25 ties to -0', -(2 ** -25), 0x8000],
    ['1.5·2^-25 rounds up to 2^-24', 1.5 * 2 ** -25, 0x0001],
    ['3·2^-25 ties to the even 2·2^-24', 3 * 2 ** -25, 0x0002],
    ['5·2^-25 ties to the even 2·2^-24', 5 * 2 ** -25, 0x0002],
    ['an f32 subnormal flushes to 0', 1e-45, 0x0000],
    ['-0', -0, 0x8000],
    ['Infinity', Infinity, 0x7c00],
    ['-Infinity', -Infinity, 0xfc00],
  ])('rounds %s to nearest even', (_name, x, bits) => {
    expect(floatToHalfBits(x).toString(16)).toBe(bits.toString(16));
  });

  it('keeps NaN a NaN', () => {
    expect(isNaNBits(floatToHalfBits(NaN))).toBe(true);
    // A payload only in the low 13 bits must not become Infinity.
    const bits = new Uint32Array([0x7f800001]);
    expect(isNaNBits(floatToHalfBits(new Float32Array(bits.buffer)[0]))).toBe(true);
  });

  it('picks the nearest f16, ties to even, for 200000 random f32 values in range', () => {
    let state = 12345;
    const next = (): number => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
    const word = new Uint32Array(1);
    const asFloat = new Float32Array(word.buffer);
    const wrong: string[] = [];
    for (let i = 0; i < 200_000; i++) {
      // Exponents over f16's whole range, subnormals included.
      word[0] = (next() & 0x807fffff) | ((103 + (next() % 40)) << 23);
      const x = asFloat[0];
      if (Math.abs(x) >= 65520) continue;
      const h = floatToHalfBits(x);
      const error = Math.abs(x - halfValue(h));
      // Its neighbours along the same sign (h ± 1), where they are finite values.
      for (const other of [h - 1, h + 1]) {
        if (other < 0 || (other & 0x7fff) >= 0x7c00 || (other ^ h) & 0x8000) continue;
        const otherError = Math.abs(x - halfValue(other));
        if (error > otherError || (error === otherError && (h & 1) === 1)) wrong.push(`${x}: 0x${h.toString(16)}, not 0x${other.toString(16)}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('counts the finite values that f16 cannot hold', () => {
    expect(halfOverflow(Float32Array.from([65504, 65519, 65520, -7e4, Infinity, -Infinity, NaN, 3e38, 0]))).toBe(3);
  });

  it('reads bit patterns one at a time as the table does', () => {
    expect(halfBitsToFloat(0x3555)).toBeCloseTo(0.333251953125, 12);
    expect(halfBitsToFloat(0xfbff)).toBe(-65504);
  });

  it('widens bfloat16 exactly and safetensors widenHalves uses the same conversions', () => {
    const bf = Uint16Array.from([0x3f80, 0xc049, 0x7f80, 0x0001]);
    const out = new Float32Array(6);
    widenBfloat16(bf, out, 1);
    expect([...out]).toEqual([0, 1, -3.140625, Infinity, new Float32Array(new Uint32Array([0x10000]).buffer)[0], 0]);
    const viaSafetensors = new Float32Array(6);
    widenHalves(Uint16Array.from([0x3c00, 0xc000, 0, 0]), 2, 'F16', viaSafetensors, 3);
    expect([...viaSafetensors]).toEqual([0, 0, 0, 1, -2, 0]);
  });
});

const isBfloat16NaNBits = (h: number): boolean => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
const word = new Uint32Array(1);
const wordFloat = new Float32Array(word.buffer);
/** The f32 whose bit pattern is `bits`. */
const fromBits = (bits: number): number => ((word[0] = bits), wordFloat[0]);

/** The bf16 value of bit pattern h, computed from its fields in float64 (independent of the module's shift). */
function bfloat16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 7) & 0xff;
  const f = h & 0x7f;
  if (e === 255) return f ? NaN : sign * Infinity;
  return e === 0 ? sign * f * 2 ** -133 : sign * (128 + f) * 2 ** (e - 134);
}

describe('bf16 host conversion', () => {
  it('widens and narrows all 65536 bit patterns back to themselves (NaNs stay NaN)', () => {
    const all = Bfloat16Array.from({ length: 65536 }, (_, h) => h);
    const wide = widenBfloat16(all);
    const back = narrowToBfloat16(wide);
    const wrong: string[] = [];
    for (let h = 0; h < 65536; h++) {
      const ok = isBfloat16NaNBits(h)
        ? Number.isNaN(wide[h]) && isBfloat16NaNBits(back[h])
        : Object.is(wide[h], bfloat16Value(h)) && back[h] === h;
      if (!ok) wrong.push(`0x${h.toString(16)} → ${wide[h]} → 0x${back[h].toString(16)}`);
    }
    expect(wrong).toEqual([]);
  });

  it.each([
    ['1', 1, 0x3f80],
    ['-2.5', -2.5, 0xc020],
    ['1 + 2^-8, a tie: to the even 1', 1 + 2 ** -8, 0x3f80],
    ['1 + 3·2^-8, a tie: to the even 1 + 2^-6', 1 + 3 * 2 ** -8, 0x3f82],
    ['just above the tie after 1', 1 + 2 ** -8 + 2 ** -23, 0x3f81],
    ['just below the tie after 1', 1 + 2 ** -8 - 2 ** -23, 0x3f80],
    ['just below the tie after 1 + 2^-7 (odd)', 1 + 3 * 2 ** -8 - 2 ** -23, 0x3f81],
    ['a tie below zero, to the even -1', -(1 + 2 ** -8), 0xbf80],
    ['65504 (f16\'s max) rounds to 65536', 65504, 0x4780],
    ['f32\'s largest finite below the overflow tie', fromBits(0x7f7f7fff), 0x7f7f],
    ['2^128·(1 - 2^-9), the tie after the largest finite: Infinity', fromBits(0x7f7f8000), 0x7f80],
    ['f32\'s max: Infinity', fromBits(0x7f7fffff), 0x7f80],
    ['-f32\'s max: -Infinity', fromBits(0xff7fffff), 0xff80],
    ['the smallest bf16 subnormal, 2^-133', 2 ** -133, 0x0001],
    ['2^-134 ties to the even 0', 2 ** -134, 0x0000],
    ['3·2^-134 ties to the even 2·2^-133', 3 * 2 ** -134, 0x0002],
    ['the largest f32 subnormal rounds up to the smallest normal', fromBits(0x007fffff), 0x0080],
    ['the smallest f32 subnormal flushes to 0', 2 ** -149, 0x0000],
    ['-0', -0, 0x8000],
    ['Infinity', Infinity, 0x7f80],
    ['-Infinity', -Infinity, 0xff80],
  ])('rounds %s to nearest even', (_name, x, bits) => {
    expect(floatToBfloat16Bits(x).toString(16)).toBe(bits.toString(16));
  });

  it('keeps NaN a quiet NaN, whatever its payload', () => {
    expect(isBfloat16NaNBits(floatToBfloat16Bits(NaN))).toBe(true);
    // A payload only in the low 16 bits, or one that rounding would carry into the exponent, must not become Infinity.
    for (const bits of [0x7f800001, 0xff80ffff, 0x7fffffff, 0x7f808000]) {
      const h = floatToBfloat16Bits(fromBits(bits));
      expect(isBfloat16NaNBits(h) && (h & 0x40) !== 0 && (h & 0x8000) === (bits >>> 16 & 0x8000)).toBe(true);
    }
  });

  it('picks the nearest bf16, ties to even, for 200000 random finite f32 values', () => {
    let state = 54321;
    const next = (): number => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
    const wrong: string[] = [];
    for (let i = 0; i < 200_000; i++) {
      // Every exponent but Infinity's; a quarter of them exact ties.
      const bits = ((next() & 0x807fffff) | ((next() % 255) << 23)) >>> 0;
      const x = fromBits(i % 4 === 0 ? ((bits & 0xffff0000) | 0x8000) >>> 0 : bits);
      const h = floatToBfloat16Bits(x);
      if ((h & 0x7fff) === 0x7f80) continue;
      const error = Math.abs(x - bfloat16Value(h));
      for (const other of [h - 1, h + 1]) {
        if (other < 0 || (other & 0x7fff) >= 0x7f80 || (other ^ h) & 0x8000) continue;
        const otherError = Math.abs(x - bfloat16Value(other));
        if (error > otherError || (error === otherError && (h & 1) === 1)) wrong.push(`${x}: 0x${h.toString(16)}, not 0x${other.toString(16)}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('counts the finite values that bf16 cannot hold: only those within half an ulp of f32\'s max', () => {
    const values = Float32Array.from([3e38, fromBits(0x7f7f7fff), fromBits(0x7f7f8000), -fromBits(0x7f7fffff), 65520, 1e6, Infinity, -Infinity, NaN, 0]);
    expect(bfloat16Overflow(values)).toBe(2);
    expect(bfloat16Overflow(values.subarray(2, 4))).toBe(2);
  });

  it('keeps its class through slice and subarray, and widen16 reads each class its own way', () => {
    const bf = Bfloat16Array.from([0x3f80, 0x4000, 0xc040]);
    expect(halfDTypeOf(bf.slice(1))).toBe('bf16');
    expect(halfDTypeOf(bf.subarray(1))).toBe('bf16');
    expect(halfDTypeOf(Uint16Array.from([0x3c00]))).toBe('f16');
    expect([...widen16(bf)]).toEqual([1, 2, -3]);
    expect([...widen16(Uint16Array.from([0x3c00, 0x4000, 0xc200]))]).toEqual([1, 2, -3]);
  });
});
