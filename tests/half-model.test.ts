/**
 * GPT-2 with its weight matrices stored in 16 bits (f16 and bf16, each case run for both):
 * generation against f32 (identical greedy tokens on weights that the type holds exactly; the
 * agreement on random ones, documented), loading (F16 / BF16 tensors kept 16-bit, the others
 * rounded, values the type cannot hold refused by name), saving as F16 / BF16 safetensors, and
 * fine-tuning refused.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { largestTensorBytes, loadModel as loadModelInBrowser } from '../src/browser/load-model.js';
import { PRESETS } from '../src/gpt/config.js';
import { generate } from '../src/gpt/generate.js';
import { modelFromStateDict } from '../src/gpt/load-model.js';
import { hostWeights, modelFromBytes, modelToBytes, withWeightDType } from '../src/gpt/model-bytes.js';
import type { GPT2 } from '../src/gpt/model.js';
import { parseSafetensors, type StateDict } from '../src/gpt/safetensors.js';
import { nonFiniteTensors } from '../src/gpt/state-dict.js';
import { loadModel } from '../src/node/load-model.js';
import { readSafetensors } from '../src/node/safetensors-file.js';
import { saveModel } from '../src/node/weights-folder.js';
import type { Backend, HalfDType } from '../src/tensor/backend.js';
import { tensor } from '../src/tensor/create.js';
import { noGrad } from '../src/tensor/graph.js';
import { Bfloat16Array, narrowTo, roundTo } from '../src/tensor/half.js';
import { Module } from '../src/nn/module.js';
import type { CpuStorage } from '../src/tensor/cpu/storage.js';
import { fineTune } from '../src/train/fine-tune.js';
import { cpu, webgpuOrSkip } from './helpers/backends.js';
import { sharpTinyModel } from './helpers/sharp-model.js';
import { freshDir } from './helpers/weights-fixtures.js';

const gpu = await webgpuOrSkip();
const PROMPT = [464, 2068, 7586, 21831, 18045, 625, 262];

async function lastLogits(model: GPT2, ids: number[]): Promise<Float32Array> {
  return noGrad(async () => {
    const out = model.forward(tensor(Int32Array.from(ids), [1, ids.length], { backend: model.backend }), { lastOnly: true });
    const values = await out.toFloat32();
    out.dispose();
    return values;
  });
}

const greedy = async (model: GPT2, n: number): Promise<number[]> => (await generate(model, PROMPT, { maxNewTokens: n, eosId: null })).ids;

/** The sharp tiny model's weights, the matrices rounded to `rounded` (a 16-bit type) unless null. */
async function tinyWeights(seed: number, rounded: HalfDType | null): Promise<StateDict> {
  const model = sharpTinyModel(cpu, seed);
  const weights = await hostWeights(model);
  model.dispose();
  if (rounded) for (const t of weights.values()) if (t.shape.length >= 2) t.data = roundTo(rounded, t.data as Float32Array);
  return weights;
}

/** An f32 model and one whose matrices are stored as `dtype`, of the same weights. */
const both = (backend: Backend, weights: StateDict, dtype: HalfDType) =>
  (['f32', dtype] as const).map((d) => modelFromStateDict(PRESETS.tiny, weights, 'test', [], backend, { dtype: d }).model);

const DTYPES: HalfDType[] = ['f16', 'bf16'];
const backends: [string, Backend | null][] = [['CPU', cpu], ['WebGPU', gpu]];
/** Greedy tokens of 64 on random weights rounded at load that agree with f32's, at least (measured: 64 of 64 for both types, seed 3, on both backends). */
const AGREEMENT_FLOOR = 56;

describe.each(DTYPES.flatMap((dtype) => backends.map(([name, backend]) => [dtype, name, backend] as const)))('%s generation on %s', (dtype, _name, backend) => {
  it.runIf(backend !== null)('stores the matrices in 16 bits and the biases and LayerNorms in f32', async () => {
    const [, half] = both(backend!, await tinyWeights(1, dtype), dtype);
    const dtypes = new Map(half.namedParameters().map(([name, p]) => [name, p.dtype]));
    expect(dtypes.get('wte.weight')).toBe(dtype);
    expect(dtypes.get('wpe.weight')).toBe(dtype);
    expect(dtypes.get('h.1.mlp.c_proj.weight')).toBe(dtype);
    expect(dtypes.get('h.1.mlp.c_proj.bias')).toBe('f32');
    expect(dtypes.get('ln_f.weight')).toBe('f32');
  });

  it.runIf(backend !== null)('weights exactly representable in the type: the same logits and the same 48 greedy tokens as f32', async () => {
    const [full, half] = both(backend!, await tinyWeights(2, dtype), dtype);
    const [a, b] = [await lastLogits(full, PROMPT), await lastLogits(half, PROMPT)];
    // The same values in the same arithmetic: only how B is loaded differs.
    expect(b).toEqual(a);
    expect(await greedy(half, 48)).toEqual(await greedy(full, 48));
  });

  // The floor leaves room for a near tie that rounding flips on another adapter.
  it.runIf(backend !== null)(`random weights rounded at load: greedy agrees with f32 on at least ${AGREEMENT_FLOOR} of 64 tokens`, async () => {
    const [full, half] = both(backend!, await tinyWeights(3, null), dtype);
    const [a, b] = [await greedy(full, 64), await greedy(half, 64)];
    let agree = 0;
    while (agree < 64 && a[agree] === b[agree]) agree++;
    console.log(`${dtype} vs f32 greedy on a random tiny model: first ${agree} of 64 tokens agree`);
    expect(agree).toBeGreaterThanOrEqual(AGREEMENT_FLOOR);
  });
});

describe.each(DTYPES)('loading and saving %s weights', (dtype) => {
  const FILE_DTYPE = dtype === 'f16' ? 'F16' : 'BF16';
  const HostArray = dtype === 'f16' ? Uint16Array : Bfloat16Array;

  it('saves a 16-bit model as F16 / BF16 safetensors (matrices) beside F32 (biases, LayerNorms), which loads back bit for bit', async () => {
    const [, half] = both(cpu, await tinyWeights(4, dtype), dtype);
    const { config, weights } = await modelToBytes(half);
    const headerLength = Number(new DataView(weights.buffer, weights.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(weights.subarray(8, 8 + headerLength))) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
    expect(header['wte.weight']).toMatchObject({ dtype: FILE_DTYPE, shape: [50257, 32] });
    expect(header['h.0.attn.c_attn.weight']).toMatchObject({ dtype: FILE_DTYPE, shape: [32, 96] });
    expect(header['h.0.attn.c_attn.weight'].data_offsets[1] - header['h.0.attn.c_attn.weight'].data_offsets[0]).toBe(32 * 96 * 2);
    expect(header['h.0.attn.c_attn.bias']).toMatchObject({ dtype: 'F32', shape: [96] });
    expect(header['ln_f.weight']).toMatchObject({ dtype: 'F32', shape: [32] });

    const expected = await lastLogits(half, PROMPT);
    const asHalf = modelFromBytes(config, weights, cpu, 'bytes', { dtype }).model;
    expect(asHalf.wte.weight.dtype).toBe(dtype);
    expect(await lastLogits(asHalf, PROMPT)).toEqual(expected);
    const asFull = modelFromBytes(config, weights, cpu).model;
    expect(asFull.wte.weight.dtype).toBe('f32');
    expect(await lastLogits(asFull, PROMPT)).toEqual(expected);
  });

  it('a folder: saveModel writes F16 / BF16, the reader keeps it 16-bit, loadModel with the type or f32 gives the same logits', async () => {
    const [, half] = both(cpu, await tinyWeights(5, dtype), dtype);
    const folder = join(await freshDir(), 'model');
    await saveModel(half, folder);
    const raw = await readSafetensors(join(folder, 'model.safetensors'), { keep16: dtype });
    expect(raw.get('h.1.mlp.c_fc.weight')!.data).toBeInstanceOf(HostArray);
    expect(raw.get('h.1.mlp.c_fc.bias')!.data).toBeInstanceOf(Float32Array);
    const expected = await lastLogits(half, PROMPT);
    for (const d of [dtype, 'f32'] as const) {
      const loaded = await loadModel(folder, { backend: cpu, dtype: d });
      expect(loaded.model.h[1].mlp.c_fc.weight.dtype).toBe(d);
      expect(await lastLogits(loaded.model, PROMPT)).toEqual(expected);
    }
  });

  it.runIf(gpu !== null)('a folder of 16-bit weights loaded as that type on WebGPU stays 16-bit: half the device bytes of the matrices, the logits of the f32 load', async () => {
    const [, half] = both(cpu, await tinyWeights(10, dtype), dtype);
    const folder = join(await freshDir(), 'model');
    await saveModel(half, folder);
    const liveAfter = async (d: 'f32' | HalfDType) => {
      const before = gpu!.gpu.memoryStats().liveBytes;
      const loaded = await loadModel(folder, { backend: gpu!, dtype: d });
      const bytes = gpu!.gpu.memoryStats().liveBytes - before;
      const logits = await lastLogits(loaded.model, PROMPT);
      const stored = loaded.model.h[0].attn.c_attn.weight.dtype;
      loaded.model.dispose();
      return { bytes, logits, stored };
    };
    const wide = await liveAfter('f32');
    const narrow = await liveAfter(dtype);
    expect(narrow.stored).toBe(dtype);
    expect(narrow.logits).toEqual(wide.logits);
    // The tiny model is nearly all matrices (wte alone is 50257·32): a little over half the bytes.
    expect(narrow.bytes / wide.bytes).toBeGreaterThan(0.45);
    expect(narrow.bytes / wide.bytes).toBeLessThan(0.55);
  });

  it('the browser loader takes dtype too, and its size check counts 2 bytes an element', async () => {
    const [, half] = both(cpu, await tinyWeights(9, dtype), dtype);
    const bytes = await modelToBytes(half);
    const loaded = await loadModelInBrowser({ config: bytes.config, weights: bytes.weights }, { backend: cpu, dtype });
    expect(loaded.model.h[0].attn.c_proj.weight.dtype).toBe(dtype);
    expect(await lastLogits(loaded.model, PROMPT)).toEqual(await lastLogits(half, PROMPT));
    expect(largestTensorBytes(PRESETS.tiny, dtype)).toBe(largestTensorBytes(PRESETS.tiny) / 2);
  });

  it('a random preset loads as the type (rounded from its f32 init)', async () => {
    const full = await loadModel('tiny', { backend: cpu, seed: 6 });
    const half = await loadModel('tiny', { backend: cpu, seed: 6, dtype });
    expect(half.model.wte.weight.dtype).toBe(dtype);
    const [a, b] = [await hostWeights(full.model), await hostWeights(half.model)];
    expect(b.get('h.0.mlp.c_fc.weight')!.data).toEqual(narrowTo(dtype, a.get('h.0.mlp.c_fc.weight')!.data as Float32Array));
    expect(await withWeightDType(half, dtype)).toBe(half);
  });

  it('refuses to fine-tune a model whose weights are 16-bit', async () => {
    const [, half] = both(cpu, await tinyWeights(8, dtype), dtype);
    const entries = [{ instruction: 'Say hi.', input: '', output: 'Hi!' }, { instruction: 'Name a color.', input: '', output: 'Red.' }];
    await expect(fineTune(half, entries, { epochs: 1, batchSize: 1, valFraction: 0 })).rejects.toThrow(
      new RegExp(`wte\\.weight is stored in ${dtype}: full fine-tuning updates every weight and needs them in f32; load the model with dtype 'f32'`),
    );
  });
});

describe('the range of each 16-bit type', () => {
  it('refuses f32 values that f16 cannot hold, naming each tensor and how many', async () => {
    const weights = await tinyWeights(7, null);
    const fc = weights.get('h.0.mlp.c_fc.weight')!.data as Float32Array;
    fc[0] = 7e4;
    fc[10] = -1e6;
    fc[20] = 65519; // rounds to 65504: fine
    (weights.get('wpe.weight')!.data as Float32Array)[5] = 65520;
    (weights.get('h.1.ln_1.bias')!.data as Float32Array)[0] = 1e9; // stays f32: fine
    expect(() => modelFromStateDict(PRESETS.tiny, weights, 'big.safetensors', [], cpu, { dtype: 'f16' })).toThrow(
      /big\.safetensors: values outside f16's range \(±65504\) in wpe\.weight \(1 value\), h\.0\.mlp\.c_fc\.weight \(2 values\): load these weights as f32/,
    );
    expect(modelFromStateDict(PRESETS.tiny, weights, 'big.safetensors', [], cpu, { dtype: 'f32' }).model.wte.weight.dtype).toBe('f32');
  });

  it('refuses only values within half a bf16 ulp of f32\'s max for bf16, naming each tensor', async () => {
    const weights = await tinyWeights(11, null);
    const fc = weights.get('h.0.mlp.c_fc.weight')!.data as Float32Array;
    fc[0] = 1e6; // far beyond f16, fine in bf16
    fc[1] = 3.3e38; // below bf16's largest finite (about 3.3895e38): fine
    const loaded = modelFromStateDict(PRESETS.tiny, weights, 'fine', [], cpu, { dtype: 'bf16' });
    expect(loaded.model.h[0].mlp.c_fc.weight.dtype).toBe('bf16');
    fc[2] = -3.4e38; // past 2^128·(1 - 2^-9), about 3.3961e38: -Infinity
    fc[3] = 3.4e38;
    (weights.get('wte.weight')!.data as Float32Array)[5] = 3.4e38;
    expect(() => modelFromStateDict(PRESETS.tiny, weights, 'big.safetensors', [], cpu, { dtype: 'bf16' })).toThrow(
      /big\.safetensors: values outside bf16's range \(±3\.39e38\) in wte\.weight \(1 value\), h\.0\.mlp\.c_fc\.weight \(2 values\): load these weights as f32/,
    );
  });

  it('keeps F16 tensors 16-bit and widens BF16 ones (so the range check sees them) when reading for f16, and the other way round for bf16', () => {
    const header = JSON.stringify({
      half: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
      brain: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] },
    });
    const json = new TextEncoder().encode(header);
    const bytes = new Uint8Array(8 + json.length + 8);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
    bytes.set(json, 8);
    // F16 1 and -2; BF16 1 and 2^17 (beyond f16's range).
    bytes.set(new Uint8Array(Uint16Array.of(0x3c00, 0xc000, 0x3f80, 0x4800).buffer), 8 + json.length);
    const dict = parseSafetensors(bytes, 'mixed.safetensors', { keep16: 'f16' });
    expect(dict.get('half')!.data).toEqual(Uint16Array.of(0x3c00, 0xc000));
    expect(dict.get('brain')!.data).toEqual(Float32Array.of(1, 2 ** 17));
    expect(parseSafetensors(bytes, 'mixed.safetensors').get('half')!.data).toEqual(Float32Array.of(1, -2));
    const forBfloat16 = parseSafetensors(bytes, 'mixed.safetensors', { keep16: 'bf16' });
    expect(forBfloat16.get('brain')!.data).toBeInstanceOf(Bfloat16Array);
    expect([...forBfloat16.get('brain')!.data]).toEqual([0x3f80, 0x4800]);
    expect(forBfloat16.get('half')!.data).toEqual(Float32Array.of(1, -2));
  });

  it('counts the non-finite values of 16-bit tensors by their own exponent field', () => {
    // bf16 0x7c00 is 2^121, finite; as f16 bits it would be Infinity.
    const dict = new Map([
      ['brain', { data: Bfloat16Array.of(0x7c00, 0x7f80, 0xffc1, 0x3f80, 0x7f7f) }],
      ['half', { data: Uint16Array.of(0x7c00, 0x7f80, 0x3c00, 0x7bff) }],
    ]);
    expect(nonFiniteTensors(dict)).toEqual([{ name: 'brain', count: 2 }, { name: 'half', count: 2 }]);
  });

  it('an F16 file loaded as bf16 widens exactly, then rounds once to nearest even', () => {
    // f16 1 + 2^-8 + 2^-10 lies above bf16's midpoint after 1 (up to 1 + 2^-7), 1 + 2^-8 on it (to the
    // even 1), and 65504 rounds up to 2^16.
    const weights = new Map([['w', { shape: [3], data: Uint16Array.of(0x3c05, 0x3c04, 0x7bff) }]]);
    const layer = new (class extends Module { w = tensor(new Bfloat16Array(3), [3], { backend: cpu }); })();
    layer.loadStateDict(weights);
    expect(layer.w.dtype).toBe('bf16');
    expect([...((layer.w.storage as CpuStorage).data)]).toEqual([0x3f81, 0x3f80, 0x4780]);
  });
});
