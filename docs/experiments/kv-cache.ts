/**
 * What the KV cache costs in memory and saves in work, for the GPT-2 presets (src/gpt/config.ts).
 * - Bytes per token: measured on a real src/gpt/kv-cache.ts KVCache of one position (CPU backend),
 *   checked against 2 (k and v) · n_layer · n_embd · 4 bytes.
 * - Weights: the parameter count of src/gpt/checkpoint-names.ts expectedShapes, in float32.
 * - Work: positions pushed through the transformer to generate N tokens after a 64-token prompt,
 *   with the cache (each position once) and without (src/gpt/generate.ts's uncached path recomputes
 *   the whole window every step); and the bytes a cache grown by concatenation (the assignment's
 *   suggestion) copies, against the project's preallocated cache written in place.
 *
 *   npx tsx docs/experiments/kv-cache.ts
 *
 * Last line: {"experiment":"kv-cache","presets":[{"name":…,"bytes_per_token":…,"context_bytes":…,"weight_bytes":…},…],"work":{…}}
 */
import { PRESETS, type PresetName } from '../../src/gpt/config.js';
import { expectedShapes } from '../../src/gpt/state-dict.js';
import { KVCache } from '../../src/gpt/kv-cache.js';
import { CpuBackend } from '../../src/tensor/cpu-backend.js';
import { fmt } from './quick-model.js';

const backend = new CpuBackend();
const NAMES: PresetName[] = ['gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'];
const MiB = 2 ** 20;
const PROMPT = 64;
const NEW_TOKENS = [64, 512];

const presets = NAMES.map((name) => {
  const config = PRESETS[name];
  const one = new KVCache(config, 1, backend, 1);
  const bytesPerToken = one.bytes;
  one.dispose();
  const formula = 2 * config.n_layer * config.n_embd * 4;
  if (bytesPerToken !== formula) throw new Error(`${name}: KVCache holds ${bytesPerToken} bytes per token, the formula says ${formula}`);
  const parameters = [...expectedShapes(config).values()].reduce((n, shape) => n + shape.reduce((a, b) => a * b, 1), 0);
  return {
    name, n_layer: config.n_layer, n_embd: config.n_embd, bytes_per_token: bytesPerToken,
    context_bytes: bytesPerToken * config.n_positions, parameters, weight_bytes: 4 * parameters,
  };
});

// Positions through the model: cached, each once; uncached, the whole window (prompt + tokens so far) each step.
const work = NEW_TOKENS.map((n) => {
  let uncached = 0;
  for (let k = 0; k < n; k++) uncached += PROMPT + k;
  const cached = PROMPT + n - 1;
  const medium = presets.find((p) => p.name === 'gpt2-medium')!.bytes_per_token;
  let concatCopied = 0; // torch.cat of the cache each step copies everything so far
  for (let t = PROMPT + 1; t <= PROMPT + n; t++) concatCopied += t * medium;
  return { new_tokens: n, positions_cached: cached, positions_uncached: uncached, ratio: uncached / cached, concat_bytes_copied_medium: concatCopied, in_place_bytes_medium: (PROMPT + n) * medium };
});

console.log('| preset | layers × d | KV cache per token | at 1024 tokens | weights (f32) | cache at 1024 / weights |');
console.log('|---|---|---:|---:|---:|---:|');
for (const p of presets) {
  console.log(`| ${p.name} | ${p.n_layer} × ${p.n_embd} | ${p.bytes_per_token} B (${fmt(p.bytes_per_token / 1024, 0)} KiB) | ${fmt(p.context_bytes / MiB, 0)} MiB | ${fmt(p.weight_bytes / MiB, 0)} MiB (${fmt(p.parameters / 1e6, 1)} M) | ${fmt((100 * p.context_bytes) / p.weight_bytes, 1)}% |`);
}
console.log(`\n| new tokens after a ${PROMPT}-token prompt | positions computed, cached | uncached | ratio | gpt2-medium: bytes copied by a cache grown by concatenation | written in place |`);
console.log('|---:|---:|---:|---:|---:|---:|');
for (const w of work) {
  console.log(`| ${w.new_tokens} | ${w.positions_cached} | ${w.positions_uncached} | ${fmt(w.ratio, 1)}× | ${fmt(w.concat_bytes_copied_medium / MiB, 0)} MiB | ${fmt(w.in_place_bytes_medium / MiB, 0)} MiB |`);
}
console.log(JSON.stringify({ experiment: 'kv-cache', prompt_tokens: PROMPT, presets, work }));
