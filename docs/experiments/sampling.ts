/**
 * Sampling settings side by side: the model answers the held-out instructions of
 * data/instructions.json (Alpaca prompt, src/train/instruction-data.ts formatInput) under each
 * setting with the project's generateBatch (src/gpt/generate.ts; sampling in src/gpt/sampling.ts),
 * and each setting is scored on what makes an answer acceptable or not:
 * - stops: the share of answers that ended with end-of-text (or the template's next "### " header)
 *   before the token limit;
 * - distinct bigrams: unique token bigrams ÷ all bigrams (low = loops, "the the the");
 * - word F1 with the reference answer (bag of lower-cased words; 0 when nothing overlaps).
 * Before that, the tail: the probability mass outside the 40 most likely tokens at response
 * positions, which a draw with no top-k reaches that often per token.
 *
 *   npx tsx docs/experiments/sampling.ts [--model <folder>] [--device auto|webgpu|cpu] [--steps 24] [--entries 8] [--max-tokens 32]
 *
 * Last line: {"experiment":"sampling","tail_mass":{…},"results":[{"setting":…,"stop_rate":…,"distinct2":…,"f1":…},…]}
 */
import { generateBatch } from '../../src/gpt/generate.js';
import type { SamplingOptions } from '../../src/gpt/sampling.js';
import { topKIndices } from '../../src/gpt/sampling.js';
import { tensor } from '../../src/tensor/create.js';
import { noGrad } from '../../src/tensor/graph.js';
import { tidy } from '../../src/tensor/scope.js';
import { formatInput } from '../../src/train/instruction-data.js';
import { experimentModel, finish, fmt, parseExperimentFlags } from './quick-model.js';

const SETTINGS: [string, SamplingOptions][] = [
  ['greedy (T 0)', { temperature: 0 }],
  ['greedy, repetition penalty 1.3', { temperature: 0, repetitionPenalty: 1.3 }],
  ['T 0.7, top-k 40', { temperature: 0.7, topK: 40 }],
  ['T 0.7, top-k 40, top-p 0.9, penalty 1.3', { temperature: 0.7, topK: 40, topP: 0.9, repetitionPenalty: 1.3 }],
  ['T 1, no filter', { temperature: 1 }],
  ['T 1.5, no filter', { temperature: 1.5 }],
];
const TAIL_K = 40;

const flags = parseExperimentFlags({ entries: { type: 'string', default: '8' }, 'max-tokens': { type: 'string', default: '32' } });
const count = Number(flags.values.entries);
const maxNewTokens = Number(flags.values['max-tokens']);
const { model, backend, tokenizer, entries, examples, val, source } = await experimentModel(flags);
const V = model.config.vocab_size;
const picked = val.slice(0, count);

// --- the tail beyond the top 40, at response positions of the held-out entries ---
const tail = { t07: 0, t1: 0, positions: 0 };
for (const index of picked) {
  const { ids, promptLength } = examples[index];
  const input = Int32Array.from(ids.slice(0, -1));
  const logits = tidy(() => noGrad(() => model.forward(tensor(input, [1, input.length], { backend }))));
  const rows = await logits.toFloat32();
  logits.dispose();
  for (let j = Math.max(promptLength - 1, 0); j < input.length; j++) {
    const row = rows.subarray(j * V, (j + 1) * V);
    const top = new Set(topKIndices(row, TAIL_K));
    for (const [T, key] of [[0.7, 't07'], [1, 't1']] as const) {
      let max = -Infinity;
      for (const z of row) max = Math.max(max, z);
      let all = 0;
      let inTop = 0;
      for (let i = 0; i < V; i++) {
        const e = Math.exp((row[i] - max) / T);
        all += e;
        if (top.has(i)) inTop += e;
      }
      tail[key] += 1 - inTop / all;
    }
    tail.positions++;
  }
}
const tailMass = { temperature_0_7: tail.t07 / tail.positions, temperature_1: tail.t1 / tail.positions, positions: tail.positions };

// --- the settings ---
const words = (text: string): string[] => text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
function f1(answer: string, reference: string): number {
  const a = words(answer);
  const r = words(reference);
  const left = new Map<string, number>();
  for (const w of r) left.set(w, (left.get(w) ?? 0) + 1);
  let common = 0;
  for (const w of a) {
    const n = left.get(w) ?? 0;
    if (n > 0) {
      common++;
      left.set(w, n - 1);
    }
  }
  return common === 0 ? 0 : (2 * common) / (a.length + r.length);
}
const prompts = picked.map((i) => tokenizer.encode(formatInput(entries[i]).prompt));
const results = [];
for (const [setting, options] of SETTINGS) {
  const out = await generateBatch(model, prompts, { ...options, maxNewTokens, seed: 1, stop: ['\n\n### '], onWarning: () => {} });
  let bigrams = 0;
  const distinct = new Set<string>();
  out.forEach((r, b) => {
    for (let i = 1; i < r.ids.length; i++) {
      bigrams++;
      distinct.add(`${b}:${r.ids[i - 1]},${r.ids[i]}`);
    }
  });
  results.push({
    setting, options,
    stop_rate: out.filter((r) => r.stopReason !== 'length').length / out.length,
    mean_tokens: out.reduce((n, r) => n + r.ids.length, 0) / out.length,
    distinct2: bigrams === 0 ? 1 : distinct.size / bigrams,
    f1: out.reduce((s, r, b) => s + f1(r.text, entries[picked[b]].output), 0) / out.length,
    first_answer: out[0].text,
  });
}

console.log(`model: ${source}`);
console.log(`probability mass outside the top ${TAIL_K} at ${tail.positions} response positions: ${fmt(100 * tailMass.temperature_0_7, 1)}% at T 0.7, ${fmt(100 * tailMass.temperature_1, 1)}% at T 1`);
console.log(`(per token; over ${maxNewTokens} tokens at T 1 the chance of at least one draw from that tail is ${fmt(100 * (1 - (1 - tailMass.temperature_1) ** maxNewTokens), 0)}%)\n`);
console.log(`${picked.length} held-out instructions, at most ${maxNewTokens} new tokens, seed 1; first instruction: ${JSON.stringify(entries[picked[0]].instruction)}, reference ${JSON.stringify(entries[picked[0]].output)}\n`);
console.log('| setting | stopped | mean tokens | distinct bigrams | word F1 vs reference | first answer |');
console.log('|---|---:|---:|---:|---:|---|');
for (const r of results) {
  const shown = JSON.stringify(r.first_answer.length > 60 ? `${r.first_answer.slice(0, 60)}…` : r.first_answer);
  console.log(`| ${r.setting} | ${fmt(100 * r.stop_rate, 0)}% | ${fmt(r.mean_tokens, 1)} | ${fmt(r.distinct2)} | ${fmt(r.f1)} | ${shown.replaceAll('|', '\\|')} |`);
}
console.log(JSON.stringify({ experiment: 'sampling', source, entries: picked.length, max_tokens: maxNewTokens, tail_k: TAIL_K, tail_mass: tailMass, results: results.map(({ first_answer: _, ...r }) => r) }));
finish(model);
