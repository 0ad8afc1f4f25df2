/**
 * A training step in a browser tab against the same step in Node: the same tiny model, data, batch
 * and seed, through the library's browser entry in Debian's chromium (WebGPU on SwiftShader when
 * headless without a GPU) and its Node entry in this process (Dawn on lavapipe without a GPU).
 * Prints a table and, last, one JSON line:
 * {"bench":"browser-step","config":{…},"batch":B,"steps":N,"warmup":W,"results":[{"runtime":"node","device":…,"step_ms":…},{"runtime":"browser",…}],"browser_over_node":…}
 *
 *   npx tsx bench/browser-step.ts [--model tiny|demo] [--batch 4] [--steps 8] [--warmup 2]
 *
 * Method. The step time is the median interval between consecutive steps' completions (the onStep
 * callback of fineTune) after the warm-up steps; the first step compiles the kernels.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { printTable } from './harness.js';
import { createBackend, fineTune, modelFromBytes, modelToBytes, parseInstructionData, randomModel, releaseBackend, type FineTuneOptions } from '../src/node.js';
import { launchChromium, openPage, pageAdapter, servePages } from '../tests/helpers/browser.js';

const { values } = parseArgs({
  strict: true,
  options: {
    model: { type: 'string', default: 'tiny' },
    batch: { type: 'string', default: '4' },
    steps: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '2' },
  },
});
if (values.model !== 'tiny' && values.model !== 'demo') throw new Error(`--model must be tiny or demo, got ${values.model}`);
const int = (name: 'batch' | 'steps' | 'warmup', min: number): number => {
  const x = Number(values[name]);
  if (!Number.isInteger(x) || x < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${values[name]}`);
  return x;
};
const batch = int('batch', 1);
const warmup = int('warmup', 1);
const steps = int('steps', 1);
const options: FineTuneOptions = { epochs: 1000, batchSize: batch, learningRate: 1e-4, maxSteps: warmup + steps, valFraction: 0, seed: 3 };
const data = readFileSync('data/instructions.json', 'utf8');

const median = (ms: number[]): number => {
  const timed = ms.slice(warmup).sort((a, b) => a - b);
  return timed[Math.floor(timed.length / 2)];
};

const backend = await createBackend('webgpu');
const { model, config } = randomModel(values.model, { seed: 1, backend });
const bytes = await modelToBytes(model);

const nodeEnds: number[] = [performance.now()];
await fineTune(modelFromBytes(bytes.config, bytes.weights, backend).model, parseInstructionData(data, 'data.json'), { ...options, onStep: () => void nodeEnds.push(performance.now()) });
const nodeMs = nodeEnds.slice(1).map((t, i) => t - nodeEnds[i]);
const nodeDevice = backend.description;
releaseBackend();

const servedir = mkdtempSync(join(tmpdir(), 'gpt2-webgpu-bench-'));
writeFileSync(join(servedir, 'index.html'), '<!doctype html><script type="module" src="engine-page.js"></script>');
writeFileSync(join(servedir, 'config.json'), bytes.config);
writeFileSync(join(servedir, 'model.safetensors'), bytes.weights);
const served = await servePages(servedir, { 'engine-page': 'tests/browser/engine-page.ts' });
const browser = await launchChromium();
if (browser === null) throw new Error('no chromium (set CHROMIUM_PATH)');
try {
  const { page } = await openPage(browser, served.url);
  if ((await pageAdapter(page)) === null) throw new Error('the browser has no WebGPU adapter');
  await page.waitForFunction(() => typeof window.stepTimes === 'function');
  const inBrowser = await page.evaluate((url, text, o) => window.stepTimes(url, text, o), served.url, data, options);

  const results = [
    { runtime: 'node', device: nodeDevice, step_ms: median(nodeMs) },
    { runtime: 'browser', device: inBrowser.adapter, step_ms: median(inBrowser.ms) },
  ];
  printTable(results.map((r) => ({ runtime: r.runtime, device: r.device, 'step ms (median)': r.step_ms.toFixed(1) })));
  const { n_embd, n_layer, n_head, vocab_size } = config;
  console.log(JSON.stringify({
    bench: 'browser-step', config: { n_embd, n_layer, n_head, vocab_size }, batch, steps, warmup,
    results: results.map((r) => ({ ...r, step_ms: Number(r.step_ms.toFixed(2)) })),
    browser_over_node: Number((results[1].step_ms / results[0].step_ms).toFixed(2)),
  }));
} finally {
  await browser.close();
  await served.stop();
  rmSync(servedir, { recursive: true, force: true });
}
