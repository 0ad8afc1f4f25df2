/**
 * The experiments behind docs/concepts.md (docs/experiments/*.ts), each run as a reader runs it — a
 * child process of tsx — and its last line (one JSON object) checked for the figures the document
 * quotes and for the relations it argues from: entropy rises with temperature, scaled attention
 * stays unsaturated, the fused cross-entropy stays finite where log(softmax) does not, the held-out
 * loss turns up while the training loss keeps falling, and so on.
 *
 * One quick model is trained (quick-train.ts) and handed to temperature.ts, sampling.ts and recall.ts with
 * --model; overfitting.ts trains its own; the rest need no model. They run side by side.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const scratch = mkdtempSync(join(tmpdir(), 'experiments-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Output<Json> {
  json: Json;
  stdout: string;
}

/** The fields of each experiment's JSON line that the tests read. */
interface QuickTrain { steps: number; first_loss: number; last_loss: number; val_loss: number; val_perplexity: number }
interface Temperature { positions: number; results: { temperature: number; entropy: number; max_prob: number; nll: number }[] }
interface AttentionScaling { results: { head_dim: number; unscaled: Record<string, number>; scaled: Record<string, number> }[] }
interface QkvProjections { results: { case: string; self_weight: number; self_is_top: number; symmetric: boolean }[] }
interface Logits {
  vocab: number;
  gap: number;
  exact_loss: number;
  from_logits: { loss: number; nonfinite_grads: number; grad_at_target: number };
  from_probabilities: { loss: string; p_target: number; nonfinite_grads: number };
  p_target_at_t2: number;
  exact_log_p_target_at_t2: number;
}
interface DataSet {
  entries: number;
  tokens: { total: number; prompt: number; template: number; response: number; eos: number };
  lengths: { shortest: number; median: number; longest: number };
  targets: { real: number; counted: number; eos_counted: number; mask_prompt: number; notebook: number };
  padding: { per_batch: number; sorted_batches: number; whole_set: number; full_context: number };
}
interface Tokenizer {
  word_vocab: number;
  word_vocab_cap: number;
  samples: { name: string; words: number; bpe_tokens: number; oov_words: number; round_trip: boolean }[];
  pieces: { count: number };
  special: { as_text: number[]; as_special: number[] };
}
interface KvCache {
  presets: { name: string; bytes_per_token: number; parameters: number; context_bytes: number }[];
  work: { ratio: number; positions_cached: number; concat_bytes_copied_medium: number; in_place_bytes_medium: number }[];
}
interface Recall { results: { split: string; exact: number; entries: number; answers: { index: number; reference: string; generated: string }[] }[] }
interface Sampling {
  max_tokens: number;
  tail_mass: { temperature_0_7: number; temperature_1: number };
  results: { setting: string; stop_rate: number; mean_tokens: number; distinct2: number; f1: number }[];
}
interface Overfitting { best_val_step: number; recites_training_answer: boolean; records: { step: number; loss: number; val_loss: number }[] }

/** Runs docs/experiments/<name>.ts; resolves with its stdout and its last line parsed as JSON. */
function experiment<Json>(name: string, args: string[] = []): Promise<Output<Json>> {
  const run = new Promise<Output<Json>>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `docs/experiments/${name}.ts`, ...args], { env: process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${name}.ts exited with ${code}:\n${stderr}\n${stdout}`));
      const last = stdout.trim().split('\n').at(-1) ?? '';
      try {
        resolve({ json: JSON.parse(last) as Json, stdout });
      } catch {
        reject(new Error(`${name}.ts: the last line is not JSON: ${last}\n${stderr}`));
      }
    });
  });
  run.catch(() => {}); // awaited by its test; not an unhandled rejection before that
  return run;
}

const LN_V = Math.log(50257);
const quickModel = join(scratch, 'quick');
const quick = experiment<QuickTrain>('quick-train', ['--out', quickModel]);
const temperature = quick.then(() => experiment<Temperature>('temperature', ['--model', quickModel]));
const sampling = temperature.then(() => experiment<Sampling>('sampling', ['--model', quickModel]), () => experiment<Sampling>('sampling', ['--model', quickModel]));
const recall = sampling.then(() => experiment<Recall>('recall', ['--model', quickModel, '--entries', '3']), () => experiment<Recall>('recall', ['--model', quickModel, '--entries', '3']));
temperature.catch(() => {});
sampling.catch(() => {});
recall.catch(() => {});
const overfitting = experiment<Overfitting>('overfitting');
const attention = experiment<AttentionScaling>('attention-scaling');
const projections = experiment<QkvProjections>('qkv-projections');
const logits = experiment<Logits>('logits');
const dataSet = experiment<DataSet>('data-set');
const tokenizer = experiment<Tokenizer>('tokenizer');
const kvCache = experiment<KvCache>('kv-cache');

describe('docs/experiments', () => {
  it('quick-train: the loss falls from ln V, the held-out loss is measured, the model folder is written', async () => {
    const { json } = await quick;
    expect(json.steps).toBe(24);
    expect(Math.abs(json.first_loss - LN_V)).toBeLessThan(0.1);
    expect(json.last_loss).toBeLessThan(json.first_loss - 2);
    expect(json.val_loss).toBeGreaterThan(json.last_loss - 1);
    expect(json.val_loss).toBeLessThan(LN_V - 1);
    expect(json.val_perplexity).toBeCloseTo(Math.exp(json.val_loss), 6);
    expect(existsSync(join(quickModel, 'model.safetensors')) && existsSync(join(quickModel, 'config.json'))).toBe(true);
  });

  it('temperature: entropy rises and the top probability falls with T; T = 1 fits the held-out tokens best', async () => {
    const { json } = await temperature;
    const [cold, one, hot] = json.results;
    expect([cold.temperature, one.temperature, hot.temperature]).toEqual([0.5, 1, 2]);
    expect(json.positions).toBeGreaterThan(50);
    expect(cold.entropy).toBeLessThan(one.entropy - 1);
    expect(one.entropy).toBeLessThan(hot.entropy - 1);
    expect(hot.entropy).toBeLessThanOrEqual(LN_V);
    expect(one.entropy).toBeLessThan(LN_V - 2); // learnt: far from uniform at T = 1
    expect(cold.max_prob).toBeGreaterThan(one.max_prob);
    expect(one.max_prob).toBeGreaterThan(hot.max_prob);
    expect(one.nll).toBeLessThan(cold.nll);
    expect(one.nll).toBeLessThan(hot.nll);
  });

  it('attention-scaling: q·k/√d keeps unit variance and low saturation; unscaled scores saturate as d grows', async () => {
    const { json } = await attention;
    const rows = json.results;
    expect(rows.map((r) => r.head_dim)).toEqual([4, 16, 64, 256, 1024]);
    for (const { head_dim: d, unscaled, scaled } of rows) {
      expect(Math.abs(unscaled.score_std / Math.sqrt(d) - 1)).toBeLessThan(0.2);
      expect(Math.abs(scaled.score_std - 1)).toBeLessThan(0.2);
      expect(scaled.max_weight).toBeLessThan(0.15);
      expect(scaled.max_weight).toBeLessThan(unscaled.max_weight);
    }
    for (let i = 1; i < rows.length; i++) expect(rows[i].unscaled.max_weight).toBeGreaterThan(rows[i - 1].unscaled.max_weight);
    const last = rows.at(-1)!;
    expect(last.unscaled.max_weight).toBeGreaterThan(0.9);
    expect(last.unscaled.mean_abs_grad).toBeLessThan(last.scaled.mean_abs_grad / 3);
  });

  it('qkv-projections: with q = k = x each token attends mostly to itself and the scores are symmetric; projections undo both', async () => {
    const { json } = await projections;
    const [identity, projected] = json.results;
    expect(identity.case).toBe('q = k = x');
    expect(identity.self_weight).toBeGreaterThan(0.5);
    expect(identity.self_is_top).toBe(1);
    expect(identity.symmetric).toBe(true);
    expect(projected.self_weight).toBeLessThan(0.05);
    expect(projected.self_is_top).toBeLessThan(0.2);
    expect(projected.symmetric).toBe(false);
  });

  it('logits: the fused cross-entropy is finite and exact where −log(softmax) is infinite with NaN gradients', async () => {
    const { json } = await logits;
    expect(json.gap).toBe(110);
    expect(Math.abs(json.from_logits.loss - json.exact_loss)).toBeLessThan(1e-3);
    expect(json.from_logits.nonfinite_grads).toBe(0);
    expect(json.from_logits.grad_at_target).toBeCloseTo(-1, 5);
    expect(json.from_probabilities.p_target).toBe(0);
    expect(json.from_probabilities.loss).toBe('Infinity');
    expect(json.from_probabilities.nonfinite_grads).toBe(json.vocab);
    expect(json.p_target_at_t2).toBeGreaterThan(0);
    expect(Math.log(json.p_target_at_t2)).toBeCloseTo(json.exact_log_p_target_at_t2, 3);
  });

  it('data-set: prompt/response/end-of-text shares, every end-of-text counted once, per-batch padding below whole-set padding', async () => {
    const { json } = await dataSet;
    const { tokens, targets, padding, lengths } = json;
    expect(json.entries).toBe(302);
    expect(tokens.eos).toBe(json.entries);
    expect(tokens.prompt + tokens.response + tokens.eos).toBe(tokens.total);
    expect(tokens.prompt / tokens.total).toBeGreaterThan(0.5);
    expect(tokens.template).toBeLessThan(tokens.prompt);
    expect(targets.counted).toBe(targets.real);
    expect(targets.real).toBe(tokens.total - json.entries);
    expect(targets.eos_counted).toBe(json.entries);
    expect(targets.mask_prompt).toBe(tokens.response + tokens.eos);
    expect(targets.notebook).toBe(targets.counted - json.entries);
    expect(lengths.shortest).toBeLessThan(lengths.median);
    expect(lengths.median).toBeLessThan(lengths.longest);
    expect(padding.sorted_batches).toBeGreaterThanOrEqual(tokens.total);
    expect(padding.sorted_batches).toBeLessThan(padding.per_batch);
    expect(padding.per_batch).toBeLessThan(padding.whole_set);
    expect(padding.whole_set).toBe(json.entries * lengths.longest);
    expect(padding.whole_set).toBeLessThan(padding.full_context);
  });

  it('tokenizer: BPE round-trips every text with no unknown token; the word vocabulary misses held-out words', async () => {
    const { json } = await tokenizer;
    const samples = json.samples;
    expect(json.word_vocab).toBeLessThanOrEqual(json.word_vocab_cap);
    for (const s of samples) {
      expect(s.round_trip, s.name).toBe(true);
      expect(s.oov_words, s.name).toBeGreaterThan(0);
      expect(s.bpe_tokens, s.name).toBeGreaterThan(0);
    }
    const [heldOut, english, spanish] = samples;
    expect(spanish.oov_words / spanish.words).toBeGreaterThan(heldOut.oov_words / heldOut.words);
    expect(spanish.bpe_tokens / spanish.words).toBeGreaterThan(english.bpe_tokens / english.words);
    expect(json.pieces.count).toBeGreaterThan(1);
    expect(json.special.as_special).toEqual([50256]);
    expect(json.special.as_text.length).toBeGreaterThan(1);
    expect(json.special.as_text).not.toContain(50256);
  });

  it('kv-cache: bytes per token and parameter counts of the presets; the uncached path computes far more positions', async () => {
    const { json } = await kvCache;
    const byName = Object.fromEntries(json.presets.map((p) => [p.name, p]));
    expect(byName.gpt2.bytes_per_token).toBe(2 * 12 * 768 * 4);
    expect(byName['gpt2-medium'].bytes_per_token).toBe(2 * 24 * 1024 * 4);
    expect(byName.gpt2.parameters).toBe(124_439_808);
    expect(byName['gpt2-medium'].parameters).toBe(354_823_168);
    expect(byName['gpt2-medium'].context_bytes).toBe(1024 * 196_608);
    const [short, long] = json.work;
    expect(short.positions_cached).toBe(64 + 64 - 1);
    expect(short.ratio).toBeGreaterThan(10);
    expect(long.ratio).toBeGreaterThan(short.ratio);
    expect(long.concat_bytes_copied_medium).toBeGreaterThan(100 * long.in_place_bytes_medium);
  });

  it('recall: the first entries of each split, their references from the data set, an exact match counted only when the text is equal', async () => {
    const { json } = await recall;
    const data = JSON.parse(readFileSync('data/instructions.json', 'utf8')) as { output: string }[];
    const results = json.results;
    expect(results.map((r) => [r.split, r.entries])).toEqual([['train', 3], ['validation', 3]]);
    for (const r of results) {
      for (const a of r.answers) expect(a.reference).toBe(data[a.index].output.trim());
      expect(r.exact).toBe(r.answers.filter((a) => a.generated === a.reference).length);
    }
    expect(new Set(results.flatMap((r) => r.answers.map((a) => a.index))).size, 'training and held-out entries are distinct').toBe(6);
  });

  it('sampling: a higher temperature puts more mass past the top 40 and runs longer; the scores are in range', async () => {
    const { json } = await sampling;
    expect(json.tail_mass.temperature_1).toBeGreaterThan(json.tail_mass.temperature_0_7);
    const results = json.results;
    expect(results).toHaveLength(6);
    for (const r of results) {
      for (const v of [r.stop_rate, r.distinct2, r.f1]) expect(v, r.setting).toBeGreaterThanOrEqual(0);
      for (const v of [r.stop_rate, r.distinct2, r.f1]) expect(v, r.setting).toBeLessThanOrEqual(1);
      expect(r.mean_tokens).toBeLessThanOrEqual(json.max_tokens);
    }
    const byName = Object.fromEntries(results.map((r) => [r.setting, r]));
    expect(byName['T 1.5, no filter'].mean_tokens).toBeGreaterThan(byName['T 0.7, top-k 40'].mean_tokens);
  });

  it('overfitting: the training loss goes to ~0 while the held-out loss turns up; the answer recites a training answer', async () => {
    const { json } = await overfitting;
    const records = json.records;
    expect(records).toHaveLength(30);
    const best = records.find((r) => r.step === json.best_val_step)!;
    const last = records.at(-1)!;
    expect(last.loss).toBeLessThan(0.5);
    expect(best.step).toBeLessThan(last.step);
    expect(best.val_loss).toBeLessThan(records[0].val_loss - 1);
    expect(last.val_loss).toBeGreaterThan(best.val_loss + 1);
    expect(json.recites_training_answer).toBe(true);
  });
});
