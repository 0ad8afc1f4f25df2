/**
 * Batched matmul C = op(A) · op(B) (+ bias over the last axis), with transposes and a shared B:
 * WGSL generation and the chunked dispatch. CPU reference: src/tensor/cpu/matmul.ts. Splitting
 * operands larger than one binding: matmul-plan.ts. Which variant runs (the candidates, the tuner,
 * the remembered choice, the fit to a shape) and the Backend's matmul: matmul-tune.ts.
 *
 * Variants (compile-time parameters; MATMUL_VARIANTS in matmul-tune.ts names the tuned candidates):
 *  - `block`: each thread owns a tm × tn block of C in registers and reads A and B from global
 *    memory, vec4 along their contiguous axis where ld, offsets and batch strides are multiples of
 *    4 (scalar loads otherwise: a compile-time flag), a slab of K at a time;
 *  - `block` with `share`: the same, but the lanes of a subgroup load A together (lane i the
 *    element k + i of each row) and pass it round with subgroupBroadcast (needs `subgroups`);
 *  - `tiled`: a workgroup stages bk-deep slabs of A and B in workgroup memory (the usual GPU kernel);
 *  - `rows`: A·Bᵀ or A·B for up to 64 rows, a subgroup's lanes splitting K (not tuned: chosen by shape).
 * The store adds the bias and applies the epilogue (MatmulEpilogue: GELU, then a residual add; the
 * chunk that completes a split K applies it), which spares decoding a dispatch per fused op.
 * Ragged M, N, K are handled by clamped loads and guarded stores, never by padding. Each slab's
 * products sum into their own partial before joining the accumulator, which halves f32 rounding.
 *
 * Why `share` wins on a CPU-backed driver (llvmpipe runs 8 invocations per SIMD register): an FMA is
 * cheap there and a load is not. A load whose address differs per lane becomes a loop over the
 * lanes; a load with one address for all lanes is a bounds-checked scalar load. Sharing turns 8
 * uniform loads of A into one per-lane load and 8 broadcasts, leaving B's loads, which 8 rows a
 * thread amortize (12 or 16 rows spill registers). Workgroup-memory tiles lose there: a barrier is
 * a coroutine switch, and reading workgroup memory at per-lane addresses is the same lane loop as
 * reading a buffer, on top of staging it. A GPU is expected to prefer `tiled` (the default there
 * until tuned). Workgroups walk down M first (x), so consecutive ones reuse the same panel of B
 * from cache. N not a multiple of 4 (the vocabulary, 50257, with B untransposed) falls back to
 * scalar B loads; GPT-2's own head multiplies by wteᵀ, whose rows are along K: vec4.
 *
 * B may be f16 or bf16 (a weight stored in 16 bits, two to a u32 word): loadB / loadB4 widen it
 * with unpackHalf (unpack-half.ts: core WGSL, so every adapter runs it), a vec4 being one vec2u; the
 * arithmetic stays f32. Decoding streams B once a token, so half the bytes of B is nearly half the time there. Not
 * `shader-f16` arrays where granted: on lavapipe their loads made decoding slower (docs/kernels.md).
 *
 * Decoding's x·W (M = the rows of a step) runs these kernels with tm shrunk to M (matmulVariant), which
 * makes them matrix-vector products that stream B once; from 9 rows on, where the adapter has
 * subgroups, it runs `rows` (rowsUntransposedBWgsl) instead. Its output head x·wteᵀ, where B is the
 * whole vocabulary table, runs `rows` (rowsWgsl): every row of A is loaded once per workgroup
 * instead of once per thread, so 16 rows cost little more than one. The measurements and the
 * variants tried and dropped are in docs/kernels.md.
 */
import type { DType, HalfDType, MatmulEpilogue, MatmulShape } from '../tensor/backend.js';
import { elementBytes, halfOrF32, type Gpu, type GpuStorage } from './gpu.js';
import { GELU_WGSL } from './gelu.js';
import type { Kernel } from './kernel.js';
import { unpackHalfWgsl } from './unpack-half.js';
import { planMatmul, type MatmulChunk, type MatmulLimits, type MatmulPlan, type Window } from './matmul-plan.js';

export interface MatmulVariant {
  /** `block`: each thread computes a tm × tn block of C from global memory, no workgroup memory.
   *  `tiled`: a workgroup stages bk-deep slabs of A and B in workgroup memory, then each thread
   *  computes tm × tn from there.
   *  `rows`: A·Bᵀ or A·B for a few rows (decoding's output head and x·W): a workgroup of one
   *  subgroup (wgx lanes) holds tm rows of A and walks tn columns, its lanes splitting K (see
   *  rowsWgsl, rowsUntransposedBWgsl). Not tuned: matmul-tune.ts picks it by shape. */
  kind: 'block' | 'tiled' | 'rows';
  /** Rows and columns of C per thread (`rows`: per workgroup). */
  tm: number;
  tn: number;
  /** Threads per workgroup along N (x) and M (y). */
  wgx: number;
  wgy: number;
  /** tiled only: depth of the K slab held in workgroup memory. */
  bk: number;
  /** block only: the lanes of a subgroup (of at least this many) load A together and pass it round
   *  with subgroupBroadcast; 0 = every thread loads its own. Needs wgy = 1. */
  share: number;
}

/** What a variant's support and the choice of one depend on besides measurements. */
export interface AdapterTraits {
  description: string;
  /** The `subgroups` feature was granted. */
  subgroups: boolean;
  /** Smallest subgroup the adapter may use (0 when unknown). */
  subgroupMinSize: number;
}

/** Whether a variant can run on this adapter (sharing needs subgroups at least `share` wide, `rows` a subgroup per workgroup). */
export function variantSupported(v: MatmulVariant, t: AdapterTraits): boolean {
  if (v.kind === 'rows') return t.subgroups && t.subgroupMinSize >= v.wgx;
  return v.share === 0 || (t.subgroups && t.subgroupMinSize >= v.share && v.wgy === 1);
}

interface MatmulParams extends MatmulVariant {
  transA: boolean;
  transB: boolean;
  /** A / B declared as vec4 arrays and read four elements at a time along their contiguous axis. */
  vecA: boolean;
  vecB: boolean;
  /** B's storage: f32, or f16 / bf16 two to a u32 word (a frozen weight), widened as it is read. */
  bDType: 'f32' | HalfDType;
  bias: boolean;
  /** C += product (a later chunk of a split K). */
  accumulate: boolean;
  /** The epilogue (MatmulEpilogue), applied by the chunk that completes K: gelu, then + residual. */
  gelu: boolean;
  residual: boolean;
  /** `rows` only: K slices of 4·wgx depths each lane holds (a compile-time count, so they stay in registers). */
  slices: number;
}

const XYZW = ['x', 'y', 'z', 'w'];
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

const DECLARATIONS = (p: MatmulParams): string => /* wgsl */ `
@group(0) @binding(0) var<storage, read> A: array<${p.vecA ? 'vec4f' : 'f32'}>;
@group(0) @binding(1) var<storage, read> B: array<${bType(p)}>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>; // C's layout
@group(0) @binding(4) var<storage, read_write> C: array<f32>;
// Sizes of this chunk; leading dimensions, element offsets into the bound windows and batch
// strides of the whole operands.
struct Params {
  m: u32, n: u32, k: u32,
  lda: u32, ldb: u32, ldc: u32,
  offA: u32, offB: u32, offC: u32, offBias: u32,
  strideA: u32, strideB: u32, strideC: u32,
}
@group(0) @binding(5) var<uniform> p: Params;
fn loadA(i: u32) -> f32 { return ${p.vecA ? 'A[i >> 2u][i & 3u]' : 'A[i]'}; }
${loadBWgsl(p)}
${p.gelu ? GELU_WGSL : ''}`;

/** B's element type: four values a vec4 load (vecB), two 16-bit values to a u32 word. */
function bType(p: MatmulParams): string {
  if (p.bDType !== 'f32') return p.vecB ? 'vec2u' : 'u32';
  return p.vecB ? 'vec4f' : 'f32';
}

/** loadB(i): element i of B as f32; with vecB, loadB4(i): elements i..i+3 (i a multiple of 4). */
function loadBWgsl(p: MatmulParams): string {
  if (p.bDType === 'f32') {
    return [
      `fn loadB(i: u32) -> f32 { return ${p.vecB ? 'B[i >> 2u][i & 3u]' : 'B[i]'}; }`,
      p.vecB ? 'fn loadB4(i: u32) -> vec4f { return B[i >> 2u]; }' : '',
    ].join('\n');
  }
  const unpack = unpackHalfWgsl(p.bDType);
  if (!p.vecB) return [unpack, 'fn loadB(i: u32) -> f32 { return unpackHalf(B[i >> 1u])[i & 1u]; }'].join('\n');
  return [
    unpack,
    'fn loadB(i: u32) -> f32 { return unpackHalf(B[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }',
    'fn loadB4(i: u32) -> vec4f { let w = B[i >> 2u]; return vec4f(unpackHalf(w.x), unpackHalf(w.y)); }',
  ].join('\n');
}

/** The value stored at C[at]: the product's sum, then accumulation, bias, gelu and residual. */
function epilogueWgsl(p: MatmulParams, at: string, sum: string, bias: string): string {
  let value = `${p.accumulate ? `C[${at}] + ` : ''}${sum} + ${bias}`;
  if (p.gelu) value = `gelu(${value})`;
  return p.residual ? `${value} + residual[${at}]` : value;
}

/** The epilogue: bias, accumulation, gelu and residual, and the bounds check every ragged edge relies on. */
function storeWgsl(p: MatmulParams, row: (r: number) => string, col: (c: number) => string): string {
  const lines: string[] = ['  let baseC = p.offC + wid.z * p.strideC;'];
  for (const c of range(p.tn)) {
    lines.push(`  let bias${c} = ${p.bias ? `bias[p.offBias + min(${col(c)}, p.n - 1u)]` : '0.0'};`);
  }
  for (const r of range(p.tm)) {
    lines.push(`  if (${row(r)} < p.m) {`, `    let rowC = baseC + (${row(r)}) * p.ldc;`);
    for (const c of range(p.tn)) {
      const at = `rowC + ${col(c)}`;
      lines.push(`    if (${col(c)} < p.n) { C[${at}] = ${epilogueWgsl(p, at, `acc${r}_${c}`, `bias${c}`)}; }`);
    }
    lines.push('  }');
  }
  return lines.join('\n');
}

/**
 * `block`: thread (x, y) of workgroup (X, Y) owns rows [(Y·wgy + y)·tm, +tm) and columns
 * [(X·wgx + x)·tn, +tn) of C and reads A and B straight from global memory, a slab of K at a time.
 * Rows and columns past the edge are clamped to the last valid one for loading (no padding, no
 * branches in the inner loop) and skipped when storing. With `share` (subgroups of at least that
 * many lanes, wgy = 1 so a subgroup shares its rows): the lanes load a slab of A together, lane i
 * the element k + i of each row, and hand the values round with subgroupBroadcast, instead of
 * every lane loading every element of A itself.
 */
function blockWgsl(p: MatmulParams): string {
  const shared = p.share > 0;
  const S = slabDepth(p);
  return [
    shared ? 'enable subgroups;' : '',
    DECLARATIONS(p),
    '',
    `@compute @workgroup_size(${p.wgx}, ${p.wgy}, 1)`,
    `fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u${shared ? ', @builtin(subgroup_invocation_id) lane: u32' : ''}) {`,
    ...blockSetup(p),
    '  var k = 0u;',
    `  for (; k + ${S}u <= p.k; k += ${S}u) {`,
    ...blockSlab(p),
    '  }',
    ...blockRemainder(p),
    storeWgsl(p, (r) => `row0 + ${r}u`, (c) => `col0 + ${c}u`),
    '}',
  ].join('\n');
}

/** K per slab of the block kernel: one value per lane of a sharing subgroup, else one vec4. */
const slabDepth = (p: MatmulParams): number => (p.share > 0 ? p.share : 4);

/** The thread's clamped rows r<i> and columns c<j>, each operand's addressing, the accumulators. */
function blockSetup(p: MatmulParams): string[] {
  const { tm, tn, wgx, wgy, share } = p;
  const R = range(tm);
  const Cs = range(tn);
  return [
    `  let row0 = (wid.x * ${wgy}u + lid.y) * ${tm}u;`,
    `  let col0 = (wid.y * ${wgx}u + lid.x) * ${tn}u;`,
    // Subgroup operations need every lane present: those past the edge compute on clamped data.
    share > 0 ? '' : '  if (row0 >= p.m || col0 >= p.n) { return; }',
    '  let baseA = p.offA + wid.z * p.strideA;',
    '  let baseB = p.offB + wid.z * p.strideB;',
    ...R.map((r) => `  let r${r} = min(row0 + ${r}u, p.m - 1u);`),
    ...Cs.map((c) => `  let c${c} = min(col0 + ${c}u, p.n - 1u);`),
    // Per-operand addressing: a row start along K, or a clamped vec4 start along M / N.
    ...(!p.transA ? R.map((r) => `  let ra${r} = baseA + r${r} * p.lda;`) : []),
    ...(p.transA && p.vecA && !share ? range(tm / 4).map((g) => `  let va${g} = min(row0 + ${4 * g}u, p.m - 4u);`) : []),
    ...(p.transB ? Cs.map((c) => `  let rb${c} = baseB + c${c} * p.ldb;`) : []),
    ...(!p.transB && p.vecB ? range(tn / 4).map((g) => `  let vb${g} = min(col0 + ${4 * g}u, p.n - 4u);`) : []),
    ...(share > 0 ? [`  let slot = lane & ${share - 1}u;`] : []),
    ...R.map((r) => `  var ${Cs.map((c) => `acc${r}_${c}`).join(' = 0.0; var ')} = 0.0;`),
  ];
}

/**
 * One operand's loads for (part of) a slab, and `at(i, kk)`: the WGSL naming its value at row (A)
 * or column (B) i and depth k + kk. `loads[kk]` go right before the products at depth kk, which
 * keeps few values live.
 */
interface SlabOperand {
  loads: string[][];
  at: (i: number, kk: number) => string;
}

const K4 = range(4);

/** A's slab loaded by the subgroup together: lane i reads depth k + i; values are broadcast where used. */
function sharedA(p: MatmulParams): SlabOperand {
  const { tm, share } = p;
  if (!p.transA) {
    return {
      loads: [range(tm).map((r) => `    let s${r} = loadA(ra${r} + k + slot);`)],
      at: (r, kk) => `subgroupBroadcast(s${r}, ${kk}u)`,
    };
  }
  const groups = Math.ceil(tm / share);
  return {
    loads: [range(share).flatMap((kk) => range(groups).map((g) => `    let s${kk}_${g} = loadA(baseA + (k + ${kk}u) * p.lda + min(row0 + ${share * g}u + slot, p.m - 1u));`))],
    at: (r, kk) => `subgroupBroadcast(s${kk}_${Math.floor(r / share)}, ${r % share}u)`,
  };
}

/** A's four-deep slab read by each thread itself: a vec4 along K per row, or rows along M (vec4 or scalar). */
function ownA(p: MatmulParams): SlabOperand {
  const R = range(p.tm);
  if (!p.transA) {
    return {
      loads: [R.map((r) => (p.vecA ? `    let a${r} = A[(ra${r} + k) >> 2u];` : `    let a${r} = vec4f(${K4.map((kk) => `loadA(ra${r} + k + ${kk}u)`).join(', ')});`))],
      at: (r, kk) => `a${r}.${XYZW[kk]}`,
    };
  }
  const rowStarts = K4.map((kk) => `    let rowA${kk} = baseA + (k + ${kk}u) * p.lda;`);
  if (p.vecA) {
    return {
      loads: [K4.flatMap((kk) => [rowStarts[kk], ...range(p.tm / 4).map((g) => `    let a${kk}_${g} = A[(rowA${kk} + va${g}) >> 2u];`)])],
      at: (r, kk) => `a${kk}_${Math.floor(r / 4)}.${XYZW[r % 4]}`,
    };
  }
  return {
    loads: [K4.flatMap((kk) => [rowStarts[kk], ...R.map((r) => `    let a${kk}_${r} = loadA(rowA${kk} + r${r});`)])],
    at: (r, kk) => `a${kk}_${r}`,
  };
}

/** B's part q of a slab (depths 4q..4q+3): a vec4 along K per column, or columns along N (vec4 or scalar). */
function slabB(p: MatmulParams, q: number): SlabOperand {
  const k = q === 0 ? 'k' : `(k + ${4 * q}u)`;
  const Cs = range(p.tn);
  if (p.transB) {
    return {
      loads: [Cs.map((c) => (p.vecB ? `    let b${c}_${q} = loadB4(rb${c} + ${k});` : `    let b${c}_${q} = vec4f(${K4.map((kk) => `loadB(rb${c} + ${k} + ${kk}u)`).join(', ')});`))],
      at: (c, kk) => `b${c}_${q}.${XYZW[kk]}`,
    };
  }
  const rowStart = (kk: number) => `    let rowB${kk}_${q} = baseB + (${k} + ${kk}u) * p.ldb;`;
  if (p.vecB) {
    return {
      loads: K4.map((kk) => [rowStart(kk), ...range(p.tn / 4).map((g) => `    let b${kk}_${g}_${q} = loadB4(rowB${kk}_${q} + vb${g});`)]),
      at: (c, kk) => `b${kk}_${Math.floor(c / 4)}_${q}.${XYZW[c % 4]}`,
    };
  }
  return {
    loads: K4.map((kk) => [rowStart(kk), ...Cs.map((c) => `    let b${kk}_${c}_${q} = loadB(rowB${kk}_${q} + c${c});`)]),
    at: (c, kk) => `b${kk}_${c}_${q}`,
  };
}

/**
 * One slab: its loads and the tm × tn products at each depth, summed into the slab's own partials
 * t<r>_<c>, which then join the accumulators: K/slab additions into acc instead of K halve the
 * rounding error.
 */
function blockSlab(p: MatmulParams): string[] {
  const R = range(p.tm);
  const Cs = range(p.tn);
  const shared = p.share > 0;
  const lines: string[] = [];
  const sharedAOperand = shared ? sharedA(p) : null;
  if (sharedAOperand) lines.push(...sharedAOperand.loads.flat());
  for (const q of range(slabDepth(p) / 4)) {
    const a = sharedAOperand ?? ownA(p);
    if (!shared) lines.push(...a.loads.flat());
    const b = slabB(p, q);
    for (const kk of K4) {
      const depth = 4 * q + kk;
      lines.push(...(b.loads[kk] ?? []));
      for (const r of R) {
        let ar = a.at(r, depth);
        if (shared) {
          // A broadcast lands next to the products that use it.
          lines.push(`    let a${r}_${depth} = ${ar};`);
          ar = `a${r}_${depth}`;
        }
        for (const c of Cs) {
          const t = `t${r}_${c}`;
          lines.push(depth === 0 ? `    var ${t} = ${ar} * ${b.at(c, kk)};` : `    ${t} = fma(${ar}, ${b.at(c, kk)}, ${t});`);
        }
      }
    }
  }
  lines.push(...R.map((r) => `    ${Cs.map((c) => `acc${r}_${c} += t${r}_${c};`).join(' ')}`));
  return lines;
}

/** The last K % slab depths, one at a time. */
function blockRemainder(p: MatmulParams): string[] {
  const R = range(p.tm);
  const Cs = range(p.tn);
  return [
    '  for (; k < p.k; k++) {',
    ...R.map((r) => `    let a${r} = loadA(${p.transA ? `baseA + k * p.lda + r${r}` : `ra${r} + k`});`),
    ...Cs.map((c) => `    let b${c} = loadB(${p.transB ? `rb${c} + k` : `baseB + k * p.ldb + c${c}`});`),
    ...R.flatMap((r) => Cs.map((c) => `    acc${r}_${c} = fma(a${r}, b${c}, acc${r}_${c});`)),
    '  }',
  ];
}

/**
 * `tiled`: a workgroup computes a (wgy·tm) × (wgx·tn) tile of C. For each bk-deep slab of K its
 * threads copy the A and B slabs into workgroup memory (zeros past the edges, reading along each
 * operand's contiguous axis), then each thread accumulates its tm × tn outer products from there.
 * A thread's rows and columns are strided by wgy / wgx so neighbouring threads touch neighbouring
 * words.
 */
function tiledWgsl(p: MatmulParams): string {
  const { tm, tn, wgx, wgy, bk } = p;
  const BM = wgy * tm;
  const BN = wgx * tn;
  const T = wgx * wgy;
  const R = range(tm);
  const Cs = range(tn);
  const row = (r: number) => `tileRow + lid.y + ${r * wgy}u`;
  const col = (c: number) => `tileCol + lid.x + ${c * wgx}u`;
  // Element (row or column i, depth kk) of a slab, indexed so consecutive threads read consecutive words.
  const aIndex = p.transA ? `baseA + (k0 + kk) * p.lda + tileRow + i` : `baseA + (tileRow + i) * p.lda + k0 + kk`;
  const bIndex = p.transB ? `baseB + (tileCol + j) * p.ldb + k0 + kk` : `baseB + (k0 + kk) * p.ldb + tileCol + j`;
  return /* wgsl */ `${DECLARATIONS(p)}
var<workgroup> As: array<f32, ${bk * BM}>; // [kk][row]
var<workgroup> Bs: array<f32, ${bk * BN}>; // [kk][col]
@compute @workgroup_size(${wgx}, ${wgy}, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) li: u32) {
  let tileRow = wid.x * ${BM}u;
  let tileCol = wid.y * ${BN}u;
  let baseA = p.offA + wid.z * p.strideA;
  let baseB = p.offB + wid.z * p.strideB;
${R.map((r) => `  var ${Cs.map((c) => `acc${r}_${c}`).join(' = 0.0; var ')} = 0.0;`).join('\n')}
  for (var k0 = 0u; k0 < p.k; k0 += ${bk}u) {
    for (var e = li; e < ${bk * BM}u; e += ${T}u) {
      let i = ${p.transA ? `e % ${BM}u` : `e / ${bk}u`};
      let kk = ${p.transA ? `e / ${BM}u` : `e % ${bk}u`};
      var v = 0.0;
      if (tileRow + i < p.m && k0 + kk < p.k) { v = loadA(${aIndex}); }
      As[kk * ${BM}u + i] = v;
    }
    for (var e = li; e < ${bk * BN}u; e += ${T}u) {
      let j = ${p.transB ? `e / ${bk}u` : `e % ${BN}u`};
      let kk = ${p.transB ? `e % ${bk}u` : `e / ${BN}u`};
      var v = 0.0;
      if (tileCol + j < p.n && k0 + kk < p.k) { v = loadB(${bIndex}); }
      Bs[kk * ${BN}u + j] = v;
    }
    workgroupBarrier();
    // The slab's products sum into their own partials first (see the block kernel).
${R.map((r) => `    var ${Cs.map((c) => `t${r}_${c}`).join(' = 0.0; var ')} = 0.0;`).join('\n')}
    for (var kk = 0u; kk < ${bk}u; kk++) {
${R.map((r) => `      let a${r} = As[kk * ${BM}u + lid.y + ${r * wgy}u];`).join('\n')}
${Cs.map((c) => `      let b${c} = Bs[kk * ${BN}u + lid.x + ${c * wgx}u];`).join('\n')}
${R.flatMap((r) => Cs.map((c) => `      t${r}_${c} = fma(a${r}, b${c}, t${r}_${c});`)).join('\n')}
    }
${R.map((r) => `    ${Cs.map((c) => `acc${r}_${c} += t${r}_${c};`).join(' ')}`).join('\n')}
    workgroupBarrier();
  }
${storeWgsl(p, row, col)}
}`;
}

/** The opening of both `rows` kernels: a workgroup of one subgroup, its first row, its bases. */
function rowsPrelude(p: MatmulParams): string[] {
  return [
    'enable subgroups;',
    DECLARATIONS(p),
    p.vecA ? 'fn loadA4(i: u32) -> vec4f { return A[i >> 2u]; }' : '',
    '',
    `@compute @workgroup_size(${p.wgx}, 1, 1)`,
    'fn main(@builtin(workgroup_id) wid: vec3u, @builtin(subgroup_invocation_id) lane: u32) {',
    `  let row0 = wid.x * ${p.tm}u;`,
    '  let baseA = p.offA + wid.z * p.strideA;',
    '  let baseB = p.offB + wid.z * p.strideB;',
    '  let baseC = p.offC + wid.z * p.strideC;',
  ];
}

/** A lane's held slice i of a row from `base` along K: depths d_i..d_i+3, zero past K. */
function heldSlice(vec: boolean, load: string, base: string, i: number): string {
  return vec
    ? `select(vec4f(0.0), ${load}4(${base} + min(d${i}, p.k - 4u)), d${i} < p.k)`
    : `vec4f(${K4.map((kk) => `select(0.0, ${load}(${base} + min(d${i} + ${kk}u, p.k - 1u)), d${i} + ${kk}u < p.k)`).join(', ')})`;
}

/**
 * `rows`: C = A·Bᵀ for a few rows, B read once for all of them (decoding's output head x·wteᵀ,
 * where B is the whole [V, C] table and A a handful of rows). A workgroup is one subgroup of wgx
 * lanes; it owns rows [X·tm, +tm) and columns [Y·tn, +tn). The lanes split K: lane i holds the
 * depths 4i..4i+3 of every 4·wgx, for all tm rows of A, in registers for the whole dispatch (a
 * longer K is split over dispatches: ROWS_HELD). Each
 * column is then one read of B's row (contiguous along K, so a lane's four depths are one vec4)
 * and, per row, a dot product of the lane's slice; one reduce-scatter over the lanes per wgx rows
 * (reduceScatterWgsl) leaves row r's sum in lane r % wgx, and the lanes store their rows together.
 * A subgroupAdd per row instead made the 16-row head ~20% slower on llvmpipe (docs/kernels.md).
 * Depths past K read as zero.
 */
function rowsWgsl(p: MatmulParams): string {
  const { tm, tn, wgx: lanes } = p;
  const R = range(tm);
  const I = range(p.slices);
  const dots = (r: number) => (p.slices === 0 ? '0.0' : I.map((i) => `dot(a${r}_${i}, b${i})`).join(' + '));
  const storeGroups = range(Math.ceil(tm / lanes));
  return [
    ...rowsPrelude(p),
    ...I.map((i) => `  let d${i} = (lane + ${lanes * i}u) * 4u;`),
    ...R.map((r) => `  let ra${r} = baseA + min(row0 + ${r}u, p.m - 1u) * p.lda;`),
    ...R.flatMap((r) => I.map((i) => `  let a${r}_${i} = ${heldSlice(p.vecA, 'loadA', `ra${r}`, i)};`)),
    `  let colEnd = min(p.n, (wid.y + 1u) * ${tn}u);`,
    `  for (var col = wid.y * ${tn}u; col < colEnd; col++) {`,
    '    let rb = baseB + col * p.ldb;',
    ...I.map((i) => `    let b${i} = ${heldSlice(p.vecB, 'loadB', 'rb', i)};`),
    ...storeGroups.flatMap((g) => reduceScatterWgsl(`own${g}`, range(lanes).map((j) => (g * lanes + j < tm ? dots(g * lanes + j) : '0.0')))),
    `    let biasValue = ${p.bias ? 'bias[p.offBias + col]' : '0.0'};`,
    ...storeGroups.flatMap((g) => [
      `    let rowC${g} = row0 + lane + ${g * lanes}u;`,
      `    if (${tm - g * lanes < lanes ? `lane < ${tm - g * lanes}u && ` : ''}rowC${g} < p.m) {`,
      `      let at = baseC + rowC${g} * p.ldc + col;`,
      `      C[at] = ${epilogueWgsl(p, 'at', `own${g}`, 'biasValue')};`,
      '    }',
    ]),
    '  }',
    '}',
  ].join('\n');
}

/**
 * WGSL leaving in lane i of a subgroup the sum over its lanes of values[i] (one value per lane:
 * values.length = lanes, a power of two), as `let <name>`. Halving rounds: the lanes exchange the
 * half of their values the other side keeps (subgroupShuffleXor) and add, so lanes·(1 - 1/lanes)
 * shuffles serve all the values, where a subgroupAdd each takes log2(lanes) rounds.
 */
function reduceScatterWgsl(name: string, values: readonly string[]): string[] {
  const lines: string[] = [];
  let current = values.map((v, j) => {
    lines.push(`    let ${name}_v${j} = ${v};`);
    return `${name}_v${j}`;
  });
  for (let half = values.length / 2; half >= 1; half /= 2) {
    lines.push(`    let ${name}_hi${half} = (lane & ${half}u) != 0u;`);
    current = range(half).map((j) => {
      const next = `${name}_h${half}_${j}`;
      const [low, high] = [current[j], current[j + half]];
      lines.push(`    let ${next} = select(${low}, ${high}, ${name}_hi${half}) + subgroupShuffleXor(select(${high}, ${low}, ${name}_hi${half}), ${half}u);`);
      return next;
    });
  }
  lines.push(`    let ${name} = ${current[0]};`);
  return lines;
}

/**
 * `rows` for A·B with B untransposed ([K, N], a weight in GPT-2's Conv1D layout: decoding's x·W).
 * As in rowsWgsl a workgroup is one subgroup holding tm rows of A, its lanes splitting K, but B's
 * rows run along N: a step walks four columns, reading per held depth one vec4 of B (four columns)
 * for all tm rows, then a reduce-scatter of vec4s over the lanes. K is walked inside the kernel, 4·wgx·slices
 * depths at a time (the held slices of A reloaded each time), with the running sum kept in C: each
 * lane stores and later re-reads only its own rows' elements, so no other invocation is involved
 * and a long K costs no extra dispatch. The bias joins at the first depths, the epilogue at the last.
 */
function rowsUntransposedBWgsl(p: MatmulParams): string {
  const { tm, wgx: lanes } = p;
  const R = range(tm);
  const I = range(p.slices);
  const depthsPerPass = 4 * lanes * p.slices;
  // Depths past K read B's last row: A's zeros there cancel it.
  const bRow = (i: number, kk: number) => `    let rb${i}_${kk} = baseB + min(d${i} + ${kk}u, p.k - 1u) * p.ldb;`;
  const bLoad = (i: number, kk: number) => (p.vecB
    ? `loadB4(rb${i}_${kk} + col)`
    : `vec4f(${K4.map((c) => `loadB(rb${i}_${kk} + min(col + ${c}u, p.n - 1u))`).join(', ')})`);
  const storeGroups = range(Math.ceil(tm / lanes));
  let finish = 'v';
  if (p.gelu) finish = `gelu(${finish})`;
  if (p.residual) finish = `${finish} + residual[at]`;
  return [
    ...rowsPrelude(p),
    ...R.map((r) => `  let ra${r} = baseA + min(row0 + ${r}u, p.m - 1u) * p.lda;`),
    `  let colEnd = min(p.n, (wid.y + 1u) * ${p.tn}u);`,
    // K = 0 still passes once: C = bias.
    `  for (var k0 = 0u; k0 < p.k || k0 == 0u; k0 += ${depthsPerPass}u) {`,
    '    let first = k0 == 0u;',
    `    let last = k0 + ${depthsPerPass}u >= p.k;`,
    ...I.map((i) => `    let d${i} = k0 + (lane + ${lanes * i}u) * 4u;`),
    ...R.flatMap((r) => I.map((i) => `    let a${r}_${i} = ${heldSlice(p.vecA, 'loadA', `ra${r}`, i)};`)),
    ...I.flatMap((i) => K4.map((kk) => bRow(i, kk))),
    `    for (var col = wid.y * ${p.tn}u; col < colEnd; col += 4u) {`,
    ...I.flatMap((i) => K4.map((kk) => `      let b${i}_${kk} = ${bLoad(i, kk)};`)),
    ...storeGroups.flatMap((g) => reduceScatterWgsl(`own${g}`, range(lanes).map((j) => {
      const r = g * lanes + j;
      return r < tm ? I.flatMap((i) => K4.map((kk) => `a${r}_${i}.${XYZW[kk]} * b${i}_${kk}`)).join(' + ') : 'vec4f(0.0)';
    }))),
    ...storeGroups.flatMap((g) => [
      `      let rowC${g} = row0 + lane + ${g * lanes}u;`,
      `      if (${tm - g * lanes < lanes ? `lane < ${tm - g * lanes}u && ` : ''}rowC${g} < p.m) {`,
      `        let sums = select(vec4f(0.0), own${g}, p.k > 0u);`,
      ...K4.flatMap((c) => [
        `        if (col + ${c}u < colEnd) {`,
        `          let at = baseC + rowC${g} * p.ldc + col + ${c}u;`,
        `          var v = sums.${XYZW[c]};`,
        p.accumulate ? '          v += C[at];' : `          if (first) { v += ${p.bias ? `bias[p.offBias + col + ${c}u]` : '0.0'}; } else { v += C[at]; }`,
        ...(finish === 'v' ? [] : [`          if (last) { v = ${finish}; }`]),
        '          C[at] = v;',
        '        }',
      ]),
      '      }',
    ]),
    '    }',
    '  }',
    '}',
  ].join('\n');
}

const GENERATORS: Record<MatmulVariant['kind'], (p: MatmulParams) => string> = {
  block: blockWgsl, tiled: tiledWgsl, rows: (p) => (p.transB ? rowsWgsl(p) : rowsUntransposedBWgsl(p)),
};

const matmulKernel: Kernel<MatmulParams> = {
  name: 'matmul',
  bindings: ['read', 'read', 'read', 'read', 'write'],
  wgsl: (p) => GENERATORS[p.kind](p),
};

export interface MatmulOptions {
  /** Plan as if a binding could hold at most this many bytes (tests exercise the splits with small operands). */
  maxBindingBytes?: number;
}

/** Rows and columns of C one workgroup computes. */
function tileOf(v: MatmulVariant): { rows: number; cols: number } {
  return v.kind === 'rows' ? { rows: v.tm, cols: v.tn } : { rows: v.wgy * v.tm, cols: v.wgx * v.tn };
}

/**
 * vec4s of A a `rows` lane holds (tm rows × slices): a longer K is split over dispatches that
 * accumulate in C. Every held value lives across the column loop, and LLVM's register allocation
 * grows much faster than linearly with them (llvmpipe took minutes to compile 16 rows × 24 slices, and ~25 s of a loaded host for 16 × 4).
 */
const ROWS_HELD = 64;
/**
 * K slices a lane of `rows` by an untransposed B holds per pass (its kernel walks K in passes): at
 * 16 rows two ran as fast as four or eight, and compiled in 5 s against 11 and 37 (docs/kernels.md).
 */
const ROWS_UNTRANSPOSED_SLICES = 2;

/**
 * K slices of 4·wgx depths a `rows` lane holds per row: by a transposed B the whole chunk of K (at
 * most ROWS_HELD / tm slices: the plan splits a longer K), by an untransposed B one pass's.
 */
function rowsSlices(v: MatmulVariant, transB: boolean, k: number): number {
  const all = Math.ceil(k / (4 * v.wgx));
  return transB ? all : Math.max(1, Math.min(all, ROWS_UNTRANSPOSED_SLICES));
}

function limitsFor(gpu: Gpu, v: MatmulVariant, transB: boolean, options: MatmulOptions): MatmulLimits {
  const tile = tileOf(v);
  return {
    maxBindingBytes: Math.min(gpu.maxBindingBytes, options.maxBindingBytes ?? Infinity),
    alignment: gpu.bindingAlignment,
    maxWorkgroups: gpu.maxWorkgroupsPerDimension,
    rowsPerGroup: tile.rows,
    colsPerGroup: tile.cols,
    maxK: v.kind === 'rows' && transB ? 4 * v.wgx * Math.max(1, Math.floor(ROWS_HELD / v.tm)) : undefined,
  };
}

/** The chunks `matmulWith` would dispatch (for tests and for reading). */
export function matmulPlan(gpu: Gpu, variant: MatmulVariant, shape: MatmulShape, options: MatmulOptions = {}, bDType: DType = 'f32'): MatmulPlan {
  return planMatmul(shape, limitsFor(gpu, variant, shape.transB, options), elementBytes(bDType));
}

function checkSizes(a: GpuStorage, b: GpuStorage, bias: GpuStorage | null, s: MatmulShape, residual: GpuStorage | undefined): void {
  const { batch, m, k, n } = s;
  const expect = (what: string, got: number, want: number) => {
    if (got !== want) throw new Error(`matmul: ${what} holds ${got} elements, the shape ${JSON.stringify(s)} needs ${want}`);
  };
  expect('A', a.size, batch * m * k);
  expect('B', b.size, (s.broadcastB ? 1 : batch) * k * n);
  if (bias) expect('bias', bias.size, n);
  if (residual) expect('the residual', residual.size, batch * m * n);
}

/** Whether an operand can be read as vec4: its rows, batches and window offset are 4-aligned, and a vec4 along M / N fits the block. */
function vec4Ok(ld: number, stride: number, w: Window, alongK: boolean, extent: number, perThread: number): boolean {
  return ld % 4 === 0 && stride % 4 === 0 && w.offset % 4 === 0 && (alongK || (extent % 4 === 0 && perThread % 4 === 0));
}

function bind(gpu: Gpu, x: GpuStorage, w: Window, vec: boolean) {
  // A vec4 array binding must cover whole vec4s; the operand's size is then a multiple of 4, so
  // rounding up stays inside it.
  const count = vec ? Math.min(Math.ceil(w.count / 4) * 4, x.size - w.first) : w.count;
  return gpu.view(x, w.first, count);
}

export type GpuEpilogue = MatmulEpilogue & { residual?: GpuStorage };

interface Operands {
  a: GpuStorage;
  b: GpuStorage;
  bias: GpuStorage | null;
  epilogue: GpuEpilogue;
  out: GpuStorage;
}

function dispatchChunk(gpu: Gpu, v: MatmulVariant, s: MatmulShape, plan: MatmulPlan, ch: MatmulChunk, { a, b, bias, epilogue, out }: Operands): void {
  if (v.kind === 'rows' && s.transA) throw new Error('matmul: the rows variant multiplies an untransposed A only');
  const ownLoads = v.kind !== 'tiled';
  // K = 0 reads nothing (C = bias): its 4-byte placeholder bindings cannot hold a vec4.
  const vecA = ownLoads && ch.k > 0 && v.share === 0 && vec4Ok(plan.lda, plan.strideA, ch.a, !s.transA, ch.m, v.tm);
  const vecB = ownLoads && ch.k > 0 && vec4Ok(plan.ldb, plan.strideB, ch.b, s.transB, ch.n, v.tn);
  const withBias = bias !== null && !ch.accumulate;
  // The epilogue needs the whole sum: the chunk that completes K applies it.
  const completesK = ch.k0 + ch.k >= s.k;
  const residual = completesK ? epilogue.residual : undefined;
  const params: MatmulParams = {
    ...v, transA: s.transA, transB: s.transB, vecA, vecB, bDType: halfOrF32(b), bias: withBias, accumulate: ch.accumulate,
    gelu: completesK && epilogue.gelu === true, residual: residual !== undefined,
    slices: v.kind === 'rows' ? rowsSlices(v, s.transB, ch.k) : 0,
  };
  const aView = bind(gpu, a, ch.a, vecA);
  const buffers = [
    aView, bind(gpu, b, ch.b, vecB), withBias ? bind(gpu, bias, ch.bias, false) : aView,
    residual ? bind(gpu, residual, ch.c, false) : aView, bind(gpu, out, ch.c, false),
  ];
  const uniforms = [
    ch.m, ch.n, ch.k,
    plan.lda, plan.ldb, plan.ldc,
    ch.a.offset, ch.b.offset, ch.c.offset, ch.bias.offset,
    plan.strideA, plan.strideB, plan.strideC,
  ];
  // Workgroup x walks down M, so consecutive workgroups share one panel of B (it stays in cache).
  const tile = tileOf(v);
  const groups: [number, number, number] = [Math.ceil(ch.m / tile.rows), Math.ceil(ch.n / tile.cols), ch.batches];
  gpu.dispatch(matmulKernel, params, buffers, uniforms, groups);
}

/** C = op(A) · op(B) (+ bias, + epilogue) with a given variant, split over as many dispatches as the binding limit needs. */
export function matmulWith(
  gpu: Gpu, variant: MatmulVariant, a: GpuStorage, b: GpuStorage, bias: GpuStorage | null, s: MatmulShape,
  options: MatmulOptions = {}, epilogue: GpuEpilogue = {},
): GpuStorage {
  checkSizes(a, b, bias, s, epilogue.residual);
  if (!variantSupported(variant, adapterTraits(gpu))) throw new Error(`matmul: variant ${JSON.stringify(variant)} needs subgroups this adapter lacks`);
  const out = gpu.alloc(s.batch * s.m * s.n);
  if (out.size === 0) return out;
  const plan = matmulPlan(gpu, variant, s, options, b.dtype);
  for (const chunk of plan.chunks) dispatchChunk(gpu, variant, s, plan, chunk, { a, b, bias, epilogue, out });
  return out;
}

export function adapterTraits(gpu: Gpu): AdapterTraits {
  return {
    description: gpu.description,
    subgroups: gpu.features.has('subgroups'),
    subgroupMinSize: gpu.device.adapterInfo?.subgroupMinSize ?? 0,
  };
}
