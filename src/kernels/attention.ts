/**
 * Causal attention, forward and backward, flash style. CPU reference: src/tensor/cpu/attention.ts.
 * The KV-cache path (prefill and decode) is in attention-cache.ts and reuses the forward kernel.
 *
 * Forward (`attention_forward`): a workgroup takes BR queries of one (batch, head) pair, one thread
 * per query holding its q row and output accumulator in registers. Key and value tiles of BC rows
 * are staged in workgroup memory and every thread reads them as broadcasts; each thread keeps an
 * online softmax (running max m, sum l, rescaled once per tile), so the [T, T] scores never reach
 * memory. It writes out and logSumExp = m + log l. Query blocks are issued heaviest (last, most
 * keys) first. The same kernel serves cached prefill: queries sit at qPos.., keys are read from a
 * cache with its own row stride, and only rows < qPos + n are ever read.
 *
 * Backward, deterministic and without atomics, recomputing p = exp(scale·q·k − lse):
 *  - `attention_delta`: D_i = dOut_i·out_i, one thread per row;
 *  - `attention_backward_dkdv`: a workgroup per BR keys, one thread per key accumulating dk_j, dv_j
 *    in registers while query/dOut tiles stream through workgroup memory;
 *  - `attention_backward_dq`: a workgroup per BR queries, one thread per query accumulating dq_i
 *    while key/value tiles stream through.
 * Each output element is written by exactly one thread, in a fixed order: bitwise reproducible.
 *
 * Head size is any value: rows are loaded as vec4 with a guard on the tail, and the compile-time
 * parameter is D4 = ceil(hs / 4) (the register tile), never a length or a position. Sequence length,
 * cache position and cache length all travel in uniforms. Tensors larger than one binding are split
 * into groups of whole (batch, head) pairs (forEachUnitWindow). f32 only (no subgroup or f16 path).
 * The loops run over private arrays rather than unrolled named registers, which compile for
 * minutes and run no faster; the tile sizes and the variants tried are in docs/kernels.md.
 */
import type { AttentionShape } from '../tensor/backend.js';
import { forEachUnitWindow } from './binding-windows.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { f32, flatIndexWgsl, grid1d, type Kernel } from './kernel.js';
import { LOWEST_FINITE } from './row-reduction.js';

/** Queries per workgroup (one thread each) in the forward and dq kernels, keys per workgroup in dk/dv. */
const BR = 32;
/** Keys (forward, dq) or queries (dk/dv) staged per tile; shrunk for big heads to fit workgroup memory. */
const MAX_BC = 32;
/** vec4 elements of workgroup memory a kernel's two tiles may use together (16 KiB each). */
const TILE_VEC4 = 1024;

interface TileParams {
  /** ceil(hs / 4): vec4s per row. */
  d4: number;
  br: number;
  bc: number;
}

function tileParams(hs: number): TileParams {
  const d4 = Math.ceil(hs / 4);
  return { d4, br: BR, bc: Math.max(1, Math.min(MAX_BC, Math.floor(TILE_VEC4 / d4))) };
}

/** `fn load_<name>(row, c) -> vec4f`: elements 4c..4c+3 of the row starting at `row`, zero past hs. */
export function loadFn(name: string): string {
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
export function storeFn(name: string): string {
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

/**
 * WGSL that stages rows [first, first + BC) of two [rows, hs] tensors into workgroup tiles of BC × D4
 * vec4s, rows from `end` on as zeros: the workgroup's BR threads share the copy. `tiles` pairs a
 * tensor (its load_<name>) with its tile; rows start at `base` + row · hs.
 */
function stageTilesWgsl(first: string, end: string, base: string, tiles: readonly [tensor: string, tile: string][]): string {
  return /* wgsl */ `
    for (var e = lid; e < BC * D4; e += BR) {
      let stagedRow = ${first} + e / D4;
${tiles.map((_, i) => `      var staged${i} = vec4f(0.0);`).join('\n')}
      if (stagedRow < ${end}) {
${tiles.map(([tensor], i) => `        staged${i} = load_${tensor}(${base} + stagedRow * params.hs, e % D4);`).join('\n')}
      }
${tiles.map(([, tile], i) => `      ${tile}[e] = staged${i};`).join('\n')}
    }`;
}

// --- forward (also cached prefill) ---

const forwardKernel: Kernel<TileParams> = {
  name: 'attention_forward',
  bindings: ['read', 'read', 'read', 'write', 'write'],
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
  var m = ${LOWEST_FINITE};
  var l = 0.0;
  var acc: array<vec4f, D4>;
  for (var kb = 0u; kb < kvEnd; kb += BC) {
${stageTilesWgsl('kb', 'kvEnd', 'kvBase', [['k', 'kTile'], ['v', 'vTile']])}
    workgroupBarrier();
    let visible = min(min(BC, kvEnd - kb), select(0u, last + 1u - kb, last >= kb));
    var s: array<f32, BC>;
    var blockMax = ${LOWEST_FINITE};
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

export interface FlashProblem {
  pairs: number;
  qLen: number;
  qPos: number;
  kvStride: number;
  hs: number;
  /** The pair of k and v that pair 0 of q reads (k and v may hold more pairs: a pooled cache). */
  kvFirstPair?: number;
}

export function flashForward(gpu: Gpu, q: GpuStorage, k: GpuStorage, v: GpuStorage, p: FlashProblem): { out: GpuStorage; lse: GpuStorage } {
  const { pairs, qLen, qPos, kvStride, hs, kvFirstPair = 0 } = p;
  const out = gpu.alloc(pairs * qLen * hs);
  const lse = gpu.alloc(pairs * qLen);
  const params = tileParams(hs);
  const qBlocks = Math.ceil(qLen / params.br);
  const tensors = [
    { storage: q, perUnit: qLen * hs },
    { storage: k, perUnit: kvStride * hs, firstUnit: kvFirstPair },
    { storage: v, perUnit: kvStride * hs, firstUnit: kvFirstPair },
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
  const { B, H, T, hs } = shape;
  const { out, lse } = flashForward(gpu, q, k, v, { pairs: B * H, qLen: T, qPos: 0, kvStride: T, hs });
  return { out, logSumExp: lse };
}

// --- backward ---

/** Shared by the backward kernels: one uniform block for all three. */
const BACKWARD_PARAMS = /* wgsl */ `
struct Params {
  pairs: u32,
  T: u32,
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
  let T = params.T;
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
${stageTilesWgsl('kb', 'kvEnd', 'kvBase', [['k', 'kTile'], ['v', 'vTile']])}
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
  let T = params.T;
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
${stageTilesWgsl('qb', 'T', 'base', [['q', 'qTile'], ['dOut', 'doTile']])}
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
  const { B, H, T, hs } = shape;
  const pairs = B * H;
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
