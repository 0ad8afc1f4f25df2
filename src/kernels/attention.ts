/**
 * Causal attention: forward, backward, and attention against a KV cache (prefill and decode).
 * CPU reference: src/tensor/cpu/attention.ts.
 *
 * Forward (`attention_forward`, flash style): a workgroup takes BR queries of one (batch, head) pair,
 * one thread per query holding its q row and output accumulator in registers. Key and value tiles
 * of BC rows are staged in workgroup memory and every thread reads them as broadcasts; each thread
 * keeps an online softmax (running max m, sum l, rescaled once per tile), so the [T, T] scores never
 * reach memory. It writes out and logSumExp = m + log l. Query blocks are issued heaviest
 * (last, most keys) first. The same kernel serves cached prefill: queries sit at qPos.., keys are
 * read from a cache with its own row stride, and only rows < qPos + n are ever read.
 *
 * Backward, deterministic and without atomics, recomputing p = exp(scale·q·k − lse):
 *  - `attention_delta`: D_i = dOut_i·out_i, one thread per row;
 *  - `attention_backward_dkdv`: a workgroup per BR keys, one thread per key accumulating dk_j, dv_j
 *    in registers while query/dOut tiles stream through workgroup memory;
 *  - `attention_backward_dq`: a workgroup per BR queries, one thread per query accumulating dq_i
 *    while key/value tiles stream through.
 * Each output element is written by exactly one thread, in a fixed order: bitwise reproducible.
 *
 * Decode (`attention_decode` + `attention_decode_combine`, split-K / flash-decoding): with one new
 * query per head there are only B·H queries, far too few threads for a query-parallel kernel, so the
 * visible keys are split into chunks of CK = 32: one thread per (query, chunk) scores its keys into a
 * private array, takes their max, and sums p and p·V into registers, with no workgroup memory and no
 * barrier; the combine pass rescales the chunks' partials by exp(m_c − M). Neighbouring threads take
 * neighbouring chunks of a query, so each SIMD step of llvmpipe streams contiguous cache rows. Used
 * when a call has ≤ DECODE_MAX_QUERIES queries per pair; larger prefills take the flash kernel.
 * The cached ops read q, k, v from c_attn's output in place and write [B, n, C] (see "KV cache" below).
 * The decode kernel also appends the call's keys and values to the cache (reading them from qkv
 * meanwhile), where a separate write pass was one more dispatch a layer: on llvmpipe a dispatch
 * costs ~70 µs however small, most of it waking the driver's worker threads.
 *
 * Head size is any value: rows are loaded as vec4 with a guard on the tail, and the compile-time
 * parameter is D4 = ceil(hs / 4) (the register tile), never a length or a position. Sequence length,
 * cache position and cache length all travel in uniforms. Tensors larger than one binding are split
 * into groups of whole (batch, head) pairs, those of the cached ops into whole sequences
 * (forEachUnitWindow). f32 only (no subgroup or f16 path).
 *
 * Measured on lavapipe (2 shared cores, other jobs running, so ±30%), B=8 H=12 hs=64:
 *   forward  T=128 102 ms (2.0 GFLOP/s), T=1024 6.6 s (1.9 GFLOP/s), counting 2·B·H·T²·hs;
 *   backward T=128 288 ms (1.7 GFLOP/s), T=1024 20.6 s (1.6 GFLOP/s), counting 5·B·H·T²·hs;
 *   decode, 512 cached rows, B=1 H=12: 0.9–1.4 ms (1.9–2.8 GB/s of cache read); H=4 0.5–0.6 ms.
 * (A batched matmul [96, 128, 64, 128] ran at 2.7 GFLOP/s in the same conditions.)
 * Variants tried there, forward T=128: the head and key tile unrolled into named registers ran at
 * 0.8 GFLOP/s and took 9 minutes to compile; named registers with groups of 2–4 keys, 1.4 GFLOP/s
 * (10–17 s to compile); loops over private arrays (kept) 2.2–2.5. BR × BC from 8 to 128 × 16 to 64
 * were within the machine's noise: 32 × 32 kept. vec4 bindings for the flash kernels changed nothing
 * (259 vs 272 ms). Decode, B=1 hs=64, 512 cached rows (load average 4–8, so ±30%): the flash kernel
 * with one query a workgroup took 48 ms where split-K took 4; the earlier split-K kernel (a
 * workgroup of 64 threads per 64-key chunk, thread per key for the scores, tree reductions, p·V
 * thread per column: 16 barriers) took 2.2–3.2 ms at H=12 and 0.75–0.94 at H=4, and 1.2 / 0.6 ms of
 * that with every K and V load removed: on llvmpipe a barrier switches the coroutines of all the
 * workgroup's SIMD steps, so that skeleton, not the loads, was the cost. Four barriers (serial max
 * and sum over workgroup memory) measured the same, and so did 1–16 keys a thread in that scheme.
 * Thread per chunk without barriers (kept): 0.9–1.4 / 0.5–0.6 ms, with chunks of 32 or 64 keys and
 * workgroups of 8 or 16 threads within noise of each other, 16 keys 20% slower.
 */
import type { AttentionShape, CachedAttentionShape } from '../tensor/backend.js';
import { forEachUnitWindow } from './binding-windows.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { f32, flatIndexWgsl, grid1d, type Kernel } from './kernel.js';
import { permute, slice } from './layout.js';

/** Queries per workgroup (one thread each) in the forward and dq kernels, keys per workgroup in dk/dv. */
const BR = 32;
/** Keys (forward, dq) or queries (dk/dv) staged per tile; shrunk for big heads to fit workgroup memory. */
const MAX_BC = 32;
/** vec4 elements of workgroup memory a kernel's two tiles may use together (16 KiB each). */
const TILE_VEC4 = 1024;
/** Keys per decode thread (a chunk), and threads per decode workgroup. */
const CK = 32;
const DECODE_WG = 16;
/** Calls with at most this many new queries per pair use split-K decoding. */
export const DECODE_MAX_QUERIES = 4;
const MASKED = '-1.0e30';

interface TileParams {
  /** ceil(hs / 4): vec4s per row. */
  d4: number;
  br: number;
  bc: number;
}

function tileParams(headSize: number): TileParams {
  const d4 = Math.ceil(headSize / 4);
  return { d4, br: BR, bc: Math.max(1, Math.min(MAX_BC, Math.floor(TILE_VEC4 / d4))) };
}

/** `fn load_<name>(row, c) -> vec4f`: elements 4c..4c+3 of the row starting at `row`, zero past hs. */
function loadFn(name: string): string {
  return /* wgsl */ `
fn load_${name}(row: u32, c: u32) -> vec4f {
  let d = row + c * 4u;
  if (c * 4u + 3u < params.hs) { return vec4f(${name}[d], ${name}[d + 1u], ${name}[d + 2u], ${name}[d + 3u]); }
  var r = vec4f(0.0);
  for (var e = 0u; c * 4u + e < params.hs; e++) { r[e] = ${name}[d + e]; }
  return r;
}`;
}

/** `fn store_<name>(row, c, x)`: the inverse of loadFn. */
function storeFn(name: string): string {
  return /* wgsl */ `
fn store_${name}(row: u32, c: u32, x: vec4f) {
  let d = row + c * 4u;
  if (c * 4u + 3u < params.hs) {
    ${name}[d] = x.x; ${name}[d + 1u] = x.y; ${name}[d + 2u] = x.z; ${name}[d + 3u] = x.w;
    return;
  }
  for (var e = 0u; c * 4u + e < params.hs; e++) { ${name}[d + e] = x[e]; }
}`;
}

// --- forward (also cached prefill) ---

const forwardKernel: Kernel<TileParams> = {
  name: 'attention_forward',
  bindings: ['read', 'read', 'read', 'write', 'write'],
  workgroupSize: ({ br }) => [br, 1, 1],
  wgsl: ({ d4, br, bc }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
struct Params {
  pairs: u32,     // (batch, head) pairs in this dispatch
  qLen: u32,      // queries per pair
  qPos: u32,      // absolute position of query 0: query i sees keys <= qPos + i
  kvLen: u32,     // keys that exist: qPos + qLen
  kvStride: u32,  // rows per pair in k and v
  hs: u32,
  qBlocks: u32,
  scale: f32,
  qOffset: u32,   // element offsets of the binding windows
  kvOffset: u32,
  lseOffset: u32,
}
@group(0) @binding(5) var<uniform> params: Params;
const D4 = ${d4}u;
const BR = ${br}u;
const BC = ${bc}u;
const MASKED = ${MASKED};
var<workgroup> kTile: array<vec4f, ${bc * d4}>;
var<workgroup> vTile: array<vec4f, ${bc * d4}>;
${loadFn('q')}
${loadFn('k')}
${loadFn('v')}
${storeFn('out')}
@compute @workgroup_size(${br})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let group = wid.x + wid.y * nwg.x;
  let pair = group / params.qBlocks;
  if (pair >= params.pairs) { return; }
  let qb = params.qBlocks - 1u - group % params.qBlocks;
  let qi = qb * BR + lid;
  let qRow = params.qOffset + (pair * params.qLen + min(qi, params.qLen - 1u)) * params.hs;
  var qv: array<vec4f, D4>;
  for (var c = 0u; c < D4; c++) { qv[c] = load_q(qRow, c) * params.scale; }
  let last = params.qPos + qi;
  let kvEnd = min(params.kvLen, params.qPos + min(params.qLen, qb * BR + BR));
  let kvBase = params.kvOffset + pair * params.kvStride * params.hs;
  var m = MASKED;
  var l = 0.0;
  var acc: array<vec4f, D4>;
  for (var kb = 0u; kb < kvEnd; kb += BC) {
    for (var e = lid; e < BC * D4; e += BR) {
      let key = kb + e / D4;
      var kk = vec4f(0.0);
      var vv = vec4f(0.0);
      if (key < kvEnd) {
        kk = load_k(kvBase + key * params.hs, e % D4);
        vv = load_v(kvBase + key * params.hs, e % D4);
      }
      kTile[e] = kk;
      vTile[e] = vv;
    }
    workgroupBarrier();
    let visible = min(min(BC, kvEnd - kb), select(0u, last + 1u - kb, last >= kb));
    var s: array<f32, BC>;
    var blockMax = MASKED;
    for (var j = 0u; j < visible; j++) {
      var dot4 = vec4f(0.0);
      for (var c = 0u; c < D4; c++) { dot4 = fma(qv[c], kTile[j * D4 + c], dot4); }
      s[j] = dot4.x + dot4.y + dot4.z + dot4.w;
      blockMax = max(blockMax, s[j]);
    }
    let mNew = max(m, blockMax);
    let correction = exp(m - mNew);
    l *= correction;
    for (var c = 0u; c < D4; c++) { acc[c] *= correction; }
    for (var j = 0u; j < visible; j++) {
      let p = exp(s[j] - mNew);
      l += p;
      for (var c = 0u; c < D4; c++) { acc[c] = fma(vec4f(p), vTile[j * D4 + c], acc[c]); }
    }
    m = mNew;
    workgroupBarrier();
  }
  if (qi < params.qLen) {
    let inv = 1.0 / l;
    for (var c = 0u; c < D4; c++) { store_out(qRow, c, acc[c] * inv); }
    lse[params.lseOffset + pair * params.qLen + qi] = m + log(l);
  }
}`,
};

interface FlashProblem {
  pairs: number;
  qLen: number;
  qPos: number;
  kvStride: number;
  headSize: number;
}

function flashForward(gpu: Gpu, q: GpuStorage, k: GpuStorage, v: GpuStorage, p: FlashProblem): { out: GpuStorage; lse: GpuStorage } {
  const { pairs, qLen, qPos, kvStride, headSize: hs } = p;
  const out = gpu.alloc(pairs * qLen * hs);
  const lse = gpu.alloc(pairs * qLen);
  const params = tileParams(hs);
  const qBlocks = Math.ceil(qLen / params.br);
  const tensors = [
    { storage: q, perUnit: qLen * hs },
    { storage: k, perUnit: kvStride * hs },
    { storage: v, perUnit: kvStride * hs },
    { storage: out, perUnit: qLen * hs },
    { storage: lse, perUnit: qLen },
  ];
  forEachUnitWindow(gpu, pairs, tensors, (_first, count, [wq, wk, wv, wo, wl]) => {
    gpu.dispatch(
      forwardKernel, params,
      [wq.view, wk.view, wv.view, wo.view, wl.view],
      [count, qLen, qPos, qPos + qLen, kvStride, hs, qBlocks, f32(1 / Math.sqrt(hs)), wq.offset, wk.offset, wl.offset],
      grid1d(count * qBlocks, 1, gpu.maxWorkgroupsPerDimension),
    );
  });
  return { out, lse };
}

export function attention(gpu: Gpu, q: GpuStorage, k: GpuStorage, v: GpuStorage, shape: AttentionShape): { out: GpuStorage; logSumExp: GpuStorage } {
  const { batch, heads, seqLen, headSize } = shape;
  const { out, lse } = flashForward(gpu, q, k, v, { pairs: batch * heads, qLen: seqLen, qPos: 0, kvStride: seqLen, headSize });
  return { out, logSumExp: lse };
}

// --- backward ---

/** Shared by the backward kernels: one uniform block for all three. */
const BACKWARD_PARAMS = /* wgsl */ `
struct Params {
  pairs: u32,
  seqLen: u32,
  hs: u32,
  blocks: u32,    // query blocks (dq) or key blocks (dk/dv) per pair; rows for the delta kernel
  scale: f32,
  rowOffset: u32, // element offset of the [pairs, T, hs] windows
  lseOffset: u32, // element offset of the [pairs, T] windows
}`;

const DELTA_WG = 64;

const deltaKernel: Kernel<{ d4: number }> = {
  name: 'attention_delta',
  bindings: ['read', 'read', 'write'],
  workgroupSize: () => [DELTA_WG, 1, 1],
  wgsl: ({ d4 }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> dOut: array<f32>;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> delta: array<f32>;
${BACKWARD_PARAMS}
@group(0) @binding(3) var<uniform> params: Params;
${loadFn('dOut')}
${loadFn('out')}
${flatIndexWgsl(DELTA_WG)}
@compute @workgroup_size(${DELTA_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = flatIndex(gid, nwg);
  if (r >= params.blocks) { return; }
  let row = params.rowOffset + r * params.hs;
  var acc = vec4f(0.0);
  for (var c = 0u; c < ${d4}u; c++) { acc = fma(load_dOut(row, c), load_out(row, c), acc); }
  delta[params.lseOffset + r] = acc.x + acc.y + acc.z + acc.w;
}`,
};

const dqKernel: Kernel<TileParams> = {
  name: 'attention_backward_dq',
  bindings: ['read', 'read', 'read', 'read', 'read', 'read', 'write'],
  workgroupSize: ({ br }) => [br, 1, 1],
  wgsl: ({ d4, br, bc }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> dOut: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
${BACKWARD_PARAMS}
@group(0) @binding(7) var<uniform> params: Params;
const D4 = ${d4}u;
const BR = ${br}u;
const BC = ${bc}u;
var<workgroup> kTile: array<vec4f, ${bc * d4}>;
var<workgroup> vTile: array<vec4f, ${bc * d4}>;
${loadFn('dOut')}
${loadFn('q')}
${loadFn('k')}
${loadFn('v')}
${storeFn('dq')}
@compute @workgroup_size(${br})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let group = wid.x + wid.y * nwg.x;
  let pair = group / params.blocks;
  if (pair >= params.pairs) { return; }
  let T = params.seqLen;
  let qb = params.blocks - 1u - group % params.blocks;
  let qi = qb * BR + lid;
  let row = pair * T + min(qi, T - 1u);
  let qRow = params.rowOffset + row * params.hs;
  var qv: array<vec4f, D4>;
  var dov: array<vec4f, D4>;
  for (var c = 0u; c < D4; c++) {
    qv[c] = load_q(qRow, c) * params.scale;
    dov[c] = load_dOut(qRow, c);
  }
  let rowLse = lse[params.lseOffset + row];
  let rowDelta = delta[params.lseOffset + row];
  let kvEnd = min(T, qb * BR + BR);
  let kvBase = params.rowOffset + pair * T * params.hs;
  var acc: array<vec4f, D4>;
  for (var kb = 0u; kb < kvEnd; kb += BC) {
    for (var e = lid; e < BC * D4; e += BR) {
      let key = kb + e / D4;
      var kk = vec4f(0.0);
      var vv = vec4f(0.0);
      if (key < kvEnd) {
        kk = load_k(kvBase + key * params.hs, e % D4);
        vv = load_v(kvBase + key * params.hs, e % D4);
      }
      kTile[e] = kk;
      vTile[e] = vv;
    }
    workgroupBarrier();
    let visible = min(min(BC, kvEnd - kb), select(0u, qi + 1u - kb, qi >= kb));
    for (var j = 0u; j < visible; j++) {
      var s4 = vec4f(0.0);
      var dp4 = vec4f(0.0);
      for (var c = 0u; c < D4; c++) {
        s4 = fma(qv[c], kTile[j * D4 + c], s4);
        dp4 = fma(dov[c], vTile[j * D4 + c], dp4);
      }
      let p = exp(s4.x + s4.y + s4.z + s4.w - rowLse);
      let ds = vec4f(p * (dp4.x + dp4.y + dp4.z + dp4.w - rowDelta));
      for (var c = 0u; c < D4; c++) { acc[c] = fma(ds, kTile[j * D4 + c], acc[c]); }
    }
    workgroupBarrier();
  }
  if (qi < T) {
    for (var c = 0u; c < D4; c++) { store_dq(qRow, c, acc[c] * params.scale); }
  }
}`,
};

const dkdvKernel: Kernel<TileParams> = {
  name: 'attention_backward_dkdv',
  bindings: ['read', 'read', 'read', 'read', 'read', 'read', 'write', 'write'],
  workgroupSize: ({ br }) => [br, 1, 1],
  wgsl: ({ d4, br, bc }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> dOut: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
${BACKWARD_PARAMS}
@group(0) @binding(8) var<uniform> params: Params;
const D4 = ${d4}u;
const BR = ${br}u;
const BC = ${bc}u;
var<workgroup> qTile: array<vec4f, ${bc * d4}>;
var<workgroup> doTile: array<vec4f, ${bc * d4}>;
var<workgroup> lseTile: array<f32, ${bc}>;
var<workgroup> deltaTile: array<f32, ${bc}>;
${loadFn('dOut')}
${loadFn('q')}
${loadFn('k')}
${loadFn('v')}
${storeFn('dk')}
${storeFn('dv')}
@compute @workgroup_size(${br})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let group = wid.x + wid.y * nwg.x;
  let pair = group / params.blocks;
  if (pair >= params.pairs) { return; }
  let T = params.seqLen;
  let kb = group % params.blocks; // key block 0 sees every query: the heaviest goes first
  let kj = kb * BR + lid;
  let kRow = params.rowOffset + (pair * T + min(kj, T - 1u)) * params.hs;
  var kv: array<vec4f, D4>;
  var vv: array<vec4f, D4>;
  for (var c = 0u; c < D4; c++) {
    kv[c] = load_k(kRow, c) * params.scale;
    vv[c] = load_v(kRow, c);
  }
  let base = params.rowOffset + pair * T * params.hs;
  let lseBase = params.lseOffset + pair * T;
  var dkAcc: array<vec4f, D4>;
  var dvAcc: array<vec4f, D4>;
  for (var qb = kb * BR; qb < T; qb += BC) {
    for (var e = lid; e < BC * D4; e += BR) {
      let query = qb + e / D4;
      var qq = vec4f(0.0);
      var dd = vec4f(0.0);
      if (query < T) {
        qq = load_q(base + query * params.hs, e % D4);
        dd = load_dOut(base + query * params.hs, e % D4);
      }
      qTile[e] = qq;
      doTile[e] = dd;
    }
    for (var i = lid; i < BC; i += BR) {
      let query = min(qb + i, T - 1u);
      lseTile[i] = lse[lseBase + query];
      deltaTile[i] = delta[lseBase + query];
    }
    workgroupBarrier();
    // Queries qb + i with kj <= qb + i < T see this key.
    let first = select(0u, kj - qb, kj > qb);
    let end = min(BC, T - qb);
    for (var i = first; i < end; i++) {
      var s4 = vec4f(0.0);
      var dp4 = vec4f(0.0);
      for (var c = 0u; c < D4; c++) {
        s4 = fma(qTile[i * D4 + c], kv[c], s4);
        dp4 = fma(doTile[i * D4 + c], vv[c], dp4);
      }
      let p = exp(s4.x + s4.y + s4.z + s4.w - lseTile[i]);
      let ds = vec4f(p * (dp4.x + dp4.y + dp4.z + dp4.w - deltaTile[i]));
      for (var c = 0u; c < D4; c++) {
        dvAcc[c] = fma(vec4f(p), doTile[i * D4 + c], dvAcc[c]);
        dkAcc[c] = fma(ds, qTile[i * D4 + c], dkAcc[c]);
      }
    }
    workgroupBarrier();
  }
  if (kj < T) {
    for (var c = 0u; c < D4; c++) {
      store_dk(kRow, c, dkAcc[c] * params.scale);
      store_dv(kRow, c, dvAcc[c]);
    }
  }
}`,
};

export function attentionBackward(
  gpu: Gpu, dOut: GpuStorage, q: GpuStorage, k: GpuStorage, v: GpuStorage, out: GpuStorage, logSumExp: GpuStorage, shape: AttentionShape,
): { dq: GpuStorage; dk: GpuStorage; dv: GpuStorage } {
  const { batch, heads, seqLen: T, headSize: hs } = shape;
  const pairs = batch * heads;
  const size = pairs * T * hs;
  const dq = gpu.alloc(size);
  const dk = gpu.alloc(size);
  const dv = gpu.alloc(size);
  const delta = gpu.alloc(pairs * T);
  const params = tileParams(hs);
  const blocks = Math.ceil(T / params.br);
  const scale = f32(1 / Math.sqrt(hs));
  const rows = (storage: GpuStorage) => ({ storage, perUnit: T * hs });
  const perRow = (storage: GpuStorage) => ({ storage, perUnit: T });
  const tensors = [rows(dOut), rows(q), rows(k), rows(v), rows(out), rows(dq), rows(dk), rows(dv), perRow(logSumExp), perRow(delta)];
  forEachUnitWindow(gpu, pairs, tensors, (_first, count, w) => {
    const [wdo, wq, wk, wv, wout, wdq, wdk, wdv, wlse, wdelta] = w;
    const uniforms = (blockCount: number) => [count, T, hs, blockCount, scale, wq.offset, wlse.offset];
    gpu.dispatch(deltaKernel, { d4: params.d4 }, [wdo.view, wout.view, wdelta.view], uniforms(count * T), grid1d(count * T, DELTA_WG, gpu.maxWorkgroupsPerDimension));
    const grid = grid1d(count * blocks, 1, gpu.maxWorkgroupsPerDimension);
    gpu.dispatch(dkdvKernel, params, [wdo.view, wq.view, wk.view, wv.view, wlse.view, wdelta.view, wdk.view, wdv.view], uniforms(blocks), grid);
    gpu.dispatch(dqKernel, params, [wdo.view, wq.view, wk.view, wv.view, wlse.view, wdelta.view, wdq.view], uniforms(blocks), grid);
  });
  gpu.release(delta);
  return { dq, dk, dv };
}

// --- KV cache ---
// The cached ops read q, k and v straight from c_attn's output qkv [B, n, 3C] (C = H·hs: for token
// (b, t), q of head h at (b·n + t)·3C + h·hs, k at + C, v at + 2C) and write the attention output
// as [B, n, C], the layout c_proj reads: decoding runs no permute or slice copies. Binding windows
// hold whole sequences (forEachUnitWindow over the batch).

const WRITE_WG = 256;

const writeCacheKernel: Kernel = {
  name: 'attention_write_cache',
  bindings: ['read', 'write', 'write'],
  workgroupSize: () => [WRITE_WG, 1, 1],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> kCache: array<f32>;
@group(0) @binding(2) var<storage, read_write> vCache: array<f32>;
struct Params { count: u32, newLen: u32, heads: u32, hs: u32, maxLen: u32, start: u32, qkvOffset: u32, cacheOffset: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${flatIndexWgsl(WRITE_WG)}
@compute @workgroup_size(${WRITE_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg); // over [count sequences, newLen, C]
  if (i >= params.count) { return; }
  let C = params.heads * params.hs;
  let token = i / C;
  let c = i % C;
  let src = params.qkvOffset + token * 3u * C + C + c;
  let pair = (token / params.newLen) * params.heads + c / params.hs;
  let dst = params.cacheOffset + (pair * params.maxLen + params.start + token % params.newLen) * params.hs + c % params.hs;
  kCache[dst] = qkv[src];
  vCache[dst] = qkv[src + C];
}`,
};

function writeCache(gpu: Gpu, kCache: GpuStorage, vCache: GpuStorage, qkv: GpuStorage, shape: CachedAttentionShape): void {
  const { batch, heads, newLen, position, maxLen, headSize: hs } = shape;
  const C = heads * hs;
  const cachePerSequence = heads * maxLen * hs;
  const tensors = [{ storage: qkv, perUnit: newLen * 3 * C }, { storage: kCache, perUnit: cachePerSequence }, { storage: vCache, perUnit: cachePerSequence }];
  forEachUnitWindow(gpu, batch, tensors, (_first, count, [wq, wk, wv]) => {
    // k and v share a layout and a size: their windows have the same offset.
    const elements = count * newLen * C;
    gpu.dispatch(
      writeCacheKernel, undefined, [wq.view, wk.view, wv.view],
      [elements, newLen, heads, hs, maxLen, position, wq.offset, wk.offset],
      grid1d(elements, WRITE_WG, gpu.maxWorkgroupsPerDimension),
    );
  });
}

const DECODE_PARAMS = /* wgsl */ `
struct Params {
  rows: u32,       // (sequence, token, head) rows in this dispatch, token-major like qkv
  newLen: u32,     // tokens per sequence
  heads: u32,
  qPos: u32,       // token t sees cache rows <= qPos + t
  pairStride: u32, // maxLen * hs
  hs: u32,
  chunks: u32,
  scale: f32,
  qOffset: u32,    // element offsets of the windows; q's row (token) stride is 3C, out's C
  kvOffset: u32,
  outOffset: u32,
}`;

interface DecodeParams {
  d4: number;
  /** hs % 4 == 0: qkv, k, v and out bound as vec4 arrays, one load per four elements. */
  vec4: boolean;
}

/** load_<name>(row, c) / store_<name>(row, c, x) for a binding of f32 (guarded tail) or of vec4 (row a multiple of 4). */
function rowAccess(name: string, vec4: boolean, store = false): string {
  if (!vec4) return store ? storeFn(name) : loadFn(name);
  return store
    ? `fn store_${name}(row: u32, c: u32, x: vec4f) { ${name}[row / 4u + c] = x; }`
    : `fn load_${name}(row: u32, c: u32) -> vec4f { return ${name}[row / 4u + c]; }`;
}

const decodeKernel: Kernel<DecodeParams> = {
  name: 'attention_decode',
  bindings: ['read', 'write', 'write', 'write', 'write'],
  workgroupSize: () => [DECODE_WG, 1, 1],
  wgsl: ({ d4, vec4 }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> qkv: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(1) var<storage, read_write> k: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(2) var<storage, read_write> v: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;     // [rows, chunks, 2]: max, sum
@group(0) @binding(4) var<storage, read_write> partial: array<vec4f>; // [rows, chunks, D4]
${DECODE_PARAMS}
@group(0) @binding(5) var<uniform> params: Params;
const CK = ${CK}u;
const D4 = ${d4}u;
const MASKED = ${MASKED};
${rowAccess('qkv', vec4)}
${rowAccess('k', vec4)}
${rowAccess('v', vec4)}
${rowAccess('k', vec4, true)}
${rowAccess('v', vec4, true)}
${flatIndexWgsl(DECODE_WG)}
@compute @workgroup_size(${DECODE_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  // Thread per (row, chunk of CK keys), chunks of a row on neighbouring threads.
  let slot = flatIndex(gid, nwg);
  let row = slot / params.chunks;
  if (row >= params.rows) { return; }
  let chunk = slot % params.chunks;
  let hs = params.hs;
  let C = params.heads * hs;
  let token = row / params.heads;
  let head = row % params.heads;
  let pair = (token / params.newLen) * params.heads + head;
  let last = params.qPos + token % params.newLen;
  let key0 = chunk * CK;
  let count = select(0u, min(CK, last + 1u - key0), last >= key0);
  // Keys before qPos come from the cache; this call's own tokens from qkv, where token qPos + i of
  // the sequence sits i rows after its first. Two loops, not a branch per key: llvmpipe would run
  // both sides of a divergent branch.
  let cached = min(count, select(0u, params.qPos - key0, params.qPos > key0));
  let qRow = params.qOffset + token * 3u * C + head * hs;
  let firstRow = params.qOffset + (token - token % params.newLen) * 3u * C + head * hs;
  let newRow0 = firstRow + (key0 + cached - params.qPos) * 3u * C; // of key cached, when cached < count
  var q: array<vec4f, D4>;
  for (var c = 0u; c < D4; c++) { q[c] = load_qkv(qRow, c) * params.scale; }
  let kvBase = params.kvOffset + pair * params.pairStride + key0 * hs;
  var s: array<f32, CK>;
  var m = MASKED;
  for (var j = 0u; j < cached; j++) {
    var dot4 = vec4f(0.0);
    for (var c = 0u; c < D4; c++) { dot4 = fma(q[c], load_k(kvBase + j * hs, c), dot4); }
    s[j] = dot4.x + dot4.y + dot4.z + dot4.w;
    m = max(m, s[j]);
  }
  for (var j = cached; j < count; j++) {
    var dot4 = vec4f(0.0);
    for (var c = 0u; c < D4; c++) { dot4 = fma(q[c], load_qkv(newRow0 + (j - cached) * 3u * C + C, c), dot4); }
    s[j] = dot4.x + dot4.y + dot4.z + dot4.w;
    m = max(m, s[j]);
  }
  var l = 0.0;
  var acc: array<vec4f, D4>;
  for (var j = 0u; j < cached; j++) {
    let p = exp(s[j] - m);
    l += p;
    for (var c = 0u; c < D4; c++) { acc[c] = fma(vec4f(p), load_v(kvBase + j * hs, c), acc[c]); }
  }
  for (var j = cached; j < count; j++) {
    let p = exp(s[j] - m);
    l += p;
    for (var c = 0u; c < D4; c++) { acc[c] = fma(vec4f(p), load_qkv(newRow0 + (j - cached) * 3u * C + 2u * C, c), acc[c]); }
  }
  stats[slot * 2u] = m;
  stats[slot * 2u + 1u] = l;
  for (var c = 0u; c < D4; c++) { partial[slot * D4 + c] = acc[c]; }
  // The thread whose chunk holds this token's own position appends its key and value to the cache:
  // no thread of this dispatch reads cache rows from qPos on, so the write races with nothing.
  if (last / CK == chunk) {
    let cacheRow = params.kvOffset + pair * params.pairStride + last * hs;
    for (var c = 0u; c < D4; c++) {
      store_k(cacheRow, c, load_qkv(qRow + C, c));
      store_v(cacheRow, c, load_qkv(qRow + 2u * C, c));
    }
  }
}`,
};

const COMBINE_WG = 64;

const combineKernel: Kernel<DecodeParams> = {
  name: 'attention_decode_combine',
  bindings: ['read', 'read', 'write'],
  workgroupSize: () => [COMBINE_WG, 1, 1],
  wgsl: ({ d4, vec4 }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> stats: array<f32>;
@group(0) @binding(1) var<storage, read> partial: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> out: array<${vec4 ? 'vec4f' : 'f32'}>;
${DECODE_PARAMS}
@group(0) @binding(3) var<uniform> params: Params;
const D4 = ${d4}u;
${rowAccess('out', vec4, true)}
@compute @workgroup_size(${COMBINE_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }
  let first = row * params.chunks;
  var m = ${MASKED};
  for (var c = 0u; c < params.chunks; c++) { m = max(m, stats[(first + c) * 2u]); }
  var l = 0.0;
  for (var c = 0u; c < params.chunks; c++) { l += stats[(first + c) * 2u + 1u] * exp(stats[(first + c) * 2u] - m); }
  let inv = 1.0 / l;
  // out [B, n, C]: row (token, head) starts at token·C + head·hs.
  let outRow = params.outOffset + row * params.hs;
  for (var column = lid; column < D4; column += ${COMBINE_WG}u) {
    var acc = vec4f(0.0);
    for (var c = 0u; c < params.chunks; c++) { acc += partial[(first + c) * D4 + column] * exp(stats[(first + c) * 2u] - m); }
    store_out(outRow, column, acc * inv);
  }
}`,
};

function decode(gpu: Gpu, qkv: GpuStorage, kCache: GpuStorage, vCache: GpuStorage, shape: CachedAttentionShape): GpuStorage {
  const { batch, heads, newLen, position, maxLen, headSize: hs } = shape;
  const C = heads * hs;
  const out = gpu.alloc(batch * newLen * C);
  const chunks = Math.ceil((position + newLen) / CK);
  const d4 = Math.ceil(hs / 4);
  const params = { d4, vec4: hs % 4 === 0 };
  const tensors = [
    { storage: qkv, perUnit: newLen * 3 * C },
    { storage: kCache, perUnit: heads * maxLen * hs },
    { storage: vCache, perUnit: heads * maxLen * hs },
    { storage: out, perUnit: newLen * C },
  ];
  forEachUnitWindow(gpu, batch, tensors, (_first, count, [wq, wk, wv, wo]) => {
    const rows = count * newLen * heads;
    const stats = gpu.alloc(rows * chunks * 2);
    const partial = gpu.alloc(rows * chunks * d4 * 4);
    const uniforms = [rows, newLen, heads, position, maxLen * hs, hs, chunks, f32(1 / Math.sqrt(hs)), wq.offset, wk.offset, wo.offset];
    gpu.dispatch(decodeKernel, params, [wq.view, wk.view, wv.view, stats, partial], uniforms, grid1d(rows * chunks, DECODE_WG, gpu.maxWorkgroupsPerDimension));
    gpu.dispatch(combineKernel, params, [stats, partial, wo.view], uniforms, grid1d(rows, 1, gpu.maxWorkgroupsPerDimension));
    gpu.release(stats);
    gpu.release(partial);
  });
  return out;
}

/**
 * Appends the keys and values of qkv [B, n, 3C] to the caches at `position`, then attends its
 * queries to the caches' first position + n rows; returns [B, n, C]. Up to DECODE_MAX_QUERIES
 * tokens: split-K decoding, one dispatch for both (it reads this call's keys and values from qkv
 * and stores them as it goes), then the combine. A longer prefill writes the cache first and runs
 * the flash kernel, with q gathered into [B, H, n, hs] and the output put back as [B, n, C] by
 * strided copies (once per prompt).
 */
export function cachedAttention(gpu: Gpu, qkv: GpuStorage, kCache: GpuStorage, vCache: GpuStorage, shape: CachedAttentionShape): GpuStorage {
  if (shape.newLen <= DECODE_MAX_QUERIES) return decode(gpu, qkv, kCache, vCache, shape);
  writeCache(gpu, kCache, vCache, qkv, shape);
  const { batch: B, heads: H, newLen: n, position, maxLen, headSize: hs } = shape;
  const qTokenMajor = slice(gpu, qkv, [B, n, 3, H, hs], [0, 0, 0, 0, 0], [B, n, 1, H, hs]);
  const q = permute(gpu, qTokenMajor, [B, n, H, hs], [0, 2, 1, 3]); // [B, n, H, hs] → [B, H, n, hs]
  gpu.release(qTokenMajor);
  const { out, lse } = flashForward(gpu, q, kCache, vCache, { pairs: B * H, qLen: n, qPos: position, kvStride: maxLen, headSize: hs });
  gpu.release(q);
  gpu.release(lse);
  const merged = permute(gpu, out, [B, H, n, hs], [0, 2, 1, 3]); // → [B, n, H, hs] = [B, n, C]
  gpu.release(out);
  return merged;
}
