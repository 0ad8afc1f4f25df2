/**
 * Loading models in a browser: a preset is fetched from the Hugging Face hub's resolve URLs (answered
 * here by request interception, so no network is needed) with progress, and a reload finds both
 * files in the Cache API instead of downloading them again; a missing repo says so.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createBackend, modelToBytes, randomModel, releaseBackend } from '../src/node.js';
import { launchChromium, openPage, pageAdapter, servePages, waitForPage, type ServedPages } from './helpers/browser.js';

const servedir = mkdtempSync(join(tmpdir(), 'gpt2-webgpu-load-page-'));
let browser: Browser | null = null;
let served: ServedPages;
const files = new Map<string, Uint8Array>();

beforeAll(async () => {
  writeFileSync(join(servedir, 'index.html'), '<!doctype html><script type="module" src="engine-page.js"></script>');
  served = await servePages(servedir, { 'engine-page': 'tests/browser/engine-page.ts' });
  browser = await launchChromium();
  const bytes = await modelToBytes(randomModel('tiny', { seed: 2, backend: await createBackend('webgpu') }).model);
  files.set('config.json', new TextEncoder().encode(bytes.config));
  files.set('model.safetensors', bytes.weights);
});

afterAll(async () => {
  await browser?.close();
  await served?.stop();
  releaseBackend();
  rmSync(servedir, { recursive: true, force: true });
});

/** Answers the hub's resolve URLs of openai-community/gpt2 with the tiny model's files, 404 for the rest; returns the URLs asked. */
async function fakeHub(page: Page): Promise<string[]> {
  const asked: string[] = [];
  await page.setRequestInterception(true);
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith('https://huggingface.co/')) return void request.continue();
    asked.push(url);
    const match = /^https:\/\/huggingface\.co\/openai-community\/gpt2\/resolve\/main\/(config\.json|model\.safetensors)$/.exec(url);
    const body = match ? files.get(match[1]) : undefined;
    if (body === undefined) return void request.respond({ status: 404, body: 'Entry not found', headers: { 'access-control-allow-origin': '*' } });
    void request.respond({ status: 200, body: Buffer.from(body), headers: { 'content-length': String(body.byteLength), 'access-control-allow-origin': '*' } });
  });
  return asked;
}

test('a preset comes from the hub with progress, and after a reload from the Cache API without a download', async (context) => {
  if (browser === null) return context.skip();
  const { page, errors } = await openPage(browser, served.url);
  if ((await pageAdapter(page)) === null) return context.skip();
  const asked = await fakeHub(page);
  const ready = () => waitForPage(page, errors, () => typeof window.loadFrom === 'function');
  await ready();

  const first = await page.evaluate(() => window.loadFrom('gpt2'));
  const base = 'https://huggingface.co/openai-community/gpt2/resolve/main/';
  expect(asked).toEqual([`${base}config.json`, `${base}model.safetensors`]);
  expect(first.source).toBe(base);
  expect(first.nEmbd).toBe(32);
  const weightsBytes = files.get('model.safetensors')!.byteLength;
  expect(first.progress.at(-1)).toEqual([weightsBytes, weightsBytes, 'model.safetensors']);

  await page.reload();
  await ready();
  const again = await page.evaluate(() => window.loadFrom('gpt2'));
  expect(asked).toHaveLength(2);
  expect(again.source).toBe(base);
  expect(again.progress).toEqual([[files.get('config.json')!.byteLength, files.get('config.json')!.byteLength, 'config.json'], [weightsBytes, weightsBytes, 'model.safetensors']]);

  const missing = await page.evaluate(() => window.loadFrom('nobody/missing').then(() => 'loaded', (e: Error) => `${e.name}: ${e.message}`));
  expect(missing).toBe('ModelLoadError: https://huggingface.co/nobody/missing/resolve/main/config.json: HTTP 404 (no such file: check the model name)');
  expect(errors.filter((e) => !/404/.test(e))).toEqual([]);
});
