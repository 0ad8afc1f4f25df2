/**
 * The web page clicked through as a person would, in Chromium: pick a tiny model's files, paste bad
 * data and see its message, drop good data, train a few steps (the chart grows), stop, chat (the
 * response streams), download the model — whose bytes load in Node and answer as the page did. Then
 * a device lost mid-training leaves the last finished step downloadable.
 *
 * UPDATE_SCREENSHOT=1 writes the trained page to docs/web.png (the README's picture).
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { alpacaPrompt, createBackend, fineTune, generate, modelFromBytes, modelToBytes, parseInstructionData, randomModel, releaseBackend, type GPT2 } from '../src/node.js';
import { launchChromium, openPage, pageAdapter, servePages, waitForPage, type ServedPages } from './helpers/browser.js';

const work = mkdtempSync(join(tmpdir(), 'gpt2-webgpu-web-page-'));
const modelDir = join(work, 'model');
const downloads = join(work, 'downloads');
let browser: Browser | null = null;
let served: ServedPages;

const DATA = JSON.stringify((JSON.parse(readFileSync('data/instructions.json', 'utf8')) as unknown[]).slice(0, 24), null, 1);
const INSTRUCTION = 'How many eggs are in 2 boxes of 12?';
const NEW_TOKENS = 10;

beforeAll(async () => {
  mkdirSync(modelDir);
  mkdirSync(downloads);
  const backend = await createBackend('webgpu');
  const bytes = await modelToBytes(randomModel('tiny', { seed: 5, backend }).model);
  writeFileSync(join(modelDir, 'config.json'), bytes.config);
  writeFileSync(join(modelDir, 'model.safetensors'), bytes.weights);
  // As in a training run's folder, more copies lie below the model (here one that does not load).
  mkdirSync(join(modelDir, 'checkpoint'));
  writeFileSync(join(modelDir, 'checkpoint', 'model.safetensors'), 'not the model');
  served = await servePages('web', { main: 'web/main.ts' });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await served?.stop();
  releaseBackend();
  rmSync(work, { recursive: true, force: true });
});

const text = (page: Page, selector: string): Promise<string> => page.$eval(selector, (e) => e.textContent ?? '');

async function setValue(page: Page, selector: string, value: string): Promise<void> {
  await page.$eval(selector, (e, v) => {
    (e as HTMLInputElement).value = v;
    e.dispatchEvent(new Event('input', { bubbles: true }));
  }, value);
}

/** Drops `content` as a file named `name` on the data area, as a drag from the desktop does. */
async function dropFile(page: Page, name: string, content: string): Promise<void> {
  await page.$eval('#data-text', (area, n, c) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([c], n, { type: 'application/json' }));
    area.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    area.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }, name, content);
}

async function weightsOf(model: GPT2): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, p] of model.namedParameters()) out.set(name, await p.toFloat32());
  return out;
}

const waitIdle = (page: Page, errors: string[]): Promise<void> => waitForPage(page, errors, () => document.body.dataset.busy === 'idle', 240_000);

/** Waits for the adapter line, then picks the tiny model's two files, or its folder. */
async function pickModel(page: Page, errors: string[], how: 'files' | 'folder'): Promise<void> {
  await waitForPage(page, errors, () => document.getElementById('adapter')?.textContent?.startsWith('WebGPU adapter:'));
  if (how === 'files') await (await page.$('input#model-files'))!.uploadFile(join(modelDir, 'config.json'), join(modelDir, 'model.safetensors'));
  else await (await page.$('input#model-folder'))!.uploadFile(modelDir);
  await waitForPage(page, errors, () => document.getElementById('model-status')?.textContent?.startsWith('Loaded'), 120_000);
}

/** Files of a finished download (Chromium writes .crdownload files first). */
async function downloaded(names: string[], folder: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const present = readdirSync(folder);
    if (names.every((n) => present.includes(n)) && !present.some((n) => n.endsWith('.crdownload'))) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`downloads never finished: ${readdirSync(folder).join(', ')}`);
}

test('load files, bad then dropped data, train, stop, chat, download: the download answers in Node as on the page', async (context) => {
  if (browser === null) return context.skip();
  const { page, errors } = await openPage(browser, served.url);
  if ((await pageAdapter(page)) === null) return context.skip();
  await page.setViewport({ width: 1200, height: 900 });
  const cdp = await page.createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });
  await pickModel(page, errors, 'files');
  expect(await text(page, '#model-status')).toMatch(/^Loaded model\.safetensors: .* 2 layers, 2 heads, width 32, context 64/);

  // Bad data: the CLI's message, naming the entry and the field.
  const bad = '[{"instruction": "Add 2 and 2.", "output": "4"}, {"instruction": "Name a color.", "output": 7}]';
  await setValue(page, '#data-text', bad);
  const expected = (() => {
    try {
      parseInstructionData(bad, 'pasted data');
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error('the bad data parsed');
  })();
  expect(expected).toMatch(/entry 1.*"output"/);
  expect(await text(page, '#data-status')).toBe(expected);
  expect(await page.$eval('#train', (b) => (b as HTMLButtonElement).disabled)).toBe(true);
  await setValue(page, '#data-text', '[{"instruction": "x",');
  expect(await text(page, '#data-status')).toMatch(/^pasted data: .*JSON/);

  await dropFile(page, 'eggs.json', DATA);
  expect(await text(page, '#data-status')).toBe('24 entries from eggs.json.');

  await setValue(page, '#epochs', '40');
  await setValue(page, '#batch-size', '2');
  await setValue(page, '#learning-rate', '0.001');
  await setValue(page, '#eval-every', '2');
  await page.click('#train');
  await waitForPage(page, errors, () => /^Step (\d+)\//.exec(document.getElementById('train-status')?.textContent ?? '')?.[1] === '4', 240_000);
  const chartPoints = await page.$eval('#loss-chart path.train-loss', (p) => p.getAttribute('d')!.split(/[ML]/).filter((s) => s.trim()).length);
  expect(chartPoints).toBeGreaterThanOrEqual(4);
  expect(await page.$$eval('#loss-chart path.val-loss', (paths) => paths.length)).toBe(1);
  expect(await text(page, '#train-status')).toMatch(/loss \d+\.\d{4} · ETA \d+:\d\d/);
  await page.click('#train-stop');
  await waitIdle(page, errors);
  const stopped = await text(page, '#train-status');
  expect(stopped).toMatch(/^Stopped after \d+ steps · last loss \d+\.\d+/);

  // Chat: count the response's updates as they happen.
  await page.$eval('#response', (pre) => {
    const seen: string[] = [];
    new MutationObserver(() => seen.push(pre.textContent ?? '')).observe(pre, { childList: true, characterData: true, subtree: true });
    (window as unknown as { responseUpdates: string[] }).responseUpdates = seen;
  });
  await setValue(page, '#instruction', INSTRUCTION);
  await setValue(page, '#max-new-tokens', String(NEW_TOKENS));
  await page.click('#generate');
  await waitIdle(page, errors);
  const response = await text(page, '#response');
  const updates = await page.evaluate(() => (window as unknown as { responseUpdates: string[] }).responseUpdates.filter((s) => s !== ''));
  expect(updates.length).toBeGreaterThanOrEqual(2);
  expect(updates.at(-1)).toBe(response);
  expect(await text(page, '#generate-status')).toMatch(/^\d+ tokens · \d+\.\d tokens\/s · done$/);

  const screenshot = await page.screenshot({ fullPage: true, type: 'png' });
  expect([...screenshot.subarray(1, 4)]).toEqual([0x50, 0x4e, 0x47]);
  if (process.env.UPDATE_SCREENSHOT === '1') writeFileSync('docs/web.png', screenshot);

  await page.click('#download');
  await downloaded(['config.json', 'model.safetensors'], downloads);
  const backend = await createBackend('webgpu');
  const { model } = modelFromBytes(readFileSync(join(downloads, 'config.json'), 'utf8'), readFileSync(join(downloads, 'model.safetensors')), backend);
  const { text: nodeResponse } = await generate(model, alpacaPrompt({ instruction: INSTRUCTION }), { maxNewTokens: NEW_TOKENS });
  expect(nodeResponse).toBe(response);
  // The download holds the trained weights, not the picked ones.
  expect(readFileSync(join(downloads, 'model.safetensors')).equals(readFileSync(join(modelDir, 'model.safetensors')))).toBe(false);
  expect(errors).toEqual([]);
});

test('a device lost mid-training shows a message and keeps the last finished step downloadable', async (context) => {
  if (browser === null) return context.skip();
  // Keep the page's device where the test can destroy it, as a GPU reset would.
  const { page, errors } = await openPage(browser, served.url, (p) => p.evaluateOnNewDocument(() => {
    // eslint-disable-next-line @typescript-eslint/unbound-method -- the original is kept to be called on the adapter the wrapper runs on
    const requestDevice = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (this: GPUAdapter, descriptor?: GPUDeviceDescriptor) {
      const device = await requestDevice.call(this, descriptor);
      (window as unknown as { testDevice: GPUDevice }).testDevice = device;
      return device;
    };
  }).then(() => {}));
  if ((await pageAdapter(page)) === null) return context.skip();
  const lostDownloads = join(work, 'lost');
  mkdirSync(lostDownloads);
  const cdp = await page.createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: lostDownloads });
  await pickModel(page, errors, 'folder');
  await dropFile(page, 'eggs.json', DATA);
  await setValue(page, '#epochs', '40');
  await setValue(page, '#batch-size', '2');
  await page.click('#train');
  await waitForPage(page, errors, () => /^Step [3-9]\//.test(document.getElementById('train-status')?.textContent ?? ''), 240_000);
  await page.evaluate(() => (window as unknown as { testDevice: GPUDevice }).testDevice.destroy());
  await waitIdle(page, errors);
  await waitForPage(page, errors, () => /device was lost/.test(document.getElementById('error')?.textContent ?? ''));

  const message = await text(page, '#error');
  expect(message).toMatch(/GPU device was lost/);
  const kept = /The weights of step (\d+) are kept/.exec(message);
  expect(kept).not.toBeNull();
  expect(await page.$eval('#train', (b) => (b as HTMLButtonElement).disabled)).toBe(true);
  await page.click('#download');
  await downloaded(['config.json', 'model.safetensors'], lostDownloads);
  const keptStep = Number(kept![1]);
  expect(keptStep).toBeGreaterThanOrEqual(3);

  // The kept weights are step keptStep's: Node trains the same model with the page's settings to there.
  const backend = await createBackend('webgpu');
  const { model } = modelFromBytes(readFileSync(join(modelDir, 'config.json'), 'utf8'), readFileSync(join(modelDir, 'model.safetensors')), backend);
  const stop = new AbortController();
  let reference: Map<string, Float32Array> | null = null;
  await fineTune(model, parseInstructionData(DATA, 'eggs.json'), {
    epochs: 40, batchSize: 2, learningRate: 0.00005, evalEvery: 20, seed: 123, signal: stop.signal,
    async onStep(_record, { weightsStep }) {
      if (weightsStep !== keptStep) return;
      reference = await weightsOf(model);
      stop.abort();
    },
  });
  const downloadedModel = modelFromBytes(readFileSync(join(lostDownloads, 'config.json'), 'utf8'), readFileSync(join(lostDownloads, 'model.safetensors')), backend).model;
  const downloadedWeights = await weightsOf(downloadedModel);
  expect(reference).not.toBeNull();
  // An AdamW step moves a weight by about the learning rate (5e-5) early on; rounding moves it far less.
  for (const [name, expected] of reference!) {
    const actual = downloadedWeights.get(name)!;
    const worst = expected.reduce((m, v, i) => Math.max(m, Math.abs(v - actual[i])), 0);
    expect(worst, name).toBeLessThan(5e-6);
  }
  // And they are not the starting weights.
  expect(readFileSync(join(lostDownloads, 'model.safetensors')).equals(readFileSync(join(modelDir, 'model.safetensors')))).toBe(false);
});
