/**
 * The quick model of quick-model.ts, trained once and saved as a model folder (config.json +
 * model.safetensors, Hugging Face layout) that the other experiments take with `--model`, so that
 * several of them need one training between them. Prints the training loss at a few steps and the
 * held-out loss (the Trainer's validation: mean cross-entropy over the counted targets of the
 * held-out entries) with its perplexity.
 *
 *   npx tsx docs/experiments/quick-train.ts [--out <folder>] [--device auto|webgpu|cpu] [--steps 24]
 *
 * Last line: {"experiment":"quick-train","out":…,"first_loss":…,"last_loss":…,"val_loss":…,"val_perplexity":…}
 */
import { saveGpt2Weights } from '../../src/node/weights-folder.js';
import { createBackend } from '../../src/node/backend.js';
import { finish, fmt, loadData, parseExperimentFlags, QUICK_CONFIG, QUICK_TRAINING, trainQuickModel } from './quick-model.js';

const flags = parseExperimentFlags({ out: { type: 'string' } });
if (flags.model !== null) throw new Error('quick-train trains a new model: --model does not apply');
const out = flags.values.out as string | undefined;
const backend = await createBackend(flags.device);
const data = loadData();
const started = performance.now();
const t = { ...QUICK_TRAINING, steps: flags.steps };
const { model, records } = await trainQuickModel(backend, data.train.map((i) => data.examples[i]), data.val.map((i) => data.examples[i]), t);
const seconds = (performance.now() - started) / 1000;
const first = records[0];
const last = records.at(-1)!;
const valLoss = last.val_loss!;
console.log(`quick model: d ${QUICK_CONFIG.n_embd}, ${QUICK_CONFIG.n_layer} layers, ${QUICK_CONFIG.n_head} heads, ${(model.parameterCount() / 1e6).toFixed(2)} M parameters, on ${backend.name}`);
console.log(`${records.length} steps of ${t.batchSize} entries (responses only), lr ${t.lr}, ${fmt(seconds, 1)} s\n`);
console.log('| step | training loss |');
console.log('|---:|---:|');
for (const r of records.filter((_, i) => i === 0 || (i + 1) % 6 === 0)) console.log(`| ${r.step} | ${fmt(r.loss)} |`);
console.log(`\nheld-out loss ${fmt(valLoss)} nats/token (perplexity ${fmt(Math.exp(valLoss), 0)}) on ${data.val.length} held-out entries; ln V = ${fmt(Math.log(QUICK_CONFIG.vocab_size))}`);
if (out) {
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, p] of model.namedParameters()) weights.set(name, { shape: [...p.shape], data: await p.toFloat32() });
  await saveGpt2Weights(out, QUICK_CONFIG, weights);
  console.log(`saved to ${out}`);
}
console.log(JSON.stringify({
  experiment: 'quick-train', out: out ?? null, device: backend.name, steps: records.length, seconds,
  first_loss: first.loss, last_loss: last.loss, val_loss: valLoss, val_perplexity: Math.exp(valLoss),
}));
finish(model);
