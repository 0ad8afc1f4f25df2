/**
 * Which matmul variant runs, all in one place: the candidates, the choice made once per adapter
 * (measured and remembered, in memory for the process and in a TuneStore that the runtime provides;
 * Node: a JSON file under the OS cache folder, src/node/tune-file.ts), the tuner that measures
 * them, the fit of the chosen variant to each product's shape, and the Backend's matmul, which
 * picks and runs it. matmul.ts generates and dispatches a variant it is given, and knows nothing of
 * choosing; that keeps the imports one way (this module runs matmul.ts's kernels to measure them).
 *
 * Order of precedence: a variant the store forces (Node: GPT2_MATMUL_VARIANT=<name>, for
 * experiments), the choice made in this process, the store's record, and a default per kind of
 * adapter (a software rasterizer wants register blocking, a GPU workgroup-memory tiles).
 */
import type { MatmulShape } from '../tensor/backend.js';
import { isSoftwareAdapter, type Gpu, type GpuStorage } from './gpu.js';
import { adapterTraits, matmulWith, variantSupported, type AdapterTraits, type GpuEpilogue, type MatmulVariant } from './matmul.js';

/** The candidates the tuner measures; every one of them passes the same tests. */
export const MATMUL_VARIANTS = {
  'share8-8x4': { kind: 'block', tm: 8, tn: 4, wgx: 64, wgy: 1, bk: 0, share: 8 },
  'share8-12x4': { kind: 'block', tm: 12, tn: 4, wgx: 64, wgy: 1, bk: 0, share: 8 },
  'block8x4-64x1': { kind: 'block', tm: 8, tn: 4, wgx: 64, wgy: 1, bk: 0, share: 0 },
  'block4x4-64x1': { kind: 'block', tm: 4, tn: 4, wgx: 64, wgy: 1, bk: 0, share: 0 },
  'block4x4-8x8': { kind: 'block', tm: 4, tn: 4, wgx: 8, wgy: 8, bk: 0, share: 0 },
  'tiled4x4-16x16-k16': { kind: 'tiled', tm: 4, tn: 4, wgx: 16, wgy: 16, bk: 16, share: 0 },
  'tiled8x8-16x16-k8': { kind: 'tiled', tm: 8, tn: 8, wgx: 16, wgy: 16, bk: 8, share: 0 },
} as const satisfies Record<string, MatmulVariant>;

export type MatmulVariantName = keyof typeof MATMUL_VARIANTS;

export const MATMUL_VARIANT_NAMES = Object.keys(MATMUL_VARIANTS) as MatmulVariantName[];

export const isVariantName = (name: string): name is MatmulVariantName => Object.hasOwn(MATMUL_VARIANTS, name);

/** Bump when a kernel, or what the tuner measures, changes enough that old records no longer hold. */
export const MATMUL_KERNEL_VERSION = 2;

/** The choice before any measuring: register blocks for a CPU-backed driver, workgroup tiles for a GPU. */
export function defaultVariant(t: AdapterTraits): MatmulVariantName {
  if (!isSoftwareAdapter(t.description)) return 'tiled8x8-16x16-k8';
  return variantSupported(MATMUL_VARIANTS['share8-8x4'], t) ? 'share8-8x4' : 'block8x4-64x1';
}

/** Choices measured or set in this process, or read from the store. */
const chosen = new Map<string, MatmulVariantName>();
const storeRead = new Set<string>();

/** A product the tuner times: [m, k, n] of op(A)·B, A transposed or not. */
export interface TuneProduct {
  shape: [number, number, number];
  transA: boolean;
}

export interface TuneRecord {
  variant: MatmulVariantName;
  /** GFLOP/s of every candidate on each of `products`, in their order. */
  gflops: Record<string, number[]>;
  products: TuneProduct[];
  version: number;
  measuredAt: string;
}

/**
 * Where a runtime keeps the tuning. Records are kept per adapter description; what `read` returns
 * is checked here (a stale kernel version or an unknown variant is measured again).
 */
export interface TuneStore {
  /** Where the user forces a variant, for messages (Node: "GPT2_MATMUL_VARIANT"). */
  readonly forcedName?: string;
  /** A variant forced by the user, asked at every choice; undefined or '' for none. */
  forced?(): string | undefined;
  /** Absent when nothing outlives the process: then set-up does not measure, and the adapter kind's default runs. */
  remember?: {
    read(adapter: string): unknown;
    write(adapter: string, record: TuneRecord): void;
  };
}

let store: TuneStore = {};

/** Installs the runtime's tune store (the backend set-up does this). */
export function useTuneStore(next: TuneStore): void {
  store = next;
  storeRead.clear();
}

/** Whether measuring pays: the store remembers the result beyond this process. */
export const tuneStoreRemembers = (): boolean => store.remember !== undefined;

function isTuneRecord(value: unknown): value is TuneRecord {
  const record = value as Partial<TuneRecord> | null;
  return typeof record === 'object' && record !== null && record.version === MATMUL_KERNEL_VERSION && typeof record.variant === 'string' && isVariantName(record.variant);
}

export function rememberTune(description: string, record: TuneRecord): void {
  chosen.set(description, record.variant);
  store.remember?.write(description, record);
}

function forcedVariant(t: AdapterTraits): MatmulVariantName | null {
  const name = store.forced?.();
  if (name === undefined || name === '') return null;
  const where = store.forcedName ?? 'the forced matmul variant';
  if (!isVariantName(name)) {
    throw new Error(`${where}=${name} is not a matmul variant; one of: ${MATMUL_VARIANT_NAMES.join(', ')}`);
  }
  if (!variantSupported(MATMUL_VARIANTS[name], t)) throw new Error(`${where}=${name} needs subgroups this adapter lacks`);
  return name;
}

function settledVariant(t: AdapterTraits): MatmulVariantName | null {
  const forced = forcedVariant(t);
  if (forced) return forced;
  const key = t.description;
  if (!chosen.has(key) && !storeRead.has(key)) {
    storeRead.add(key);
    const record = store.remember?.read(key);
    if (isTuneRecord(record) && variantSupported(MATMUL_VARIANTS[record.variant], t)) chosen.set(key, record.variant);
  }
  return chosen.get(key) ?? null;
}

/** The variant this adapter runs, without measuring anything. */
export function currentVariant(t: AdapterTraits): MatmulVariantName {
  return settledVariant(t) ?? defaultVariant(t);
}

/** Whether the choice for this adapter is settled (forced, made in this process, or read from the store). */
export function isTuned(t: AdapterTraits): boolean {
  return settledVariant(t) !== null;
}

/** Forgets the in-process choice, so the next look reads the store again (tests). */
export function forgetVariant(description: string): void {
  chosen.delete(description);
  storeRead.delete(description);
}

export interface TuneResult {
  variant: MatmulVariantName;
  /** Best GFLOP/s per candidate on each tuning product (empty when the choice was already settled). */
  gflops: Partial<Record<MatmulVariantName, number[]>>;
  measured: boolean;
}

export interface TuneOptions {
  /** Measure even when a choice is remembered. */
  force?: boolean;
  /** Defaults to every variant this adapter supports. */
  candidates?: readonly MatmulVariantName[];
  /** What is timed; TUNING_PRODUCTS by default. */
  products?: readonly TuneProduct[];
  /** Timed runs per candidate, taken in turns so that a busy machine slows all of them alike. */
  rounds?: number;
  log?: (line: string) => void;
}

/**
 * GPT-2's MLP input projection at 256 tokens, and the two narrow products of a training step's
 * output head, [rows, V]·[V, C] and [V, rows]ᵀ·[rows, C]: a variant that wins the wide product by a
 * little can lose these by 2–3× (docs/kernels.md), and on a small model they are most of a step.
 */
const TUNING_PRODUCTS: readonly TuneProduct[] = [
  { shape: [256, 768, 3072], transA: false },
  { shape: [64, 8192, 64], transA: false },
  { shape: [8192, 64, 64], transA: true },
];

/**
 * Measures the candidates, each fitted to the product as matmulVariant fits it, on representative
 * products and remembers the one whose times, each against the fastest candidate's on the same
 * product, have the smallest geometric mean (so that no product's size drowns the others'), in
 * memory and in the store, so later processes skip this.
 * A candidate whose result disagrees with the first one's is dropped (a guard on the subgroup
 * assumptions of the sharing variants). A no-op when the choice is already settled, unless `force`.
 */
export async function autotuneMatmul(gpu: Gpu, options: TuneOptions = {}): Promise<TuneResult> {
  const traits = adapterTraits(gpu);
  if (!options.force && isTuned(traits)) return { variant: currentVariant(traits), gflops: {}, measured: false };
  const { products = TUNING_PRODUCTS, rounds = 3, log } = options;
  const candidates = (options.candidates ?? MATMUL_VARIANT_NAMES).filter((name) => variantSupported(MATMUL_VARIANTS[name], traits));
  if (candidates.length === 0) throw new Error('autotuneMatmul: no candidate runs on this adapter');
  // Deterministic data: the tuner gives the same answer for the same timings.
  const data = (size: number, salt: number) => Float32Array.from({ length: size }, (_, i) => (((i + salt) * 7919) % 1009) / 1009 - 0.5);
  let valid = candidates;
  const best = products.map(() => new Map<MatmulVariantName, number>());
  for (const [p, { shape: [m, k, n], transA }] of products.entries()) {
    const s: MatmulShape = { batch: 1, m, k, n, transA, transB: false, broadcastB: true };
    const a = gpu.upload(data(m * k, 1));
    const b = gpu.upload(data(k * n, 2));
    try {
      let reference: Float32Array | null = null;
      const agreeing: MatmulVariantName[] = [];
      for (const name of valid) {
        const c = matmulWith(gpu, fitVariant(MATMUL_VARIANTS[name], m, n), a, b, null, s); // compiles, warms up
        const out = (await gpu.read(c)) as Float32Array;
        gpu.release(c);
        reference ??= out;
        if (maxRelativeDifference(out, reference) > 1e-3) log?.(`matmul tune: ${name} disagrees with ${valid[0]}, dropped`);
        else agreeing.push(name);
      }
      valid = agreeing;
      for (let round = 0; round < rounds; round++) {
        for (const name of valid) {
          const start = performance.now();
          gpu.release(matmulWith(gpu, fitVariant(MATMUL_VARIANTS[name], m, n), a, b, null, s));
          await gpu.sync();
          const ms = performance.now() - start;
          best[p].set(name, Math.min(best[p].get(name) ?? Infinity, ms));
        }
      }
    } finally {
      gpu.release(a);
      gpu.release(b);
    }
  }
  const slowdown = slowdowns(best);
  const gflops: Partial<Record<MatmulVariantName, number[]>> = {};
  for (const [name, factor] of slowdown) {
    gflops[name] = products.map(({ shape: [m, k, n] }, p) => (2 * m * k * n) / (best[p].get(name)! * 1e6));
    log?.(`matmul tune: ${name} ${gflops[name].map((g) => g.toFixed(2)).join(' / ')} GFLOP/s, ${factor.toFixed(2)}× the fastest`);
  }
  const [variant] = [...slowdown].reduce((x, y) => (y[1] < x[1] ? y : x));
  rememberTune(gpu.description, {
    variant, gflops, products: [...products], version: MATMUL_KERNEL_VERSION, measuredAt: new Date().toISOString(),
  });
  return { variant, gflops, measured: true };
}

/**
 * Each candidate's times (one map per product) against the fastest candidate's on the same product,
 * as a geometric mean over the products; a candidate missing from a product (dropped there) is left out.
 */
export function slowdowns<Name>(times: readonly ReadonlyMap<Name, number>[]): Map<Name, number> {
  const names = [...(times[0]?.keys() ?? [])].filter((name) => times.every((t) => t.has(name)));
  const fastest = times.map((t) => Math.min(...names.map((name) => t.get(name)!)));
  return new Map(names.map((name) => [name, Math.exp(times.reduce((sum, t, p) => sum + Math.log(t.get(name)! / fastest[p]), 0) / times.length)]));
}

function maxRelativeDifference(x: Float32Array, y: Float32Array): number {
  let scale = 0;
  for (const v of y) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / (Math.abs(y[i]) + 1e-3 * scale));
  return Number.isNaN(worst) ? Infinity : worst;
}

/** Fewer workgroups than this leave a core of a software rasterizer idle or the load uneven. */
const MIN_WORKGROUPS = 32;

/**
 * The variant this adapter runs (see above for how it is chosen), fitted to a product of
 * m rows and n columns. Register blocks shrink to the shape: decoding multiplies one row at a time,
 * so tm drops to the next power of two of m and a thread does not compute copies of a clamped row;
 * a narrow C (n = 64 in a d-64 model's layers and its head's gradients) halves the lanes along N
 * while they would idle on clamped columns, then while the grid has too few workgroups to keep
 * every core busy. A subgroup that shares A keeps its full width.
 */
export function matmulVariant(gpu: Gpu, m = Infinity, n = Infinity): MatmulVariant {
  return fitVariant(MATMUL_VARIANTS[currentVariant(adapterTraits(gpu))], m, n);
}

/** `v` fitted to a product of m rows and n columns, as matmulVariant fits the chosen one. */
function fitVariant(v: MatmulVariant, m: number, n: number): MatmulVariant {
  if (v.kind !== 'block') return v;
  const tm = m < v.tm ? Math.max(1, 2 ** Math.ceil(Math.log2(m))) : v.tm;
  const minLanes = Math.max(v.share, 8);
  const groups = (wgx: number) => Math.ceil(m / (v.wgy * tm)) * Math.ceil(n / (wgx * v.tn));
  let wgx: number = v.wgx;
  while (wgx > minLanes && (wgx / 2) * v.tn >= n) wgx /= 2;
  while (wgx > minLanes && groups(wgx) < MIN_WORKGROUPS) wgx /= 2;
  return { ...v, tm, wgx };
}

/** Rows a `rows` workgroup holds; more rows take more workgroups, each reading B again. */
const ROWS_PER_GROUP = 16;
/** Columns a `rows` workgroup walks: enough to repay loading its rows of A. */
const ROWS_COLUMNS_PER_GROUP = 64;
/**
 * Up to this many rows `rows` was measured to win on x·Wᵀ (docs/kernels.md: a training step's head
 * over its counted positions too); at 256 rows it ties, and longer prompts' prefill keeps the tuned variant.
 */
const ROWS_MAX_M = 128;
/** By an untransposed B (x·W), `rows` was measured from this many rows (below, the fitted register blocks were as fast) … */
const ROWS_UNTRANSPOSED_MIN_M = 9;
/** … up to this many (docs/kernels.md). */
const ROWS_UNTRANSPOSED_MAX_M = 64;

/**
 * The `rows` variant for x·Wᵀ, or x·W from ROWS_UNTRANSPOSED_MIN_M rows, with few rows, where the
 * adapter has subgroups (see rowsWgsl), or null. Its workgroup is the smallest subgroup the adapter
 * may run, so it is always one subgroup.
 */
export function rowsVariant(gpu: Gpu, s: MatmulShape): MatmulVariant | null {
  if (s.transA || s.m > (s.transB ? ROWS_MAX_M : ROWS_UNTRANSPOSED_MAX_M) || (!s.transB && s.m < ROWS_UNTRANSPOSED_MIN_M)) return null;
  const traits = adapterTraits(gpu);
  const lanes = traits.subgroupMinSize;
  if (!traits.subgroups || lanes < 4) return null;
  const tm = Math.min(ROWS_PER_GROUP, 2 ** Math.ceil(Math.log2(Math.max(1, s.m))));
  return { kind: 'rows', tm, tn: ROWS_COLUMNS_PER_GROUP, wgx: lanes, wgy: 1, bk: 0, share: 0 };
}

/** The Backend's matmul: `rows` for a few rows (rowsVariant), else the variant this adapter was tuned to. */
export function matmul(gpu: Gpu, a: GpuStorage, b: GpuStorage, bias: GpuStorage | null, s: MatmulShape, epilogue: GpuEpilogue = {}): GpuStorage {
  return matmulWith(gpu, rowsVariant(gpu, s) ?? matmulVariant(gpu, s.m, s.n), a, b, bias, s, {}, epilogue);
}
