/**
 * Tensors larger than one storage binding (maxStorageBufferBindingSize) are bound in windows: a
 * kernel runs once per window, each window starting at an element aligned to
 * minStorageBufferOffsetAlignment. Every kernel family walks its tensors through these.
 */
import { elementBytes, type Gpu, type GpuStorage } from './gpu.js';
import type { BufferView } from './kernel.js';

/** Elements per chunk: as many as one binding holds, keeping chunk offsets aligned. */
export function chunkElements(gpu: Gpu): number {
  const alignElements = gpu.bindingAlignment / 4;
  return Math.floor(gpu.maxBindingBytes / 4 / alignElements) * alignElements;
}

/** Runs fn over [start, start + count) chunks that each fit one binding. */
export function forEachChunk(gpu: Gpu, size: number, fn: (start: number, count: number) => void): void {
  const step = chunkElements(gpu);
  for (let start = 0; start < size; start += step) fn(start, Math.min(step, size - start));
}

/** A binding over whole units of a tensor: `view` starts at an aligned element at or below the first unit, which begins `offset` elements into it. */
export interface UnitWindow {
  view: BufferView;
  offset: number;
}

/**
 * A binding of `count` elements of `storage` from element `start`: bound from the aligned element at or
 * below `start` (never past the storage's end), with `start`'s offset inside it.
 */
export function alignedWindow(gpu: Gpu, storage: GpuStorage, start: number, count: number): UnitWindow {
  const aligned = start - (start % (gpu.bindingAlignment / elementBytes(storage.dtype)));
  const offset = start - aligned;
  return { view: gpu.view(storage, aligned, Math.min(count + offset, storage.size - aligned)), offset };
}

/**
 * Runs fn over groups of whole units (rows of logits, (batch, head) pairs, …) small enough that every
 * tensor's window fits one binding (a 16-bit tensor's elements take 2 bytes). Each tensor holds
 * `perUnit` elements per unit, its units starting at its unit `firstUnit` (default 0: a tensor may
 * hold more units than the call covers, such as the sequences of a pooled cache); its window starts
 * at the aligned element at or below the group's first unit, so a kernel adds the window's `offset`.
 * With tensors that fit one binding this is a single group.
 */
export function forEachUnitWindow(
  gpu: Gpu,
  units: number,
  tensors: readonly { storage: GpuStorage; perUnit: number; firstUnit?: number }[],
  fn: (first: number, count: number, windows: UnitWindow[]) => void,
): void {
  let group = units;
  for (const { storage, perUnit, firstUnit = 0 } of tensors) {
    const bytes = elementBytes(storage.dtype);
    const alignElements = gpu.bindingAlignment / bytes;
    // Whole words: a 16-bit window may end in half of one.
    const maxElements = Math.floor(gpu.maxBindingBytes / 4) * (4 / bytes);
    if (perUnit * units + ((firstUnit * perUnit) % alignElements) <= maxElements) continue;
    group = Math.min(group, Math.floor((maxElements - alignElements + 1) / perUnit));
  }
  if (group < 1) throw new Error(`one unit of ${Math.max(...tensors.map((t) => t.perUnit))} elements exceeds this adapter's binding limit (${gpu.maxBindingBytes} B)`);
  for (let first = 0; first < units; first += group) {
    const count = Math.min(group, units - first);
    const windows = tensors.map(({ storage, perUnit, firstUnit = 0 }) => alignedWindow(gpu, storage, (firstUnit + first) * perUnit, count * perUnit));
    fn(first, count, windows);
  }
}
