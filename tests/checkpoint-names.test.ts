import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkStateDict, normalizeStateDict } from '../src/gpt/state-dict.js';
import { loadGpt2Weights, saveGpt2Weights } from '../src/node/weights-folder.js';
import { configFromJson, configToJson, PRESETS, type GPT2Config } from '../src/gpt/config.js';
import { readSafetensors, writeSafetensors } from '../src/node/safetensors-file.js';
import { type HostTensor, type StateDict } from '../src/gpt/safetensors.js';
import { expectSameTensors, freshDir, randomGpt2Weights, randomTensor } from './helpers/weights-fixtures.js';

const C = 8;
const V = 11;
const P = 5;
const small: GPT2Config = { n_embd: C, n_layer: 2, n_head: 2, n_positions: P, vocab_size: V, layer_norm_epsilon: 1e-5 };
const untied: GPT2Config = { ...small, tie_word_embeddings: false };

/** The notebook GPTModel's state_dict: nn.Linear weights are [out, in]. */
function bookStateDict(seed: number, { qkvBias = true } = {}): StateDict {
  let stream = 0;
  const t = (shape: number[]) => randomTensor(shape, seed, stream++);
  const dict: StateDict = new Map([['tok_emb.weight', t([V, C])], ['pos_emb.weight', t([P, C])]]);
  for (let i = 0; i < small.n_layer; i++) {
    const b = `trf_blocks.${i}`;
    for (const w of ['W_query', 'W_key', 'W_value']) {
      dict.set(`${b}.att.${w}.weight`, t([C, C]));
      if (qkvBias) dict.set(`${b}.att.${w}.bias`, t([C]));
    }
    dict.set(`${b}.att.out_proj.weight`, t([C, C]));
    dict.set(`${b}.att.out_proj.bias`, t([C]));
    dict.set(`${b}.att.mask`, { shape: [P, P], data: new Float32Array(P * P).fill(1) });
    dict.set(`${b}.ff.layers.0.weight`, t([4 * C, C]));
    dict.set(`${b}.ff.layers.0.bias`, t([4 * C]));
    dict.set(`${b}.ff.layers.2.weight`, t([C, 4 * C]));
    dict.set(`${b}.ff.layers.2.bias`, t([C]));
    for (const n of ['norm1', 'norm2']) {
      dict.set(`${b}.${n}.scale`, t([C]));
      dict.set(`${b}.${n}.shift`, t([C]));
    }
  }
  dict.set('final_norm.scale', t([C]));
  dict.set('final_norm.shift', t([C]));
  dict.set('out_head.weight', t([V, C]));
  return dict;
}

const at = (t: HostTensor, r: number, c: number) => t.data[r * t.shape[1] + c];

function expectTransposeOf(actual: HostTensor, source: HostTensor): void {
  const [rows, cols] = source.shape;
  expect(actual.shape).toEqual([cols, rows]);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expect(at(actual, c, r)).toBe(at(source, r, c));
}

describe('book-style names of the course notebook', () => {
  it('map to the Hugging Face tensors: renames, transposes, Q|K|V columns', () => {
    const book = bookStateDict(7);
    const hf = normalizeStateDict(book, untied, 'book.safetensors');
    checkStateDict(hf, untied, 'book.safetensors');
    const get = (name: string) => hf.get(name)!;
    const src = (name: string) => book.get(name)!;

    expect(get('wte.weight')).toBe(src('tok_emb.weight'));
    expect(get('wpe.weight')).toBe(src('pos_emb.weight'));
    expect(get('lm_head.weight')).toBe(src('out_head.weight'));
    expect(get('ln_f.weight')).toBe(src('final_norm.scale'));
    expect(get('ln_f.bias')).toBe(src('final_norm.shift'));
    for (let i = 0; i < small.n_layer; i++) {
      const b = `trf_blocks.${i}`;
      expect(get(`h.${i}.ln_1.weight`)).toBe(src(`${b}.norm1.scale`));
      expect(get(`h.${i}.ln_2.bias`)).toBe(src(`${b}.norm2.shift`));
      expect(get(`h.${i}.attn.c_proj.bias`)).toBe(src(`${b}.att.out_proj.bias`));
      expectTransposeOf(get(`h.${i}.attn.c_proj.weight`), src(`${b}.att.out_proj.weight`));
      expectTransposeOf(get(`h.${i}.mlp.c_fc.weight`), src(`${b}.ff.layers.0.weight`));
      expectTransposeOf(get(`h.${i}.mlp.c_proj.weight`), src(`${b}.ff.layers.2.weight`));
      expect(get(`h.${i}.mlp.c_fc.bias`)).toBe(src(`${b}.ff.layers.0.bias`));

      // c_attn[in, k*C + out] = W_k[out, in] for k = query, key, value; bias = q|k|v.
      const cAttn = get(`h.${i}.attn.c_attn.weight`);
      expect(cAttn.shape).toEqual([C, 3 * C]);
      ['W_query', 'W_key', 'W_value'].forEach((w, k) => {
        const source = src(`${b}.att.${w}.weight`);
        for (let input = 0; input < C; input++) {
          for (let output = 0; output < C; output++) expect(at(cAttn, input, k * C + output)).toBe(at(source, output, input));
        }
        expect(Array.from(get(`h.${i}.attn.c_attn.bias`).data.subarray(k * C, (k + 1) * C))).toEqual(Array.from(src(`${b}.att.${w}.bias`).data));
      });
    }
  });

  it('without q/k/v biases (qkv_bias=False) gives a zero c_attn bias', () => {
    const hf = normalizeStateDict(bookStateDict(8, { qkvBias: false }), untied, 'book.safetensors');
    checkStateDict(hf, untied, 'book.safetensors');
    expect(hf.get('h.1.attn.c_attn.bias')!.data.every((x) => x === 0)).toBe(true);
  });

  it('drops out_head when the config ties it and it equals tok_emb, refuses when it differs', () => {
    const book = bookStateDict(9);
    expect(() => normalizeStateDict(book, small, 'book.safetensors')).toThrow(
      'book.safetensors: out_head.weight differs from the token embedding, but the config ties them (set "tie_word_embeddings": false',
    );
    book.set('out_head.weight', book.get('tok_emb.weight')!);
    const hf = normalizeStateDict(book, small, 'book.safetensors');
    expect(hf.has('lm_head.weight')).toBe(false);
    checkStateDict(hf, small, 'book.safetensors');
  });

  it('names the missing source when one of W_query, W_key, W_value is absent', () => {
    const book = bookStateDict(10);
    book.delete('trf_blocks.1.att.W_key.weight');
    expect(() => normalizeStateDict(book, untied, 'book.safetensors')).toThrow(
      'book.safetensors: missing trf_blocks.1.att.W_key.weight (needed to build h.1.attn.c_attn)',
    );
  });
});

describe('Hugging Face names', () => {
  it('accept the transformer. prefix, a tied lm_head equal to wte, and ignore the attention buffers', () => {
    const weights = randomGpt2Weights(small, 3);
    const raw: StateDict = new Map([...weights].map(([n, t]) => [`transformer.${n}`, t]));
    raw.set('lm_head.weight', weights.get('wte.weight')!);
    raw.set('transformer.h.0.attn.bias', { shape: [1, 1, P, P], data: new Float32Array(P * P) });
    raw.set('h.1.attn.masked_bias', { shape: [], data: Float32Array.of(-1e4) });
    const hf = normalizeStateDict(raw, small, 'm.safetensors');
    checkStateDict(hf, small, 'm.safetensors');
    expectSameTensors(hf, weights);
  });

  it('report every missing, misshapen and unexpected tensor with the file name', () => {
    const weights = randomGpt2Weights(small, 4);
    weights.delete('h.1.mlp.c_fc.bias');
    weights.set('h.0.attn.c_attn.weight', randomTensor([C, 2 * C], 4, 99));
    weights.set('h.0.attn.rotary.weight', randomTensor([2], 4, 98));
    const check = () => checkStateDict(weights, small, 'dir/model.safetensors');
    expect(check).toThrow(/^dir\/model\.safetensors: does not match the GPT-2 config \(n_embd 8, n_layer 2, n_head 2, n_positions 5, vocab_size 11, tied head\):/);
    expect(check).toThrow('h.0.attn.c_attn.weight has shape [8, 16], expected [8, 24]');
    expect(check).toThrow('missing h.1.mlp.c_fc.bias [32]');
    expect(check).toThrow('unexpected tensor h.0.attn.rotary.weight');
  });

  it('an untied config requires lm_head.weight [V, C]', () => {
    expect(() => checkStateDict(randomGpt2Weights(small, 5), untied, 'm.safetensors')).toThrow('missing lm_head.weight [11, 8]');
  });

  it('two names for one tensor are an error', () => {
    const weights = randomGpt2Weights(small, 6);
    weights.set('transformer.wte.weight', weights.get('wte.weight')!);
    expect(() => normalizeStateDict(weights, small, 'm.safetensors')).toThrow('m.safetensors: both wte.weight and transformer.wte.weight give wte.weight');
  });
});

describe('model folders', () => {
  it('save then load gives the same config and weights; tied files use the bare base names', async () => {
    const folder = join(await freshDir(), 'new', 'run');
    const weights = randomGpt2Weights(small, 11);
    await saveGpt2Weights(folder, small, weights);
    const loaded = await loadGpt2Weights(folder);
    expect(loaded.config).toEqual({ ...small, tie_word_embeddings: true });
    expectSameTensors(loaded.weights, weights);
    expect([...(await readSafetensors(join(folder, 'model.safetensors'))).keys()]).toEqual([...weights.keys()]);
  });

  it('untied: base names under transformer. beside lm_head.weight, as save_pretrained writes them', async () => {
    const folder = await freshDir();
    const weights = randomGpt2Weights(untied, 12);
    await saveGpt2Weights(folder, untied, weights);
    const raw = await readSafetensors(join(folder, 'model.safetensors'));
    expect(raw.has('lm_head.weight') && raw.has('transformer.wte.weight') && !raw.has('wte.weight')).toBe(true);
    const json = JSON.parse(await readFile(join(folder, 'config.json'), 'utf8')) as unknown;
    expect(json).toMatchObject({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], tie_word_embeddings: false, n_ctx: P, activation_function: 'gelu_new' });
    expectSameTensors((await loadGpt2Weights(folder)).weights, weights);
  });

  it('saving checks the weights first', async () => {
    const folder = await freshDir();
    await expect(saveGpt2Weights(folder, untied, randomGpt2Weights(small, 13))).rejects.toThrow(`${folder}/model.safetensors: does not match`);
  });

  it('a folder with only pytorch_model.bin says that only safetensors are read', async () => {
    const folder = await freshDir();
    await writeFile(join(folder, 'config.json'), JSON.stringify(configToJson(small)));
    await writeFile(join(folder, 'pytorch_model.bin'), 'not read');
    await expect(loadGpt2Weights(folder)).rejects.toThrow(`${folder} lacks model.safetensors (a GPT-2 model folder holds config.json + model.safetensors). It holds pytorch_model.bin, which is not read (only safetensors)`);
  });

  it('a broken config.json names the file and the key', async () => {
    const folder = await freshDir();
    await writeSafetensors(join(folder, 'model.safetensors'), randomGpt2Weights(small, 14));
    const configPath = join(folder, 'config.json');
    await writeFile(configPath, '{"n_embd": 8,');
    await expect(loadGpt2Weights(folder)).rejects.toThrow(`${configPath}: not valid JSON`);
    await writeFile(configPath, JSON.stringify({ ...configToJson(small), n_head: undefined }));
    await expect(loadGpt2Weights(folder)).rejects.toThrow(`${configPath}: missing required key "n_head"`);
  });

  it('a model folder that does not exist', async () => {
    const folder = join(await freshDir(), 'nope');
    await expect(loadGpt2Weights(folder)).rejects.toThrow(`${folder} does not exist`);
    await mkdir(folder);
    await expect(loadGpt2Weights(folder)).rejects.toThrow(`${folder} lacks config.json and model.safetensors`);
  });
});

describe('config.json', () => {
  it('round-trips every preset through the Hugging Face form', () => {
    for (const [name, preset] of Object.entries(PRESETS)) {
      expect(configFromJson(configToJson(preset), name)).toEqual({ ...preset, tie_word_embeddings: true });
    }
    expect(PRESETS['gpt2-medium']).toMatchObject({ n_embd: 1024, n_layer: 24, n_head: 16, n_positions: 1024, vocab_size: 50257 });
  });

  it('validates keys with errors naming the file', () => {
    const base = configToJson(small);
    expect(() => configFromJson({ ...base, n_head: 3 }, 'c.json')).toThrow('c.json: n_embd (8) must be divisible by n_head (3)');
    expect(() => configFromJson({ ...base, n_layer: 1.5 }, 'c.json')).toThrow('c.json: "n_layer" must be a positive integer, got 1.5');
    expect(() => configFromJson({ ...base, model_type: 'llama' }, 'c.json')).toThrow('c.json: model_type is "llama"');
    expect(() => configFromJson({ ...base, activation_function: 'relu' }, 'c.json')).toThrow('c.json: activation_function "relu" is not supported');
    expect(() => configFromJson([], 'c.json')).toThrow('c.json: expected a JSON object');
  });
});
