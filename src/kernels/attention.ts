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
 * visible keys are split into chunks of CK: a workgroup per (query, chunk) computes its chunk's
 * scores (thread per key), max and sum by tree reduction, and the partial p·V (thread per dim); the
 * combine pass rescales the partials by exp(m_c − M). p·V gives thread t the vec4 column t % D4 of
 * every (CK / D4)-th key, and the partial sums meet in workgroup memory. Used when a call has
 * ≤ DECODE_MAX_QUERIES queries per pair; larger prefills take the flash kernel. `writeCache` is one
 * element-per-thread dispatch into the preallocated cache.
 *
 * Head size is any value: rows are loaded as vec4 with a guard on the tail, and the compile-time
 * parameter is D4 = ceil(hs / 4) (the register tile), never a length or a position. Sequence length,
 * cache position and cache length all travel in uniforms. Tensors larger than one binding are split
 * into groups of whole (batch, head) pairs (forEachUnitWindow). f32 only (no subgroup or f16 path).
 *
 * Measured on lavapipe (2 shared cores, other jobs running, so ±30%), B=8 H=12 hs=64:
 *   forward  T=128 102 ms (2.0 GFLOP/s), T=1024 6.6 s (1.9 GFLOP/s), counting 2·B·H·T²·hs;
 *   backward T=128 288 ms (1.7 GFLOP/s), T=1024 20.6 s (1.6 GFLOP/s), counting 5·B·H·T²·hs;
 *   decode, 512 cached rows, B=1 H=12: 2.2 ms (1.4 GB/s of cache read).
 * (A batched matmul [96, 128, 64, 128] ran at 2.7 GFLOP/s in the same conditions.)
 * Variants tried there, forward T=128: the head and key tile unrolled into named registers ran at
 * 0.8 GFLOP/s and took 9 minutes to compile; named registers with groups of 2–4 keys, 1.4 GFLOP/s
 * (10–17 s to compile); loops over private arrays (kept) 2.2–2.5. BR × BC from 8 to 128 × 16 to 64
 * were within the machine's noise: 32 × 32 kept. vec4 bindings for the flash kernels changed nothing
 * (259 vs 272 ms). Decode: the flash kernel with one query a workgroup took 48 ms where split-K took
 * 4; vec4 loads with the key-subset p·V took it from 3.3 to 2.2 ms (best of 40).
 */
import type { AttentionShape, CachedAttentionShape } from '../tensor/backend.js';
import { forEachUnitWindow } from './elementwise.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { f32, flatIndexWgsl, grid1d, type Kernel } from './kernel.js';

/** Queries per workgroup (one thread each) in the forward and dq kernels, keys per workgroup in dk/dv. */
const BR = 32;
/** Keys (forward, dq) or queries (dk/dv) staged per tile; shrunk for big heads to fit workgroup memory. */
const MAX_BC = 32;
/** vec4 elements of workgroup memory a kernel's two tiles may use together (16 KiB each). */
const TILE_VEC4 = 1024;
/** Keys per decode chunk = threads per decode workgroup. */
const CK = 64;
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

const WRITE_WG = 256;

const writeCacheKernel: Kernel = {
  name: 'attention_write_cache',
  bindings: ['read', 'write'],
  workgroupSize: () => [WRITE_WG, 1, 1],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> rows: array<f32>;
@group(0) @binding(1) var<storage, read_write> cache: array<f32>;
struct Params { count: u32, rowsPerPair: u32, pairStride: u32, start: u32, rowsOffset: u32, cacheOffset: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${flatIndexWgsl(WRITE_WG)}
@compute @workgroup_size(${WRITE_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg);
  if (i >= params.count) { return; }
  let pair = i / params.rowsPerPair;
  cache[params.cacheOffset + pair * params.pairStride + params.start + i % params.rowsPerPair] = rows[params.rowsOffset + i];
}`,
};

export function writeCache(gpu: Gpu, cache: GpuStorage, rows: GpuStorage, shape: CachedAttentionShape): void {
  const { batch, heads, newLen, position, maxLen, headSize: hs } = shape;
  const tensors = [{ storage: rows, perUnit: newLen * hs }, { storage: cache, perUnit: maxLen * hs }];
  forEachUnitWindow(gpu, batch * heads, tensors, (_first, count, [wr, wc]) => {
    const elements = count * newLen * hs;
    gpu.dispatch(
      writeCacheKernel, undefined, [wr.view, wc.view],
      [elements, newLen * hs, maxLen * hs, position * hs, wr.offset, wc.offset],
      grid1d(elements, WRITE_WG, gpu.maxWorkgroupsPerDimension),
    );
  });
}

const DECODE_PARAMS = /* wgsl */ `
struct Params {
  rows: u32,      // (pair, query) rows in this dispatch
  newLen: u32,    // queries per pair
  qPos: u32,      // query i sees cache rows <= qPos + i
  pairStride: u32, // maxLen * hs
  hs: u32,
  chunks: u32,
  scale: f32,
  qOffset: u32,
  kvOffset: u32,
}`;

interface DecodeParams {
  d4: number;
  /** hs % 4 == 0: q, k, v and out bound as vec4 arrays, one load per four elements. */
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
  bindings: ['read', 'read', 'read', 'write', 'write'],
  workgroupSize: () => [CK, 1, 1],
  wgsl: ({ d4, vec4 }) => {
    const type = vec4 ? 'vec4f' : 'f32';
    // p·V: thread t takes the vec4 column t % D4 of the keys ≡ t / D4 (mod R); R partial sums are
    // then added in workgroup memory. Heads wider than the workgroup loop over columns instead.
    const r = Math.max(1, Math.floor(CK / d4));
    const pv = d4 <= CK
      ? /* wgsl */ `
  let part = lid / D4;
  let column = lid % D4;
  var acc = vec4f(0.0);
  if (part < R) {
    for (var j = part; j < count; j += R) { acc = fma(vec4f(ps[j]), load_v(kvBase + (key0 + j) * hs, column), acc); }
  }
  accs[lid] = acc;
  workgroupBarrier();
  if (part == 0u) {
    for (var other = 1u; other < R; other++) { acc += accs[lid + other * D4]; }
    partial[slot * D4 + column] = acc;
  }`
      : /* wgsl */ `
  for (var column = lid; column < D4; column += CK) {
    var acc = vec4f(0.0);
    for (var j = 0u; j < count; j++) { acc = fma(vec4f(ps[j]), load_v(kvBase + (key0 + j) * hs, column), acc); }
    partial[slot * D4 + column] = acc;
  }`;
    return /* wgsl */ `
@group(0) @binding(0) var<storage, read> q: array<${type}>;
@group(0) @binding(1) var<storage, read> k: array<${type}>;
@group(0) @binding(2) var<storage, read> v: array<${type}>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;     // [rows, chunks, 2]: max, sum
@group(0) @binding(4) var<storage, read_write> partial: array<vec4f>; // [rows, chunks, D4]
${DECODE_PARAMS}
@group(0) @binding(5) var<uniform> params: Params;
const CK = ${CK}u;
const D4 = ${d4}u;
const R = ${r}u;
const MASKED = ${MASKED};
var<workgroup> qs: array<vec4f, ${d4}>;
var<workgroup> maxs: array<f32, ${CK}>;
var<workgroup> sums: array<f32, ${CK}>;
var<workgroup> ps: array<f32, ${CK}>;
var<workgroup> accs: array<vec4f, ${CK}>;
${rowAccess('q', vec4)}
${rowAccess('k', vec4)}
${rowAccess('v', vec4)}
@compute @workgroup_size(${CK})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let group = wid.x + wid.y * nwg.x;
  let chunk = group % params.chunks;
  let row = group / params.chunks;
  if (row >= params.rows) { return; }
  let hs = params.hs;
  let pair = row / params.newLen;
  let last = params.qPos + row % params.newLen;
  let key0 = chunk * CK;
  for (var c = lid; c < D4; c += CK) { qs[c] = load_q(params.qOffset + row * hs, c) * params.scale; }
  workgroupBarrier();
  // Scores: one thread per key.
  let kvBase = params.kvOffset + pair * params.pairStride;
  let key = key0 + lid;
  var s = MASKED;
  if (key <= last) {
    let kRow = kvBase + key * hs;
    var dot4 = vec4f(0.0);
    for (var c = 0u; c < D4; c++) { dot4 = fma(qs[c], load_k(kRow, c), dot4); }
    s = dot4.x + dot4.y + dot4.z + dot4.w;
  }
  maxs[lid] = s;
  workgroupBarrier();
  for (var stride = CK / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { maxs[lid] = max(maxs[lid], maxs[lid + stride]); }
    workgroupBarrier();
  }
  let m = maxs[0];
  let p = select(0.0, exp(s - m), key <= last);
  ps[lid] = p;
  sums[lid] = p;
  workgroupBarrier();
  for (var stride = CK / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { sums[lid] += sums[lid + stride]; }
    workgroupBarrier();
  }
  let count = select(0u, min(CK, last + 1u - key0), last >= key0);
  let slot = row * params.chunks + chunk;
${pv}
  if (lid == 0u) {
    stats[slot * 2u] = m;
    stats[slot * 2u + 1u] = sums[0];
  }
}`;
  },
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
  for (var column = lid; column < D4; column += ${COMBINE_WG}u) {
    var acc = vec4f(0.0);
    for (var c = 0u; c < params.chunks; c++) { acc += partial[(first + c) * D4 + column] * exp(stats[(first + c) * 2u] - m); }
    store_out(params.qOffset + row * params.hs, column, acc * inv);
  }
}`,
};

function decode(gpu: Gpu, q: GpuStorage, kCache: GpuStorage, vCache: GpuStorage, shape: CachedAttentionShape): GpuStorage {
  const { batch, heads, newLen, position, maxLen, headSize: hs } = shape;
  const out = gpu.alloc(q.size);
  const chunks = Math.ceil((position + newLen) / CK);
  const d4 = Math.ceil(hs / 4);
  const params = { d4, vec4: hs % 4 === 0 };
  const tensors = [
    { storage: q, perUnit: newLen * hs },
    { storage: kCache, perUnit: maxLen * hs },
    { storage: vCache, perUnit: maxLen * hs },
    { storage: out, perUnit: newLen * hs },
  ];
  forEachUnitWindow(gpu, batch * heads, tensors, (_first, count, [wq, wk, wv, wo]) => {
    const rows = count * newLen;
    const stats = gpu.alloc(rows * chunks * 2);
    const partial = gpu.alloc(rows * chunks * d4 * 4);
    const uniforms = (qOffset: number) => [rows, newLen, position, maxLen * hs, hs, chunks, f32(1 / Math.sqrt(hs)), qOffset, wk.offset];
    gpu.dispatch(decodeKernel, params, [wq.view, wk.view, wv.view, stats, partial], uniforms(wq.offset), grid1d(rows * chunks, 1, gpu.maxWorkgroupsPerDimension));
    gpu.dispatch(combineKernel, params, [stats, partial, wo.view], uniforms(wo.offset), grid1d(rows, 1, gpu.maxWorkgroupsPerDimension));
    gpu.release(stats);
    gpu.release(partial);
  });
  return out;
}

export function cachedAttention(gpu: Gpu, q: GpuStorage, kCache: GpuStorage, vCache: GpuStorage, shape: CachedAttentionShape): GpuStorage {
  if (shape.newLen <= DECODE_MAX_QUERIES) return decode(gpu, q, kCache, vCache, shape);
  const { batch, heads, newLen, position, maxLen, headSize } = shape;
  const { out, lse } = flashForward(gpu, q, kCache, vCache, { pairs: batch * heads, qLen: newLen, qPos: position, kvStride: maxLen, headSize });
  gpu.release(lse);
  return out;
}
