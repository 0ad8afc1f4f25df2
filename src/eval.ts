/**
 * Evaluating a fine-tuned model on held-out instructions:
 *
 *   npx tsx src/eval.ts --model runs/2026-11-28_10-00-00          # the run's validation entries
 *   npx tsx src/eval.ts --model runs/ift --data test.json --out results/
 *   npx tsx src/eval.ts --model runs/ift --judge-url http://127.0.0.1:8080/v1 --judge-model gpt2-medium
 *
 * The evaluation runs in a worker process (src/cli/eval-main.ts) so that Ctrl-C reaches it once
 * and in time: it then writes what was evaluated so far (src/cli/supervise.ts says why).
 */
import { isWorker, superviseSelf } from './cli/supervise.js';

if (isWorker()) await import('./cli/eval-main.js');
else process.exitCode = await superviseSelf();
