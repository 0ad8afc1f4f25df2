/**
 * Batched matmul C = op(A) · op(B) (+ bias over the last axis), with transposes and a shared B.
 * CPU reference: src/tensor/cpu/matmul.ts. Splitting operands larger than one binding: matmul-plan.ts.
 * Variant choice and its memory: autotune.ts.
 *
 * Variants (compile-time parameters; MATMUL_VARIANTS in autotune.ts names the candidates):
 *  - `block`: each thread owns a tm × tn block of C in registers and reads A and B from global
 *    memory, vec4 along their contiguous axis where ld, offsets and batch strides are multiples of
 *    4 (scalar loads otherwise: a compile-time flag), a slab of K at a time;
 *  - `block` with `share`: the same, but the lanes of a subgroup load A together (lane i the
 *    element k + i of each row) and pass it round with subgroupBroadcast (needs `subgroups`);
 *  - `tiled`: a workgroup stages bk-deep slabs of A and B in workgroup memory (the usual GPU kernel).
 * The store adds the bias and applies the epilogue (MatmulEpilogue: GELU, then a residual add; the
 * chunk that completes a split K applies it), which spares decoding a dispatch per fused op.
 * Ragged M, N, K are handled by clamped loads and guarded stores, never by padding. Each slab's
 * products sum into their own partial before joining the accumulator, which halves f32 rounding
 * (relative error at K = 129: 5e-5 against 1.0e-4 for a plain running sum).
 *
 * Measured on lavapipe (2 cores, llvmpipe 256-bit, Mesa 25.0.7), [1024, 768]·[768, 3072], GFLOP/s:
 *   share8-8x4 11.3 · share8-12x4 10.0–11.9 · block8x4-64x1 6.4 · block4x4-64x1 5.7 · block4x4-8x8 5.5 ·
 *   tiled8x8-16x16-k8 5.7 · tiled4x4-16x16-k16 2.4.
 * Why sharing wins there: llvmpipe runs 8 invocations per SIMD register, so an FMA is cheap and a
 * load is not. A load whose address differs per lane becomes a loop over the lanes (~190 cycles
 * per vec4 for the 8 lanes, measured by dropping loads from the kernel); a load with one address
 * for all lanes is a bounds-checked scalar load (~20 cycles per float). In block8x4 the uniform
 * loads of A and the per-lane vec4 loads of B each took ~45% of the time, the 128 FMAs a slab the
 * rest. Sharing turns 8 uniform loads of A into one per-lane load and 8 broadcasts (~2 cycles
 * each), leaving B's loads, which 8 rows a thread amortize (12 or 16 rows spill registers).
 * Workgroup-memory tiles lose on a CPU: a barrier is a coroutine switch and reading workgroup
 * memory at per-lane addresses is the same lane loop as reading a buffer, on top of staging it.
 * Workgroups walk down M first (x), so consecutive ones reuse the same panel of B from cache
 * (+15–20% over walking along N). A GPU is expected to prefer `tiled` (the default there until tuned).
 * N not a multiple of 4 (the vocabulary, 50257, with B untransposed) falls back to scalar B loads:
 * 8 GFLOP/s; reading two aligned vec4s and shifting them was slower still (5). GPT-2's own head
 * multiplies by wteᵀ, whose rows are along K = 768: vec4, 11 GFLOP/s.
 *
 * Decoding (M = batch size, usually 1) runs these kernels with tm shrunk to M (matmulVariant), which
 * makes them matrix-vector products that stream B once. A dedicated GEMV family was written and
 * dropped: a workgroup per 32 columns with K split over 8 lanes-groups for x·W, a thread per 4 rows of
 * a transposed B for x·wteᵀ. On lavapipe (2 shared cores, ±25%) it ran the head [1, 256]·wte[50257,
 * 256]ᵀ at 2.1–4.1 GB/s against 4.6 for share8 with tm = 1, the blocks' [1, 256…3072]·[…] 5–25%
 * slower, and a decode step of the d-256 model without its head in 12.6 ms against 10. Every load
 * whose address differs per lane is a gather there: a kernel that does nothing but stream 51 MB
 * with vec4 loads reads it at 4.8 GB/s, one with GPU-style coalescing (lanes on consecutive vec4s,
 * a grid stride) at 1.2, and the head reaches ~6.8 GB/s, the copy's read rate, once the JS thread
 * stops spinning while it waits (gpu.ts, settle). Other layouts tried for the head: x in workgroup
 * memory or a private array 2.1–2.8 GB/s, wte as an rgba32float texture 2.2, loads at one address
 * for all lanes (scalar) 0.95.
 */
import type { MatmulEpilogue, MatmulShape } from '../tensor/backend.js';
import {
  currentVariant, isTuned, MATMUL_KERNEL_VERSION, MATMUL_VARIANT_NAMES, MATMUL_VARIANTS, rememberTune, variantSupported,
  type AdapterTraits, type MatmulVariant, type MatmulVariantName,
} from './autotune.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { GELU_WGSL } from './gelu.js';
import type { Kernel } from './kernel.js';
import { planMatmul, type MatmulChunk, type MatmulLimits, type MatmulPlan, type Window } from './matmul-plan.js';

interface MatmulParams extends MatmulVariant {
  transA: boolean;
  transB: boolean;
  /** A / B declared as vec4 arrays and read four elements at a time along their contiguous axis. */
  vecA: boolean;
  vecB: boolean;
  bias: boolean;
  /** C += product (a later chunk of a split K). */
  accumulate: boolean;
  /** The epilogue (MatmulEpilogue), applied by the chunk that completes K: gelu, then + residual. */
  gelu: boolean;
  residual: boolean;
}

const XYZW = ['x', 'y', 'z', 'w'];
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

const DECLARATIONS = (p: MatmulParams): string => /* wgsl */ `
@group(0) @binding(0) var<storage, read> A: array<${p.vecA ? 'vec4f' : 'f32'}>;
@group(0) @binding(1) var<storage, read> B: array<${p.vecB ? 'vec4f' : 'f32'}>;
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
fn loadB(i: u32) -> f32 { return ${p.vecB ? 'B[i >> 2u][i & 3u]' : 'B[i]'}; }
${p.gelu ? GELU_WGSL : ''}`;

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
      let value = `${p.accumulate ? `C[${at}] + ` : ''}acc${r}_${c} + bias${c}`;
      if (p.gelu) value = `gelu(${value})`;
      if (p.residual) value = `${value} + residual[${at}]`;
      lines.push(`    if (${col(c)} < p.n) { C[${at}] = ${value}; }`);
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
  const { tm, tn, wgx, wgy, share } = p;
  const S = share > 0 ? share : 4; // K per slab
  const R = range(tm);
  const Cs = range(tn);
  const out: string[] = [];
  const emit = (...lines: string[]) => out.push(...lines);
  emit(share > 0 ? 'enable subgroups;' : '', DECLARATIONS(p), '', `@compute @workgroup_size(${wgx}, ${wgy}, 1)`,
    `fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u${share > 0 ? ', @builtin(subgroup_invocation_id) lane: u32' : ''}) {`,
    `  let row0 = (wid.x * ${wgy}u + lid.y) * ${tm}u;`,
    `  let col0 = (wid.y * ${wgx}u + lid.x) * ${tn}u;`,
    // Subgroup operations need every lane present: those past the edge compute on clamped data.
    share > 0 ? '' : '  if (row0 >= p.m || col0 >= p.n) { return; }',
    '  let baseA = p.offA + wid.z * p.strideA;',
    '  let baseB = p.offB + wid.z * p.strideB;');
  for (const r of R) emit(`  let r${r} = min(row0 + ${r}u, p.m - 1u);`);
  for (const c of Cs) emit(`  let c${c} = min(col0 + ${c}u, p.n - 1u);`);
  // Per-operand addressing: a row start along K, or a clamped vec4 start along M / N.
  if (!p.transA) for (const r of R) emit(`  let ra${r} = baseA + r${r} * p.lda;`);
  if (p.transA && p.vecA && !share) for (const g of range(tm / 4)) emit(`  let va${g} = min(row0 + ${4 * g}u, p.m - 4u);`);
  if (p.transB) for (const c of Cs) emit(`  let rb${c} = baseB + c${c} * p.ldb;`);
  if (!p.transB && p.vecB) for (const g of range(tn / 4)) emit(`  let vb${g} = min(col0 + ${4 * g}u, p.n - 4u);`);
  if (share > 0) emit(`  let slot = lane & ${share - 1}u;`);
  for (const r of R) emit(`  var ${Cs.map((c) => `acc${r}_${c}`).join(' = 0.0; var ')} = 0.0;`);

  emit('  var k = 0u;', `  for (; k + ${S}u <= p.k; k += ${S}u) {`);
  // a(r, kk) / b(c, kk) name the value of A / B at row r / column c and depth k + kk.
  let a: (r: number, kk: number) => string = () => '';
  if (share > 0) {
    // Broadcasts are emitted next to the FMAs that use them (see shareA), keeping few values live.
    if (!p.transA) {
      for (const r of R) emit(`    let s${r} = loadA(ra${r} + k + slot);`);
      a = (r, kk) => `subgroupBroadcast(s${r}, ${kk}u)`;
    } else {
      const groups = Math.ceil(tm / share);
      for (const kk of range(S)) {
        for (const g of range(groups)) emit(`    let s${kk}_${g} = loadA(baseA + (k + ${kk}u) * p.lda + min(row0 + ${share * g}u + slot, p.m - 1u));`);
      }
      a = (r, kk) => `subgroupBroadcast(s${kk}_${Math.floor(r / share)}, ${r % share}u)`;
    }
  }
  for (const q of range(S / 4)) {
    const k = q === 0 ? 'k' : `(k + ${4 * q}u)`;
    const K4 = range(4);
    if (share === 0) {
      if (!p.transA) {
        for (const r of R) {
          emit(p.vecA
            ? `    let a${r} = A[(ra${r} + k) >> 2u];`
            : `    let a${r} = vec4f(${K4.map((kk) => `loadA(ra${r} + k + ${kk}u)`).join(', ')});`);
        }
        a = (r, kk) => `a${r}.${XYZW[kk]}`;
      } else if (p.vecA) {
        for (const kk of K4) {
          emit(`    let rowA${kk} = baseA + (k + ${kk}u) * p.lda;`);
          for (const g of range(tm / 4)) emit(`    let a${kk}_${g} = A[(rowA${kk} + va${g}) >> 2u];`);
        }
        a = (r, kk) => `a${kk}_${Math.floor(r / 4)}.${XYZW[r % 4]}`;
      } else {
        for (const kk of K4) {
          emit(`    let rowA${kk} = baseA + (k + ${kk}u) * p.lda;`);
          for (const r of R) emit(`    let a${kk}_${r} = loadA(rowA${kk} + r${r});`);
        }
        a = (r, kk) => `a${kk}_${r}`;
      }
    }
    // B's loads for each kk, emitted right before the FMAs that use them (fewer values live at once).
    const bLoads: string[][] = K4.map(() => []);
    let b: (c: number, kk: number) => string;
    if (p.transB) {
      for (const c of Cs) {
        bLoads[0].push(p.vecB
          ? `    let b${c}_${q} = B[(rb${c} + ${k}) >> 2u];`
          : `    let b${c}_${q} = vec4f(${K4.map((kk) => `loadB(rb${c} + ${k} + ${kk}u)`).join(', ')});`);
      }
      b = (c, kk) => `b${c}_${q}.${XYZW[kk]}`;
    } else if (p.vecB) {
      for (const kk of K4) {
        bLoads[kk].push(`    let rowB${kk}_${q} = baseB + (${k} + ${kk}u) * p.ldb;`);
        for (const g of range(tn / 4)) bLoads[kk].push(`    let b${kk}_${g}_${q} = B[(rowB${kk}_${q} + vb${g}) >> 2u];`);
      }
      b = (c, kk) => `b${kk}_${Math.floor(c / 4)}_${q}.${XYZW[c % 4]}`;
    } else {
      for (const kk of K4) {
        bLoads[kk].push(`    let rowB${kk}_${q} = baseB + (${k} + ${kk}u) * p.ldb;`);
        for (const c of Cs) bLoads[kk].push(`    let b${kk}_${c}_${q} = loadB(rowB${kk}_${q} + c${c});`);
      }
      b = (c, kk) => `b${kk}_${c}_${q}`;
    }
    for (const kk of K4) {
      emit(...bLoads[kk]);
      for (const r of R) {
        let ar = a(r, 4 * q + kk);
        if (share > 0) {
          emit(`    let a${r}_${4 * q + kk} = ${ar};`);
          ar = `a${r}_${4 * q + kk}`;
        }
        for (const c of Cs) {
          const t = `t${r}_${c}`;
          emit(q === 0 && kk === 0 ? `    var ${t} = ${ar} * ${b(c, kk)};` : `    ${t} = fma(${ar}, ${b(c, kk)}, ${t});`);
        }
      }
    }
  }
  // Each slab sums into its own partial first: K/slab additions into acc instead of K halve the rounding error.
  for (const r of R) emit(`    ${Cs.map((c) => `acc${r}_${c} += t${r}_${c};`).join(' ')}`);
  emit('  }');

  // The last K % slab, one at a time.
  emit('  for (; k < p.k; k++) {');
  for (const r of R) emit(`    let a${r} = loadA(${p.transA ? `baseA + k * p.lda + r${r}` : `ra${r} + k`});`);
  for (const c of Cs) emit(`    let b${c} = loadB(${p.transB ? `rb${c} + k` : `baseB + k * p.ldb + c${c}`});`);
  for (const r of R) for (const c of Cs) emit(`    acc${r}_${c} = fma(a${r}, b${c}, acc${r}_${c});`);
  emit('  }');
  emit(storeWgsl(p, (r) => `row0 + ${r}u`, (c) => `col0 + ${c}u`), '}');
  return out.join('\n');
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

const matmulKernel: Kernel<MatmulParams> = {
  name: 'matmul',
  bindings: ['read', 'read', 'read', 'read', 'write'],
  workgroupSize: (p) => [p.wgx, p.wgy, 1],
  wgsl: (p) => (p.kind === 'block' ? blockWgsl(p) : tiledWgsl(p)),
};

/** The WGSL of one configuration (for reading and for tests). */
export function matmulWgsl(variant: MatmulVariant, flags: Omit<MatmulParams, keyof MatmulVariant>): string {
  return matmulKernel.wgsl({ ...variant, ...flags });
}

export interface MatmulOptions {
  /** Plan as if a binding could hold at most this many bytes (tests exercise the splits with small operands). */
  maxBindingBytes?: number;
}

function limitsFor(gpu: Gpu, v: MatmulVariant, options: MatmulOptions): MatmulLimits {
  return {
    maxBindingBytes: Math.min(gpu.maxBindingBytes, options.maxBindingBytes ?? Infinity),
    alignment: gpu.bindingAlignment,
    maxWorkgroups: gpu.maxWorkgroupsPerDimension,
    rowsPerGroup: v.wgy * v.tm,
    colsPerGroup: v.wgx * v.tn,
  };
}

/** The chunks `matmulWith` would dispatch (for tests and for reading). */
export function matmulPlan(gpu: Gpu, variant: MatmulVariant, shape: MatmulShape, options: MatmulOptions = {}): MatmulPlan {
  return planMatmul(shape, limitsFor(gpu, variant, options));
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

type GpuEpilogue = MatmulEpilogue & { residual?: GpuStorage };

interface Operands {
  a: GpuStorage;
  b: GpuStorage;
  bias: GpuStorage | null;
  epilogue: GpuEpilogue;
  out: GpuStorage;
}

function dispatchChunk(gpu: Gpu, v: MatmulVariant, s: MatmulShape, plan: MatmulPlan, ch: MatmulChunk, { a, b, bias, epilogue, out }: Operands): void {
  const block = v.kind === 'block';
  // K = 0 reads nothing (C = bias): its 4-byte placeholder bindings cannot hold a vec4.
  const vecA = block && ch.k > 0 && v.share === 0 && vec4Ok(plan.lda, plan.strideA, ch.a, !s.transA, ch.m, v.tm);
  const vecB = block && ch.k > 0 && vec4Ok(plan.ldb, plan.strideB, ch.b, s.transB, ch.n, v.tn);
  const withBias = bias !== null && !ch.accumulate;
  // The epilogue needs the whole sum: the chunk that completes K applies it.
  const completesK = ch.k0 + ch.k >= s.k;
  const residual = completesK ? epilogue.residual : undefined;
  const params: MatmulParams = {
    ...v, transA: s.transA, transB: s.transB, vecA, vecB, bias: withBias, accumulate: ch.accumulate,
    gelu: completesK && epilogue.gelu === true, residual: residual !== undefined,
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
  const groups: [number, number, number] = [Math.ceil(ch.m / (v.wgy * v.tm)), Math.ceil(ch.n / (v.wgx * v.tn)), ch.batches];
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
  const plan = matmulPlan(gpu, variant, s, options);
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

/** Fewer workgroups than this leave a core of a software rasterizer idle or the load uneven. */
const MIN_WORKGROUPS = 32;

/**
 * The variant this adapter runs (see autotune.ts for how it is chosen), fitted to a product of
 * m rows and n columns. Register blocks shrink to the shape: decoding multiplies one row at a time,
 * so tm drops to the next power of two of m and a thread does not compute copies of a clamped row
 * (measured at [1, 768]·[768, 3072] on lavapipe: 3 ms with one row a thread against 7 ms with
 * eight); a narrow C (n = 64 in a d-64 model's layers and its head's gradients) halves the lanes
 * along N while they would idle on clamped columns, then while the grid has too few workgroups to
 * keep every core busy (lavapipe, the demo's head backward: [95, 50257]·[50257, 64] 143 → 58 ms,
 * [50257, 95]·[95, 64] 184 → 47 ms). A subgroup that shares A keeps its full width.
 */
export function matmulVariant(gpu: Gpu, m = Infinity, n = Infinity): MatmulVariant {
  const v = MATMUL_VARIANTS[currentVariant(adapterTraits(gpu))];
  if (v.kind !== 'block') return v;
  const tm = m < v.tm ? Math.max(1, 2 ** Math.ceil(Math.log2(m))) : v.tm;
  const minLanes = Math.max(v.share, 8);
  const groups = (wgx: number) => Math.ceil(m / (v.wgy * tm)) * Math.ceil(n / (wgx * v.tn));
  let wgx: number = v.wgx;
  while (wgx > minLanes && (wgx / 2) * v.tn >= n) wgx /= 2;
  while (wgx > minLanes && groups(wgx) < MIN_WORKGROUPS) wgx /= 2;
  return { ...v, tm, wgx };
}

/** The Backend's matmul, with the variant this adapter was tuned to. */
export function matmul(gpu: Gpu, a: GpuStorage, b: GpuStorage, bias: GpuStorage | null, s: MatmulShape, epilogue: GpuEpilogue = {}): GpuStorage {
  return matmulWith(gpu, matmulVariant(gpu, s.m, s.n), a, b, bias, s, {}, epilogue);
}

export interface TuneResult {
  variant: MatmulVariantName;
  /** Best GFLOP/s per candidate on the tuning shape (empty when the choice was already settled). */
  gflops: Partial<Record<MatmulVariantName, number>>;
  measured: boolean;
}

export interface TuneOptions {
  /** Measure even when a choice is remembered. */
  force?: boolean;
  /** Defaults to every variant this adapter supports. */
  candidates?: readonly MatmulVariantName[];
  /** [m, k, n]; GPT-2's MLP input projection at 256 tokens by default. */
  shape?: [number, number, number];
  /** Timed runs per candidate, taken in turns so that a busy machine slows all of them alike. */
  rounds?: number;
  log?: (line: string) => void;
}

/**
 * Measures the candidates on a representative shape and remembers the fastest (in memory and in
 * the cache file), so later processes skip this. A candidate whose result disagrees with the first
 * one's is dropped (a guard on the subgroup assumptions of the sharing variants). A no-op when the
 * choice is already settled, unless `force`.
 */
export async function autotuneMatmul(gpu: Gpu, options: TuneOptions = {}): Promise<TuneResult> {
  const traits = adapterTraits(gpu);
  if (!options.force && isTuned(traits)) return { variant: currentVariant(traits), gflops: {}, measured: false };
  const { shape = [256, 768, 3072], rounds = 3, log } = options;
  const candidates = (options.candidates ?? MATMUL_VARIANT_NAMES).filter((name) => variantSupported(MATMUL_VARIANTS[name], traits));
  if (candidates.length === 0) throw new Error('autotuneMatmul: no candidate runs on this adapter');
  const [m, k, n] = shape;
  const s: MatmulShape = { batch: 1, m, k, n, transA: false, transB: false, broadcastB: true };
  // Deterministic data: the tuner gives the same answer for the same timings.
  const data = (size: number, salt: number) => Float32Array.from({ length: size }, (_, i) => (((i + salt) * 7919) % 1009) / 1009 - 0.5);
  const a = gpu.upload(data(m * k, 1));
  const b = gpu.upload(data(k * n, 2));
  const best = new Map<MatmulVariantName, number>();
  try {
    let reference: Float32Array | null = null;
    const valid: MatmulVariantName[] = [];
    for (const name of candidates) {
      const c = matmulWith(gpu, MATMUL_VARIANTS[name], a, b, null, s); // compiles, warms up
      const out = (await gpu.read(c)) as Float32Array;
      gpu.release(c);
      reference ??= out;
      if (maxRelativeDifference(out, reference) > 1e-3) log?.(`matmul tune: ${name} disagrees with ${candidates[0]}, dropped`);
      else valid.push(name);
    }
    for (let round = 0; round < rounds; round++) {
      for (const name of valid) {
        const start = performance.now();
        gpu.release(matmulWith(gpu, MATMUL_VARIANTS[name], a, b, null, s));
        await gpu.sync();
        const ms = performance.now() - start;
        best.set(name, Math.min(best.get(name) ?? Infinity, ms));
      }
    }
  } finally {
    gpu.release(a);
    gpu.release(b);
  }
  const gflops: Partial<Record<MatmulVariantName, number>> = {};
  for (const [name, ms] of best) {
    gflops[name] = (2 * m * k * n) / (ms * 1e6);
    log?.(`matmul tune: ${name} ${gflops[name]!.toFixed(2)} GFLOP/s`);
  }
  const [variant] = [...best].reduce((x, y) => (y[1] < x[1] ? y : x));
  rememberTune(gpu.description, {
    variant, gflops: gflops as Record<string, number>, shape, version: MATMUL_KERNEL_VERSION, measuredAt: new Date().toISOString(),
  });
  return { variant, gflops, measured: true };
}

function maxRelativeDifference(x: Float32Array, y: Float32Array): number {
  let scale = 0;
  for (const v of y) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / (Math.abs(y[i]) + 1e-3 * scale));
  return Number.isNaN(worst) ? Infinity : worst;
}
