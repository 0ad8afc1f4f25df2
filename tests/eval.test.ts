/**
 * Evaluation: the text metrics on hand-worked cases, the judge's prompt and reply parsing against
 * an OpenAI-compatible stub server (fastify on 127.0.0.1), the response loss against the trainer's
 * validation loss, and `tsx src/eval.ts` on a tiny model folder with a judge: eval.json, the
 * responses file in the course's shape, and perplexity = exp(loss); then with the project's own
 * server (src/serve) as the judge.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { judgePrompt, judgeReply, parseScore } from '../src/eval/judge.js';
import { ContinuousBatcher } from '../src/gpt/continuous-batch.js';
import { exactMatch, rougeL, tokenF1 } from '../src/eval/metrics.js';
import { responseLoss } from '../src/eval/response-loss.js';
import { PRESETS } from '../src/gpt/config.js';
import { randomModel } from '../src/gpt/load-model.js';
import { Tokenizer } from '../src/gpt/tokenizer.js';
import { saveModel } from '../src/node/weights-folder.js';
import { buildServer } from '../src/serve/server.js';
import { AdamW } from '../src/train/adamw.js';
import { encodeEntry, type InstructionEntry } from '../src/train/instruction-data.js';
import { Trainer } from '../src/train/trainer.js';
import { cpu } from './helpers/backends.js';
import { freshDir } from './helpers/weights-fixtures.js';

describe('metrics', () => {
  it('exact match ignores case, punctuation and spacing', () => {
    expect(exactMatch('The cat sat.', 'the  cat sat')).toBe(1);
    expect(exactMatch('The cat sat', 'the cat')).toBe(0);
  });

  it('token F1: 2·overlap / (predicted + reference), repeated words counted as often as in both', () => {
    expect(tokenF1('a b c d', 'a b e')).toBeCloseTo((2 * 2) / (4 + 3), 12);
    expect(tokenF1('a a a', 'a b')).toBeCloseTo((2 * 1) / (3 + 2), 12);
    expect(tokenF1('x', 'y')).toBe(0);
  });

  it('ROUGE-L: F1 of the longest common subsequence', () => {
    // LCS of "a b c d e" and "a c e f" is "a c e": 3.
    expect(rougeL('a b c d e', 'a c e f')).toBeCloseTo((2 * 3) / (5 + 4), 12);
    expect(rougeL('b a', 'a b')).toBeCloseTo((2 * 1) / 4, 12); // order matters, unlike F1
    expect(tokenF1('b a', 'a b')).toBe(1);
  });
});

const entry: InstructionEntry = { instruction: 'Name a color.', input: '', output: 'Blue.' };

describe('the judge', () => {
  const seen: { model: string; content: string }[] = [];
  const replies = ['85', 'I would say 40', ' 100.\n', '101'];
  const app = Fastify();
  app.post('/v1/chat/completions', (request) => {
    const body = request.body as { model: string; messages: { content: string }[] };
    seen.push({ model: body.model, content: body.messages[0].content });
    return { choices: [{ index: 0, message: { role: 'assistant', content: replies[(seen.length - 1) % replies.length] } }] };
  });
  let url = '';
  beforeAll(async () => {
    url = `${await app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
  });
  afterAll(() => app.close());

  it("sends chapter 7's prompt and reads a score; a reply that is not 0–100 alone is no score", async () => {
    expect(judgePrompt(entry, 'Red.')).toBe(
      'Given the input `Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nName a color.` ' +
        'and correct output `Blue.`, score the model response `Red.` on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only.',
    );
    const got = [];
    for (let i = 0; i < 4; i++) got.push(parseScore(await judgeReply(entry, 'Red.', { url, model: 'judge' })));
    expect(got).toEqual([85, null, 100, null]);
    expect(seen[0]).toEqual({ model: 'judge', content: judgePrompt(entry, 'Red.') });
  });

  it('tsx src/eval.ts: eval.json, the responses file, perplexity = exp(loss), the judge\'s scores and non-numeric replies counted', async () => {
    const dir = await freshDir();
    const { model } = randomModel('tiny', { seed: 3, backend: cpu });
    await saveModel(model, join(dir, 'model'));
    const entries: InstructionEntry[] = [entry, { instruction: 'Add 2 and 3.', input: '', output: '5' }, { instruction: 'Echo', input: 'hi', output: 'hi' }];
    writeFileSync(join(dir, 'data.jsonl'), entries.map((e) => JSON.stringify(e)).join('\n'));
    seen.length = 0;
    // Spawned, not spawnSync: the judge stub answers from this process's event loop.
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/eval.ts', '--model', join(dir, 'model'), '--data', join(dir, 'data.jsonl'), '--device', 'cpu', '--judge-url', url, '--judge-model', 'j']);
    const run = { status: null as number | null, stdout: '', stderr: '' };
    child.stdout.on('data', (d) => (run.stdout += d));
    child.stderr.on('data', (d) => (run.stderr += d));
    run.status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/perplexity/);
    const evaluated = JSON.parse(readFileSync(join(dir, 'model', 'eval.json'), 'utf8')) as { loss: number; perplexity: number; results: { rouge_l: number }[] };
    expect(evaluated).toMatchObject({ complete: true, entries: 3, judge: { model: 'j', scored: 2, non_numeric: 1, mean_score: (85 + 100) / 2 } });
    expect(evaluated.perplexity).toBeCloseTo(Math.exp(evaluated.loss), 9);
    const responses = JSON.parse(readFileSync(join(dir, 'model', 'instruction-data-with-response.json'), 'utf8')) as (InstructionEntry & { model_response: string })[];
    expect(responses.map((r: InstructionEntry) => r.instruction)).toEqual(entries.map((e) => e.instruction));
    expect(Object.keys(responses[0])).toEqual(['instruction', 'input', 'output', 'model_response']);
    expect(evaluated.results[1].rouge_l).toBe(rougeL(responses[1].model_response, '5'));
    // The loss over all response tokens, as the trainer's validation measures it.
    const tokenizer = new Tokenizer();
    const examples = entries.map((e) => encodeEntry(e, tokenizer));
    const trainer = new Trainer(model, new AdamW(model), examples, examples, {
      epochs: 1, batchSize: 2, lr: 1e-3, lrSchedule: 'constant', warmupSteps: 0, maxSteps: null, gradAccum: 1, clip: 0, seed: 0, shuffle: false, evalEvery: 0, maskPrompt: true, contextLength: 64,
    });
    expect(evaluated.loss).toBeCloseTo((await trainer.validate())!, 4);
    let sum = 0;
    let tokens = 0;
    for (const example of examples) {
      const one = await responseLoss(model, example, 64);
      sum += one.sum;
      tokens += one.tokens;
    }
    expect(sum / tokens).toBeCloseTo(evaluated.loss, 4);
  }, 300_000);
});

describe('the judge is the project\'s own OpenAI-compatible server', () => {
  it('tsx src/eval.ts --judge-url <our server>: every entry judged, a score or a counted non-numeric reply', async () => {
    // A tiny random judge (its scores mean nothing: the contract between eval and the server is what is
    // tested) whose context holds chapter 7's judge prompt.
    const judge = randomModel({ ...PRESETS.tiny, n_positions: 256 }, { seed: 5, backend: cpu }).model;
    const app = buildServer({ batcher: new ContinuousBatcher(judge, { slots: 2, queue: 8 }), modelId: 'judge-tiny' });
    const url = `${await app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
    try {
      const dir = await freshDir();
      await saveModel(randomModel('tiny', { seed: 3, backend: cpu }).model, join(dir, 'model'));
      const entries: InstructionEntry[] = [entry, { instruction: 'Add 2 and 3.', input: '', output: '5' }];
      writeFileSync(join(dir, 'data.json'), JSON.stringify(entries));
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/eval.ts', '--model', join(dir, 'model'), '--data', join(dir, 'data.json'), '--device', 'cpu', '--judge-url', url, '--judge-model', 'judge-tiny']);
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
      expect(status, stderr).toBe(0);
      const evaluated = JSON.parse(readFileSync(join(dir, 'model', 'eval.json'), 'utf8')) as { judge: { model: string; scored: number; non_numeric: number } };
      expect(evaluated.judge.model).toBe('judge-tiny');
      expect(evaluated.judge.scored + evaluated.judge.non_numeric).toBe(entries.length);
    } finally {
      await app.close();
    }
  }, 300_000);
});
