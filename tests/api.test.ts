/**
 * The public API (src/index.ts, src/node.ts) on the CPU backend and a tiny random model: text or
 * ids as prompts, greedy by default as the command line; a model through bytes and through a folder
 * gives the same logits; fineTune is the command line's training loop (same losses as the Trainer
 * driven by hand), reports every step, and stops after the step in flight on an abort; data parsed
 * from text with the file's messages.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  alpacaPrompt, DataError, fineTune, generate, generateBatch, generateStream, loadModel, modelFromBytes, modelToBytes,
  parseInstructionData, randomModel, saveModel, Tokenizer, type InstructionEntry,
} from '../src/node.js';
import { tensor } from '../src/tensor/create.js';
import { CpuBackend } from '../src/tensor/cpu-backend.js';
import { AdamW } from '../src/train/adamw.js';
import { encodeEntry, formatInput } from '../src/train/instruction-data.js';
import { Trainer } from '../src/train/trainer.js';

const backend = new CpuBackend();
const tokenizer = new Tokenizer();

async function logits(model: ReturnType<typeof randomModel>['model'], ids: number[]): Promise<Float32Array> {
  const out = model.forward(tensor(Int32Array.from(ids), [1, ids.length], { backend }));
  const values = await out.toFloat32();
  out.dispose();
  return values;
}

const ENTRIES: InstructionEntry[] = [
  { instruction: 'Name a color.', input: '', output: 'Red.' },
  { instruction: 'Add the numbers.', input: '2 and 3', output: '5' },
  { instruction: 'Say hi.', input: '', output: 'Hi!' },
  { instruction: 'Name a fruit.', input: '', output: 'Apple.' },
  { instruction: 'Opposite of up?', input: '', output: 'Down.' },
];

describe('generation through the API', () => {
  const { model } = randomModel('tiny', { seed: 3, backend });

  it('takes text or ids, and is greedy unless a temperature is given', async () => {
    const ids = tokenizer.encode('Hello there');
    const fromText = await generate(model, 'Hello there', { maxNewTokens: 6, eosId: null });
    const fromIds = await generate(model, ids, { maxNewTokens: 6, eosId: null, temperature: 0 });
    expect(fromText.ids).toEqual(fromIds.ids);
    expect(fromText.text).toBe(tokenizer.decode(fromText.ids));
    // Greedy: the first new token is the argmax of the prompt's last logits.
    const V = model.config.vocab_size;
    const last = (await logits(model, ids)).subarray((ids.length - 1) * V);
    expect(fromText.ids[0]).toBe(last.indexOf(Math.max(...last)));
    // A temperature samples: on near-uniform random logits a draw almost never repeats the greedy path.
    const sampled = await generate(model, ids, { maxNewTokens: 6, eosId: null, temperature: 1, seed: 5 });
    expect(sampled.ids).not.toEqual(fromIds.ids);
    expect(fromText.tokensPerSecond).toBeCloseTo(fromText.newTokens / fromText.seconds, 6);
  });

  it('streams the same tokens and text, and batches text prompts', async () => {
    const stream = generateStream(model, 'Once upon', { maxNewTokens: 5, eosId: null });
    const seen: number[] = [];
    let text = '';
    let step = await stream.next();
    while (!step.done) {
      seen.push(step.value.id);
      text += step.value.text;
      step = await stream.next();
    }
    expect(seen).toEqual(step.value.ids);
    expect(text).toBe(step.value.text);
    const [a, b] = await generateBatch(model, ['Once upon', 'Hello there'], { maxNewTokens: 5, eosId: null });
    expect(a.ids).toEqual(step.value.ids);
    expect(b.ids).toEqual((await generate(model, 'Hello there', { maxNewTokens: 5, eosId: null })).ids);
  });
});

describe('models as bytes and folders', () => {
  it('modelToBytes → modelFromBytes and saveModel → loadModel keep every logit', async () => {
    const { model } = randomModel('tiny', { seed: 7, backend });
    const ids = tokenizer.encode('The quick brown fox');
    const expected = await logits(model, ids);
    const bytes = await modelToBytes(model);
    expect(JSON.parse(bytes.config)).toMatchObject({ model_type: 'gpt2', n_embd: 32, n_layer: 2 });
    const fromBytes = modelFromBytes(bytes.config, bytes.weights, backend);
    expect(await logits(fromBytes.model, ids)).toEqual(expected);
    const folder = mkdtempSync(join(tmpdir(), 'api-model-'));
    try {
      await saveModel(model, folder);
      const loaded = await loadModel(folder, { backend });
      expect(loaded.source).toBe(folder);
      expect(await logits(loaded.model, ids)).toEqual(expected);
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });

  it('refuses weights that do not match the config, naming the tensor', () => {
    const { model } = randomModel('tiny', { backend });
    return modelToBytes(model).then(({ weights }) => {
      const other = { ...model.config, n_layer: 3 };
      expect(() => modelFromBytes(other, weights, backend)).toThrow(/missing h\.2\.ln_1\.weight/);
    });
  });
});

describe('fineTune', () => {
  const options = { epochs: 1, batchSize: 2, learningRate: 1e-3, warmupSteps: 1, valFraction: 0.2, evalEvery: 0, seed: 4 };

  it('gives the losses of the Trainer driven by hand with the same settings, and reports each step', async () => {
    const a = randomModel('tiny', { seed: 1, backend }).model;
    const steps: [number, number][] = [];
    const result = await fineTune(a, ENTRIES, { ...options, onStep: (r, info) => void steps.push([r.step, info.totalSteps]) });
    expect(result.stopped).toBe(false);
    expect(steps).toEqual([[1, 2], [2, 2]]);

    const b = randomModel('tiny', { seed: 1, backend }).model;
    const encoded = ENTRIES.map((e) => encodeEntry(e, tokenizer));
    // The split of fineTune (seed 4, 20% held out) is the command line's: entries 0..4 minus one.
    const heldOut = result.records.at(-1)!.val_loss;
    expect(heldOut).toBeGreaterThan(0);
    const optimizer = new AdamW(b, { weightDecay: 0.01 });
    const { splitTrainVal } = await import('../src/train/batches.js');
    const { train, val } = splitTrainVal(encoded.length, 0.2, 4);
    const trainer = new Trainer(b, optimizer, train.map((i) => encoded[i]), val.map((i) => encoded[i]), {
      epochs: 1, batchSize: 2, lr: 1e-3, lrSchedule: 'cosine', warmupSteps: 1, maxSteps: null, gradAccum: 1, clip: 1,
      seed: 4, shuffle: true, evalEvery: 0, maskPrompt: false, contextLength: 64,
    });
    await trainer.run();
    expect(result.records).toEqual(trainer.records);
  });

  it('stops after the step in flight when its signal aborts', async () => {
    const { model } = randomModel('tiny', { seed: 2, backend });
    const stop = new AbortController();
    const result = await fineTune(model, ENTRIES, {
      ...options, epochs: 3, onStep: (record) => {
        if (record.step === 2) stop.abort();
      }, signal: stop.signal,
    });
    expect(result.stopped).toBe(true);
    // Step n's loss is read while step n + 1 is recorded: at step 2's report, step 3 is the one in flight.
    expect(result.records.map((r) => r.step)).toEqual([1, 2, 3]);
  });

  it('refuses a bad option by name', async () => {
    const { model } = randomModel('tiny', { backend });
    await expect(fineTune(model, ENTRIES, { batchSize: 0 })).rejects.toThrow('fineTune: batchSize must be a positive integer, got 0');
  });
});

describe('data and the template', () => {
  it('parses a data set from text with the messages of a file', () => {
    expect(parseInstructionData('\uFEFF[{"instruction":"a","output":"b"}]', 'pasted')).toEqual([{ instruction: 'a', input: '', output: 'b' }]);
    expect(() => parseInstructionData('[{"instruction":"a"}]', 'pasted')).toThrow(new DataError('pasted: entry 0 (0-based) has no "output" field'));
    expect(() => parseInstructionData('[1,', 'pasted')).toThrow(/^pasted: not valid JSON/);
  });

  it('alpacaPrompt is the training template\'s prompt', () => {
    const entry = { instruction: 'Translate.', input: 'Hola', output: 'x' };
    expect(alpacaPrompt(entry)).toBe(formatInput(entry).prompt);
    expect(alpacaPrompt({ instruction: 'Hi' })).toBe(formatInput({ instruction: 'Hi', input: '', output: '' }).prompt);
    expect(alpacaPrompt(entry)).toMatch(/### Input:\nHola\n\n### Response:\n$/);
  });
});
