/**
 * What a model or data file declares is checked before it is read, so a hostile or broken file
 * costs neither memory nor minutes: a header naming one huge tensor, a config of absurd sizes,
 * special files (a FIFO would be waited on forever), an oversized data file; and weights that hold
 * NaN are reported by name, refused for training.
 */
import { execFileSync } from 'node:child_process';
import { openSync, closeSync, ftruncateSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadGpt2Weights, saveGpt2Weights } from '../src/node/weights-folder.js';
import { configToJson, PRESETS } from '../src/gpt/config.js';
import { ModelLoadError } from '../src/gpt/load-model.js';
import { DataError } from '../src/train/instruction-data.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';
import { parseTrainOptions, type TrainOptions } from '../src/cli/train-options.js';
import { runTraining } from '../src/cli/train-run.js';
import { rejectionOf } from './helpers/rejection.js';
import { freshDir, randomGpt2Weights, writeRawSafetensors } from './helpers/weights-fixtures.js';

const GIB = 2 ** 30;

describe('model files', () => {
  it('a header naming a 4 GiB tensor the config does not have is refused before any data is read', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'config.json'), JSON.stringify(configToJson(PRESETS.tiny)));
    const file = join(dir, 'model.safetensors');
    await writeRawSafetensors(file, { 'wte.weight': { dtype: 'F32', shape: [GIB / 1024, 1024], data_offsets: [0, 4 * GIB] } });
    const fd = openSync(file, 'r+');
    ftruncateSync(fd, 8 + 200 + 4 * GIB); // sparse: the disk holds a few bytes
    closeSync(fd);
    const rss = process.memoryUsage().rss;
    const started = performance.now();
    const error = await rejectionOf(loadGpt2Weights(dir));
    expect(error.message).toMatch(/does not match config\.json \(nothing was read\):\n {2}wte\.weight has shape \[1048576, 1024\], expected \[50257, 32\]/);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(process.memoryUsage().rss - rss).toBeLessThan(256 * 2 ** 20);
  });

  it('a config of absurd sizes is refused by name', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...configToJson(PRESETS.tiny), n_embd: 2 ** 30, n_head: 2 }));
    await writeRawSafetensors(join(dir, 'model.safetensors'), {});
    expect((await rejectionOf(loadGpt2Weights(dir))).message).toMatch(/"n_embd" is 1073741824, more than any GPT-2 could use/);
  });

  it('a FIFO as the weights file is refused, not waited on', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'config.json'), JSON.stringify(configToJson(PRESETS.tiny)));
    execFileSync('mkfifo', [join(dir, 'model.safetensors')]);
    expect((await rejectionOf(loadGpt2Weights(dir))).message).toMatch(/model\.safetensors is not a regular file/);
  }, 10_000);

  it('NaN weights: training refuses them, naming the tensor and the count', async () => {
    const dir = await freshDir();
    const weights = randomGpt2Weights(PRESETS.tiny, 4);
    weights.get('wpe.weight')!.data[7] = Infinity;
    weights.get('h.0.ln_1.bias')!.data.fill(NaN);
    await saveGpt2Weights(join(dir, 'model'), PRESETS.tiny, weights);
    const loaded = await loadGpt2Weights(join(dir, 'model'));
    expect(loaded.nonFinite).toEqual([{ name: 'wpe.weight', count: 1 }, { name: 'h.0.ln_1.bias', count: 32 }]);
    await writeFile(join(dir, 'data.json'), JSON.stringify(loadInstructionFile('data/instructions.json').slice(0, 4)));
    const options = parseTrainOptions(['--model', join(dir, 'model'), '--data', join(dir, 'data.json'), '--out', join(dir, 'run'), '--device', 'cpu']) as TrainOptions;
    const error = await rejectionOf(runTraining(options, { shouldStop: () => false, stream: { write: () => true } as unknown as NodeJS.WriteStream }));
    expect(error).toBeInstanceOf(ModelLoadError);
    expect(error.message).toMatch(/non-finite values \(wpe\.weight: 1, h\.0\.ln_1\.bias: 32\)/);
  }, 120_000);
});

describe('data files', () => {
  it('a FIFO is refused, not waited on', async () => {
    const dir = await freshDir();
    const fifo = join(dir, 'data.json');
    execFileSync('mkfifo', [fifo]);
    expect(() => loadInstructionFile(fifo)).toThrow(new DataError(`${fifo}: not a regular file`));
  }, 10_000);

  it('a file over the size bound is refused before it is read', async () => {
    const dir = await freshDir();
    await mkdir(dir, { recursive: true });
    const big = join(dir, 'big.json');
    writeFileSync(big, '[');
    const fd = openSync(big, 'r+');
    ftruncateSync(fd, 600 * 2 ** 20);
    closeSync(fd);
    const started = performance.now();
    expect(() => loadInstructionFile(big)).toThrow(/600 MiB, more than the 512 MiB a data file may have/);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
