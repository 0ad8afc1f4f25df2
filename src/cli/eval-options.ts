/** The evaluation command's flags: one table for parsing and `--help`. */
import { flagHelp, VERBOSE_FLAG, type FlagTable } from './flags.js';

export const EVAL_FLAGS: FlagTable = [
  { name: 'model', short: 'm', value: '<folder|preset|owner/name>', description: 'the model to evaluate: a training run\'s folder, or any model' },
  { name: 'data', value: '<file>', description: 'entries to evaluate (JSON or .jsonl)', default: 'the run\'s validation entries' },
  { name: 'out', value: '<folder>', description: 'where eval.json and instruction-data-with-response.json go', default: 'the model\'s folder' },
  { name: 'limit', value: '<n>', description: 'evaluate the first n entries only' },
  { name: 'judge-url', value: '<url>', description: 'an OpenAI-compatible API (…/v1) whose model scores each response 0–100' },
  { name: 'judge-model', value: '<name>', description: 'the judge\'s model name', default: 'the server\'s default' },
  { name: 'judge-api-key', value: '<key>', description: 'bearer token for the judge\'s API' },
  { name: 'device', value: '<auto|webgpu|cpu>', description: 'where to run', default: 'auto' },
  VERBOSE_FLAG,
  { name: 'help', short: 'h', description: 'this text' },
];

export const EVAL_HELP = `Usage: npx tsx src/eval.ts --model <run folder> [flags]

Evaluates a model on held-out instructions: loss and perplexity over the responses, greedy answers
scored by exact match, token F1 and ROUGE-L, and optionally by a judge model (LLM-as-judge).

${flagHelp(EVAL_FLAGS)}`;
