/**
 * A real browser for tests: Debian's chromium (no browser download: it cannot be fetched in CI) driven
 * by puppeteer-core, with pages bundled and served from localhost by esbuild. WebGPU needs a secure
 * context, which http://127.0.0.1 is; headless Chromium's adapter there is SwiftShader.
 *
 * Without chromium or an adapter the browser tests skip, unless GPT2_WEBGPU_REQUIRED=1 (CI), where
 * they fail.
 */
import { existsSync } from 'node:fs';
import * as esbuild from 'esbuild';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

export const chromiumPath = (): string => process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

const webGpuRequired = (): boolean => process.env.GPT2_WEBGPU_REQUIRED === '1';

const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  // A test page may sit in the background while another one runs; keep its timers and GPU work going.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
];

/** Chromium, or null (the caller skips) when it is not installed and the environment does not require it. */
export async function launchChromium(): Promise<Browser | null> {
  const path = chromiumPath();
  if (!existsSync(path)) {
    if (webGpuRequired()) throw new Error(`GPT2_WEBGPU_REQUIRED=1 but no chromium at ${path} (apt-get install chromium, or set CHROMIUM_PATH)`);
    return null;
  }
  return puppeteer.launch({ executablePath: path, headless: true, args: CHROMIUM_ARGS, protocolTimeout: 600_000 });
}

export interface ServedPages {
  /** http://127.0.0.1:<port>/ */
  url: string;
  stop(): Promise<void>;
}

/**
 * Serves `servedir` (its index.html and static files) and the browser bundles of `entryPoints`, written
 * in memory under `servedir` as `<entry name>.js`.
 */
export async function servePages(servedir: string, entryPoints: Record<string, string>): Promise<ServedPages> {
  const context = await esbuild.context({
    entryPoints,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outdir: servedir,
    logLevel: 'silent',
  });
  // A bundle that does not build would leave the page blank and the test waiting: fail here with esbuild's message.
  try {
    await context.rebuild();
  } catch (error) {
    await context.dispose();
    throw error;
  }
  const { port } = await context.serve({ servedir, host: '127.0.0.1' });
  return {
    url: `http://127.0.0.1:${port}/`,
    stop: () => context.dispose(),
  };
}

/**
 * A new page whose uncaught errors and console errors are collected, so a test can show them when a
 * step times out instead of only "waiting failed".
 */
export async function openPage(browser: Browser, url: string, beforeLoad?: (page: Page) => Promise<void>): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  await beforeLoad?.(page);
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  await page.goto(url);
  return { page, errors };
}

/**
 * page.waitForFunction, with the page's errors in the message when it times out (a wait that
 * fails says only "30000ms exceeded").
 */
export async function waitForPage(page: Page, errors: readonly string[], predicate: () => unknown, timeout = 60_000): Promise<void> {
  try {
    await page.waitForFunction(predicate, { timeout, polling: 50 });
  } catch (error) {
    throw new Error(`${(error as Error).message}; page errors: ${errors.length === 0 ? 'none' : errors.join(' | ')}`, { cause: error });
  }
}

export interface PageAdapter {
  vendor: string;
  architecture: string;
  description: string;
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  features: string[];
}

/** The page's WebGPU adapter, or null where there is none; throws under GPT2_WEBGPU_REQUIRED=1. */
export async function pageAdapter(page: Page): Promise<PageAdapter | null> {
  const adapter = await page.evaluate(async () => {
    const found = await navigator.gpu?.requestAdapter();
    if (!found) return null;
    return {
      vendor: found.info.vendor,
      architecture: found.info.architecture,
      description: found.info.description,
      maxBufferSize: found.limits.maxBufferSize,
      maxStorageBufferBindingSize: found.limits.maxStorageBufferBindingSize,
      features: [...found.features].sort(),
    };
  });
  if (adapter === null && webGpuRequired()) throw new Error('GPT2_WEBGPU_REQUIRED=1 but the browser found no WebGPU adapter');
  return adapter;
}
