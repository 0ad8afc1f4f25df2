/**
 * Which matmul variant an adapter runs: measured once per adapter and remembered, in memory for the
 * process and in a TuneStore that the runtime provides (Node: a JSON file under the OS cache folder,
 * src/node/tune-file.ts), so later runs skip the measuring.
 *
 * Order of precedence: a variant the store forces (Node: GPT2_MATMUL_VARIANT=<name>, for
 * experiments), the choice made in this process, the store's record, and a default per kind of
 * adapter (a software rasterizer wants register blocking, a GPU workgroup-memory tiles).
 */

export interface MatmulVariant {
  /** `block`: each thread computes a tm × tn block of C from global memory, no workgroup memory.
   *  `tiled`: a workgroup stages bk-deep slabs of A and B in workgroup memory, then each thread
   *  computes tm × tn from there.
   *  `rows`: A·Bᵀ for a few rows (decoding's output head): a workgroup of one subgroup (wgx lanes)
   *  holds tm rows of A and walks tn columns, its lanes splitting K (see matmul.ts). Not tuned:
   *  matmul.ts picks it by shape. */
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

/** Bump when a kernel changes enough that old measurements no longer hold. */
export const MATMUL_KERNEL_VERSION = 1;

/** What the choice depends on besides measurements. */
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

/** Software Vulkan/D3D drivers that run shaders on the CPU. */
export function isSoftwareAdapter(description: string): boolean {
  return /llvmpipe|lavapipe|swiftshader|warp/i.test(description);
}

/** The choice before any measuring: register blocks for a CPU-backed driver, workgroup tiles for a GPU. */
export function defaultVariant(t: AdapterTraits): MatmulVariantName {
  if (!isSoftwareAdapter(t.description)) return 'tiled8x8-16x16-k8';
  return variantSupported(MATMUL_VARIANTS['share8-8x4'], t) ? 'share8-8x4' : 'block8x4-64x1';
}

/** Choices measured or set in this process, or read from the store. */
const chosen = new Map<string, MatmulVariantName>();
const storeRead = new Set<string>();

export interface TuneRecord {
  variant: MatmulVariantName;
  /** GFLOP/s of every candidate on `shape`. */
  gflops: Record<string, number>;
  shape: [number, number, number];
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
