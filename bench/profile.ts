/**
 * Where a step's device time goes, kernel by kernel. Records the dispatches of one steady-state
 * step — a training step of the demo (`--step train`: src/cli/train-run.ts with the demo's defaults),
 * a cached decode step (`--step decode`: bench/kvcache.ts's shapes, `--shapes`, at token 300) or a
 * continuous-batching decode step (`--step serve`: `--rows` sequences of 64, 72, 80, … tokens, each
 * in its own slot of a KVCachePool, as the server's ContinuousBatcher runs them) — then
 * replays each dispatch on its own, `--repeat` times with the device drained before and after, and
 * sums the times per kernel and configuration. The sum exceeds the step's own time by a drain per
 * dispatch (~0.1 ms on lavapipe), which matters only for the smallest kernels: the table is for
 * ranking, not for the step time itself (bench/train.ts and bench/kvcache.ts measure that).
 *
 *   npx tsx bench/profile.ts [--step train|decode|serve] [--shapes default|gpt2|gpt2-medium] [--rows 16] [--repeat 3]
 *
 * Prints a table and, last, one JSON line: {"bench":"profile","step":…,"shapes":…,("batch_rows":N with --step serve,)"dispatches":…,"replayed_ms":…,"rows":[…]}
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { printTable } from './harness.js';
import { benchShapes } from './shapes.js';
import { generateStream } from '../src/gpt/generate.js';
import { initializeWeights } from '../src/gpt/init.js';
import { KVCachePool } from '../src/gpt/kv-cache-pool.js';
import { GPT2 } from '../src/gpt/model.js';
import { Gpu } from '../src/kernels/gpu.js';
import { tensor } from '../src/tensor/create.js';
import { noGrad } from '../src/tensor/graph.js';
import { tidy } from '../src/tensor/scope.js';
import { createBackend, releaseBackend } from '../src/node/backend.js';
import type { WebGpuBackend } from '../src/kernels/webgpu-backend.js';
import { parseTrainOptions } from '../src/cli/train-options.js';
import { runTraining } from '../src/cli/train-run.js';

type DispatchArgs = Parameters<Gpu['dispatch']>;

function parseFlags() {
  const { values } = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      step: { type: 'string', default: 'train' },
      shapes: { type: 'string', default: 'default' },
      repeat: { type: 'string', default: '3' },
      rows: { type: 'string' },
    },
  });
  if (values.step !== 'train' && values.step !== 'decode' && values.step !== 'serve') {
    throw new Error(`--step must be train, decode or serve, got ${values.step}`);
  }
  const step: 'train' | 'decode' | 'serve' = values.step;
  benchShapes(values.shapes);
  if (values.step === 'train' && values.shapes !== 'default') throw new Error('--shapes applies to --step decode and serve (the training step is the demo\'s)');
  if (values.step !== 'serve' && values.rows !== undefined) throw new Error('--rows applies to --step serve');
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error(`--repeat must be a positive integer, got ${values.repeat}`);
  const rows = Number(values.rows ?? '16');
  if (!Number.isInteger(rows) || rows < 1) throw new Error(`--rows must be a positive integer, got ${values.rows}`);
  return { step, shapes: values.shapes, repeat, rows };
}

/** Wraps Gpu.dispatch so that the dispatches made while `recording()` is true are kept (and still run). */
function recordDispatches(recording: () => boolean): DispatchArgs[] {
  const recorded: DispatchArgs[] = [];
  // eslint-disable-next-line @typescript-eslint/unbound-method -- the original is kept to be applied to each instance the wrapper runs on
  const dispatch = Gpu.prototype.dispatch;
  Gpu.prototype.dispatch = function (this: Gpu, ...args: DispatchArgs) {
    dispatch.apply(this, args);
    if (recording()) recorded.push(args);
  };
  return recorded;
}

/** One row per kernel configuration: matmuls by their transposes and chunk sizes, others by their compile-time parameters. */
function label([kernel, params, , uniforms]: DispatchArgs): string {
  if (kernel.name === 'matmul') {
    const p = params as { transA: boolean; transB: boolean; wgx: number; tm: number };
    const [m, n, k] = uniforms as number[];
    return `matmul ${p.transA ? 'Aᵀ' : 'A'}·${p.transB ? 'Bᵀ' : 'B'} m ${m} n ${n} k ${k} (${p.wgx} lanes, tm ${p.tm})`;
  }
  return params === undefined ? kernel.name : `${kernel.name} ${JSON.stringify(params)}`;
}

async function recordTrainingStep(): Promise<DispatchArgs[]> {
  const out = join(mkdtempSync(join(tmpdir(), 'profile-')), 'run');
  let polls = 0;
  // shouldStop is polled between steps: the fifth interval is a steady-state step.
  const recorded = recordDispatches(() => polls === 5);
  const options = parseTrainOptions(['--out', out, '--max-steps', '6', '--eval-every', '0']);
  if (options === 'help') throw new Error('unreachable');
  try {
    await runTraining(options, { shouldStop: () => (polls++, false), stream: { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream });
  } finally {
    rmSync(join(out, '..'), { recursive: true, force: true });
  }
  return recorded;
}

async function recordDecodeStep(backend: WebGpuBackend, shapes: string): Promise<DispatchArgs[]> {
  const model = new GPT2(benchShapes(shapes), backend);
  initializeWeights(model, 0);
  const prompt = Array.from({ length: 64 }, (_, i) => (i * 7919) % 50000);
  const tokens = 300;
  let made = 0;
  const recorded = recordDispatches(() => made === tokens - 1);
  for await (const _ of generateStream(model, prompt, { temperature: 0, maxNewTokens: tokens, eosId: null })) made++;
  model.dispose();
  return recorded;
}

/** ContinuousBatcher's decode step: `rows` sequences of 64, 72, 80, … tokens, each prefilled into its own pool slot. */
async function recordServeStep(backend: WebGpuBackend, shapes: string, rows: number): Promise<DispatchArgs[]> {
  const config = benchShapes(shapes);
  const model = new GPT2(config, backend);
  initializeWeights(model, 0);
  model.eval();
  const pool = new KVCachePool(config, rows, backend);
  const slots = Array.from({ length: rows }, () => pool.acquire());
  const ids = (values: number[], shape: number[]) => tensor(Int32Array.from(values, (i) => (i * 7919) % 50000), shape, { backend });
  for (const [i, slot] of slots.entries()) {
    const length = 64 + 8 * i;
    const logits = tidy(() => noGrad(() => model.forward(ids(Array.from({ length }, (_, t) => t), [1, length]), { pooled: { pool, slots: [slot] }, lastOnly: true })));
    await logits.toFloat32();
    logits.dispose();
  }
  let recording = true;
  const recorded = recordDispatches(() => recording);
  const logits = tidy(() => noGrad(() => model.forward(ids(slots, [rows, 1]), { pooled: { pool, slots }, lastOnly: true })));
  recording = false;
  await logits.toFloat32();
  logits.dispose();
  pool.dispose();
  model.dispose();
  return recorded;
}

async function main(): Promise<void> {
  const { step, shapes, repeat, rows: batchRows } = parseFlags();
  const backend = await createBackend('webgpu');
  if (backend.name !== 'webgpu') throw new Error('bench/profile.ts profiles WebGPU kernels: no adapter was found');
  const { gpu } = backend as WebGpuBackend;
  console.log(`device: ${gpu.description}`);
  const recorded = step === 'train' ? await recordTrainingStep()
    : step === 'decode' ? await recordDecodeStep(backend as WebGpuBackend, shapes)
    : await recordServeStep(backend as WebGpuBackend, shapes, batchRows);
  const byLabel = new Map<string, { ms: number; dispatches: number }>();
  for (const args of recorded) {
    await gpu.sync();
    const start = performance.now();
    for (let r = 0; r < repeat; r++) gpu.dispatch(...args);
    await gpu.sync();
    const row = byLabel.get(label(args)) ?? { ms: 0, dispatches: 0 };
    row.ms += (performance.now() - start) / repeat;
    row.dispatches++;
    byLabel.set(label(args), row);
  }
  const rows = [...byLabel].map(([kernel, r]) => ({ kernel, dispatches: r.dispatches, ms: r.ms })).sort((a, b) => b.ms - a.ms);
  const total = rows.reduce((s, r) => s + r.ms, 0);
  console.log(`one ${step} step${step === 'serve' ? ` of ${batchRows} rows` : ''}: ${recorded.length} dispatches, ${total.toFixed(1)} ms replayed one by one`);
  printTable(rows.map((r) => ({ kernel: r.kernel, dispatches: r.dispatches, ms: r.ms.toFixed(2), share: `${((100 * r.ms) / total).toFixed(1)}%` })));
  console.log(JSON.stringify({ bench: 'profile', device: gpu.description, step, shapes: step === 'train' ? 'demo' : shapes, ...(step === 'serve' ? { batch_rows: batchRows } : {}), dispatches: recorded.length, replayed_ms: total, rows }));
  releaseBackend();
}

await main();
