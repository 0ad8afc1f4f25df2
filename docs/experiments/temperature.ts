/**
 * Temperature: the entropy (nats) and the largest probability of softmax(logits / T) at T = 0.5, 1
 * and 2, averaged over every response position of the held-out entries of data/instructions.json,
 * and the cross-entropy of the token that really came next. Logits come from the model's forward
 * pass (src/gpt/model.ts, GPT2.forward); the tempered softmax is the one src/gpt/sampling.ts
 * (sampleToken) draws from: exp((z − max) / T), normalised.
 *
 *   npx tsx docs/experiments/temperature.ts [--model <folder>] [--device auto|webgpu|cpu] [--steps 20] [--entries 12]
 *
 * Prints a table, then one JSON line: {"experiment":"temperature","results":[{"temperature":…,"entropy":…,"max_prob":…,"nll":…},…],…}
 */
import { tensor } from '../../src/tensor/create.js';
import { noGrad } from '../../src/tensor/graph.js';
import { tidy } from '../../src/tensor/scope.js';
import { entropyAt, experimentModel, finish, fmt, parseExperimentFlags } from './quick-model.js';

const TEMPERATURES = [0.5, 1, 2];

const flags = parseExperimentFlags({ entries: { type: 'string', default: '12' } });
const entries = Number(flags.values.entries);
const { model, backend, examples, val, source } = await experimentModel(flags);
const V = model.config.vocab_size;

const sums = TEMPERATURES.map(() => ({ entropy: 0, maxProb: 0, nll: 0 }));
let positions = 0;
for (const index of val.slice(0, entries)) {
  const { ids, promptLength } = examples[index];
  const input = Int32Array.from(ids.slice(0, -1)); // position j predicts ids[j + 1]
  const logits = tidy(() => noGrad(() => model.forward(tensor(input, [1, input.length], { backend }))));
  const rows = await logits.toFloat32(); // [1, T, V]
  logits.dispose();
  for (let j = Math.max(promptLength - 1, 0); j < input.length; j++) {
    const row = rows.subarray(j * V, (j + 1) * V);
    TEMPERATURES.forEach((T, t) => {
      const { entropy, maxProb } = entropyAt(row, T);
      sums[t].entropy += entropy;
      sums[t].maxProb += maxProb;
      // −log p(next) at T: log Z − (z_next − max) / T, with Z as in entropyAt.
      let max = -Infinity;
      for (const z of row) max = Math.max(max, z);
      let Z = 0;
      for (const z of row) Z += Math.exp((z - max) / T);
      sums[t].nll += Math.log(Z) - (row[ids[j + 1]] - max) / T;
    });
    positions++;
  }
}

const results = TEMPERATURES.map((temperature, t) => ({
  temperature,
  entropy: sums[t].entropy / positions,
  max_prob: sums[t].maxProb / positions,
  nll: sums[t].nll / positions,
}));
console.log(`model: ${source}`);
console.log(`${positions} response positions of ${Math.min(entries, val.length)} held-out entries; uniform over V = ${V}: entropy ln V = ${fmt(Math.log(V))} nats\n`);
console.log('| T | entropy (nats) | exp(entropy) tokens | max probability | −log p(next token) |');
console.log('|---:|---:|---:|---:|---:|');
for (const r of results) console.log(`| ${r.temperature} | ${fmt(r.entropy)} | ${fmt(Math.exp(r.entropy), 0)} | ${fmt(r.max_prob, 3)} | ${fmt(r.nll)} |`);
console.log(JSON.stringify({ experiment: 'temperature', source, positions, uniform_entropy: Math.log(V), results }));
finish(model);
