import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { alpacaPrompt, createBackend, fineTune, generate, loadModel, randomModel, saveModel } from 'gpt2-webgpu';

const backend = await createBackend(); // WebGPU when an adapter exists, else the CPU backend
console.log(`backend: ${backend.name}`);

// A tiny GPT-2 with random weights; loadModel('gpt2') would fetch the real one from the hub.
const { model } = randomModel('tiny', { seed: 1 });
const data = [{ instruction: 'Say hi.', input: '', output: 'Hi!' }];
await fineTune(model, data, {
  epochs: 2,
  learningRate: 1e-3,
  onStep: (record, { totalSteps }) => console.log(`step ${record.step}/${totalSteps}: loss ${record.loss.toFixed(3)}`),
});

const folder = mkdtempSync(join(tmpdir(), 'gpt2-webgpu-'));
await saveModel(model, folder); // config.json + model.safetensors, as transformers writes them
const loaded = await loadModel(folder);
const result = await generate(loaded.model, alpacaPrompt({ instruction: 'Say hi.' }), { maxNewTokens: 8 });
console.log(`generated ${result.ids.length} tokens (${result.stopReason}): ${JSON.stringify(result.text)}`);
