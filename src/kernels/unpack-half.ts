/**
 * How a kernel reads a 16-bit weight (f16 or bf16, two to a u32 word, the first element in the low
 * half) as f32: the one WGSL function every kernel that reads 16-bit storage declares. Core WGSL
 * only, so every adapter runs it: f16 through unpack2x16float (not `shader-f16`, an optional
 * feature); bf16 is the top half of an f32, so the low half is a shift and the high half a mask.
 */
import type { HalfDType } from '../tensor/backend.js';

/** `fn unpackHalf(w: u32) -> vec2f`: the word's two values, low half first. */
export function unpackHalfWgsl(dtype: HalfDType): string {
  return dtype === 'f16'
    ? 'fn unpackHalf(w: u32) -> vec2f { return unpack2x16float(w); }'
    : 'fn unpackHalf(w: u32) -> vec2f { return vec2f(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }';
}
