/**
 * Training-step speed: the real loop (src/train/trainer.ts: forward, masked cross-entropy, backward,
 * clipping, AdamW, the loss read back one step late) on random token sequences of exactly `--seq`
 * tokens, batch `--batch`. Prints a table and, last, one JSON line:
 * {"bench":"train","device":…,"config":{n_embd,n_layer,n_head,vocab_size},"batch":B,"seq":T,"step_ms":…,
 *  "tokens_per_s":…,"effective_gflops":…,"fraction_of_matmul_peak":…,"peak_gpu_bytes":…,…}
 *
 *   npx tsx bench/train.ts [--shapes default|gpt2|gpt2-medium|gpt2-large|gpt2-xl] [--batch 8] [--seq 128] [--steps 5] [--warmup 2]
 *                          [--lora-rank r [--dtype f32|f16|bf16]] [--checkpoint-activations]
 *
 * Shapes (random weights, GPT-2's init, vocabulary 50257): `default` d 256, 4 layers, 4 heads (about
 * 2 minutes on lavapipe); `gpt2`, `gpt2-medium`, `gpt2-large` and `gpt2-xl` the presets (minutes a step on
 * lavapipe: use --steps 1 --warmup 1). `--lora-rank r` trains LoRA adapters of rank r (alpha = r) on
 * all four linears of every block over the frozen base, stored in f32 or, with `--dtype f16` (bf16), in f16 (bf16).
 * `--checkpoint-activations` recomputes each block's activations during backward (GPT2.checkpointActivations).
 *
 * Method. The step time is the median interval between consecutive steps' completions after the
 * warm-up steps. The effective rate counts 6 · parameters · tokens per step (forward 2, backward 4
 * flops per parameter and token; the tied head's matmuls are wte's share), the usual estimate that
 * leaves attention's T² terms out; under LoRA a frozen parameter costs 4 (no weight gradient) and an
 * adapter's 6. The matmul peak is the best GFLOP/s of bench/kernels.ts' GPT-2
 * shapes ([1024, 768]·[768, 2304], ·[768, 3072], [1024, 3072]·[3072, 768]) measured here, in this
 * process, just before. Peak GPU memory is the buffer pool's high-water mark over the whole run
 * (live + pooled bytes), set against the training state: the weights in their storage type, and a
 * gradient and AdamW's two moments (12 bytes) for each trainable parameter.
 */
import { parseArgs } from 'node:util';
import { medianMs, printTable } from './harness.js';
import { benchShapes } from './shapes.js';
import { initializeWeights } from '../src/gpt/init.js';
import { addLoRA } from '../src/gpt/lora.js';
import { GPT2 } from '../src/gpt/model.js';
import { createBackend, releaseBackend } from '../src/node/backend.js';
import type { WebGpuBackend } from '../src/kernels/webgpu-backend.js';
import { isHalfDType, type Backend, type HalfDType, type MatmulShape } from '../src/tensor/backend.js';
import { random, tensor } from '../src/tensor/create.js';
import { narrowTo } from '../src/tensor/half.js';
import { mul } from '../src/tensor/ops.js';
import { tidy } from '../src/tensor/scope.js';
import { AdamW } from '../src/train/adamw.js';
import { Trainer } from '../src/train/trainer.js';


function parseFlags() {
  const { values } = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      shapes: { type: 'string', default: 'default' },
      batch: { type: 'string', default: '8' },
      seq: { type: 'string', default: '128' },
      steps: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      device: { type: 'string', default: 'webgpu' },
      'lora-rank': { type: 'string' },
      dtype: { type: 'string', default: 'f32' },
      'checkpoint-activations': { type: 'boolean', default: false },
    },
  });
  benchShapes(values.shapes);
  if (values.device !== 'webgpu' && values.device !== 'cpu') throw new Error(`--device must be webgpu or cpu, got ${values.device}`);
  const device: 'webgpu' | 'cpu' = values.device;
  const int = (name: 'batch' | 'seq' | 'steps' | 'warmup', min: number) => {
    const x = Number(values[name]);
    if (!Number.isInteger(x) || x < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${values[name]}`);
    return x;
  };
  const loraRank = values['lora-rank'] === undefined ? null : Number(values['lora-rank']);
  if (loraRank !== null && !(Number.isInteger(loraRank) && loraRank > 0)) throw new Error(`--lora-rank must be a positive integer, got ${values['lora-rank']}`);
  if (values.dtype !== 'f32' && values.dtype !== 'f16' && values.dtype !== 'bf16') throw new Error(`--dtype must be f32, f16 or bf16, got ${values.dtype}`);
  const dtype: 'f32' | HalfDType = values.dtype;
  if (dtype !== 'f32' && loraRank === null) throw new Error(`--dtype ${dtype} needs --lora-rank: only a frozen base may be stored in 16 bits`);
  return { shapes: values.shapes, batch: int('batch', 1), seq: int('seq', 1), steps: int('steps', 1), warmup: int('warmup', 1), device, loraRank, dtype, checkpointActivations: values['checkpoint-activations'] };
}

/**
 * GPT-2's init (src/gpt/init.ts) for a model whose matrices are stored in 16 bits: each drawn in f32
 * on the device, rounded on the host (no device op writes 16 bits), so no f32 copy of the model is made.
 */
async function initializeHalfWeights(model: GPT2, dtype: HalfDType, seed: number): Promise<void> {
  const std = 0.02;
  const residualStd = std / Math.sqrt(2 * model.config.n_layer);
  for (const [i, [name, p]] of model.namedParameters().entries()) {
    if (p.rank < 2) continue;
    const scale = name.endsWith('c_proj.weight') ? residualStd : std;
    const drawn = tidy(() => mul(random(p.shape, (seed * 7919 + i) >>> 0, { backend: p.backend }), scale));
    const values = await drawn.toFloat32();
    drawn.dispose();
    model.replaceParameter(name, tensor(narrowTo(dtype, values), p.shape, { backend: p.backend }));
  }
}

/** The best GFLOP/s over bench/kernels.ts' GPT-2 matmul shapes. */
async function matmulPeak(backend: Backend): Promise<number> {
  let best = 0;
  for (const [m, k, n] of [[1024, 768, 2304], [1024, 768, 3072], [1024, 3072, 768]]) {
    const s: MatmulShape = { batch: 1, m, k, n, transA: false, transB: false, broadcastB: true };
    const a = backend.random(m * k, 1, 'normal');
    const b = backend.random(k * n, 2, 'normal');
    const ms = await medianMs(backend, () => backend.release(backend.matmul(a, b, null, s)), { warmup: 1 });
    backend.release(a);
    backend.release(b);
    best = Math.max(best, (2 * m * k * n) / ms / 1e6);
  }
  return best;
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const config = { ...benchShapes(flags.shapes), n_positions: Math.max(benchShapes(flags.shapes).n_positions, flags.seq) };
  const backend = await createBackend(flags.device);
  const gpu = backend.name === 'webgpu' ? (backend as WebGpuBackend).gpu : null;
  console.log(`device: ${backend.description}`);
  const peak = await matmulPeak(backend);

  const model = new GPT2(config, backend, { dtype: flags.dtype });
  if (flags.dtype !== 'f32') await initializeHalfWeights(model, flags.dtype, 0);
  else initializeWeights(model, 0);
  if (flags.loraRank !== null) addLoRA(model, { rank: flags.loraRank });
  model.checkpointActivations = flags.checkpointActivations;
  const parameters = model.parameterCount();
  const trainable = model.namedTrainableParameters().reduce((n, [, p]) => n + p.size, 0);
  const frozen = parameters - trainable;
  const stateBytes = model.parameters().reduce((n, p) => n + p.size * (isHalfDType(p.dtype) ? 2 : 4), 0) + 12 * trainable;
  const optimizer = new AdamW(model, { weightDecay: 0.01 });
  // Random sequences of seq + 1 tokens: every target counts, no padding.
  let state = 12345;
  const token = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) % config.vocab_size;
  const total = flags.warmup + flags.steps;
  const examples = Array.from({ length: flags.batch * total }, () => ({ ids: Array.from({ length: flags.seq + 1 }, token), promptLength: 0 }));
  const done: number[] = [];
  const trainer = new Trainer(model, optimizer, examples, [], {
    epochs: 1, batchSize: flags.batch, lr: 1e-4, lrSchedule: 'constant', warmupSteps: 0, maxSteps: total, gradAccum: 1,
    clip: 1, seed: 0, shuffle: false, evalEvery: 0, maskPrompt: false, contextLength: flags.seq,
  }, {
    onStep: (record) => {
      done.push(performance.now());
      // Long runs (minutes a step) show their progress and the pool's high-water mark so far.
      const peakSoFar = gpu ? `, peak GPU ${(gpu.memoryStats().peakBytes / 1e6).toFixed(0)} MB` : '';
      console.log(`step ${record.step}/${total}: loss ${record.loss.toFixed(3)}${peakSoFar}`);
    },
  });
  await trainer.run();
  const intervals = done.slice(flags.warmup).map((t, i) => t - done[flags.warmup - 1 + i]);
  intervals.sort((a, b) => a - b);
  const stepMs = intervals[Math.floor(intervals.length / 2)];
  const tokens = flags.batch * flags.seq;
  const effective = ((6 * trainable + 4 * frozen) * tokens) / stepMs / 1e6;
  const peakBytes = gpu ? gpu.memoryStats().peakBytes : null;
  const losses = trainer.records.map((r) => r.loss);
  model.dispose();
  optimizer.dispose();

  printTable([{
    shapes: `${flags.shapes} (d ${config.n_embd}, ${config.n_layer} layers)`, parameters: `${(parameters / 1e6).toFixed(1)} M`,
    training: (flags.loraRank === null ? 'full' : `LoRA r${flags.loraRank}, ${flags.dtype} base`) + (flags.checkpointActivations ? ', recomputed' : ''), trainable: `${(trainable / 1e6).toFixed(2)} M`,
    'batch×seq': `${flags.batch}×${flags.seq}`, 'step ms': stepMs, 'tokens/s': tokens / (stepMs / 1000),
    'effective GFLOP/s': effective, 'matmul peak': peak, 'of peak': effective / peak,
    'peak GPU MB': peakBytes === null ? '' : peakBytes / 1e6, 'weights+grads+moments MB': stateBytes / 1e6,
  }]);
  console.log(`losses: ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  const { n_embd, n_layer, n_head, vocab_size } = config;
  console.log(JSON.stringify({
    bench: 'train', device: backend.description, config: { n_embd, n_layer, n_head, vocab_size }, batch: flags.batch, seq: flags.seq,
    lora_rank: flags.loraRank, dtype: flags.dtype, checkpoint_activations: flags.checkpointActivations,
    step_ms: stepMs, tokens_per_s: tokens / (stepMs / 1000), effective_gflops: effective, matmul_peak_gflops: peak,
    fraction_of_matmul_peak: effective / peak, peak_gpu_bytes: peakBytes, weights_grads_moments_bytes: stateBytes, parameters, trainable_parameters: trainable,
  }));
}

try {
  await main();
} finally {
  releaseBackend();
}
