import { describe, expect, it } from 'vitest';
import { floatToHalfBits, halfBitsToFloat, halfOverflow, narrowToHalf, widenBfloat16, widenHalf } from '../src/tensor/half.js';
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
