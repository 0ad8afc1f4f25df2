import { readFileSync } from 'node:fs';
import { randomModel } from './src/gpt/load-model.js';
import { addLoRA } from './src/gpt/lora.js';
import { CpuBackend } from './src/tensor/cpu-backend.js';
import { fineTune } from './src/train/fine-tune.js';
import { parseInstructionData } from './src/train/instruction-data.js';
const backend = new CpuBackend();
const DATA = parseInstructionData(readFileSync('data/instructions.json', 'utf8'), 'd');
for (const lr of [1e-2, 3e-2]) {
  const { model } = randomModel('tiny', { seed: 2, backend });
  addLoRA(model, { rank: 8, alpha: 16, seed: 2 });
  const t0 = Date.now();
  const { records } = await fineTune(model, DATA.slice(0, 4), { epochs: 6, batchSize: 4, learningRate: lr, warmupSteps: 0, lrSchedule: 'constant', valFraction: 0, shuffle: false, maxLength: 32, onWarning: () => {} });
  console.log(lr, (Date.now() - t0) / 1000, records.map((r) => r.loss.toFixed(3)).join(' '));
}
