/**
 * The evaluation command's worker (src/eval.ts starts it). For each held-out entry: the mean loss
 * over the response tokens (and so the perplexity), and the greedy answer scored against the
 * reference by exact match, token F1 and ROUGE-L; optionally a judge model's 0–100 score.
 * Writes eval.json (the means, and per entry) and instruction-data-with-response.json (the course's
 * shape: each entry with its `model_response`), prints a table. Ctrl-C stops after the entry in
 * flight and writes what was done ("complete": false). Exit codes: 0 done or stopped, 2 bad flags,
 * data or model, 1 anything else.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../gpt/load-model.js';
import { Tokenizer } from '../gpt/tokenizer.js';
import { atomicWrite } from '../node/atomic-write.js';
import { createBackend, releaseBackend } from '../node/backend.js';
import { showDriverMessages } from '../node/driver-messages.js';
import { loadInstructionFile } from '../node/instruction-file.js';
import { checkModelSpec, loadModel } from '../node/load-model.js';
import { responseLoss } from '../eval/response-loss.js';
import { judgeReply, parseScore } from '../eval/judge.js';
import { exactMatch, rougeL, tokenF1 } from '../eval/metrics.js';
import { splitTrainVal } from '../train/batches.js';
import { DataError, encodeEntry, type InstructionEntry } from '../train/instruction-data.js';
import { EVAL_FLAGS, EVAL_HELP } from './eval-options.js';
import { FlagReader, parseFlagTable, positiveInt, UsageError } from './flags.js';
import { answer } from './train-run.js';

interface EntryResult extends InstructionEntry {
  model_response: string;
  loss: number;
  exact_match: number;
  token_f1: number;
  rouge_l: number;
  judge_score?: number | null;
  judge_reply?: string;
}

/** The entries to evaluate: --data's, or the run's validation split (as its state.json recorded the data, fraction and seed). */
function heldOut(model: string, data: string | undefined): { entries: InstructionEntry[]; source: string } {
  if (data !== undefined) return { entries: loadInstructionFile(data), source: data };
  const stateFile = join(model, 'checkpoint', 'state.json');
  if (!existsSync(stateFile)) throw new UsageError(`--model ${model} is not a training run's folder (no ${stateFile}): give --data`);
  const { flags } = JSON.parse(readFileSync(stateFile, 'utf8')) as { flags: { data: string; valFraction: number; seed: number } };
  const all = loadInstructionFile(flags.data);
  const { val } = splitTrainVal(all.length, flags.valFraction, flags.seed);
  if (val.length === 0) throw new UsageError(`the run held no entries out (--val-fraction 0): give --data`);
  return { entries: val.map((i) => all[i]), source: `${flags.data} (the run's ${val.length} validation entries)` };
}

const mean = (xs: number[]) => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length);

function bar(done: number, total: number): string {
  const width = 24;
  const filled = Math.round((width * done) / Math.max(1, total));
  return `${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${done}/${total}`;
}

async function main(argv: string[]): Promise<number> {
  const flags = new FlagReader(parseFlagTable(argv, EVAL_FLAGS));
  if (flags.switch('help')) {
    console.log(EVAL_HELP);
    return 0;
  }
  const modelSpec = flags.string('model');
  if (modelSpec === undefined) throw new UsageError('--model is required (a training run\'s folder)');
  const limit = flags.number('limit', positiveInt, 'a positive integer');
  const judgeUrl = flags.string('judge-url');
  const device = flags.choice('device', ['auto', 'webgpu', 'cpu'] as const) ?? 'auto';
  if (flags.switch('verbose')) showDriverMessages();
  checkModelSpec(modelSpec);
  const { entries: all, source } = heldOut(modelSpec, flags.string('data'));
  const entries = limit === undefined ? all : all.slice(0, limit);
  const out = flags.string('out') ?? modelSpec;
  if (!existsSync(out)) throw new UsageError(`--out ${out}: no such folder`);

  let interrupted = false;
  const stopping = new AbortController();
  const stop = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    stopping.abort();
    process.stderr.write('\nstopping after the entry in flight and writing what was evaluated (Ctrl-C again to quit at once)\n');
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.channel?.unref();
  process.on('disconnect', stop);

  const backend = await createBackend(device);
  const { model, config } = await loadModel(modelSpec, { backend });
  const contextLength = config.n_positions;
  const tokenizer = new Tokenizer();
  console.error(`evaluating ${modelSpec} on ${backend.name}: ${entries.length} entries from ${source}`);
  const results: EntryResult[] = [];
  let lossSum = 0;
  let lossTokens = 0;
  let nonNumeric = 0;
  const tty = process.stderr.isTTY === true;
  for (const entry of entries) {
    if (interrupted) break;
    const { sum, tokens } = await responseLoss(model, encodeEntry(entry, tokenizer), contextLength);
    lossSum += sum;
    lossTokens += tokens;
    const response = await answer(model, tokenizer, entry, contextLength);
    const result: EntryResult = {
      ...entry, model_response: response, loss: tokens === 0 ? NaN : sum / tokens,
      exact_match: exactMatch(response, entry.output), token_f1: tokenF1(response, entry.output), rouge_l: rougeL(response, entry.output),
    };
    if (judgeUrl !== undefined) {
      try {
        const reply = await judgeReply(entry, response, { url: judgeUrl, model: flags.string('judge-model') ?? 'default', apiKey: flags.string('judge-api-key'), signal: stopping.signal });
        result.judge_reply = reply;
        result.judge_score = parseScore(reply);
        if (result.judge_score === null) nonNumeric++;
      } catch (e) {
        if (interrupted) break;
        throw new Error(`the judge failed: ${(e as Error).message}`, { cause: e });
      }
    }
    results.push(result);
    if (tty) process.stderr.write(`\r${bar(results.length, entries.length)}\x1b[K`);
    else if (results.length % 10 === 0 || results.length === entries.length) process.stderr.write(`${bar(results.length, entries.length)}\n`);
  }
  if (tty) process.stderr.write('\n');
  model.dispose();

  const loss = lossSum / lossTokens;
  const scores = results.map((r) => r.judge_score).filter((s): s is number => typeof s === 'number');
  const summary = {
    model: modelSpec,
    data: source,
    complete: results.length === entries.length,
    entries: results.length,
    loss,
    perplexity: Math.exp(loss),
    exact_match: mean(results.map((r) => r.exact_match)),
    token_f1: mean(results.map((r) => r.token_f1)),
    rouge_l: mean(results.map((r) => r.rouge_l)),
    ...(judgeUrl === undefined ? {} : { judge: { url: judgeUrl, model: flags.string('judge-model') ?? 'default', mean_score: mean(scores), scored: scores.length, non_numeric: nonNumeric } }),
    results,
  };
  await atomicWrite(join(out, 'eval.json'), (fh) => fh.writeFile(JSON.stringify(summary, null, 1)));
  const responses = results.map(({ instruction, input, output, model_response }) => ({ instruction, input, output, model_response }));
  await atomicWrite(join(out, 'instruction-data-with-response.json'), (fh) => fh.writeFile(JSON.stringify(responses, null, 1)));

  const row = (name: string, value: string) => console.log(`  ${name.padEnd(22)}${value}`);
  console.log(`${summary.complete ? '' : `stopped: ${results.length} of ${entries.length} entries evaluated\n`}`);
  row('entries', String(results.length));
  row('loss (responses)', loss.toFixed(4));
  row('perplexity', summary.perplexity.toFixed(2));
  row('exact match', summary.exact_match.toFixed(3));
  row('token F1', summary.token_f1.toFixed(3));
  row('ROUGE-L', summary.rouge_l.toFixed(3));
  if (summary.judge) row(`judge score (0–100)`, `${summary.judge.mean_score.toFixed(1)} over ${scores.length} (${nonNumeric} replies not a score)`);
  console.log(`\neval.json and instruction-data-with-response.json in ${out}`);
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  const user = e instanceof UsageError || e instanceof DataError || e instanceof ModelLoadError;
  console.error(`error: ${e instanceof Error ? (user || e.name === 'Error' ? e.message : (e.stack ?? e.message)) : String(e)}`);
  process.exitCode = user ? 2 : 1;
} finally {
  releaseBackend();
}
