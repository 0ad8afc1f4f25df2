/**
 * The kernel benchmark: matmul at GPT-2's shapes, a device-to-device copy (the bandwidth every
 * memory-bound row is measured against), and each kernel family's rows. Prints a table and, last,
 * one JSON line: {"bench":"kernels","device":…,"results":[…]}.
 *
 *   npx tsx bench/kernels.ts [--device webgpu|cpu] [--only matmul,copy,layernorm,…] [--runs N] [--variants]
 *
 * --only picks families (the copy is measured whenever a memory-bound family needs its bandwidth;
 * `head` is decoding's output head at 1 to 64 rows, `layers` a decode step's x·W at 1 to 64 rows;
 * `half` matmul with an f16 and a bf16 B beside an f32 one);
 * --runs sets the timed runs of every row (after warm-up; the median is reported); --variants adds
 * every matmul variant this adapter supports at [1024, 768]·[768, 3072]. On WebGPU the matmul variant
 * is chosen by measuring once per adapter (remembered under ~/.cache/gpt2-webgpu), before any row.
 */
import { parseArgs } from 'node:util';
import { printTable, overrideRuns } from './harness.js';
import { adamwRows } from './kernel-rows/adamw.js';
import { attentionRows } from './kernel-rows/attention.js';
import { copyRows } from './kernel-rows/copy.js';
import { crossEntropyRows } from './kernel-rows/cross-entropy.js';
import { embeddingRows } from './kernel-rows/embedding.js';
import { geluRows } from './kernel-rows/gelu.js';
import { halfRows } from './kernel-rows/half.js';
import { layerNormRows } from './kernel-rows/layernorm.js';
import { headRows, layerRows, matmulRows } from './kernel-rows/matmul.js';
import { softmaxRows } from './kernel-rows/softmax.js';
import type { BenchRow } from './kernel-rows/types.js';
import { autotuneMatmul } from '../src/kernels/matmul-tune.js';
import { createBackend, releaseBackend } from '../src/node/backend.js';
import type { WebGpuBackend } from '../src/kernels/webgpu-backend.js';
import type { Backend } from '../src/tensor/backend.js';

type Producer = (backend: Backend, copyGbps: number) => Promise<BenchRow[]>;

/** Families in the order they print; each takes the copy bandwidth as its denominator. */
const FAMILIES: Record<string, Producer> = {
  head: headRows,
  layers: layerRows,
  half: halfRows,
  layernorm: layerNormRows,
  gelu: geluRows,
  softmax: softmaxRows,
  embedding: embeddingRows,
  adamw: adamwRows,
  attention: attentionRows,
  'cross-entropy': crossEntropyRows,
};
const ALL = ['matmul', 'copy', ...Object.keys(FAMILIES)];

function parseFlags() {
  const { values } = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      device: { type: 'string', default: 'webgpu' },
      only: { type: 'string' },
      runs: { type: 'string' },
      variants: { type: 'boolean', default: false },
    },
  });
  if (values.device !== 'webgpu' && values.device !== 'cpu') throw new Error(`--device must be webgpu or cpu, got ${values.device}`);
  const device: 'webgpu' | 'cpu' = values.device;
  const only = values.only === undefined ? ALL : values.only.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = only.filter((name) => !ALL.includes(name));
  if (unknown.length > 0) throw new Error(`--only: unknown ${unknown.join(', ')}; choose from ${ALL.join(', ')}`);
  let runs: number | null = null;
  if (values.runs !== undefined) {
    runs = Number(values.runs);
    if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got ${values.runs}`);
  }
  return { device, only: new Set(only), runs, variants: values.variants };
}

async function main(): Promise<void> {
  let flags: ReturnType<typeof parseFlags>;
  try {
    flags = parseFlags();
  } catch (e) {
    console.error(`bench/kernels.ts: ${(e as Error).message}`);
    process.exitCode = 2;
    return;
  }
  overrideRuns(flags.runs);
  const backend = await createBackend(flags.device);
  try {
    console.log(`device: ${backend.description}`);
    const results: BenchRow[] = [];
    if (flags.only.has('matmul') && backend.name === 'webgpu') {
      const tune = await autotuneMatmul((backend as WebGpuBackend).gpu, { log: (line) => console.log(line) });
      console.log(`matmul variant: ${tune.variant}${tune.measured ? ' (measured now)' : ' (remembered)'}`);
    }
    const needsCopy = flags.only.has('copy') || flags.only.has('matmul') || Object.keys(FAMILIES).some((f) => flags.only.has(f));
    let copyGbps = NaN;
    if (needsCopy) {
      const copy = await copyRows(backend);
      copyGbps = copy[0].gbps;
      results.push(...copy);
    }
    if (flags.only.has('matmul')) results.push(...(await matmulRows(backend, copyGbps, { variants: flags.variants })));
    for (const [name, produce] of Object.entries(FAMILIES)) {
      if (flags.only.has(name)) results.push(...(await produce(backend, copyGbps)));
    }
    printTable(results.map((r) => ({
      op: r.op,
      shape: r.shape.join('×'),
      ms: r.ms,
      'GFLOP/s': r.gflops ?? '',
      'GB/s': r.gbps ?? '',
      'of copy': r.fraction_of_copy ?? '',
      'of m = 1': r.of_one_row ?? '',
    })));
    console.log(JSON.stringify({ bench: 'kernels', device: backend.description, results }));
  } finally {
    releaseBackend();
  }
}

await main();
