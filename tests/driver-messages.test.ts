/**
 * Dawn prints two "…artificially reduced…" warnings from C++ whenever it creates an instance over a
 * Vulkan driver such as lavapipe; the commands hide them unless given --verbose.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { webgpuOrSkip } from './helpers/backends.js';

const backend = await webgpuOrSkip();
const DAWN_WARNING = /artificially reduced/;

function generate(extra: string[]): { code: number | null; stderr: string } {
  const args = ['--import', 'tsx', 'src/generate.ts', '--model', 'tiny', '--prompt', 'Hi', '--max-new-tokens', '1', '--device', 'webgpu', '--seed', '1', ...extra];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 120_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  return { code: r.status, stderr: r.stderr };
}

describe.runIf(backend !== null)('the GPU driver\'s own messages', () => {
  it('are hidden by default, and the command\'s own stderr still comes through', () => {
    const run = generate([]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(DAWN_WARNING);
    expect(run.stderr).toMatch(/\[1 tokens? in [\d.]+ s/);
  });

  // Only drivers reporting more dynamic buffers than Dawn allows make Dawn print them (NVIDIA's do not).
  it.runIf(backend?.description.includes('llvmpipe'))('are printed with --verbose', () => {
    const run = generate(['--verbose']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(DAWN_WARNING);
  });
});
