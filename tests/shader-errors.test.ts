/**
 * A WGSL compile error surfaces at the next sync point as an exception that names the kernel and
 * gives each compiler message with its line number and the offending source line; a Gpu stops
 * listening for its device's errors when destroyed.
 */
import { expect, test } from 'vitest';
import { Gpu } from '../src/kernels/gpu.js';
import type { Kernel } from '../src/kernels/kernel.js';
import { webgpuOrSkip } from './helpers/backends.js';

const broken: Kernel = {
  name: 'broken_on_purpose',
  bindings: ['write'],
  wgsl: () => /* wgsl */ `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
struct Params { count: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@compute @workgroup_size(1)
fn main() {
  out[0] = undefinedName + 1.0;
}`,
};

test('a shader that does not compile: the error names the kernel, the line and its source', async () => {
  const backend = await webgpuOrSkip();
  if (!backend) return;
  // A Gpu of its own on the same device: the error poisons the Gpu it happens on.
  const gpu = new Gpu({ ...backend.gpu.acquired, release: () => {} }, { validate: true });
  const out = gpu.alloc(1);
  gpu.dispatch(broken, undefined, [out], [1], [1, 1, 1]);
  const error = await gpu.read(out).then(() => null, (e: unknown) => e as Error);
  expect(error).toBeInstanceOf(Error);
  expect(error!.message).toMatch(/^kernel broken_on_purpose failed to compile:\nerror at line 6:\d+: [^\n]*undefinedName[^\n]*\n {2} {2}out\[0\] = undefinedName \+ 1\.0;/);
  // Later work on that Gpu reports the same error rather than running on a broken pipeline.
  expect(() => gpu.alloc(1)).toThrow(error!.message);
});

test('a Gpu that shared a device stops listening for its errors when destroyed: no listeners pile up', async () => {
  const backend = await webgpuOrSkip();
  if (!backend) return;
  const warnings: string[] = [];
  const onWarning = (warning: Error) => warnings.push(warning.name);
  process.on('warning', onWarning);
  try {
    // Node warns of a leak past 10 listeners of one event on one target.
    for (let i = 0; i < 12; i++) new Gpu({ ...backend.gpu.acquired, release: () => {} }).destroy();
    await new Promise((resolve) => setTimeout(resolve, 10));
  } finally {
    process.off('warning', onWarning);
  }
  expect(warnings).not.toContain('MaxListenersExceededWarning');
});
