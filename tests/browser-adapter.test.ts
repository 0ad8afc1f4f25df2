/**
 * The browser harness itself: chromium starts, esbuild serves a bundled page, the page finds a WebGPU
 * adapter and a compute shader on it gives the right numbers.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'puppeteer-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { launchChromium, openPage, pageAdapter, servePages, type ServedPages } from './helpers/browser.js';

let browser: Browser | null = null;
let served: ServedPages;
const servedir = mkdtempSync(join(tmpdir(), 'gpt2-webgpu-adapter-page-'));

beforeAll(async () => {
  writeFileSync(join(servedir, 'index.html'), '<!doctype html><script type="module" src="double-page.js"></script>');
  served = await servePages(servedir, { 'double-page': 'tests/browser/double-page.ts' });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await served?.stop();
  rmSync(servedir, { recursive: true, force: true });
});

test('the served page finds a WebGPU adapter and a compute shader on it doubles 1000 numbers', async (context) => {
  if (browser === null) return context.skip();
  const { page, errors } = await openPage(browser, served.url);
  const adapter = await pageAdapter(page);
  if (adapter === null) return context.skip();
  console.log(`browser adapter: ${adapter.vendor} ${adapter.architecture} ${adapter.description}`.trim(),
    `maxBufferSize ${adapter.maxBufferSize}, maxStorageBufferBindingSize ${adapter.maxStorageBufferBindingSize}, features ${adapter.features.join(' ')}`);
  expect(adapter.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 2 ** 20);

  await page.waitForFunction(() => typeof window.doubleOnGpu === 'function');
  const values = Array.from({ length: 1000 }, (_, i) => (i * 7919) % 1013 - 500.25);
  const doubled = await page.evaluate((input) => window.doubleOnGpu(input), values);
  expect(doubled).toEqual(values.map((v) => v * 2));
  expect(errors).toEqual([]);
});
