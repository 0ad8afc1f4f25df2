/** Making tensors: from host data, constants and seeded random numbers, on the default or a given backend. */
import type { Backend, ComputeDType, RandomDistribution, Storage } from './backend.js';
import { sizeOf } from './shape.js';
import { Tensor } from './tensor.js';

let defaultBackend: Backend | null = null;

export function setDefaultBackend(backend: Backend): void {
  defaultBackend = backend;
}

export function getDefaultBackend(): Backend {
  if (defaultBackend === null) throw new Error('no backend: call createBackend() or setDefaultBackend() first');
  return defaultBackend;
}

/** The default backend, or null when none is set yet. */
export const peekDefaultBackend = (): Backend | null => defaultBackend;

export interface CreateOptions {
  backend?: Backend;
  requiresGrad?: boolean;
}

export function fromStorage(backend: Backend, storage: Storage, shape: readonly number[]): Tensor {
  return new Tensor(backend, storage, shape);
}

/** A tensor holding `data`: f32, i32, or f16 / bf16 from a Uint16Array / Bfloat16Array of bit patterns (tensor/half.ts makes them). */
export function tensor(data: Float32Array | Int32Array | Uint16Array | readonly number[], shape: readonly number[] = [data.length], options: CreateOptions = {}): Tensor {
  const array = data instanceof Float32Array || data instanceof Int32Array || data instanceof Uint16Array ? data : Float32Array.from(data);
  if (array.length !== sizeOf(shape)) throw new Error(`${array.length} values do not fill shape [${shape}]`);
  const backend = options.backend ?? getDefaultBackend();
  return withGrad(new Tensor(backend, backend.upload(array), shape), options);
}

export function full(shape: readonly number[], value: number, options: CreateOptions & { dtype?: ComputeDType } = {}): Tensor {
  const backend = options.backend ?? getDefaultBackend();
  return withGrad(new Tensor(backend, backend.fill(sizeOf(shape), value, options.dtype ?? 'f32'), shape), options);
}

export function zeros(shape: readonly number[], options: CreateOptions = {}): Tensor {
  return full(shape, 0, options);
}

export function ones(shape: readonly number[], options: CreateOptions = {}): Tensor {
  return full(shape, 1, options);
}

/** Seeded random numbers: uniform in [0, 1) or standard normal, scaled by `std` and shifted by `mean`. */
export function random(
  shape: readonly number[],
  seed: number,
  options: CreateOptions & { distribution?: RandomDistribution } = {},
): Tensor {
  const backend = options.backend ?? getDefaultBackend();
  return withGrad(new Tensor(backend, backend.random(sizeOf(shape), seed, options.distribution ?? 'normal'), shape), options);
}

function withGrad(t: Tensor, options: CreateOptions): Tensor {
  t.requiresGrad = options.requiresGrad ?? false;
  return t;
}
