/**
 * The same engine in a browser and in Node: the same tiny model, data and seed give the same first
 * training losses (relative 1e-5) and the same greedy tokens afterwards — in Chromium's WebGPU
 * (SwiftShader) through src/browser.ts, and in this process (Dawn on lavapipe) through src/node.ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'puppeteer-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createBackend, fineTune, generate, modelFromBytes, modelToBytes, parseInstructionData, randomModel, releaseBackend, type FineTuneOptions } from '../src/node.js';
import { launchChromium, openPage, pageAdapter, servePages, type ServedPages } from './helpers/browser.js';

const servedir = mkdtempSync(join(tmpdir(), 'gpt2-webgpu-engine-page-'));
let browser: Browser | null = null;
let served: ServedPages;

const DATA = JSON.stringify((JSON.parse(readFileSync('data/instructions.json', 'utf8')) as unknown[]).slice(0, 12));
const OPTIONS: FineTuneOptions = { epochs: 1, batchSize: 4, learningRate: 1e-3, maxSteps: 3, valFraction: 0, seed: 7 };
const PROMPT = 'Below is an instruction that describes a task.';
const NEW_TOKENS = 12;

beforeAll(async () => {
  writeFileSync(join(servedir, 'index.html'), '<!doctype html><script type="module" src="engine-page.js"></script>');
  served = await servePages(servedir, { 'engine-page': 'tests/browser/engine-page.ts' });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await served?.stop();
  releaseBackend();
  rmSync(servedir, { recursive: true, force: true });
});

test('training losses and greedy tokens in the browser equal Node\'s on the same tiny model, data and seed', async (context) => {
  if (browser === null) return context.skip();
  const { page, errors } = await openPage(browser, served.url);
  if ((await pageAdapter(page)) === null) return context.skip();

  const backend = await createBackend('webgpu');
  const { model: initial } = randomModel('tiny', { seed: 11, backend });
  const bytes = await modelToBytes(initial);
  writeFileSync(join(servedir, 'config.json'), bytes.config);
  writeFileSync(join(servedir, 'model.safetensors'), bytes.weights);

  const { model } = modelFromBytes(bytes.config, bytes.weights, backend);
  const { records } = await fineTune(model, parseInstructionData(DATA, 'data.json'), OPTIONS);
  const { ids } = await generate(model, PROMPT, { maxNewTokens: NEW_TOKENS });
  const nodeLosses = records.map((r) => r.loss);

  await page.waitForFunction(() => typeof window.trainAndGenerate === 'function');
  const inBrowser = await page.evaluate((...args) => window.trainAndGenerate(...args), served.url, DATA, OPTIONS, PROMPT, NEW_TOKENS);
  console.log(`losses: node ${nodeLosses.join(', ')}; browser ${inBrowser.losses.join(', ')}`);

  expect(inBrowser.backend).toBe('webgpu');
  expect(nodeLosses).toHaveLength(3);
  expect(inBrowser.losses).toHaveLength(3);
  for (const [i, loss] of nodeLosses.entries()) {
    expect(Math.abs(inBrowser.losses[i] - loss) / Math.abs(loss)).toBeLessThan(1e-5);
  }
  expect(ids).toHaveLength(NEW_TOKENS);
  expect(inBrowser.ids).toEqual(ids);
  expect(errors).toEqual([]);
});
