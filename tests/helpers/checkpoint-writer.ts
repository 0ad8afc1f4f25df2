/**
 * A child process for the checkpoint atomicity test: writes checkpoints of the tiny model into the
 * folder given as argv[2], forever, with every trained weight and moment equal to the step number,
 * and prints "saved <step>" after each. The test kills it with SIGKILL at arbitrary moments. With
 * argv[3] = "lora" the model trains rank-2 adapters on a frozen base, and the checkpoints hold them.
 */
import { PRESETS } from '../../src/gpt/config.js';
import { addLoRA } from '../../src/gpt/lora.js';
import { GPT2 } from '../../src/gpt/model.js';
import { full } from '../../src/tensor/create.js';
import { assign } from '../../src/tensor/ops.js';
import { CpuBackend } from '../../src/tensor/cpu-backend.js';
import { AdamW } from '../../src/train/adamw.js';
import { saveCheckpoint } from '../../src/node/checkpoint-folder.js';

const out = process.argv[2];
const backend = new CpuBackend();
const model = new GPT2(PRESETS.tiny, backend);
const lora = process.argv[3] === 'lora';
if (lora) addLoRA(model, { rank: 2 });
const optimizer = new AdamW(model);
for (let step = 1; ; step++) {
  for (const [name, p] of model.namedTrainableParameters()) model.replaceParameter(name, full(p.shape, step, { backend }));
  for (const slot of optimizer.moments.values()) {
    assign(slot.m, full(slot.m.shape, step, { backend }));
    assign(slot.v, full(slot.v.shape, step, { backend }));
  }
  optimizer.step = step;
  const position = { step, epoch: 0, batchInEpoch: step };
  await saveCheckpoint(out, model, PRESETS.tiny, optimizer, { position, optimizerStep: step, seed: 0, flags: {} }, [], { adapterBase: lora ? 'base' : undefined });
  process.stdout.write(`saved ${step}\n`);
}
