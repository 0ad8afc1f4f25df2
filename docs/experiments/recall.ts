/**
 * Recall: how many reference answers a model gives back word for word — greedy and KV-cached,
 * exactly as `src/train.ts` answers its samples (src/train/run.ts, answer) — over the first
 * --entries training entries of data/instructions.json and as many held-out ones. A model trained
 * from scratch on 272 instructions learns to recite them, not to answer new ones.
 *
 *   npx tsx docs/experiments/recall.ts --model runs/<the demo's folder> [--entries 40] [--device auto|webgpu|cpu]
 *
 * Prints a table, then one JSON line: {"experiment":"recall","results":[{"split":"train","exact":…,
 * "entries":…,"answers":[{"index":…,"reference":…,"generated":…},…]},{"split":"validation",…}],…}
 */
import { answer } from '../../src/cli/train-run.js';
import { experimentModel, finish, parseExperimentFlags } from './quick-model.js';

const flags = parseExperimentFlags({ entries: { type: 'string', default: '40' } });
const count = Number(flags.values.entries);
if (!Number.isInteger(count) || count < 1) throw new Error(`--entries must be a positive integer, got ${flags.values.entries}`);
const { model, tokenizer, entries, train, val, source } = await experimentModel(flags);

const results = [];
for (const [split, indices] of [['train', train], ['validation', val]] as const) {
  const answers = [];
  for (const index of indices.slice(0, count)) {
    const generated = await answer(model, tokenizer, entries[index], model.config.n_positions);
    answers.push({ index, reference: entries[index].output.trim(), generated });
  }
  results.push({ split, exact: answers.filter((a) => a.generated === a.reference).length, entries: answers.length, answers });
}

console.log(`model: ${source}\n`);
console.log('| entries | answered word for word |');
console.log('|---|---:|');
for (const r of results) console.log(`| first ${r.entries} ${r.split === 'train' ? 'training' : 'held-out'} | ${r.exact} of ${r.entries} |`);
console.log(JSON.stringify({ experiment: 'recall', source, results }));
finish(model);
