/**
 * Attention against a KV cache: prefill and decode. CPU reference: cachedAttention in
 * src/tensor/cpu/attention.ts.
 *
 * The cached ops read q, k and v straight from c_attn's output qkv [B, T, 3C] (C = H·hs: for token
 * (b, t), q of head h at (b·T + t)·3C + h·hs, k at + C, v at + 2C) and write the attention output
 * as [B, T, C], the layout c_proj reads: decoding runs no permute or slice copies. Binding windows
 * hold whole sequences (forEachUnitWindow over the batch).
 *
 * Decode (`attention_decode` + `attention_decode_combine`, split-K / flash-decoding): with one new
 * query per head there are only B·H queries, far too few threads for a query-parallel kernel, so the
 * visible keys are split into chunks of CK keys: one thread per (query, chunk) scores its keys into
 * a private array, takes their max, and sums p and p·V into registers, with no workgroup memory and
 * no barrier (on llvmpipe a barrier switches the coroutines of all the workgroup's SIMD steps, and
 * cost more than the loads); the combine pass rescales the chunks' partials by exp(m_c − M).
 * Neighbouring threads take neighbouring chunks of a query, so each SIMD step streams contiguous
 * cache rows. The decode kernel also appends the call's keys and values to the cache (reading them
 * from qkv meanwhile): a separate write pass would be one more dispatch per layer, and a dispatch
 * has a fixed cost however small. Calls with more than DECODE_MAX_QUERIES queries per pair (a
 * prefill) write the cache and take the flash kernel of attention.ts.
 *
 * A call may fill sequences [slot, slot + B) of caches that hold more (a pool of slots, continuous
 * batching's prefill). Continuous batching's decode step (`attention_decode_slots`, slotAttention)
 * is the decode kernel with a slot and a position per row, read from i32 tensors: sequences at
 * different positions decode in one dispatch (plus the combine) per layer.
 * Measurements and the variants tried: docs/kernels.md.
 */
import type { CachedAttentionShape, SlotAttentionShape } from '../tensor/backend.js';
import { flashForward, loadFn, storeFn } from './attention.js';
import { forEachUnitWindow } from './binding-windows.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { f32, flatIndexWgsl, grid1d, type Kernel } from './kernel.js';
import { permute, slice } from './layout.js';
import { LOWEST_FINITE } from './row-reduction.js';

/** Keys per decode thread (a chunk), and threads per decode workgroup. */
const CK = 32;
const DECODE_WG = 16;
/** Calls with at most this many new queries per pair use split-K decoding. */
const DECODE_MAX_QUERIES = 4;
const WRITE_WG = 256;

const writeCacheKernel: Kernel = {
  name: 'attention_write_cache',
  bindings: ['read', 'write', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> kCache: array<f32>;
@group(0) @binding(2) var<storage, read_write> vCache: array<f32>;
struct Params { count: u32, T: u32, H: u32, hs: u32, maxLen: u32, start: u32, qkvOffset: u32, cacheOffset: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${flatIndexWgsl(WRITE_WG)}
@compute @workgroup_size(${WRITE_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flatIndex(gid, nwg); // over [count sequences, T, C]
  if (i >= params.count) { return; }
  let C = params.H * params.hs;
  let token = i / C;
  let c = i % C;
  let src = params.qkvOffset + token * 3u * C + C + c;
  let pair = (token / params.T) * params.H + c / params.hs;
  let dst = params.cacheOffset + (pair * params.maxLen + params.start + token % params.T) * params.hs + c % params.hs;
  kCache[dst] = qkv[src];
  vCache[dst] = qkv[src + C];
}`,
};

function writeCache(gpu: Gpu, kCache: GpuStorage, vCache: GpuStorage, qkv: GpuStorage, shape: CachedAttentionShape): void {
  const { B, H, T, position, maxLen, hs, slot } = shape;
  const C = H * hs;
  const cachePerSequence = H * maxLen * hs;
  const tensors = [
    { storage: qkv, perUnit: T * 3 * C },
    { storage: kCache, perUnit: cachePerSequence, firstUnit: slot },
    { storage: vCache, perUnit: cachePerSequence, firstUnit: slot },
  ];
  forEachUnitWindow(gpu, B, tensors, (_first, count, [wq, wk, wv]) => {
    // k and v share a layout and a size: their windows have the same offset.
    const elements = count * T * C;
    gpu.dispatch(
      writeCacheKernel, undefined, [wq.view, wk.view, wv.view],
      [elements, T, H, hs, maxLen, position, wq.offset, wk.offset],
      grid1d(elements, WRITE_WG, gpu.maxWorkgroupsPerDimension),
    );
  });
}

const DECODE_PARAMS = /* wgsl */ `
struct Params {
  rows: u32,       // (sequence, token, head) rows in this dispatch, token-major like qkv
  T: u32,          // tokens per sequence
  H: u32,
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

/** The split-K kernels' constants and row access: load_qkv, load_k/v and store_k/v, flatIndex. */
function decodePreludeWgsl({ d4, vec4 }: DecodeParams): string {
  return /* wgsl */ `
const CK = ${CK}u;
const D4 = ${d4}u;
${rowAccess('qkv', vec4)}
${rowAccess('k', vec4)}
${rowAccess('v', vec4)}
${rowAccess('k', vec4, true)}
${rowAccess('v', vec4, true)}
${flatIndexWgsl(DECODE_WG)}`;
}

/**
 * Keys [from, to) of a thread's chunk, read where `key` and `value` say (WGSL expressions of the key
 * j and the vec4 column c): the cache, or qkv for keys the call itself brings.
 */
interface KeySpan {
  from: string;
  to: string;
  key: string;
  value: string;
}

/**
 * WGSL for one split-K thread: its query (row qRow of qkv, scaled) against its chunk's keys, span by
 * span (one loop each, not a branch per key: llvmpipe would run both sides of a divergent branch),
 * the scores' max m, the sum l of exp(s − m) and the sum of exp(s − m)·v, stored as the thread's
 * stats and partial for the combine.
 */
function chunkAttentionWgsl(thread: string, spans: readonly KeySpan[]): string {
  return /* wgsl */ `
  var q: array<vec4f, D4>;
  for (var c = 0u; c < D4; c++) { q[c] = load_qkv(qRow, c) * params.scale; }
  var s: array<f32, CK>;
  var m = ${LOWEST_FINITE};
${spans.map(({ from, to, key }) => /* wgsl */ `  for (var j = ${from}; j < ${to}; j++) {
    var dot4 = vec4f(0.0);
    for (var c = 0u; c < D4; c++) { dot4 = fma(q[c], ${key}, dot4); }
    s[j] = dot4.x + dot4.y + dot4.z + dot4.w;
    m = max(m, s[j]);
  }`).join('\n')}
  var l = 0.0;
  var acc: array<vec4f, D4>;
${spans.map(({ from, to, value }) => /* wgsl */ `  for (var j = ${from}; j < ${to}; j++) {
    let p = exp(s[j] - m);
    l += p;
    for (var c = 0u; c < D4; c++) { acc[c] = fma(vec4f(p), ${value}, acc[c]); }
  }`).join('\n')}
  stats[${thread} * 2u] = m;
  stats[${thread} * 2u + 1u] = l;
  for (var c = 0u; c < D4; c++) { partial[${thread} * D4 + c] = acc[c]; }`;
}

/** WGSL that copies the key and value of the token at qkv row qRow into the cache row `cacheRow`. */
function appendKeyValueWgsl(cacheRow: string): string {
  return /* wgsl */ `
    for (var c = 0u; c < D4; c++) {
      store_k(${cacheRow}, c, load_qkv(qRow + C, c));
      store_v(${cacheRow}, c, load_qkv(qRow + 2u * C, c));
    }`;
}

const decodeKernel: Kernel<DecodeParams> = {
  name: 'attention_decode',
  bindings: ['read', 'write', 'write', 'write', 'write'],
  wgsl: (params) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> qkv: array<${params.vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(1) var<storage, read_write> k: array<${params.vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(2) var<storage, read_write> v: array<${params.vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;     // [rows, chunks, 2]: max, sum
@group(0) @binding(4) var<storage, read_write> partial: array<vec4f>; // [rows, chunks, D4]
${DECODE_PARAMS}
@group(0) @binding(5) var<uniform> params: Params;
${decodePreludeWgsl(params)}
@compute @workgroup_size(${DECODE_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  // Thread per (row, chunk of CK keys), chunks of a row on neighbouring threads.
  let thread = flatIndex(gid, nwg);
  let row = thread / params.chunks;
  if (row >= params.rows) { return; }
  let chunk = thread % params.chunks;
  let hs = params.hs;
  let C = params.H * hs;
  let token = row / params.H;
  let head = row % params.H;
  let pair = (token / params.T) * params.H + head;
  let last = params.qPos + token % params.T;
  let key0 = chunk * CK;
  let count = select(0u, min(CK, last + 1u - key0), last >= key0);
  // Keys before qPos come from the cache; this call's own tokens from qkv, where token qPos + i of
  // the sequence sits i rows after its first.
  let cached = min(count, select(0u, params.qPos - key0, params.qPos > key0));
  let qRow = params.qOffset + token * 3u * C + head * hs;
  let firstRow = params.qOffset + (token - token % params.T) * 3u * C + head * hs;
  let newRow0 = firstRow + (key0 + cached - params.qPos) * 3u * C; // of key cached, when cached < count
  let kvBase = params.kvOffset + pair * params.pairStride + key0 * hs;
${chunkAttentionWgsl('thread', [
  { from: '0u', to: 'cached', key: 'load_k(kvBase + j * hs, c)', value: 'load_v(kvBase + j * hs, c)' },
  { from: 'cached', to: 'count', key: 'load_qkv(newRow0 + (j - cached) * 3u * C + C, c)', value: 'load_qkv(newRow0 + (j - cached) * 3u * C + 2u * C, c)' },
])}
  // The thread whose chunk holds this token's own position appends its key and value to the cache:
  // no thread of this dispatch reads cache rows from qPos on, so the write races with nothing.
  if (last / CK == chunk) {
    let cacheRow = params.kvOffset + pair * params.pairStride + last * hs;${appendKeyValueWgsl('cacheRow')}
  }
}`,
};

const COMBINE_WG = 64;

const combineKernel: Kernel<DecodeParams> = {
  name: 'attention_decode_combine',
  bindings: ['read', 'read', 'write'],
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
  var m = ${LOWEST_FINITE};
  for (var c = 0u; c < params.chunks; c++) { m = max(m, stats[(first + c) * 2u]); }
  var l = 0.0;
  for (var c = 0u; c < params.chunks; c++) { l += stats[(first + c) * 2u + 1u] * exp(stats[(first + c) * 2u] - m); }
  let inv = 1.0 / l;
  // out [B, T, C]: row (token, head) starts at token·C + head·hs.
  let outRow = params.outOffset + row * params.hs;
  for (var column = lid; column < D4; column += ${COMBINE_WG}u) {
    var acc = vec4f(0.0);
    for (var c = 0u; c < params.chunks; c++) { acc += partial[(first + c) * D4 + column] * exp(stats[(first + c) * 2u] - m); }
    store_out(outRow, column, acc * inv);
  }
}`,
};

function decode(gpu: Gpu, qkv: GpuStorage, kCache: GpuStorage, vCache: GpuStorage, shape: CachedAttentionShape): GpuStorage {
  const { B, H, T, position, maxLen, hs, slot } = shape;
  const C = H * hs;
  const out = gpu.alloc(B * T * C);
  const chunks = Math.ceil((position + T) / CK);
  const d4 = Math.ceil(hs / 4);
  const params = { d4, vec4: hs % 4 === 0 };
  const tensors = [
    { storage: qkv, perUnit: T * 3 * C },
    { storage: kCache, perUnit: H * maxLen * hs, firstUnit: slot },
    { storage: vCache, perUnit: H * maxLen * hs, firstUnit: slot },
    { storage: out, perUnit: T * C },
  ];
  forEachUnitWindow(gpu, B, tensors, (_first, count, [wq, wk, wv, wo]) => {
    const rows = count * T * H;
    const stats = gpu.alloc(rows * chunks * 2);
    const partial = gpu.alloc(rows * chunks * d4 * 4);
    const uniforms = [rows, T, H, position, maxLen * hs, hs, chunks, f32(1 / Math.sqrt(hs)), wq.offset, wk.offset, wo.offset];
    gpu.dispatch(decodeKernel, params, [wq.view, wk.view, wv.view, stats, partial], uniforms, grid1d(rows * chunks, DECODE_WG, gpu.maxWorkgroupsPerDimension));
    gpu.dispatch(combineKernel, params, [stats, partial, wo.view], uniforms, grid1d(rows, 1, gpu.maxWorkgroupsPerDimension));
    gpu.release(stats);
    gpu.release(partial);
  });
  return out;
}

const slotDecodeKernel: Kernel<DecodeParams> = {
  name: 'attention_decode_slots',
  bindings: ['read', 'read', 'read', 'write', 'write', 'write', 'write'],
  wgsl: (params) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> qkv: array<${params.vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read_write> k: array<${params.vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(4) var<storage, read_write> v: array<${params.vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;     // [rows, chunks, 2]: max, sum
@group(0) @binding(6) var<storage, read_write> partial: array<vec4f>; // [rows, chunks, D4]
struct Params {
  rows: u32,       // (batch row, head) pairs
  H: u32,
  hs: u32,
  chunks: u32,
  scale: f32,
  pairStride: u32, // maxLen * hs
  firstSlot: u32,  // the cache windows hold slots [firstSlot, firstSlot + slotCount)
  slotCount: u32,
  kvOffset: u32,
}
@group(0) @binding(7) var<uniform> params: Params;
${decodePreludeWgsl(params)}
@compute @workgroup_size(${DECODE_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  // Thread per (row, chunk of CK keys), chunks of a row on neighbouring threads.
  let thread = flatIndex(gid, nwg);
  let row = thread / params.chunks;
  if (row >= params.rows) { return; }
  let b = row / params.H;
  let sequence = slots[b] - params.firstSlot; // wraps past slotCount below the window
  if (sequence >= params.slotCount) { return; } // another window's row
  let chunk = thread % params.chunks;
  let hs = params.hs;
  let C = params.H * hs;
  let head = row % params.H;
  let last = positions[b];
  let key0 = chunk * CK;
  let count = select(0u, min(CK, last + 1u - key0), last >= key0);
  let qRow = b * 3u * C + head * hs;
  let kvBase = params.kvOffset + (sequence * params.H + head) * params.pairStride + key0 * hs;
  // The thread whose chunk holds the row's own position appends its key and value before reading
  // them back: no other thread of this dispatch reads that cache row (rows have distinct slots).
  if (last / CK == chunk) {
    let cacheRow = kvBase + (last - key0) * hs;${appendKeyValueWgsl('cacheRow')}
  }
${chunkAttentionWgsl('thread', [{ from: '0u', to: 'count', key: 'load_k(kvBase + j * hs, c)', value: 'load_v(kvBase + j * hs, c)' }])}
}`,
};

/**
 * Continuous batching's decode step (SlotAttentionShape): one query per (row, head), each in its own
 * cache slot at its own position, split-K over chunks of CK keys up to the longest row's, then the
 * same combine as `decode`. A row's chunks past its own length score no key and add exact zeros in
 * the combine, so each row's output equals decoding it alone, bit for bit. Cache windows hold whole
 * slots: a pool larger than one binding runs the decode kernel once per window, each row's threads
 * working in its slot's window only; qkv, the output and the partials are bound whole.
 */
export function slotAttention(
  gpu: Gpu, qkv: GpuStorage, kCache: GpuStorage, vCache: GpuStorage, slots: GpuStorage, positions: GpuStorage, shape: SlotAttentionShape,
): GpuStorage {
  const { B, H, hs, slots: S, maxLen, longest } = shape;
  const rows = B * H;
  const out = gpu.alloc(rows * hs);
  const chunks = Math.ceil(longest / CK);
  const d4 = Math.ceil(hs / 4);
  const params = { d4, vec4: hs % 4 === 0 };
  const scale = f32(1 / Math.sqrt(hs));
  const stats = gpu.alloc(rows * chunks * 2);
  const partial = gpu.alloc(rows * chunks * d4 * 4);
  const cache = (storage: GpuStorage) => ({ storage, perUnit: H * maxLen * hs });
  forEachUnitWindow(gpu, S, [cache(kCache), cache(vCache)], (first, count, [wk, wv]) => {
    gpu.dispatch(
      slotDecodeKernel, params, [qkv, slots, positions, wk.view, wv.view, stats, partial],
      [rows, H, hs, chunks, scale, maxLen * hs, first, count, wk.offset],
      grid1d(rows * chunks, DECODE_WG, gpu.maxWorkgroupsPerDimension),
    );
  });
  gpu.dispatch(combineKernel, params, [stats, partial, out], [rows, 1, H, 0, maxLen * hs, hs, chunks, scale, 0, 0, 0], grid1d(rows, 1, gpu.maxWorkgroupsPerDimension));
  gpu.release(stats);
  gpu.release(partial);
  return out;
}

/**
 * Appends the keys and values of qkv [B, T, 3C] to the caches at `position`, then attends its
 * queries to the caches' first position + T rows; returns [B, T, C]. Up to DECODE_MAX_QUERIES
 * tokens: split-K decoding, one dispatch for both (it reads this call's keys and values from qkv
 * and stores them as it goes), then the combine. A longer prefill writes the cache first and runs
 * the flash kernel, with q gathered into [B, H, T, hs] and the output put back as [B, T, C] by
 * strided copies (once per prompt).
 */
export function cachedAttention(gpu: Gpu, qkv: GpuStorage, kCache: GpuStorage, vCache: GpuStorage, shape: CachedAttentionShape): GpuStorage {
  if (shape.T <= DECODE_MAX_QUERIES) return decode(gpu, qkv, kCache, vCache, shape);
  writeCache(gpu, kCache, vCache, qkv, shape);
  const { B, H, T, position, maxLen, hs, slot } = shape;
  const qTokenMajor = slice(gpu, qkv, [B, T, 3, H, hs], [0, 0, 0, 0, 0], [B, T, 1, H, hs]);
  const q = permute(gpu, qTokenMajor, [B, T, H, hs], [0, 2, 1, 3]); // [B, T, H, hs] → [B, H, T, hs]
  gpu.release(qTokenMajor);
  const { out, lse } = flashForward(gpu, q, kCache, vCache, { pairs: B * H, qLen: T, qPos: position, kvStride: maxLen, hs, kvFirstPair: slot * H });
  gpu.release(q);
  gpu.release(lse);
  const merged = permute(gpu, out, [B, H, T, hs], [0, 2, 1, 3]); // → [B, T, H, hs] = [B, T, C]
  gpu.release(out);
  return merged;
}
