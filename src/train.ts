/**
 * Instruction fine-tuning from the command line:
 *
 *   npx tsx src/train.ts                                   # the demo: a small model from scratch on data/instructions.json
 *   npx tsx src/train.ts --model gpt2-medium --data my.json --epochs 2
 *   npx tsx src/train.ts --resume runs/2026-11-28_10-00-00  # continue a stopped run exactly
 *
 * The training itself runs in a worker process (src/cli/train-main.ts) so that Ctrl-C always
 * reaches it once and in time, whatever sits between it and the terminal (src/cli/supervise.ts).
 */
import { isWorker, superviseSelf } from './cli/supervise.js';

if (isWorker()) await import('./cli/train-main.js');
else process.exitCode = await superviseSelf();
