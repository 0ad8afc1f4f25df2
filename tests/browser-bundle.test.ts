/**
 * The browser entry bundles for a browser: esbuild with platform 'browser' fails on any Node built-in
 * reached from src/browser.ts (and the check is shown to catch one), and Dawn's `webgpu` package is
 * not part of the bundle.
 */
import * as esbuild from 'esbuild';
import { expect, test } from 'vitest';

const BROWSER_BUILD = { bundle: true, platform: 'browser', format: 'esm', target: 'es2022', write: false, metafile: true, logLevel: 'silent' } as const;

test('src/browser.ts bundles for the browser without Node built-ins or Dawn', async () => {
  const result = await esbuild.build({ ...BROWSER_BUILD, entryPoints: ['src/browser.ts'] });
  expect(result.errors).toEqual([]);
  const inputs = Object.keys(result.metafile.inputs);
  expect(inputs).toContain('src/browser/device.ts');
  expect(inputs.filter((path) => path.startsWith('node:') || path.includes('node_modules/webgpu/') || path.startsWith('src/node'))).toEqual([]);
});

test('the check catches a Node built-in reached through an import', async () => {
  const build = esbuild.build({
    ...BROWSER_BUILD,
    stdin: { contents: "export * from './src/browser.ts'; export { readFileSync } from 'node:fs';", resolveDir: '.', loader: 'ts' },
  });
  await expect(build).rejects.toThrow(/node:fs/);
});
