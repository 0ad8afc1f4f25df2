/**
 * LoRA runs from the command line (src/cli/train-options.ts, train-run.ts, checkpoint-folder.ts) on a
 * tiny base saved to a folder: bad flag combinations refused by name; 10 steps in one run equal 5, a
 * stop and a resume for 5 more (the base re-read from its folder, the adapter and its moments from the
 * checkpoint); the run folder holds PEFT's adapter files and no model; the base stays as it was;
 * --merge-to writes a whole model that answers as the base with the adapter does (at the end of the
 * run, or for a finished run resumed with it); an f16 base trains; killed checkpoint writes and
 * Ctrl-C leave a complete adapter checkpoint. The resumed runs adapt the head (lm_head) too, whose
 * run folder answers as the run did; --merge-to with lm_head is refused before anything is read.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generate } from '../src/gpt/generate.js';
import { loraSettings } from '../src/gpt/lora.js';
import { Tokenizer } from '../src/gpt/tokenizer.js';
import { parseTrainOptions, type TrainOptions } from '../src/cli/train-options.js';
import { answer, runTraining } from '../src/cli/train-run.js';
import { PRESETS } from '../src/gpt/config.js';
import { readAdapterConfig, readAdapterTensors } from '../src/node/adapter-folder.js';
import { loadCheckpoint } from '../src/node/checkpoint-folder.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { loadModel } from '../src/node/load-model.js';
import { saveModel } from '../src/node/weights-folder.js';
import { encodeEntry } from '../src/train/instruction-data.js';
import type { StepRecord } from '../src/train/trainer.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { sharpTinyModel } from './helpers/sharp-model.js';
import { freshDir } from './helpers/weights-fixtures.js';

await webgpuOrSkip(); // the validating device, shared with runTraining's 'auto'

const options = (argv: string[]) => parseTrainOptions(argv) as TrainOptions;
const readRecords = async (out: string) => JSON.parse(await readFile(join(out, 'training.json'), 'utf8')) as StepRecord[];

/** The 8 shortest entries of the project's data set, and a tiny base model folder, in `dir`. */
async function fixtures(dir: string): Promise<{ data: string; base: string }> {
  const tokenizer = new Tokenizer();
  const entries = loadInstructionFile('data/instructions.json');
  const lengths = entries.map((e) => encodeEntry(e, tokenizer).ids.length);
  const shortest = entries.map((e, i) => ({ e, n: lengths[i] })).sort((a, b) => a.n - b.n).slice(0, 8).map(({ e }) => e);
  const data = join(dir, 'data.json');
  await writeFile(data, JSON.stringify(shortest));
  const model = sharpTinyModel(cpu, 2);
  const base = join(dir, 'base');
  await saveModel(model, base);
  model.dispose();
  return { data, base };
}

describe('LoRA flags', () => {
  it.each([
    [['--model', 'gpt2', '--lora-alpha', '16'], /--lora-alpha goes with --lora-rank/],
    [['--model', 'gpt2', '--lora-targets', 'c_attn'], /--lora-targets goes with --lora-rank/],
    [['--model', 'gpt2', '--merge-to', 'x'], /--merge-to goes with --lora-rank/],
    [['--model', 'gpt2', '--dtype', 'f16'], /--dtype f16 .* give --lora-rank too/],
    [['--model', 'gpt2', '--dtype', 'bf16'], /--dtype bf16 .* give --lora-rank too/],
    [['--model', 'gpt2', '--lora-rank', '0'], /--lora-rank must be a positive integer, got "0"/],
    [['--model', 'gpt2', '--lora-rank', '-2'], /--lora-rank must be a positive integer, got "-2"/],
    [['--model', 'gpt2', '--lora-rank', '4', '--lora-targets', 'c_attn,q_proj'], /--lora-targets names "q_proj", which is not a layer LoRA adapts \(c_attn, attn\.c_proj, c_fc, mlp\.c_proj, lm_head\)/],
    [['--model', 'gpt2', '--lora-rank', '4', '--lora-targets', 'c_attn,lm_head', '--merge-to', 'x'], /--merge-to with --lora-targets lm_head: an adapter on lm_head cannot be merged: GPT-2's output head is its token embedding/],
    [['--model', 'gpt2', '--lora-rank', '4', '--lora-targets', 'c_fc,c_fc'], /--lora-targets names c_fc twice/],
    [['--model', 'gpt2', '--lora-rank', '4', '--lora-dropout', '1'], /--lora-dropout must be in \[0, 1\)/],
    [['--model', 'gpt2', '--lora-rank', '4', '--dtype', 'f8'], /--dtype must be f32, f16 or bf16/],
    [['--lora-rank', '4'], /--model demo is a random init/],
    [['--resume', 'runs/x', '--lora-rank', '4'], /--lora-rank cannot be given with it/],
  ])('%j is refused', (argv, message) => {
    expect(() => parseTrainOptions(argv)).toThrow(message);
  });

  it('--gradient-checkpointing with dropout is refused before anything is read or written', async () => {
    const run = (argv: string[]) => runTraining(options([...argv, '--data', 'nowhere.json']), { shouldStop: () => false });
    await expect(run(['--model', 'gpt2', '--gradient-checkpointing', '--dropout', '0.1'])).rejects.toThrow(/--gradient-checkpointing .* cannot go with --dropout 0\.1/);
    await expect(run(['--model', 'gpt2', '--lora-rank', '4', '--lora-dropout', '0.05', '--gradient-checkpointing'])).rejects.toThrow(/cannot go with --lora-dropout 0\.05/);
  });

  it('default alpha to the rank and the targets to all four; --resume may add --merge-to', () => {
    expect(options(['--model', 'gpt2', '--lora-rank', '8'])).toMatchObject({ loraRank: 8, loraAlpha: 8, loraDropout: 0, loraTargets: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'], dtype: 'f32', mergeTo: null });
    expect(options(['--model', 'gpt2', '--lora-rank', '8', '--lora-alpha', '32', '--lora-targets', 'c_fc,c_attn', '--dtype', 'f16'])).toMatchObject({ loraAlpha: 32, loraTargets: ['c_fc', 'c_attn'], dtype: 'f16' });
    expect(options(['--model', 'gpt2', '--lora-rank', '8', '--dtype', 'bf16'])).toMatchObject({ dtype: 'bf16' });
    expect(options(['--resume', 'runs/x', '--merge-to', 'merged'])).toMatchObject({ resume: 'runs/x', mergeTo: 'merged' });
    expect(options(['--model', 'gpt2', '--lora-rank', '8', '--lora-targets', 'lm_head,c_attn'])).toMatchObject({ loraTargets: ['lm_head', 'c_attn'] });
  });

  it('train.ts --merge-to with lm_head among the targets exits 2 before anything is read or written', () => {
    const out = join(tmpdir(), `never-${process.pid}-${Date.now()}`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/train.ts', '--model', 'gpt2', '--lora-rank', '4', '--lora-targets', 'lm_head', '--merge-to', join(out, 'merged'), '--out', out], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/--merge-to with --lora-targets lm_head: an adapter on lm_head cannot be merged.*run the adapter unmerged/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('a LoRA run', () => {
  it('with dropout, 6 steps in one run equal 3, a stop and a resume for 3 more (the masks are keyed by micro-batch, not by calls in this process)', async () => {
    const dir = await freshDir();
    const { data, base } = await fixtures(dir);
    const flags = [
      '--model', base, '--data', data, '--epochs', '10', '--max-steps', '6', '--batch-size', '2', '--gradient-accumulation-steps', '2',
      '--val-fraction', '0.25', '--eval-every', '0', '--seed', '7', '--learning-rate', '1e-2', '--lora-rank', '4', '--lora-targets', 'c_attn,lm_head',
    ];
    const withDropout = [...flags, '--lora-dropout', '0.2', '--dropout', '0.1'];
    const whole = await runTraining(options([...withDropout, '--out', join(dir, 'whole')]), { shouldStop: () => false });
    const plain = await runTraining(options([...flags, '--out', join(dir, 'plain')]), { shouldStop: () => false });
    expect(whole.records.map((r) => r.loss), 'dropout changes the losses').not.toEqual(plain.records.map((r) => r.loss));
    let polls = 0;
    const first = await runTraining(options([...withDropout, '--out', join(dir, 'split')]), { shouldStop: () => ++polls >= 3 });
    expect(first.stopped).toBe(true);
    const second = await runTraining(options(['--resume', first.out]), { shouldStop: () => false });
    expect(second.records).toEqual(whole.records);
  });

  it('10 steps in one run equal 5, a stop and a resume for 5 more, and a run with --gradient-checkpointing; the folder holds the adapter', async () => {
    const dir = await freshDir();
    const { data, base } = await fixtures(dir);
    const flags = [
      '--model', base, '--data', data, '--epochs', '10', '--max-steps', '10', '--batch-size', '2', '--val-fraction', '0.25', '--eval-every', '4',
      '--seed', '7', '--learning-rate', '1e-2', '--lora-rank', '4', '--lora-alpha', '8', '--lora-targets', 'c_attn,mlp.c_proj,lm_head',
    ];
    const whole = await runTraining(options([...flags, '--out', join(dir, 'whole')]), { shouldStop: () => false });
    expect(whole.stopped).toBe(false);
    expect(whole.records.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(whole.records.at(-1)!.loss, 'the adapter learns').toBeLessThan(whole.records[0].loss);

    let polls = 0;
    const first = await runTraining(options([...flags, '--out', join(dir, 'split')]), { shouldStop: () => ++polls >= 5 });
    expect(first.stopped).toBe(true);
    expect((await readRecords(first.out)).map((r) => r.step)).toEqual([1, 2, 3, 4, 5]);
    const checkpoint = await loadCheckpoint(first.out);
    // Moments of the adapter alone: (2 blocks × 2 targets + the head) × (A, B) × (m, v).
    expect([...checkpoint.moments.keys()].every((name) => /^[mv]\.(h\.\d\.(attn\.c_attn|mlp\.c_proj)|lm_head)\.lora_[AB]\.weight$/.test(name)), [...checkpoint.moments.keys()].join()).toBe(true);
    expect(checkpoint.moments.size).toBe(20);
    await expect(runTraining(options(['--resume', first.out, '--merge-to', join(dir, 'merged')]), { shouldStop: () => false })).rejects.toThrow(/--merge-to: .*split adapts lm_head: an adapter on lm_head cannot be merged/);
    const second = await runTraining(options(['--resume', first.out]), { shouldStop: () => false });
    expect(second.records).toEqual(whole.records);
    // Recomputing the blocks' activations during backward changes the memory, not the run.
    const recomputed = await runTraining(options([...flags, '--gradient-checkpointing', '--out', join(dir, 'recomputed')]), { shouldStop: () => false });
    expect(recomputed.records).toEqual(whole.records);
    expect(await readRecords(second.out)).toEqual(await readRecords(whole.out));
    expect(second.samples.map((s) => s.generated)).toEqual(whole.samples.map((s) => s.generated));

    const files = await readdir(whole.out);
    for (const file of ['adapter_config.json', 'adapter_model.safetensors', 'training.json', 'loss.svg', 'samples.json', 'checkpoint']) expect(files, file).toContain(file);
    expect(files).not.toContain('model.safetensors');
    expect(await readAdapterConfig(whole.out)).toEqual({ rank: 4, alpha: 8, dropout: 0, targets: ['c_attn', 'mlp.c_proj', 'lm_head'], base });
    const state = JSON.parse(await readFile(join(whole.out, 'checkpoint', 'state.json'), 'utf8')) as { flags: { model: string } };
    expect(state.flags.model, 'the base is re-read from where it came from').toBe(base);

    // The run folder loads as the base (from adapter_config.json) with the trained adapter.
    const run = await loadModel(whole.out, { backend: cpu });
    expect(loraSettings(run.model)).toEqual({ rank: 4, alpha: 8, dropout: 0, targets: ['c_attn', 'mlp.c_proj', 'lm_head'] });
    expect(run.source).toContain(base);
    expect((await run.model.lm_head.lora_B!.weight.toFloat32()).some((x) => x !== 0), 'the head\'s adapter trained').toBe(true);
    // It answers as the run's own model did at its end.
    const tokenizer = new Tokenizer();
    for (const sample of whole.samples) {
      expect(await answer(run.model, tokenizer, { instruction: sample.instruction, input: sample.input, output: sample.reference }, PRESETS.tiny.n_positions)).toBe(sample.generated);
    }
    expect(whole.samples).toHaveLength(2);
    run.model.dispose();
  });

  it('--merge-to writes a whole model that answers as the base with the adapter; an f16 base trains', async () => {
    const dir = await freshDir();
    const { data, base } = await fixtures(dir);
    const merged = join(dir, 'merged');
    const flags = ['--model', base, '--data', data, '--max-steps', '4', '--batch-size', '2', '--seed', '3', '--learning-rate', '2e-2', '--lora-rank', '2', '--lora-targets', 'c_attn,attn.c_proj', '--device', 'cpu'];
    const run = await runTraining(options([...flags, '--out', join(dir, 'run'), '--merge-to', merged]), { shouldStop: () => false });
    expect(run.mergedTo).toBe(merged);
    const whole = await loadModel(merged, { backend: cpu });
    expect(loraSettings(whole.model)).toBe(null);
    const adapted = await loadModel(run.out, { backend: cpu });
    const prompt = 'Name three primary colors.';
    const [a, b] = [await generate(whole.model, prompt, { temperature: 0, maxNewTokens: 10, eosId: null }), await generate(adapted.model, prompt, { temperature: 0, maxNewTokens: 10, eosId: null })];
    expect(a.ids).toEqual(b.ids);
    // Training left the frozen base as it was: what no adapter sat on is the base's, bit for bit.
    const baseOnly = await loadModel(base, { backend: cpu });
    for (const name of ['wte.weight', 'h.0.ln_1.weight', 'h.1.attn.c_attn.bias', 'h.1.mlp.c_fc.weight', 'h.0.mlp.c_proj.weight']) {
      const get = (m: typeof whole) => m.model.namedParameters().find(([n]) => n === name)![1].toFloat32();
      expect(await get(whole), name).toEqual(await get(baseOnly));
    }
    expect(await baseOnly.model.h[0].attn.c_attn.weight.toFloat32(), 'the adapter merged into c_attn').not.toEqual(await whole.model.h[0].attn.c_attn.weight.toFloat32());
    for (const m of [whole, adapted, baseOnly]) m.model.dispose();

    // A finished run resumed with --merge-to only merges (the same model); without it, it is complete.
    const later = await runTraining(options(['--resume', run.out, '--merge-to', join(dir, 'merged-later'), '--device', 'cpu']), { shouldStop: () => false });
    expect(later.mergedTo).toBe(join(dir, 'merged-later'));
    expect(later.records).toEqual(run.records);
    expect(await readFile(join(dir, 'merged-later', 'model.safetensors'))).toEqual(await readFile(join(merged, 'model.safetensors')));
    await expect(runTraining(options(['--resume', run.out]), { shouldStop: () => false })).rejects.toThrow(/the run is complete .* or --merge-to <folder> to write the base with its adapter merged in/);
    await expect(runTraining(options(['--resume', run.out, '--merge-to', merged]), { shouldStop: () => false })).rejects.toThrow(/--merge-to .*merged is not empty/);

    const half = await runTraining(options([...flags, '--out', join(dir, 'half'), '--dtype', 'f16']), { shouldStop: () => false });
    expect(half.records.map((r) => r.step)).toEqual([1, 2, 3, 4]);
    // f16 rounds the base's weights (relative 2^-11): the losses stay close to the f32 run's.
    half.records.forEach((r, i) => expect(Math.abs(r.loss - run.records[i].loss), `step ${r.step}`).toBeLessThan(0.05 * run.records[i].loss));
    expect(existsSync(join(half.out, 'adapter_model.safetensors'))).toBe(true);
  });

  it('a checkpoint write killed at any moment leaves a complete adapter checkpoint', async () => {
    const out = await freshDir();
    for (const delayMs of [0, 5, 13, 29]) {
      let saved = 0;
      const exit = await new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'tests/helpers/checkpoint-writer.ts', out, 'lora']);
        child.stdout.on('data', (d: Buffer) => {
          saved = Math.max(saved, ...String(d).match(/\d+/g)!.map(Number));
          if (saved >= 2) setTimeout(() => child.kill('SIGKILL'), delayMs);
        });
        child.on('close', resolve);
      });
      expect(exit).toBe(null);
      const { state, moments, folder } = await loadCheckpoint(out);
      const step = state.position.step;
      expect(step).toBeGreaterThanOrEqual(saved);
      const settings = await readAdapterConfig(folder);
      const tensors = await readAdapterTensors(folder, PRESETS.tiny, settings);
      expect(tensors.size).toBe(16); // 2 blocks × 4 targets × (A, B)
      for (const [name, t] of [...tensors, ...moments]) expect(t.data.every((x) => x === step), `${name} of step ${step}`).toBe(true);
      expect(existsSync(join(folder, 'model.safetensors')), 'no base in an adapter checkpoint').toBe(false);
      // The adapter at the top of the folder is a whole checkpoint's too (this one or the one before).
      const top = await readAdapterTensors(out, PRESETS.tiny, await readAdapterConfig(out));
      expect([step, step - 1]).toContain(top.get('h.0.attn.c_attn.lora_A.weight')!.data[0]);
    }
  }, 300_000);

  it('Ctrl-C on the command line writes a loadable adapter checkpoint and exits 0', async () => {
    const dir = await freshDir();
    const { data, base } = await fixtures(dir);
    const out = join(dir, 'run');
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/train.ts', '--model', base, '--data', data, '--out', out, '--epochs', '1000', '--batch-size', '2', '--eval-every', '0', '--lora-rank', '2', '--device', 'cpu']);
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      if (stderr.includes('output in') && !child.killed) child.kill('SIGINT');
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(0);
    expect(stderr).toMatch(/LoRA r 2 on c_attn, attn\.c_proj, c_fc, mlp\.c_proj/);
    expect(stdout).toMatch(/continue with: npx tsx src\/train\.ts --resume/);
    const { state, moments } = await loadCheckpoint(out);
    expect(state.position.step).toBeGreaterThanOrEqual(1);
    expect([...moments.keys()].every((name) => name.includes('.lora_'))).toBe(true);
    const loaded = await loadModel(out, { backend: cpu });
    expect(loraSettings(loaded.model)?.rank).toBe(2);
    loaded.model.dispose();
  }, 300_000);
});
