/**
 * Embedding gather and its backward (the table's gradient). CPU reference: src/tensor/cpu/embedding.ts.
 *
 * Gather (`embedding_gather`): one workgroup per token, threads over the row's columns; an f16 or
 * bf16 table (a frozen weight, two values to a u32 word) is widened as it is read.
 *
 * Backward, deterministic without float atomics (WebGPU has none), by a counting sort of the ids:
 *  - `embedding_sort`, one workgroup: (1) walks the ids in chunks of SORT_WG in order; each thread
 *    counts the equal ids before it in its chunk (a scan of the chunk in workgroup memory), adds the
 *    count of that id in earlier chunks, and that is its rank among the tokens of its id; the last
 *    thread of each id in the chunk updates the count. (2) An exclusive scan of the counts over the
 *    vocabulary gives each id's start. (3) order[start[id] + rank] = token. Tokens of one id are
 *    listed in increasing position: the order is a function of the ids alone.
 *  - `embedding_backward_rows`: a workgroup per ROWS_PER_GROUP vocabulary rows sums, for each, the
 *    dOut rows listed for its id in that order (or writes zeros), one thread per column (per four
 *    columns when C is a multiple of 4: on llvmpipe every per-lane store is a scatter, so four
 *    columns a store halve the stores): every element of the gradient written once, dOut read
 *    once, bitwise reproducible. The sort makes the backward cost about what writing its output
 *    costs, where a scan of all n ids per vocabulary row is O(V · n) (docs/kernels.md,
 *    embedding_bwd). A long run of one id (padding) is summed by one workgroup, which serializes
 *    its adds; splitting long runs would be the remedy if it ever showed.
 *
 * Tables larger than one binding (GPT-2 medium's wte is 206 MB, the [50257, 1024] test 196 MiB) are
 * split into windows of whole vocabulary rows (forEachUnitWindow: each window bound from an aligned
 * element, the rest passed as an offset); so are the token rows of out and dOut. The gather runs
 * once per (output window, table window) and a token writes only in the table window holding its
 * id; the backward runs once per (gradient window, dOut window), adding later dOut windows in order.
 * Ids outside [0, V) are an error the CPU reference reports; here they are clamped (never an
 * out-of-bounds read).
 */
import type { HalfDType } from '../tensor/backend.js';
import { halfOrF32, type Gpu, type GpuStorage } from './gpu.js';
import { forEachUnitWindow, type UnitWindow } from './binding-windows.js';
import { grid1d, type Kernel } from './kernel.js';
import { unpackHalfWgsl } from './unpack-half.js';

/** Threads per token row (gather) and per vocabulary row (backward). */
const ROW_WG = 64;
/**
 * Vocabulary rows one backward workgroup walks in turn: at a small C a row is one pass of the
 * workgroup's threads, and starting a workgroup per row costs more than the row.
 */
const ROWS_PER_GROUP = 8;
/** Threads of the single sorting workgroup: also the chunk of ids ranked at a time. */
const SORT_WG = 256;

/** `table`: the table's storage; f16 and bf16 are two to a u32 word (see unpack-half.ts). */
const gatherKernel: Kernel<{ table: 'f32' | HalfDType }> = {
  name: 'embedding_gather',
  bindings: ['read', 'read', 'write'],
  wgsl: ({ table }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> table: array<${table === 'f32' ? 'f32' : 'u32'}>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
struct Params {
  tokens: u32,       // tokens in this output window
  C: u32,
  V: u32,
  firstToken: u32,   // the window's first token
  outOffset: u32,    // element offset of that token's row inside the out binding
  tableFirst: u32,   // first vocabulary row of the table window
  tableRows: u32,
  tableOffset: u32,  // element offset of that row inside the table binding
}
@group(0) @binding(3) var<uniform> params: Params;
${table === 'f32' ? '' : unpackHalfWgsl(table)}
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= params.tokens) { return; }
  let id = u32(clamp(ids[params.firstToken + t], 0, i32(params.V) - 1));
  if (id < params.tableFirst || id - params.tableFirst >= params.tableRows) { return; }
  let src = params.tableOffset + (id - params.tableFirst) * params.C;
  let dst = params.outOffset + t * params.C;
  for (var c = lid; c < params.C; c += ${ROW_WG}u) { out[dst + c] = ${table === 'f32' ? 'table[src + c]' : 'unpackHalf(table[(src + c) >> 1u])[(src + c) & 1u]'}; }
}`,
};

const sortKernel: Kernel = {
  name: 'embedding_sort',
  bindings: ['read', 'write', 'write', 'write'],
  wgsl: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read_write> start: array<u32>; // [V + 1]: counts, then starts
@group(0) @binding(2) var<storage, read_write> rank: array<u32>;  // [n]
@group(0) @binding(3) var<storage, read_write> order: array<u32>; // [n]
struct Params { n: u32, V: u32 }
@group(0) @binding(4) var<uniform> params: Params;
var<workgroup> chunkIds: array<u32, ${SORT_WG}>;
var<workgroup> segment: array<u32, ${SORT_WG}>;
fn idAt(i: u32) -> u32 { return u32(clamp(ids[i], 0, i32(params.V) - 1)); }
@compute @workgroup_size(${SORT_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = params.n;
  let len = params.V + 1u;
  for (var v = lid; v < len; v += ${SORT_WG}u) { start[v] = 0u; }
  storageBarrier();
  // (1) Ranks, chunk by chunk in token order.
  for (var base = 0u; base < n; base += ${SORT_WG}u) {
    let i = base + lid;
    let valid = i < n;
    var id = 0xffffffffu;
    if (valid) { id = idAt(i); }
    chunkIds[lid] = id;
    workgroupBarrier();
    let chunk = min(${SORT_WG}u, n - base);
    var before = 0u;
    var last = valid;
    for (var j = 0u; j < chunk; j++) {
      let same = chunkIds[j] == id;
      before += select(0u, 1u, same && j < lid);
      last = last && !(same && j > lid);
    }
    var seen = 0u;
    if (valid) {
      seen = start[id];
      rank[i] = seen + before;
    }
    storageBarrier(); // every read of this id's count precedes its update
    if (last) { start[id] = seen + before + 1u; }
    storageBarrier();
    workgroupBarrier(); // chunkIds is rewritten next
  }
  // (2) Exclusive scan of the counts: each thread scans a contiguous segment.
  let per = (len + ${SORT_WG - 1}u) / ${SORT_WG}u;
  let lo = min(lid * per, len);
  let hi = min(lo + per, len);
  var total = 0u;
  for (var k = lo; k < hi; k++) { total += start[k]; }
  segment[lid] = total;
  workgroupBarrier();
  for (var offset = 1u; offset < ${SORT_WG}u; offset *= 2u) {
    var add = 0u;
    if (lid >= offset) { add = segment[lid - offset]; }
    workgroupBarrier();
    segment[lid] += add;
    workgroupBarrier();
  }
  var running = segment[lid] - total;
  for (var k = lo; k < hi; k++) {
    let count = start[k];
    start[k] = running;
    running += count;
  }
  storageBarrier();
  // (3) Placement.
  for (var i = lid; i < n; i += ${SORT_WG}u) { order[start[idAt(i)] + rank[i]] = i; }
}`,
};

/** `vec4`: dOut and the gradient are read and written four columns at a time (C, offsets: multiples of 4). */
const backwardRowsKernel: Kernel<{ vec4: boolean }> = {
  name: 'embedding_backward_rows',
  bindings: ['read', 'read', 'read', 'write'],
  wgsl: ({ vec4 }) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> start: array<u32>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read> dOut: array<${vec4 ? 'vec4f' : 'f32'}>;
@group(0) @binding(3) var<storage, read_write> grad: array<${vec4 ? 'vec4f' : 'f32'}>;
// Columns and offsets count vec4s when vec4 is set.
struct Params {
  rows: u32,         // vocabulary rows in this gradient window
  C: u32,
  firstRow: u32,     // the window's first vocabulary row
  gradOffset: u32,   // element offset of that row inside the grad binding
  firstToken: u32,   // tokens [firstToken, firstToken + tokens) are in the dOut window
  tokens: u32,
  dOutOffset: u32,   // element offset of firstToken's row inside the dOut binding
  accumulate: u32,   // 1: add to what an earlier dOut window wrote
}
@group(0) @binding(4) var<uniform> params: Params;
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let firstOfGroup = (wid.x + wid.y * nwg.x) * ${ROWS_PER_GROUP}u;
  let C = params.C;
  for (var row = firstOfGroup; row < min(firstOfGroup + ${ROWS_PER_GROUP}u, params.rows); row++) {
    let v = params.firstRow + row;
    let begin = start[v];
    let end = start[v + 1u];
    let dst = params.gradOffset + row * C;
    for (var c = lid; c < C; c += ${ROW_WG}u) {
      var acc = ${vec4 ? 'vec4f()' : '0.0'};
      for (var k = begin; k < end; k++) {
        let t = order[k] - params.firstToken; // wraps past tokens for those before the window
        if (t < params.tokens) { acc += dOut[params.dOutOffset + t * C + c]; }
      }
      if (params.accumulate != 0u) { grad[dst + c] += acc; } else { grad[dst + c] = acc; }
    }
  }
}`,
};

export function embedding(gpu: Gpu, ids: GpuStorage, table: GpuStorage, n: number, V: number, C: number): GpuStorage {
  const out = gpu.alloc(n * C);
  if (n * C === 0) return out;
  forEachUnitWindow(gpu, n, [{ storage: out, perUnit: C }], (firstToken, tokens, [wo]) => {
    forEachUnitWindow(gpu, V, [{ storage: table, perUnit: C }], (tableFirst, tableRows, [wt]) => {
      gpu.dispatch(
        gatherKernel, { table: halfOrF32(table) }, [ids, wt.view, wo.view],
        [tokens, C, V, firstToken, wo.offset, tableFirst, tableRows, wt.offset],
        grid1d(tokens, 1, gpu.maxWorkgroupsPerDimension),
      );
    });
  });
  return out;
}

export function embeddingBackward(gpu: Gpu, ids: GpuStorage, dOut: GpuStorage, n: number, V: number, C: number): GpuStorage {
  const grad = gpu.alloc(V * C);
  if (V * C === 0) return grad;
  const start = gpu.alloc(V + 1, 'i32');
  const rank = gpu.alloc(Math.max(1, n), 'i32');
  const order = gpu.alloc(Math.max(1, n), 'i32');
  gpu.dispatch(sortKernel, undefined, [ids, start, rank, order], [n, V], [1, 1, 1]);
  // dOut windows (one, unless dOut exceeds a binding); with no tokens, one empty window writes zeros.
  const dOutWindows: { first: number; count: number; window: UnitWindow }[] = [];
  if (n === 0) dOutWindows.push({ first: 0, count: 0, window: { view: gpu.view(start, 0, 1), offset: 0 } }); // read never
  else forEachUnitWindow(gpu, n, [{ storage: dOut, perUnit: C }], (first, count, [w]) => dOutWindows.push({ first, count, window: w }));
  dOutWindows.forEach(({ first, count, window }, k) => {
    // Every window starts at an aligned element and whole rows follow, so C % 4 == 0 keeps offsets and sizes in vec4s.
    const vec4 = count > 0 && C % 4 === 0 && window.offset % 4 === 0;
    const w = vec4 ? 4 : 1;
    forEachUnitWindow(gpu, V, [{ storage: grad, perUnit: C }], (firstRow, rows, [wg]) => {
      gpu.dispatch(
        backwardRowsKernel, { vec4 }, [start, order, window.view, wg.view],
        [rows, C / w, firstRow, wg.offset / w, first, count, window.offset / w, k === 0 ? 0 : 1],
        grid1d(rows, ROWS_PER_GROUP, gpu.maxWorkgroupsPerDimension),
      );
    });
  });
  for (const s of [start, rank, order]) gpu.release(s);
  return grad;
}
