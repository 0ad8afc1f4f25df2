/**
 * Element-wise kernels: fill, random, cast, and the unary/binary/where ops with broadcasting.
 * CPU reference: src/tensor/cpu/elementwise.ts (and cpu/random.ts for the hash).
 *
 * Two variants. `flat`: every operand is either the output's size (read at i) or a scalar (read at 0);
 * it walks tensors larger than one binding in chunks, so a 200 MB gradient scales like a small one.
 * Its threads take four elements each, read and written as vec4: on llvmpipe every per-lane load and
 * store is a gather or scatter, so a vec4 does the work of four for the price of one
 * (docs/kernels.md, element-wise).
 * `strided`: general NumPy broadcasting up to rank 8, each operand read through its own strides.
 */
import type { BinaryOp, ComputeDType, RandomDistribution, UnaryOp } from '../tensor/backend.js';
import { broadcastStrides, sizeOf } from '../tensor/shape.js';
import { forEachChunk } from './binding-windows.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { flatIndexWgsl, grid1d, type Kernel } from './kernel.js';
import { MAX_RANK, padToMaxRank, RANK_ARRAY_WGSL, stridedOffsetsWgsl } from './strided-index.js';

const WG = 256;

const unaryExpr: Record<UnaryOp, string> = {
  neg: '-x0',
  exp: 'exp(x0)',
  log: 'log(x0)',
  sqrt: 'sqrt(x0)',
  // Some drivers compute tanh through exp and overflow to NaN; tanh(±15) is ±1 in f32 anyway.
  tanh: 'tanh(clamp(x0, -15.0, 15.0))',
  relu: 'max(x0, 0.0)',
  abs: 'abs(x0)',
};

const binaryExpr: Record<BinaryOp, string> = {
  add: 'x0 + x1',
  sub: 'x0 - x1',
  mul: 'x0 * x1',
  div: 'x0 / x1',
  max: 'select(x1, x0, x0 >= x1)',
  min: 'select(x1, x0, x0 <= x1)',
  pow: 'powReal(x0, x1)',
  gt: 'select(0.0, 1.0, x0 > x1)',
  eq: 'select(0.0, 1.0, x0 == x1)',
};

const WHERE_EXPR = 'select(x2, x1, x0 != 0.0)';

/**
 * WGSL's pow is undefined for a negative base and, as exp2(b·log2(a)), gives 0⁰ = 0 on some drivers
 * (lavapipe): match Math.pow for integer exponents of negative bases and for a zero exponent
 * (x⁰ = 1, which the backward rule of x¹ at x = 0 relies on).
 */
const POW_WGSL = /* wgsl */ `
fn powReal(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  let magnitude = pow(abs(a), b);
  if (a >= 0.0) { return magnitude; }
  if (b != floor(b)) { return sqrt(a); } // NaN, as Math.pow gives
  return select(magnitude, -magnitude, fract(b * 0.5) != 0.0);
}`;

function inputDeclarations(arity: number): string {
  return Array.from({ length: arity }, (_, k) => `@group(0) @binding(${k}) var<storage, read> in${k}: array<f32>;`).join('\n');
}

interface FlatParams {
  expr: string;
  /** Per operand: read at 0 (a scalar broadcast to every element) instead of at i. */
  scalar: boolean[];
}

const flatKernel: Kernel<FlatParams> = {
  name: 'elementwise_flat',
  bindings: ['read', 'read', 'read', 'write'],
  wgsl: ({ expr, scalar }) => {
    const declarations = scalar.map((sc, k) => `@group(0) @binding(${k}) var<storage, read> in${k}: array<${sc ? 'f32' : 'vec4f'}>;`);
    const loads = scalar.map((sc, k) => `  let v${k} = ${sc ? `vec4f(in${k}[0])` : `in${k}[i]`};`);
    const components = [0, 1, 2, 3].map((c) => `  { let x0 = v0[${c}]; let x1 = v1[${c}]; let x2 = v2[${c}]; _ = x1; _ = x2; r[${c}] = ${expr}; }`);
    return /* wgsl */ `
${declarations.join('\n')}
@group(0) @binding(3) var<storage, read_write> out: array<vec4f>;
struct Params { count: u32 } // vec4s
@group(0) @binding(4) var<uniform> params: Params;
${POW_WGSL}
${flatIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg);
  if (i >= params.count) { return; }
${loads.join('\n')}
  var r: vec4f;
${components.join('\n')}
  out[i] = r;
}`;
  },
};

interface StridedParams {
  expr: string;
}

const stridedKernel: Kernel<StridedParams> = {
  name: 'elementwise_strided',
  bindings: ['read', 'read', 'read', 'write'],
  wgsl: ({ expr }) => /* wgsl */ `
${inputDeclarations(3)}
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
struct Params {
  count: u32,
  rank: u32,
  shape: ${RANK_ARRAY_WGSL},
  strides0: ${RANK_ARRAY_WGSL},
  strides1: ${RANK_ARRAY_WGSL},
  strides2: ${RANK_ARRAY_WGSL},
}
@group(0) @binding(4) var<uniform> params: Params;
${POW_WGSL}
${flatIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg);
  if (i >= params.count) { return; }
${stridedOffsetsWgsl([0, 1, 2].map((k) => ({ name: `o${k}`, start: '0u', strides: `strides${k}` })))}
  let x0 = in0[o0];
  let x1 = in1[o1];
  let x2 = in2[o2];
  _ = x1; _ = x2;
  out[i] = ${expr};
}`,
};

/** out = expr(x0, x1, x2) over operands of the output's size or of size 1. */
function mapFlat(gpu: Gpu, expr: string, inputs: GpuStorage[], size: number): GpuStorage {
  const out = gpu.alloc(size);
  // Unused operand slots repeat the first input: every binding must hold a buffer.
  const operands = [0, 1, 2].map((k) => inputs[k] ?? inputs[0]);
  const scalar = operands.map((x) => x.size === 1 && size !== 1);
  forEachChunk(gpu, size, (start, count) => {
    // Bound in whole vec4s: a ragged end runs past `count` into the slack of pool buckets (whole
    // vec4s), where the extra lanes compute on junk and write only into out's, which nothing reads.
    const padded = Math.ceil(count / 4) * 4;
    const views = operands.map((x, k) => (scalar[k] ? gpu.view(x, 0, 1) : gpu.view(x, start, padded)));
    gpu.dispatch(flatKernel, { expr, scalar }, [...views, gpu.view(out, start, padded)], [padded / 4], grid1d(padded / 4, WG, gpu.maxWorkgroupsPerDimension));
  });
  return out;
}

function mapStrided(gpu: Gpu, expr: string, inputs: { x: GpuStorage; shape: readonly number[] }[], outShape: readonly number[]): GpuStorage {
  if (outShape.length > MAX_RANK) throw new Error(`broadcasting supports rank ≤ ${MAX_RANK}, got [${outShape}]`);
  const size = sizeOf(outShape);
  const out = gpu.alloc(size);
  const operands = [0, 1, 2].map((k) => inputs[k] ?? inputs[0]);
  const uniforms = [
    size,
    outShape.length,
    0, 0, // pads the header to the 16-byte alignment of the arrays that follow
    ...padToMaxRank(outShape),
    ...operands.flatMap(({ shape }) => padToMaxRank(broadcastStrides(shape, outShape))),
  ];
  gpu.dispatch(stridedKernel, { expr }, [...operands.map(({ x }) => x), out], uniforms, grid1d(size, WG, gpu.maxWorkgroupsPerDimension));
  return out;
}

function isFlat(shape: readonly number[], outShape: readonly number[]): boolean {
  const size = sizeOf(shape);
  return size === 1 || size === sizeOf(outShape);
}

function map(gpu: Gpu, expr: string, inputs: { x: GpuStorage; shape: readonly number[] }[], outShape: readonly number[]): GpuStorage {
  return inputs.every(({ shape }) => isFlat(shape, outShape))
    ? mapFlat(gpu, expr, inputs.map(({ x }) => x), sizeOf(outShape))
    : mapStrided(gpu, expr, inputs, outShape);
}

export function unary(gpu: Gpu, op: UnaryOp, x: GpuStorage): GpuStorage {
  return mapFlat(gpu, unaryExpr[op], [x], x.size);
}

export function binary(gpu: Gpu, op: BinaryOp, a: GpuStorage, aShape: readonly number[], b: GpuStorage, bShape: readonly number[], outShape: readonly number[]): GpuStorage {
  return map(gpu, binaryExpr[op], [{ x: a, shape: aShape }, { x: b, shape: bShape }], outShape);
}

export function where(
  gpu: Gpu,
  cond: GpuStorage, condShape: readonly number[],
  a: GpuStorage, aShape: readonly number[],
  b: GpuStorage, bShape: readonly number[],
  outShape: readonly number[],
): GpuStorage {
  return map(gpu, WHERE_EXPR, [{ x: cond, shape: condShape }, { x: a, shape: aShape }, { x: b, shape: bShape }], outShape);
}

// --- fill, random, cast ---

const fillKernel: Kernel = {
  name: 'fill',
  bindings: ['write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
struct Params { count: u32, bits: u32 }
@group(0) @binding(1) var<uniform> params: Params;
${flatIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg);
  if (i < params.count) { out[i] = params.bits; }
}`,
};

export function fill(gpu: Gpu, size: number, value: number, dtype: ComputeDType): GpuStorage {
  const out = gpu.alloc(size, dtype);
  const bits = dtype === 'i32' ? new Uint32Array(Int32Array.of(value).buffer)[0] : new Uint32Array(Float32Array.of(value).buffer)[0];
  forEachChunk(gpu, size, (start, count) => {
    gpu.dispatch(fillKernel, undefined, [gpu.view(out, start, count)], [count, bits], grid1d(count, WG, gpu.maxWorkgroupsPerDimension));
  });
  return out;
}

/**
 * sin(2π·b) for |b| ≤ 1/4 by its Taylor series to b¹⁵ (the next term is below 1e-11), in Horner form
 * over b²: coefficients (-1)^k·(2π)^(2k+1)/(2k+1)!.
 */
const SIN_2PI_COEFFICIENTS = Array.from({ length: 8 }, (_, k) => {
  let c = (-1) ** k;
  for (let j = 1; j <= 2 * k + 1; j++) c *= (2 * Math.PI) / j;
  return c;
});
const SIN_2PI_HORNER = SIN_2PI_COEFFICIENTS.reduceRight((inner, c, k) =>
  k === SIN_2PI_COEFFICIENTS.length - 1 ? c.toExponential(9) : `${c.toExponential(9)} + b2 * (${inner})`, '');

/**
 * The WGSL twin of src/tensor/cpu/random.ts: same hash, same bits. Both sides form the same f32
 * uniforms exactly; the normal then avoids the built-in log and sin, whose accuracy WGSL leaves
 * loose (log: 2^-21 absolute, which swamps ln(u1) ≈ -6e-8 near u1 = 1 and can even flip its sign;
 * sin: 2^-11 absolute), so every adapter computes it from +, ×, ÷, sqrt and frexp alone:
 *  - ln u: frexp gives u = m·2^e with m in [0.5, 1), and ln m = 2·atanh(s), s = (m − 1)/(m + 1) in
 *    [−1/3, 0), by its odd series (7 terms: |s|^15/15 < 1e-8);
 *  - cos(2π·u2) = sin(2π·b) with b = 1/4 − |u2 − round(u2)| in [−1/4, 1/4] (exact in f32), by the
 *    series above, accurate relative to itself near the cosine's zeros.
 * The result is within a few f32 ulps of the float64 reference (tests/elementwise.test.ts).
 */
const RANDOM_WGSL = /* wgsl */ `
fn pcgHash(x: u32) -> u32 {
  let state = x * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
fn hashAt(seed: u32, i: u32) -> u32 { return pcgHash(pcgHash(seed) + i); }
fn uniformAt(seed: u32, i: u32) -> f32 { return f32(hashAt(seed, i) >> 8u) / 16777216.0; }
fn lnAccurate(u: f32) -> f32 {
  let parts = frexp(u);
  let s = (parts.fract - 1.0) / (parts.fract + 1.0);
  let s2 = s * s;
  let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
  return f32(parts.exp) * 0.6931471805599453 + 2.0 * s * series;
}
fn sin2pi(b: f32) -> f32 {
  let b2 = b * b;
  return b * (${SIN_2PI_HORNER});
}
fn normalAt(seed: u32, i: u32) -> f32 {
  let u1 = f32((hashAt(seed, 2u * i) >> 8u) + 1u) / 16777216.0;
  let u2 = f32(hashAt(seed, 2u * i + 1u) >> 8u) / 16777216.0;
  return sqrt(-2.0 * lnAccurate(u1)) * sin2pi(0.25 - abs(u2 - round(u2)));
}`;

const randomKernel: Kernel<{ distribution: RandomDistribution }> = {
  name: 'random',
  bindings: ['write'],
  wgsl: ({ distribution }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
struct Params { count: u32, seed: u32, start: u32 }
@group(0) @binding(1) var<uniform> params: Params;
${RANDOM_WGSL}
${flatIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg);
  if (i < params.count) { out[i] = ${distribution}At(params.seed, params.start + i); }
}`,
};

export function random(gpu: Gpu, size: number, seed: number, distribution: RandomDistribution): GpuStorage {
  const out = gpu.alloc(size);
  forEachChunk(gpu, size, (start, count) => {
    gpu.dispatch(randomKernel, { distribution }, [gpu.view(out, start, count)], [count, seed >>> 0, start], grid1d(count, WG, gpu.maxWorkgroupsPerDimension));
  });
  return out;
}

const castKernel: Kernel<{ to: ComputeDType }> = {
  name: 'cast',
  bindings: ['read', 'write'],
  wgsl: ({ to }) => {
    const from = to === 'i32' ? 'f32' : 'i32';
    return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<${from}>;
@group(0) @binding(1) var<storage, read_write> out: array<${to}>;
struct Params { count: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${flatIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg);
  if (i < params.count) { out[i] = ${to}(x[i]); }
}`;
  },
};

export function cast(gpu: Gpu, x: GpuStorage, dtype: ComputeDType): GpuStorage {
  const out = gpu.alloc(x.size, dtype);
  if (x.dtype === dtype) {
    gpu.copyStorage(x, out);
    return out;
  }
  forEachChunk(gpu, x.size, (start, count) => {
    gpu.dispatch(castKernel, { to: dtype }, [gpu.view(x, start, count), gpu.view(out, start, count)], [count], grid1d(count, WG, gpu.maxWorkgroupsPerDimension));
  });
  return out;
}
