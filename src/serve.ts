/**
 * An OpenAI-compatible HTTP server for a model (src/serve/server.ts has the API):
 *
 *   npx tsx src/serve.ts --model runs/ift                  # http://127.0.0.1:8080/v1
 *   npx tsx src/serve.ts --model tiny --port 0             # any free port (printed)
 *   npx tsx src/serve.ts --model gpt2 --host 0.0.0.0 --api-key "$KEY"
 *   npx tsx src/serve.ts --model gpt2-large --adapter runs/lora --merge
 *
 * Prints `listening on <url>` on stdout once it accepts requests. SIGINT or SIGTERM drains: no new
 * request is taken (503), those in flight finish within --drain-timeout seconds (then they are
 * aborted), and the process exits 0; a second signal exits at once with 130. Exit codes: 0 done,
 * 2 bad flags or a model that cannot be found or read, 1 anything else.
 */
import { decimal, parseFlags, UsageError } from './cli/flags.js';
import { ContinuousBatcher } from './gpt/continuous-batch.js';
import { ModelLoadError } from './gpt/load-model.js';
import { isAdapterFolder } from './node/adapter-folder.js';
import { createBackend, releaseBackend } from './node/backend.js';
import { showDriverMessages } from './node/driver-messages.js';
import { checkModelSpec, loadModel } from './node/load-model.js';
import { cacheSlotsProblem } from './serve/capacity.js';
import { buildServer, DEFAULT_BODY_LIMIT } from './serve/server.js';

const USAGE = `usage: tsx src/serve.ts --model <preset|folder|owner/name> [--adapter <folder> [--merge]] [--host 127.0.0.1] [--port 8080] [--api-key KEY]
  [--slots 8] [--queue 64] [--body-limit ${DEFAULT_BODY_LIMIT}] [--drain-timeout 30] [--device auto|webgpu|cpu] [--seed 0] [--verbose]`;

interface Flags {
  model: string;
  /** A LoRA adapter folder run on the model, merged into its weights at load with `merge`. */
  adapter?: string;
  merge: boolean;
  host: string;
  port: number;
  apiKey?: string;
  slots: number;
  queue: number;
  bodyLimit: number;
  drainSeconds: number;
  device: 'auto' | 'webgpu' | 'cpu';
  seed: number;
  /** Let the GPU driver's own messages through. */
  verbose: boolean;
}

function integerFlag(raw: string, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const x = decimal(raw);
  if (!(Number.isInteger(x) && x >= min && x <= max)) throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(raw)}`);
  return x;
}

function parseServeFlags(argv: string[]): Flags {
  const values = parseFlags(argv, {
    model: { type: 'string', default: 'gpt2' },
    adapter: { type: 'string' },
    merge: { type: 'boolean', default: false },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8080' },
    'api-key': { type: 'string' },
    slots: { type: 'string', default: '8' },
    queue: { type: 'string', default: '64' },
    'body-limit': { type: 'string', default: String(DEFAULT_BODY_LIMIT) },
    'drain-timeout': { type: 'string', default: '30' },
    device: { type: 'string', default: 'auto' },
    seed: { type: 'string', default: '0' },
    verbose: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const device = values.device;
  if (device !== 'auto' && device !== 'webgpu' && device !== 'cpu') throw new UsageError(`--device must be auto, webgpu or cpu, got ${JSON.stringify(device)}`);
  const apiKey = values['api-key'];
  if (apiKey !== undefined && apiKey.trim() === '') throw new UsageError('--api-key must not be empty');
  const drainSeconds = decimal(values['drain-timeout']);
  if (!(Number.isFinite(drainSeconds) && drainSeconds >= 0)) throw new UsageError(`--drain-timeout must be a number of seconds ≥ 0, got ${JSON.stringify(values['drain-timeout'])}`);
  if (values.merge && values.adapter === undefined && !isAdapterFolder(values.model)) throw new UsageError('--merge folds an adapter into the weights: give --adapter');
  return {
    model: values.model,
    adapter: values.adapter,
    merge: values.merge,
    host: values.host,
    port: integerFlag(values.port, 'port', 0, 65535),
    apiKey,
    slots: integerFlag(values.slots, 'slots', 1),
    queue: integerFlag(values.queue, 'queue', 0),
    bodyLimit: integerFlag(values['body-limit'], 'body-limit', 1),
    drainSeconds,
    device,
    seed: integerFlag(values.seed, 'seed', 0),
    verbose: values.verbose,
  };
}

const isLoopback = (host: string): boolean => host === '127.0.0.1' || host === '::1' || host === 'localhost';

async function main(argv: string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = parseServeFlags(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`serve: ${e.message}\n${USAGE}`);
    return 2;
  }
  try {
    checkModelSpec(flags.model, flags.adapter);
    if (flags.verbose) showDriverMessages();
    const backend = await createBackend(flags.device);
    const { model, source } = await loadModel(flags.model, { backend, seed: flags.seed, adapter: flags.adapter, merge: flags.merge });
    const slotsProblem = cacheSlotsProblem(model.config, flags.slots, backend);
    if (slotsProblem !== null) throw new UsageError(`--slots ${flags.slots}: ${slotsProblem}`);
    console.error(`model: ${flags.model} (${source}) on ${backend.name} (${backend.description}), ${flags.slots} slots`);
    const batcher = new ContinuousBatcher(model, { slots: flags.slots, queue: flags.queue });
    const stop = new AbortController();
    const app = buildServer({ batcher, modelId: flags.model, apiKey: flags.apiKey, bodyLimit: flags.bodyLimit, stopSignal: stop.signal });
    if (!isLoopback(flags.host) && flags.apiKey === undefined) {
      console.error(`serve: warning: listening on ${flags.host} without --api-key: anyone who can reach this port can use the model`);
    }
    const url = await app.listen({ host: flags.host, port: flags.port });
    console.log(`listening on ${url}`);

    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
    });
    for (const name of ['SIGINT', 'SIGTERM'] as const) process.once(name, () => process.exit(130));
    const drained = batcher.close(); // from now on a new request gets 503
    console.error(`serve: ${signal}: finishing ${batcher.activeCount + batcher.waitingCount} requests (at most ${flags.drainSeconds} s)`);
    const deadline = setTimeout(() => stop.abort(), flags.drainSeconds * 1000);
    await app.close(); // stops listening, waits for the responses in flight
    await drained;
    clearTimeout(deadline);
    batcher.dispose();
    return 0;
  } catch (e) {
    if (e instanceof ModelLoadError || e instanceof UsageError) {
      console.error(`serve: ${e.message}`);
      return 2;
    }
    console.error(`serve: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  } finally {
    releaseBackend();
  }
}

process.exitCode = await main(process.argv.slice(2));
