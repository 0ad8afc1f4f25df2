/**
 * Overfitting, measured: the quick model (quick-model.ts) trained on two entries of
 * data/instructions.json for 30 passes at a constant learning rate, with the held-out loss (the Trainer's validation, on
 * 8 entries it never trains on) after every pass. The training loss keeps falling as the model
 * memorises its few answers; the held-out loss stops falling and turns up. Then the model answers
 * a held-out instruction greedily: an overfit model recites one of the answers it memorised.
 *
 *   npx tsx docs/experiments/overfitting.ts [--device auto|webgpu|cpu] [--steps 30] [--train 2]
 *
 * Last line: {"experiment":"overfitting","records":[{"step":…,"loss":…,"val_loss":…},…],"best_val_step":…,"answer":…,"recites_training_answer":…}
 */
import { generate } from '../../src/gpt/generate.js';
import { createBackend } from '../../src/node/backend.js';
import { formatInput } from '../../src/train/instruction-data.js';
import { finish, fmt, loadData, parseExperimentFlags, QUICK_TRAINING, trainQuickModel } from './quick-model.js';

const VAL_ENTRIES = 8;
const flags = parseExperimentFlags({ train: { type: 'string', default: '2' } });
if (flags.model !== null) throw new Error('overfitting trains a new model: --model does not apply');
const trainCount = Number(flags.values.train);
const steps = flags.values.steps === String(QUICK_TRAINING.steps) ? 30 : flags.steps; // its own default: 30
const backend = await createBackend(flags.device);
const { tokenizer, entries, examples, train, val } = loadData();
const trainIdx = train.slice(0, trainCount);
const valIdx = val.slice(0, VAL_ENTRIES);
const started = performance.now();
const { model, records } = await trainQuickModel(
  backend, trainIdx.map((i) => examples[i]), valIdx.map((i) => examples[i]),
  { ...QUICK_TRAINING, steps, batchSize: trainCount, lr: 2e-2, lrSchedule: 'constant' },
);
const seconds = (performance.now() - started) / 1000;
const evaluated = records.filter((r) => r.val_loss !== undefined);
const best = evaluated.reduce((a, b) => (b.val_loss! < a.val_loss! ? b : a));

const question = entries[valIdx[0]];
const prompt = tokenizer.encode(formatInput(question).prompt);
const { text } = await generate(model, prompt, { temperature: 0, maxNewTokens: 40, stop: ['\n\n### '], onWarning: () => {} });
const answer = text.trim();
const memorised = trainIdx.map((i) => entries[i].output.trim());
// Recites: every word of the answer comes from one memorised training answer.
const wordsOf = (text: string): string[] => text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
const recites = memorised.some((m) => wordsOf(answer).length > 0 && wordsOf(answer).every((w) => wordsOf(m).includes(w)));

console.log(`quick model trained on ${trainCount} entries (one batch, responses only, lr 0.02 constant) for ${steps} steps on ${backend.name} in ${fmt(seconds, 1)} s; held-out: ${valIdx.length} other entries\n`);
console.log('| step | training loss | held-out loss | held-out perplexity |');
console.log('|---:|---:|---:|---:|');
const shown = evaluated.filter((r, i) => i === 0 || r.step % 3 === 0 || r === best);
for (const r of shown) console.log(`| ${r.step} | ${fmt(r.loss)} | ${fmt(r.val_loss!)} | ${fmt(Math.exp(r.val_loss!), 0)} |`);
console.log(`\nlowest held-out loss at step ${best.step}; at the end the training loss is ${fmt(records.at(-1)!.loss)} and the held-out loss ${fmt(evaluated.at(-1)!.val_loss!)}`);
console.log(`held-out instruction: ${JSON.stringify(question.instruction)} (reference ${JSON.stringify(question.output)})`);
console.log(`greedy answer: ${JSON.stringify(answer)}${recites ? ' — a memorised training answer' : ''}`);
console.log(`training answers: ${memorised.map((m) => JSON.stringify(m)).join(', ')}`);
console.log(JSON.stringify({
  experiment: 'overfitting', train_entries: trainCount, val_entries: valIdx.length, steps, seconds,
  records: evaluated.map(({ step, loss, val_loss }) => ({ step, loss, val_loss })),
  best_val_step: best.step, answer, recites_training_answer: recites,
}));
finish(model);
