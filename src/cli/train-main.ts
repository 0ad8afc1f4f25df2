/**
 * The training command's worker (src/train.ts starts it): parses the flags, runs the training.
 * Progress goes to stderr; the run folder gets model.safetensors + config.json (Hugging Face
 * layout; a LoRA run: adapter_model.safetensors + adapter_config.json, PEFT's layout), checkpoint/
 * (optimizer moments and state), training.json, loss.svg and samples.json.
 * Ctrl-C or SIGTERM finishes the step in flight, writes a checkpoint and exits; a second one exits at once.
 * Exit codes: 0 done (or stopped with a checkpoint), 2 bad flags, data, model or run folder
 * (nothing written), 1 anything else (a diverged loss included), 130 a second Ctrl-C.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../gpt/load-model.js';
import { ADAPTER_CONFIG_FILE } from '../gpt/lora-adapter.js';
import { WeightsError } from '../gpt/safetensors.js';
import { releaseBackend } from '../node/backend.js';
import { showDriverMessages } from '../node/driver-messages.js';
import { DataError } from '../train/instruction-data.js';
import { TrainingDiverged } from '../train/trainer.js';
import { HELP, parseTrainOptions, UsageError } from './train-options.js';
import { runTraining, type SampleAnswer } from './train-run.js';

function printSample(sample: SampleAnswer): void {
  const input = sample.input ? `\nInput: ${sample.input}` : '';
  console.log(`\n[${sample.split} entry] Instruction: ${sample.instruction}${input}`);
  console.log(`  reference: ${sample.reference}`);
  console.log(`  model:     ${sample.generated || '(nothing)'}`);
}

async function main(argv: string[]): Promise<number> {
  const options = parseTrainOptions(argv);
  if (options === 'help') {
    console.log(HELP);
    return 0;
  }
  if (options.verbose) showDriverMessages();
  let interrupted = false;
  const stop = (exitCode: number) => () => {
    if (interrupted) process.exit(exitCode);
    interrupted = true;
    process.stderr.write('\nstopping after the step in flight and writing a checkpoint (Ctrl-C again to quit at once)\n');
  };
  process.on('SIGINT', stop(130));
  process.on('SIGTERM', stop(143));
  process.on('SIGHUP', stop(129));
  process.channel?.unref(); // the supervisor's channel alone must not keep the worker alive
  // The supervisor is gone (killed): nobody can relay a Ctrl-C any more, so stop as if one came.
  process.on('disconnect', stop(129));
  const result = await runTraining(options, { shouldStop: () => interrupted });
  const last = result.records.at(-1);
  if (result.stopped && !result.stoppedEarly) {
    console.log(`stopped at step ${last?.step ?? 0}; continue with: npx tsx src/train.ts --resume ${result.out}`);
    return 0;
  }
  for (const sample of result.samples) printSample(sample);
  const val = last?.val_loss === undefined ? '' : `, validation loss ${last.val_loss.toFixed(4)}`;
  // One batch's loss is noisy (a few dozen counted tokens): the last epoch's mean says more.
  const lastEpoch = result.records.filter((r) => r.epoch === last?.epoch);
  const mean = lastEpoch.reduce((s, r) => s + r.loss, 0) / lastEpoch.length;
  const early = result.stoppedEarly ? ` (stopped early: no new lowest validation loss in ${result.patience} validations)` : '';
  console.log(`\ntrained ${last?.step ?? 0} steps${early}: mean loss over the last epoch ${mean.toFixed(4)}${val}`);
  const kept = result.best === null ? 'the last weights' : `the weights of step ${result.best.step}, validation loss ${result.best.valLoss.toFixed(4)}, the lowest`;
  const what = existsSync(join(result.out, ADAPTER_CONFIG_FILE)) ? 'LoRA adapter' : 'model';
  console.log(`${what} (${kept}), checkpoint, training.json and loss.svg in ${result.out}`);
  if (result.mergedTo !== null) console.log(`the base with the adapter merged in: ${result.mergedTo}`);
  console.log(`try it: npx tsx src/generate.ts --model ${result.out} --instruction ${JSON.stringify(result.samples[0]?.instruction ?? "Name three primary colors.")}`);
  return 0;
}

const isUserError = (e: unknown) => e instanceof UsageError || e instanceof DataError || e instanceof ModelLoadError || e instanceof WeightsError;

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (isUserError(e)) {
    console.error(`error: ${e.message}`);
    if (e instanceof UsageError) console.error('see: npx tsx src/train.ts --help');
    process.exitCode = 2;
  } else {
    console.error(e instanceof Error && (e.name === 'Error' || e instanceof TrainingDiverged) ? `error: ${e.message}` : e);
    process.exitCode = 1;
  }
} finally {
  releaseBackend();
}
