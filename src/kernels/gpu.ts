/**
 * The WebGPU runtime every kernel family dispatches through: the pipeline cache, one command encoder
 * that records dispatches until a sync point (a readback or flush()), pooled storage and staging
 * buffers, one uniform arena per batch with cached bind groups, and errors turned into exceptions
 * that name the kernel.
 */
import { isHalfDType, type DType, type HalfDType, type Storage } from '../tensor/backend.js';
import { halfDTypeOf, widenBfloat16, widenHalf } from '../tensor/half.js';
import { BufferPool, type PoolStats } from './buffer-pool.js';
import type { AcquiredDevice } from './device.js';
import { packUniforms, type BufferView, type Kernel, type Uniform } from './kernel.js';

/** Sleep between polls of a pending device operation on a software adapter (see Gpu.settle). */
const POLL_SLEEP_MS = 0.25;
/** Bytes of uniform blocks one batch packs into the uniform arena (see Gpu.dispatch); a fuller batch is submitted early. */
const ARENA_BYTES = 64 * 1024;
/** Bind groups kept for reuse; past this many the cache starts over. */
const MAX_BIND_GROUPS = 4096;
/**
 * What the polite wait sleeps on. Only where the thread may block and Dawn's bindings poll with
 * setImmediate (Node); a browser's main thread may not block (Atomics.wait throws there), and its
 * own WebGPU waits without a busy loop.
 */
const sleepCell = typeof SharedArrayBuffer === 'function' && typeof setImmediate === 'function' ? new Int32Array(new SharedArrayBuffer(4)) : null;

/** Software Vulkan/D3D drivers that run shaders on the CPU. */
export function isSoftwareAdapter(description: string): boolean {
  return /llvmpipe|lavapipe|swiftshader|warp/i.test(description);
}

/** Bytes an element takes in a buffer: f16 and bf16 pack two to a u32 word. */
export const elementBytes = (dtype: DType): number => (isHalfDType(dtype) ? 2 : 4);

/** How a kernel reads a weight operand: its 16-bit type, else f32. */
export const halfOrF32 = (x: GpuStorage): 'f32' | HalfDType => (isHalfDType(x.dtype) ? x.dtype : 'f32');

export class GpuStorage implements Storage {
  /**
   * `offset`: the first element within `buffer`. `isView`: the buffer belongs to another storage
   * (Gpu.viewOf), which releases it.
   */
  constructor(readonly buffer: GPUBuffer, readonly dtype: DType, readonly size: number, readonly offset = 0, readonly isView = false) {}

  /** Whole 4-byte words: an odd count of f16 values ends in half a word. */
  get byteLength(): number {
    return Math.ceil((this.size * elementBytes(this.dtype)) / 4) * 4;
  }

  get byteOffset(): number {
    return this.offset * elementBytes(this.dtype);
  }
}

interface CompiledKernel {
  id: number;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

export interface GpuOptions {
  /** Submit after every dispatch instead of batching (tests run both ways). */
  immediate?: boolean;
  /** Check every dispatch in its own error scope, so a validation error names its kernel exactly. */
  validate?: boolean;
  /**
   * Bind at most this many bytes per storage binding (never more than the device allows), so that
   * tests run the code that splits tensors larger than one binding on small ones.
   */
  maxBindingBytes?: number;
  /** Align binding offsets to this many bytes: a multiple of the device's alignment. */
  bindingAlignment?: number;
}

export class Gpu {
  readonly device: GPUDevice;
  readonly description: string;
  readonly features: ReadonlySet<string>;
  /** Largest byte range one storage binding may cover. */
  readonly maxBindingBytes: number;
  /** Required alignment of a binding's byte offset. */
  readonly bindingAlignment: number;
  /** Elements one storage may hold: the pool rounds a request up by less than 1/8, within maxBufferSize. */
  readonly maxStorageSize: number;
  readonly maxWorkgroupsPerDimension: number;
  immediate: boolean;
  private readonly validate: boolean;
  /** Sleep between polls while waiting for the device (see `settle`). */
  private readonly politeWait: boolean;

  private readonly storagePool: BufferPool;
  private readonly stagingPool: BufferPool;
  private readonly pipelines = new Map<string, CompiledKernel>();
  /** The uniform blocks of the batch being recorded, written to `arena` when it is submitted. */
  private readonly arena: GPUBuffer;
  private readonly arenaHost = new Uint8Array(ARENA_BYTES);
  private arenaUsed = 0;
  private readonly uniformAlignment: number;
  /** Bind groups by pipeline, uniform size and bound ranges: a decode step binds the same pooled buffers every time. */
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly bufferIds = new WeakMap<GPUBuffer, number>();
  private nextBufferId = 0;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private batchKernels: string[] = [];
  private pendingChecks: Promise<Error | null>[] = [];
  private failure: Error | null = null;

  private readonly onUncapturedError = (event: GPUUncapturedErrorEvent): void => {
    const kernels = this.batchKernels.slice(-8).join(', ') || 'none';
    this.failure ??= new Error(`WebGPU error (kernels in the failing batch, latest last: ${kernels}): ${event.error.message}`);
  };

  /** The device this Gpu records on; another Gpu with other options may share it (tests). */
  constructor(readonly acquired: AcquiredDevice, options: GpuOptions = {}) {
    const { device, limits } = acquired;
    this.device = device;
    this.description = acquired.description;
    this.features = acquired.features;
    this.maxBindingBytes = Math.min(limits.maxStorageBufferBindingSize, options.maxBindingBytes ?? Infinity);
    this.bindingAlignment = options.bindingAlignment ?? limits.minStorageBufferOffsetAlignment;
    if (this.bindingAlignment % limits.minStorageBufferOffsetAlignment !== 0) {
      throw new Error(`binding alignment ${this.bindingAlignment} B is not a multiple of the adapter's ${limits.minStorageBufferOffsetAlignment} B`);
    }
    this.maxStorageSize = Math.floor((limits.maxBufferSize * 8) / 9 / 4);
    this.maxWorkgroupsPerDimension = limits.maxComputeWorkgroupsPerDimension;
    this.immediate = options.immediate ?? false;
    this.validate = options.validate ?? false;
    this.politeWait = sleepCell !== null && isSoftwareAdapter(acquired.description);
    const usage = GPUBufferUsage;
    this.storagePool = new BufferPool(device, usage.STORAGE | usage.COPY_SRC | usage.COPY_DST, 'storage');
    this.arena = device.createBuffer({ size: ARENA_BYTES, usage: usage.UNIFORM | usage.COPY_DST, label: 'uniform arena' });
    this.uniformAlignment = limits.minUniformBufferOffsetAlignment;
    this.stagingPool = new BufferPool(device, usage.MAP_READ | usage.COPY_DST, 'staging');
    device.addEventListener('uncapturederror', this.onUncapturedError);
    void device.lost.then((info) => {
      if (info.reason !== 'destroyed') this.failure ??= new Error(`WebGPU device lost: ${info.message}`);
    });
  }

  // --- memory ---

  alloc(size: number, dtype: DType = 'f32'): GpuStorage {
    this.throwIfFailed();
    return new GpuStorage(this.storagePool.acquire(Math.ceil((size * elementBytes(dtype)) / 4) * 4), dtype, size);
  }

  release(storage: GpuStorage): void {
    if (!storage.isView) this.storagePool.release(storage.buffer);
  }

  /** `size` elements of `base` from element `offset` (a binding offset, so aligned), sharing its buffer. */
  viewOf(base: GpuStorage, offset: number, size: number): GpuStorage {
    if (!Number.isInteger(offset) || offset < 0 || offset + size > base.size) {
      throw new Error(`a view of ${size} elements from ${offset} lies outside storage of ${base.size}`);
    }
    if ((offset * elementBytes(base.dtype)) % this.bindingAlignment !== 0) {
      throw new Error(`a view at element ${offset} is not aligned to the adapter's ${this.bindingAlignment} B binding alignment`);
    }
    return new GpuStorage(base.buffer, base.dtype, size, base.offset + offset, true);
  }

  /** Records a copy of src's elements into dst. */
  copyStorage(src: GpuStorage, dst: GpuStorage): void {
    if (src.size !== dst.size || src.dtype !== dst.dtype) throw new Error(`copy: ${src.size} elements of ${src.dtype} into ${dst.size} of ${dst.dtype}`);
    if (src.size > 0) this.copy(src.buffer, src.byteOffset, dst.buffer, dst.byteOffset, src.byteLength);
  }

  /** A Uint16Array holds f16 bit patterns, a Bfloat16Array bf16 ones (16-bit storage). */
  upload(data: Float32Array | Int32Array | Uint16Array): GpuStorage {
    // queue.writeBuffer runs before any unsubmitted dispatch: flush first, so a pooled buffer that
    // recorded work still reads is not overwritten under it.
    if (this.encoder !== null) this.flush();
    const storage = this.alloc(data.length, data instanceof Int32Array ? 'i32' : data instanceof Uint16Array ? halfDTypeOf(data) : 'f32');
    // writeBuffer takes whole words: an odd count of halves gets a zero half to finish its last one.
    const words = data instanceof Uint16Array && data.length % 2 === 1 ? padToWord(data) : data;
    if (words.length > 0) this.device.queue.writeBuffer(storage.buffer, 0, words.buffer, words.byteOffset, words.byteLength);
    return storage;
  }

  async read(storage: GpuStorage): Promise<Float32Array | Int32Array> {
    const bytes = storage.byteLength;
    const staging = this.stagingPool.acquire(bytes);
    this.copy(storage.buffer, storage.byteOffset, staging, 0, Math.ceil(bytes / 4) * 4);
    try {
      this.flush();
    } finally {
      // A compile or validation error that names its kernel beats the generic one flush may throw.
      await this.checkErrors();
    }
    await this.settle(staging.mapAsync(GPUMapMode.READ, 0, bytes));
    const copy = staging.getMappedRange(0, bytes).slice(0);
    staging.unmap();
    this.stagingPool.release(staging);
    this.throwIfFailed();
    if (storage.dtype === 'f16') return widenHalf(new Uint16Array(copy, 0, storage.size));
    if (storage.dtype === 'bf16') return widenBfloat16(new Uint16Array(copy, 0, storage.size));
    return storage.dtype === 'i32' ? new Int32Array(copy) : new Float32Array(copy);
  }

  memoryStats(): PoolStats {
    return this.storagePool.snapshot();
  }

  /** Destroys the pooled buffers; submits recorded work first, which may still read buffers released since. */
  trimPool(): void {
    this.flush();
    this.storagePool.trim();
    this.bindGroups.clear();
  }

  // --- recording ---

  /** The whole storage, or `count` elements from `first`, as one binding. */
  view(storage: GpuStorage, first = 0, count = storage.size - first): BufferView {
    const bytes = elementBytes(storage.dtype);
    const offset = storage.byteOffset + first * bytes;
    const size = Math.max(4, Math.ceil((count * bytes) / 4) * 4);
    if (offset % this.bindingAlignment !== 0) {
      throw new Error(`binding offset ${offset} B is not a multiple of the adapter's ${this.bindingAlignment} B alignment`);
    }
    if (size > this.maxBindingBytes) {
      throw new Error(`a binding of ${size} B exceeds this adapter's maxStorageBufferBindingSize (${this.maxBindingBytes} B): the kernel must split it`);
    }
    return { buffer: storage.buffer, offset, size };
  }

  dispatch<P>(
    kernel: Kernel<P>,
    params: P,
    buffers: readonly (GpuStorage | BufferView)[],
    uniforms: readonly Uniform[],
    workgroups: readonly [number, number, number],
  ): void {
    this.throwIfFailed();
    if (buffers.length !== kernel.bindings.length) {
      throw new Error(`kernel ${kernel.name} takes ${kernel.bindings.length} buffers, got ${buffers.length}`);
    }
    const compiled = this.compile(kernel, params);
    // Uniforms go to the batch's arena at a dynamic offset, so the bind group depends only on the
    // storage ranges bound: it is made once and reused (createBindGroup was a third of a decode
    // step's recording time).
    const uniformBytes = new Uint8Array(packUniforms(uniforms));
    const uniformSize = uniformBytes.byteLength;
    if (this.arenaUsed + uniformSize > ARENA_BYTES) this.flush();
    const uniformOffset = this.arenaUsed;
    this.arenaHost.set(uniformBytes, uniformOffset);
    this.arenaUsed = Math.ceil((uniformOffset + uniformSize) / this.uniformAlignment) * this.uniformAlignment;
    const views = buffers.map((b) => (b instanceof GpuStorage ? this.view(b) : b));
    let key = `${compiled.id}:${uniformSize}`;
    for (const v of views) key += `|${this.bufferId(v.buffer)}:${v.offset}:${v.size}`;
    if (this.validate) this.device.pushErrorScope('validation');
    let bindGroup = this.bindGroups.get(key);
    if (bindGroup === undefined) {
      const entries: GPUBindGroupEntry[] = views.map((resource, binding) => ({ binding, resource }));
      entries.push({ binding: buffers.length, resource: { buffer: this.arena, offset: 0, size: uniformSize } });
      bindGroup = this.device.createBindGroup({ layout: compiled.layout, entries, label: kernel.name });
      if (this.bindGroups.size >= MAX_BIND_GROUPS) this.bindGroups.clear();
      this.bindGroups.set(key, bindGroup);
    }
    const pass = this.computePass();
    pass.setPipeline(compiled.pipeline);
    pass.setBindGroup(0, bindGroup, [uniformOffset]);
    pass.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
    this.batchKernels.push(kernel.name);
    if (this.validate) {
      this.pendingChecks.push(this.device.popErrorScope().then((e) => (e ? new Error(`kernel ${kernel.name}: ${e.message}`) : null)));
    }
    if (this.immediate) this.flush();
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Submits everything recorded since the last sync point. */
  flush(): void {
    this.throwIfFailed();
    if (this.encoder === null) return;
    this.endPass();
    // Queue order: the batch sees these uniforms, and the previous batches ran before they land.
    if (this.arenaUsed > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaHost, 0, this.arenaUsed);
    this.arenaUsed = 0;
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.batchKernels = [];
  }

  /** Resolves when every submitted command has finished on the device. */
  async sync(): Promise<void> {
    try {
      this.flush();
      await this.settle(this.device.queue.onSubmittedWorkDone());
    } finally {
      await this.checkErrors();
    }
  }

  /** Stops listening to the device, and releases it unless it was lent (a Gpu sharing another's device). */
  destroy(): void {
    this.device.removeEventListener('uncapturederror', this.onUncapturedError);
    this.acquired.release();
  }

  /**
   * Awaits a device promise. Dawn's Node bindings poll for its completion with setImmediate, a busy
   * loop on the JS thread; on a software adapter (llvmpipe) that loop takes a core from the threads
   * running the kernels, which then run markedly slower. There the wait sleeps POLL_SLEEP_MS between
   * polls instead (docs/kernels.md, "Waiting for the device"). A GPU runs beside the CPU: there the
   * loop stays.
   */
  private async settle<T>(promise: Promise<T>): Promise<T> {
    if (!this.politeWait) return promise;
    let settled = false;
    const done = promise.finally(() => {
      settled = true;
    });
    // Awaited once the loop sees it settled; a rejection before then (the device released while
    // waiting) must not count as unhandled meanwhile.
    done.catch(() => {});
    while (!settled) {
      Atomics.wait(sleepCell!, 0, 0, POLL_SLEEP_MS);
      await new Promise((resolve) => setImmediate(resolve)); // lets Dawn's queued poll run
    }
    return done;
  }

  private bufferId(buffer: GPUBuffer): number {
    let id = this.bufferIds.get(buffer);
    if (id === undefined) {
      id = this.nextBufferId++;
      this.bufferIds.set(buffer, id);
    }
    return id;
  }

  private computePass(): GPUComputePassEncoder {
    this.encoder ??= this.device.createCommandEncoder();
    this.pass ??= this.encoder.beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  private compile<P>(kernel: Kernel<P>, params: P): CompiledKernel {
    const key = params === undefined ? kernel.name : `${kernel.name}:${JSON.stringify(params)}`;
    const cached = this.pipelines.get(key);
    if (cached) return cached;
    const code = kernel.wgsl(params);
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code, label: key });
    const layout = this.device.createBindGroupLayout({
      label: key,
      entries: [
        ...kernel.bindings.map((access, binding) => ({
          binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: access === 'read' ? ('read-only-storage' as const) : ('storage' as const) },
        })),
        { binding: kernel.bindings.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' as const, hasDynamicOffset: true } },
      ],
    });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
    });
    const check = this.device.popErrorScope().then(async (error) => {
      if (error === null) return null;
      return new Error(`kernel ${key} failed to compile:\n${await compilerMessages(module, code)}\n${error.message}`);
    });
    // Awaited at the next sync point; one still pending when the device is released rejects unawaited.
    check.catch(() => {});
    this.pendingChecks.push(check);
    const compiled = { id: this.pipelines.size, pipeline, layout };
    this.pipelines.set(key, compiled);
    return compiled;
  }

  private async checkErrors(): Promise<void> {
    const checks = this.pendingChecks;
    this.pendingChecks = [];
    const precise = (await Promise.all(checks)).find((e) => e !== null);
    if (precise) this.failure = precise;
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}

function padToWord(halves: Uint16Array): Uint16Array {
  const out = new Uint16Array(halves.length + 1);
  out.set(halves);
  return out;
}

/** The compiler's messages, each followed by its source line, so a WGSL error reads like a compiler's. */
async function compilerMessages(module: GPUShaderModule, code: string): Promise<string> {
  const info = await module.getCompilationInfo();
  const lines = code.split('\n');
  return info.messages
    .map((m) => `${m.type} at line ${m.lineNum}:${m.linePos}: ${m.message}\n  ${lines[m.lineNum - 1] ?? ''}`)
    .join('\n');
}
