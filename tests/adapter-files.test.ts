/**
 * LoRA adapter files in PEFT's layout (src/gpt/lora-adapter.ts, src/node/adapter-folder.ts): written
 * and read back identical; the header holds exactly the names, shapes and dtype PEFT gives GPT-2's
 * layers (a list written out by hand here, not produced by the writer); an adapter for another base,
 * rank or set of layers refused by what differs; the head's adapter (lm_head) under PEFT's names beside
 * the blocks', its vocabulary checked; broken adapter_config.json files refused by field.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { GPT2Config } from '../src/gpt/config.js';
import { adapterShapes, parseAdapterConfig, type AdapterSettings } from '../src/gpt/lora-adapter.js';
import type { HostTensor } from '../src/gpt/safetensors.js';
import { readAdapterConfig, readAdapterTensors, saveAdapterFiles } from '../src/node/adapter-folder.js';
import { writeSafetensors } from '../src/node/safetensors-file.js';
import { freshSeed } from './helpers/random-data.js';
import { expectSameTensors, freshDir, randomTensor } from './helpers/weights-fixtures.js';

/** n_embd 8, 2 blocks: every shape below is small enough to write out by hand. */
const CONFIG: GPT2Config = { n_embd: 8, n_layer: 2, n_head: 2, n_positions: 16, vocab_size: 50, layer_norm_epsilon: 1e-5 };
const SETTINGS: AdapterSettings = { rank: 2, alpha: 4, dropout: 0.05, targets: ['mlp.c_proj', 'c_attn'] };

function adapterTensors(config: GPT2Config, settings: AdapterSettings, seed: number): Map<string, HostTensor> {
  return new Map([...adapterShapes(config, settings)].map(([name, shape], i) => [name, randomTensor(shape, seed, i)]));
}

/** The raw JSON header of a safetensors file, read without the project's reader. */
async function rawHeader(path: string): Promise<Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>> {
  const bytes = await readFile(path);
  const length = Number(bytes.readBigUInt64LE(0));
  return JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
}

describe('adapter folders', () => {
  it('are written and read back identical, under the names, shapes and dtype PEFT uses', async () => {
    const seed = freshSeed();
    const dir = await freshDir();
    const tensors = adapterTensors(CONFIG, SETTINGS, seed);
    await saveAdapterFiles(dir, CONFIG, SETTINGS, '/models/tiny-base', tensors);

    const header = await rawHeader(join(dir, 'adapter_model.safetensors'));
    const { __metadata__: metadata, ...entries } = header;
    expect(metadata).toEqual({ format: 'pt' });
    // PEFT on GPT2LMHeadModel: lora_A [r, in], lora_B [out, r] for each targeted Conv1D, in f32.
    const expected: [string, number[]][] = [
      ['base_model.model.transformer.h.0.attn.c_attn.lora_A.weight', [2, 8]],
      ['base_model.model.transformer.h.0.attn.c_attn.lora_B.weight', [24, 2]],
      ['base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight', [2, 32]],
      ['base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight', [8, 2]],
      ['base_model.model.transformer.h.1.attn.c_attn.lora_A.weight', [2, 8]],
      ['base_model.model.transformer.h.1.attn.c_attn.lora_B.weight', [24, 2]],
      ['base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight', [2, 32]],
      ['base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight', [8, 2]],
    ];
    expect(Object.keys(entries).sort()).toEqual(expected.map(([name]) => name).sort());
    for (const [name, shape] of expected) {
      expect(entries[name].dtype, name).toBe('F32');
      expect(entries[name].shape, name).toEqual(shape);
    }

    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({
      peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: '/models/tiny-base', r: 2, lora_alpha: 4,
      lora_dropout: 0.05, target_modules: ['c_attn', 'mlp.c_proj'], fan_in_fan_out: true, bias: 'none',
    });

    const read = await readAdapterConfig(dir);
    expect(read).toEqual({ rank: 2, alpha: 4, dropout: 0.05, targets: ['c_attn', 'mlp.c_proj'], base: '/models/tiny-base' });
    expectSameTensors(await readAdapterTensors(dir, CONFIG, read), new Map([...adapterShapes(CONFIG, SETTINGS).keys()].map((n) => [n, tensors.get(n)!])));
  });

  it('refuse an adapter made for another base, rank or set of layers, naming what differs', async () => {
    const dir = await freshDir();
    await saveAdapterFiles(dir, CONFIG, SETTINGS, 'base', adapterTensors(CONFIG, SETTINGS, 1));
    const read = (config: GPT2Config, settings: AdapterSettings) => readAdapterTensors(dir, config, settings);
    await expect(read({ ...CONFIG, n_embd: 16 }, SETTINGS)).rejects.toThrow(/made for a base with n_embd 8, this base has n_embd 16/);
    await expect(read({ ...CONFIG, n_layer: 3 }, SETTINGS)).rejects.toThrow(/it adapts 2 blocks, this base has 3 \(n_layer\)[\s\S]*missing base_model\.model\.transformer\.h\.2\.attn\.c_attn\.lora_A\.weight \[2, 8\]/);
    await expect(read(CONFIG, { ...SETTINGS, rank: 4 })).rejects.toThrow(/its tensors have rank 2, its config says r 4/);
    await expect(read(CONFIG, { ...SETTINGS, targets: ['c_attn'] })).rejects.toThrow(/holds tensors for mlp\.c_proj, which target_modules does not list/);
    await expect(read(CONFIG, { ...SETTINGS, targets: ['c_attn', 'c_fc', 'mlp.c_proj'] })).rejects.toThrow(/target_modules lists c_fc, but it holds no tensors for it/);

    // One tensor of the wrong shape, and a name outside PEFT's prefix.
    const tensors = adapterTensors(CONFIG, SETTINGS, 2);
    const peft = new Map([...tensors].map(([n, t]) => [`base_model.model.transformer.${n}`, t]));
    peft.set('base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight', randomTensor([9, 2], 2, 99));
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), peft);
    await expect(read(CONFIG, SETTINGS)).rejects.toThrow(/h\.1\.mlp\.c_proj\.lora_B\.weight has shape \[9, 2\], expected \[8, 2\]/);
    peft.set('model.h.0.attn.c_attn.lora_A.weight', randomTensor([2, 8], 2, 98));
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), peft);
    await expect(read(CONFIG, SETTINGS)).rejects.toThrow(/"model\.h\.0\.attn\.c_attn\.lora_A\.weight" is not a PEFT adapter tensor/);
  });
});

describe('an adapter on the head (lm_head)', () => {
  const settings: AdapterSettings = { rank: 2, alpha: 4, dropout: 0, targets: ['lm_head', 'c_attn'] };

  it('is written under PEFT\'s names for GPT2LMHeadModel\'s lm_head, after the blocks\', and read back identical', async () => {
    const seed = freshSeed();
    const dir = await freshDir();
    const tensors = adapterTensors(CONFIG, settings, seed);
    await saveAdapterFiles(dir, CONFIG, settings, 'gpt2', tensors);
    const { __metadata__: _m, ...entries } = await rawHeader(join(dir, 'adapter_model.safetensors'));
    // PEFT on an nn.Linear(n_embd, vocab): lora_A [r, n_embd], lora_B [vocab, r]; the head sits beside `transformer`.
    const expected: [string, number[]][] = [
      ['base_model.model.transformer.h.0.attn.c_attn.lora_A.weight', [2, 8]],
      ['base_model.model.transformer.h.0.attn.c_attn.lora_B.weight', [24, 2]],
      ['base_model.model.transformer.h.1.attn.c_attn.lora_A.weight', [2, 8]],
      ['base_model.model.transformer.h.1.attn.c_attn.lora_B.weight', [24, 2]],
      ['base_model.model.lm_head.lora_A.weight', [2, 8]],
      ['base_model.model.lm_head.lora_B.weight', [50, 2]],
    ];
    expect(Object.entries(entries).map(([name, e]) => [name, e.shape])).toEqual(expected);
    for (const [name] of expected) expect(entries[name].dtype, name).toBe('F32');
    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config.target_modules).toEqual(['c_attn', 'lm_head']);
    const read = await readAdapterConfig(dir);
    expect(read).toEqual({ rank: 2, alpha: 4, dropout: 0, targets: ['c_attn', 'lm_head'], base: 'gpt2' });
    expectSameTensors(await readAdapterTensors(dir, CONFIG, read), tensors);
  });

  it('is refused for a base of another vocabulary, naming it, and under a name outside PEFT\'s', async () => {
    const dir = await freshDir();
    await saveAdapterFiles(dir, CONFIG, settings, 'gpt2', adapterTensors(CONFIG, settings, 1));
    await expect(readAdapterTensors(dir, { ...CONFIG, vocab_size: 64 }, settings)).rejects.toThrow(
      /does not fit the base \(n_embd 8, n_layer 2, vocab_size 64; r 2, targets c_attn, lm_head\):\n {2}its lm_head adapter was made for a vocabulary of 50, this base has vocab_size 64\n {2}base_model\.model\.lm_head\.lora_B\.weight has shape \[50, 2\], expected \[64, 2\]/,
    );
    await expect(readAdapterTensors(dir, CONFIG, { ...settings, targets: ['c_attn'] })).rejects.toThrow(/holds tensors for lm_head, which target_modules does not list/);
    // The head under the blocks' prefix is not where PEFT puts it.
    const tensors = adapterTensors(CONFIG, settings, 2);
    const misplaced = new Map([...tensors].map(([n, t]) => [`base_model.model.transformer.${n}`, t]));
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), misplaced);
    await expect(readAdapterTensors(dir, CONFIG, settings)).rejects.toThrow(/"base_model\.model\.transformer\.lm_head\.lora_A\.weight" is not a PEFT adapter tensor of GPT-2/);
  });
});

describe('adapter_config.json', () => {
  const valid = { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, lora_dropout: 0.1, target_modules: ['c_attn', 'c_proj'], base_model_name_or_path: 'gpt2' };
  const parse = (value: unknown) => parseAdapterConfig(typeof value === 'string' ? value : JSON.stringify(value), 'a/adapter_config.json');

  it('reads PEFT\'s fields; a bare c_proj adapts both of GPT-2\'s', () => {
    expect(parse(valid)).toEqual({ rank: 8, alpha: 16, dropout: 0.1, targets: ['c_attn', 'attn.c_proj', 'mlp.c_proj'], base: 'gpt2' });
    const { lora_dropout: _d, base_model_name_or_path: _b, ...bare } = valid;
    expect(parse(bare)).toEqual({ rank: 8, alpha: 16, dropout: 0, targets: ['c_attn', 'attn.c_proj', 'mlp.c_proj'], base: null });
    expect(parse({ ...valid, target_modules: ['lm_head', 'c_fc'] }).targets).toEqual(['c_fc', 'lm_head']);
  });

  it.each([
    ['{"r": 8,', /a\/adapter_config\.json: not valid JSON/],
    ['[1, 2]', /expected a JSON object/],
    [{ ...valid, peft_type: 'PREFIX_TUNING' }, /"peft_type" is "PREFIX_TUNING": only LoRA adapters/],
    [{ ...valid, peft_type: undefined }, /"peft_type" is missing/],
    [{ ...valid, r: undefined }, /"r" is missing/],
    [{ ...valid, lora_alpha: undefined }, /"lora_alpha" is missing/],
    [{ ...valid, target_modules: undefined }, /"target_modules" is missing/],
    [{ ...valid, r: 0 }, /"r" must be a positive integer, got 0/],
    [{ ...valid, r: 2.5 }, /"r" must be a positive integer, got 2\.5/],
    [{ ...valid, lora_alpha: '16' }, /"lora_alpha" must be a positive number, got "16"/],
    [{ ...valid, lora_dropout: 1 }, /"lora_dropout" must be a number in \[0, 1\), got 1/],
    [{ ...valid, target_modules: '.*c_attn' }, /"target_modules" is the pattern ".\*c_attn": only a list/],
    [{ ...valid, target_modules: [] }, /"target_modules" must be a non-empty list/],
    [{ ...valid, target_modules: ['q_proj'] }, /"target_modules" names "q_proj", which is not an adaptable GPT-2 layer/],
    [{ ...valid, task_type: 'SEQ_CLS' }, /"task_type" is "SEQ_CLS", expected "CAUSAL_LM"/],
    [{ ...valid, bias: 'all' }, /"bias" is "all": only adapters that train no biases/],
    [{ ...valid, use_dora: true }, /"use_dora" is true: not supported/],
    [{ ...valid, rank_pattern: { 'h.0.attn.c_attn': 4 } }, /"rank_pattern" is .*: one rank and alpha for every layer/],
    [{ ...valid, modules_to_save: ['lm_head'] }, /"modules_to_save" is \["lm_head"\]: not supported/],
    [{ ...valid, base_model_name_or_path: 3 }, /"base_model_name_or_path" must be a model name or path, got 3/],
  ])('refuses %j by field', (value, message) => {
    expect(() => parse(value)).toThrow(message);
  });

  it('refuses a folder without its files, naming them', async () => {
    const dir = await freshDir();
    await expect(readAdapterConfig(dir)).rejects.toThrow(/lacks adapter_config\.json and adapter_model\.safetensors/);
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(valid));
    await expect(readAdapterConfig(dir)).rejects.toThrow(/lacks adapter_model\.safetensors/);
  });
});
