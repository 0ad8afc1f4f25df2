/**
 * The one kernel descriptor and its binding convention: storage bindings 0..n-1 in the order the
 * kernel lists them (inputs, then outputs), then one uniform block at binding n holding the sizes.
 * Compile-time parameters (tile shapes, vector widths) shape the WGSL; sizes travel in uniforms, so
 * a pipeline is compiled once per (name, params), never per sequence length.
 */
export type BindingAccess = 'read' | 'write';

export interface Kernel<P = void> {
  readonly name: string;
  /** One entry per storage binding, in binding order. */
  readonly bindings: readonly BindingAccess[];
  wgsl(params: P): string;
}

/** A byte range of a buffer bound to one binding. */
export interface BufferView {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** A uniform value: a plain number is a u32; wrap floats with f32() and signed ints with i32(). */
export type Uniform = number | { f32: number } | { i32: number };
export const f32 = (value: number): Uniform => ({ f32: value });
export const i32 = (value: number): Uniform => ({ i32: value });

/** Packs uniforms as consecutive 4-byte scalars, padded to 16 bytes as WGSL's struct layout needs. */
export function packUniforms(values: readonly Uniform[]): ArrayBuffer {
  const bytes = new ArrayBuffer(Math.max(16, Math.ceil((values.length * 4) / 16) * 16));
  const view = new DataView(bytes);
  values.forEach((v, i) => {
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`uniform ${i} = ${v} is not a u32: wrap floats with f32()`);
      view.setUint32(i * 4, v, true);
    } else if ('f32' in v) {
      view.setFloat32(i * 4, v.f32, true);
    } else {
      view.setInt32(i * 4, v.i32, true);
    }
  });
  return bytes;
}

/** Workgroup counts for `count` work items in groups of `perGroup`, folded into y past the per-dimension limit. */
export function grid1d(count: number, perGroup: number, maxPerDimension: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(count / perGroup));
  if (groups <= maxPerDimension) return [groups, 1, 1];
  const y = Math.ceil(groups / maxPerDimension);
  return [Math.ceil(groups / y), y, 1];
}

/**
 * WGSL for a flat index over a grid from grid1d: `let i = flatIndex(gid, nwg);` with
 * `@builtin(global_invocation_id) gid` and `@builtin(num_workgroups) nwg`.
 */
export function flatIndexWgsl(workgroupSize: number): string {
  return /* wgsl */ `
fn flatIndex(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * ${workgroupSize}u;
}`;
}
