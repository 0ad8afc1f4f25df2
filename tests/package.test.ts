/**
 * The package as a user gets it: `npm run build`, `npm pack`, a fresh project outside the repo that
 * installs the tarball (its dependencies from the npm cache that `npm ci` filled) and runs the
 * README's library example (docs/examples/library.mjs, quoted there verbatim) with plain `node`, no
 * tsx. The example never calls releaseBackend: the process must still exit on its own, which the
 * timeout checks.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const EXAMPLE = 'docs/examples/library.mjs';
const root = mkdtempSync(join(tmpdir(), 'gpt2-webgpu-package-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const npm = (args: string[], cwd: string, timeout: number) =>
  execFileSync('npm', args, { cwd, encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });

describe('the npm package', () => {
  it('the README quotes the library example verbatim', () => {
    const example = readFileSync(EXAMPLE, 'utf8').trimEnd();
    expect(readFileSync('README.md', 'utf8')).toContain('```js\n' + example + '\n```');
  });

  it('builds, packs the entries of its exports, installs outside the repo and runs the example with plain node', () => {
    npm(['run', 'build'], '.', 120_000);
    const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', root], '.', 60_000)) as { filename: string; files: { path: string }[] }[];
    const files = packed.files.map((f) => f.path);
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { types: string; exports: Record<string, Record<string, Record<string, string>>> };
    const targets = Object.values(pkg.exports['.']).flatMap((c) => Object.values(c));
    for (const target of [...targets, pkg.types]) expect(files, `${target} is in the tarball`).toContain(target.replace(/^\.\//, ''));
    expect(files.some((f) => f.startsWith('src/') || f.startsWith('tests/'))).toBe(false);

    const project = join(root, 'consumer');
    execFileSync('mkdir', [project]);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    npm(['install', join(root, packed.filename), '--prefer-offline', '--no-audit', '--no-fund'], project, 180_000);
    expect(existsSync(join(project, 'node_modules', 'gpt2-webgpu', 'dist', 'node.js'))).toBe(true);
    copyFileSync(EXAMPLE, join(project, 'consumer.mjs'));

    const run = spawnSync(process.execPath, ['consumer.mjs'], { cwd: project, encoding: 'utf8', timeout: 120_000, env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' } });
    expect(run.error, 'the example exits on its own, without releaseBackend').toBeUndefined();
    expect(run.stderr).not.toMatch(/Error/);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(process.env.GPT2_WEBGPU_REQUIRED === '1' ? /^backend: webgpu$/m : /^backend: (webgpu|cpu)$/m);
    const losses = [...run.stdout.matchAll(/^step (\d+)\/2: loss (\d+\.\d+)$/gm)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(losses.map(([step]) => step)).toEqual([1, 2]);
    // A random GPT-2 over 50257 tokens starts near ln(50257) ≈ 10.8.
    expect(losses[0][1]).toBeGreaterThan(9);
    expect(losses[0][1]).toBeLessThan(12);
    expect(run.stdout).toMatch(/^generated [1-8] tokens \((eos|length)\): ".*"$/m);
  });
});
