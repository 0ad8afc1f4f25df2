/**
 * Running a LoRA adapter (src/node/load-model.ts, src/generate.ts, src/serve.ts): a base folder and an
 * adapter folder made here from the sharp tiny model with trained-looking (random, nonzero) adapters.
 * The adapter read back gives the greedy text of the model it was saved from, unmerged and merged,
 * given with --adapter or as --model <adapter folder> (its base from adapter_config.json); a base
 * of another size is refused naming n_embd; generate.ts and serve.ts do the same as the library. An
 * adapter on the head (lm_head) runs unmerged, and --merge with it is refused naming why (exit 2).
 */
import { spawn, spawnSync } from 'node:child_process';
import { writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { PRESETS } from '../src/gpt/config.js';
import { generate } from '../src/gpt/generate.js';
import { initializeWeights } from '../src/gpt/init.js';
import { addLoRA, loraParameters, loraSettings, type LoRATarget } from '../src/gpt/lora.js';
import { GPT2 } from '../src/gpt/model.js';
import { saveAdapter } from '../src/node/adapter-folder.js';
import { loadModel } from '../src/node/load-model.js';
import { saveModel } from '../src/node/weights-folder.js';
import { tensor } from '../src/tensor/create.js';
import { cpu } from './helpers/backends.js';
import { randomArray } from './helpers/random-data.js';
import { sharpTinyModel } from './helpers/sharp-model.js';
import { freshDir } from './helpers/weights-fixtures.js';

const PROMPT = 'The quick brown fox';
const greedy = async (model: GPT2) => (await generate(model, PROMPT, { temperature: 0, maxNewTokens: 12, eosId: null })).ids;

/** A base folder, an adapter folder for it (r 4, alpha 8, three targets by default, nonzero A and B), and the model they were saved from. */
async function baseAndAdapter(dir: string, targets: LoRATarget[] = ['c_attn', 'c_fc', 'mlp.c_proj']) {
  const model = sharpTinyModel(cpu, 5);
  const base = join(dir, 'base');
  await saveModel(model, base);
  const baseIds = await greedy(model);
  addLoRA(model, { rank: 4, alpha: 8, targets, seed: 3 });
  loraParameters(model).forEach(([name, p], i) => {
    model.replaceParameter(name, tensor(randomArray(p.size, 11, i, -0.5, 0.5), p.shape, { backend: cpu }));
  });
  const adapter = join(dir, 'adapter');
  await saveAdapter(model, adapter, base);
  const ids = await greedy(model);
  expect(ids, 'the adapter changes the text').not.toEqual(baseIds);
  const { text } = await generate(model, PROMPT, { temperature: 0, maxNewTokens: 12 });
  model.dispose();
  return { base, adapter, ids, text };
}

function cli(script: string, args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', script, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('loading an adapter', () => {
  it('gives the saved model\'s text, unmerged and merged, with --adapter or as the model folder', async () => {
    const { base, adapter, ids } = await baseAndAdapter(await freshDir());
    for (const [spec, options] of [[base, { adapter }], [adapter, {}], [base, { adapter, merge: true }], [adapter, { merge: true }]] as const) {
      const loaded = await loadModel(spec, { backend: cpu, ...options });
      expect(await greedy(loaded.model), `${spec} ${JSON.stringify(options)}`).toEqual(ids);
      expect(loraSettings(loaded.model), 'merged: no adapter left').toEqual('merge' in options ? null : { rank: 4, alpha: 8, dropout: 0, targets: ['c_attn', 'c_fc', 'mlp.c_proj'] });
      expect(loaded.source).toContain(adapter);
      loaded.model.dispose();
    }
  });

  it('refuses an adapter for another base, naming what differs, and --merge with no adapter', async () => {
    const dir = await freshDir();
    const { adapter } = await baseAndAdapter(dir);
    const wider = new GPT2({ ...PRESETS.tiny, n_embd: 48, n_head: 3 }, cpu);
    initializeWeights(wider, 1);
    await saveModel(wider, join(dir, 'wider'));
    wider.dispose();
    await expect(loadModel(join(dir, 'wider'), { backend: cpu, adapter })).rejects.toThrow(/made for a base with n_embd 32, this base has n_embd 48/);
    await expect(loadModel(join(dir, 'wider'), { backend: cpu, merge: true })).rejects.toThrow(/--merge folds an adapter into the weights/);

    // An adapter whose config names no base needs one given.
    const config = JSON.parse(await readFile(join(adapter, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(adapter, 'adapter_config.json'), JSON.stringify({ ...config, base_model_name_or_path: null }));
    await expect(loadModel(adapter, { backend: cpu })).rejects.toThrow(/names no base_model_name_or_path: give the base with --model/);
  });
});

describe('an adapter on the head', () => {
  it('gives the saved model\'s text unmerged; --merge is refused naming why, by the library, generate.ts and serve.ts (exit 2)', async () => {
    const { base, adapter, ids } = await baseAndAdapter(await freshDir(), ['lm_head']);
    const loaded = await loadModel(base, { backend: cpu, adapter });
    expect(loraSettings(loaded.model)?.targets).toEqual(['lm_head']);
    expect(await greedy(loaded.model)).toEqual(ids);
    loaded.model.dispose();
    const why = /--merge: the adapter .*adapter adapts lm_head: an adapter on lm_head cannot be merged: GPT-2's output head is its token embedding \(wte\).*run the adapter unmerged/;
    await expect(loadModel(adapter, { backend: cpu, merge: true })).rejects.toThrow(why);
    for (const [script, args] of [['src/generate.ts', ['-m', adapter, '--merge', '-p', PROMPT, '--device', 'cpu']], ['src/serve.ts', ['--model', base, '--adapter', adapter, '--merge', '--port', '0', '--device', 'cpu']]] as const) {
      const r = cli(script, [...args]);
      expect(r.code, `${script}: ${r.stderr}`).toBe(2);
      expect(r.stderr, script).toMatch(why);
    }
  });
});

describe('the command lines', () => {
  it('generate.ts: --adapter, --model <adapter folder> and --merge give the adapter\'s text; a mismatch exits 2 naming it', async () => {
    const dir = await freshDir();
    const { base, adapter, ids } = await baseAndAdapter(dir);
    const flags = ['-p', PROMPT, '-n', '12', '--ignore-eos', '--json', '--device', 'cpu', '--seed', '1'];
    for (const args of [['-m', base, '--adapter', adapter], ['-m', adapter], ['-m', adapter, '--merge']]) {
      const r = cli('src/generate.ts', [...args, ...flags]);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { ids: number[] }).ids, args.join(' ')).toEqual(ids);
    }
    const wider = new GPT2({ ...PRESETS.tiny, n_embd: 48, n_head: 3 }, cpu);
    initializeWeights(wider, 1);
    await saveModel(wider, join(dir, 'wider'));
    wider.dispose();
    const bad = cli('src/generate.ts', ['-m', join(dir, 'wider'), '--adapter', adapter, ...flags]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/adapter_model\.safetensors: does not fit the base[\s\S]*n_embd 32, this base has n_embd 48/);
    const missing = cli('src/generate.ts', ['-m', base, '--adapter', join(dir, 'nowhere'), ...flags]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--adapter .*nowhere: .*does not exist/);
  });

  it('serve.ts --adapter answers with the adapter\'s text', async () => {
    const { base, adapter, text } = await baseAndAdapter(await freshDir());
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/serve.ts', '--model', base, '--adapter', adapter, '--port', '0', '--device', 'cpu'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (line) => {
          const match = /^listening on (http:\/\/\S+)$/.exec(line);
          if (match) resolve(match[1]);
        });
        child.on('exit', () => reject(new Error(`the server exited before listening: ${stderr}`)));
      });
      const response = await fetch(`${url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: base, prompt: PROMPT, max_tokens: 12, temperature: 0 }),
      });
      const body = (await response.json()) as { choices: { text: string }[] };
      expect(body.choices[0].text).toBe(text);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
