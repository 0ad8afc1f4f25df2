/**
 * Which matmul variant an adapter runs: measured once per adapter and remembered, in memory for the
 * process and in a small JSON file under the OS cache folder, so later runs skip the measuring.
 *
 * Order of precedence: GPT2_MATMUL_VARIANT=<name> (for experiments), the choice made in this process,
 * the cache file, and a default per kind of adapter (a software rasterizer wants register blocking,
 * a GPU workgroup-memory tiles). Under vitest the file is neither read nor written unless
 * GPT2_MATMUL_TUNE_FILE names one, so tests see the same default on every machine;
 * GPT2_MATMUL_TUNE_FILE=off disables the file everywhere.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export interface MatmulVariant {
  /** `block`: each thread computes a tm × tn block of C from global memory, no workgroup memory.
   *  `tiled`: a workgroup stages bk-deep slabs of A and B in workgroup memory, then each thread
   *  computes tm × tn from there. */
  kind: 'block' | 'tiled';
  /** Rows and columns of C per thread. */
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

/** Whether a variant can run on this adapter (sharing needs subgroups at least `share` wide). */
export function variantSupported(v: MatmulVariant, t: AdapterTraits): boolean {
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

/** Choices measured or set in this process, or read from the file. */
const chosen = new Map<string, MatmulVariantName>();
const fileRead = new Set<string>();

export function tuneFilePath(): string | null {
  const named = process.env.GPT2_MATMUL_TUNE_FILE;
  if (named !== undefined) return named === '' || named === 'off' ? null : named;
  if (process.env.VITEST) return null;
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(cache, 'gpt2-webgpu', 'matmul-tune.json');
}

export interface TuneRecord {
  variant: MatmulVariantName;
  /** GFLOP/s of every candidate on `shape`. */
  gflops: Record<string, number>;
  shape: [number, number, number];
  version: number;
  measuredAt: string;
}

type TuneFile = Record<string, TuneRecord>;

function readTuneFile(path: string): TuneFile {
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as TuneFile) : {};
  } catch {
    return {}; // missing or unreadable: measure again
  }
}

/** The remembered record for an adapter, if the file holds a current one. */
export function rememberedTune(description: string): TuneRecord | null {
  const path = tuneFilePath();
  if (path === null) return null;
  const record = readTuneFile(path)[description];
  return record && record.version === MATMUL_KERNEL_VERSION && isVariantName(record.variant) ? record : null;
}

export function rememberTune(description: string, record: TuneRecord): void {
  chosen.set(description, record.variant);
  const path = tuneFilePath();
  if (path === null) return;
  try {
    const file = readTuneFile(path);
    file[description] = record;
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(file, null, 2) + '\n');
    renameSync(tmp, path);
  } catch (e) {
    console.warn(`gpt2-webgpu: could not save the matmul tuning to ${path}: ${(e as Error).message}`);
  }
}

function envVariant(t: AdapterTraits): MatmulVariantName | null {
  const name = process.env.GPT2_MATMUL_VARIANT;
  if (name === undefined || name === '') return null;
  if (!isVariantName(name)) {
    throw new Error(`GPT2_MATMUL_VARIANT=${name} is not a matmul variant; one of: ${MATMUL_VARIANT_NAMES.join(', ')}`);
  }
  if (!variantSupported(MATMUL_VARIANTS[name], t)) throw new Error(`GPT2_MATMUL_VARIANT=${name} needs subgroups this adapter lacks`);
  return name;
}

function settledVariant(t: AdapterTraits): MatmulVariantName | null {
  const forced = envVariant(t);
  if (forced) return forced;
  const key = t.description;
  if (!chosen.has(key) && !fileRead.has(key)) {
    fileRead.add(key);
    const record = rememberedTune(key);
    if (record && variantSupported(MATMUL_VARIANTS[record.variant], t)) chosen.set(key, record.variant);
  }
  return chosen.get(key) ?? null;
}

/** The variant this adapter runs, without measuring anything. */
export function currentVariant(t: AdapterTraits): MatmulVariantName {
  return settledVariant(t) ?? defaultVariant(t);
}

/** Whether the choice for this adapter is settled (forced, made in this process, or read from the file). */
export function isTuned(t: AdapterTraits): boolean {
  return settledVariant(t) !== null;
}

/** Forgets the in-process choice, so the next look reads the file again (tests). */
export function forgetVariant(description: string): void {
  chosen.delete(description);
  fileRead.delete(description);
}
